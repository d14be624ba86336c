"""The C-EXPR-DB experiment end to end on a small synthetic set: fusion training, PPA/PFSA, submission, MLflow."""

from __future__ import annotations

from mlflow import MlflowClient
import numpy as np
import pytest

from affectlab.datasets.modality_tables import read_modality_table
from affectlab.datasets.labelsets import load_label_set
from affectlab.fusion import score_submission
from affectlab.lab.cexpr import main
from affectlab.lab.cexpr.data import compound_videos, resolve_root
from affectlab.lab.config import ConfigError, load_config
from builders import TINY_CEXPR

TINY = [
    *TINY_CEXPR,
    "data.train_samples_per_epoch=null",
    "trainer.max_epochs=4",
    "early_stopping.patience=2",
]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the module's runs: creating a store (its migrations) takes seconds."""
    return f"mlflow.tracking_uri=sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_cexpr_runs_end_to_end_and_logs_to_mlflow(workdir, tracking):
    metrics = main([*TINY, tracking, "data.modalities=[audio,zero_shot_clip]", "visual.frames_per_window=4",
                    "visual.modalities=[zero_shot_clip]"])
    for key in ("compound_f1/fusion_ppa", "compound_f1/fusion_pfsa", "compound_f1/fusion_pfsa_text",
                "compound_f1/audio_ppa", "compound_f1/zero_shot_clip_ppa", "compound_f1/zero_shot_clip_direct",
                "basic_val_score/fusion"):
        assert 0.0 <= metrics[key] <= 1.0, key

    client = MlflowClient(tracking_uri=tracking.split("=", 1)[1])
    runs = client.search_runs([client.get_experiment_by_name("cexpr").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["audio", "audio+zero_shot_clip", "zero_shot_clip"]
    assert parent.data.metrics["compound_f1/fusion_ppa"] == pytest.approx(metrics["compound_f1/fusion_ppa"])
    assert {"compound_f1/ppa", "compound_f1/pfsa", "compound_f1/pfsa_text"} <= set(children[0].data.metrics)
    run_id = parent.info.run_id

    artifacts = workdir / "mlartifacts" / run_id / "artifacts"
    assert {"fusion_weights.png", "submission_ppa.csv", "submission_pfsa.csv", "submission_pfsa_text.csv",
            "modality_ablation.json",
            "config.yaml"} <= {p.name for p in artifacts.iterdir()}
    # the submission file alone reproduces the logged score
    cfg = load_config("cexpr", TINY)
    videos = compound_videos(resolve_root(cfg.data), cfg.data)
    truth = {v.name: v.truth for v in videos}
    score = score_submission(artifacts / "submission_ppa.csv", truth, load_label_set("cexpr").compounds)
    assert score.macro_f1 == pytest.approx(metrics["compound_f1/fusion_ppa"])
    assert sum(v.num_frames for v in videos) == len((artifacts / "submission_ppa.csv").read_text().splitlines()) - 1


def test_input_dependent_fusion_runs_without_ablation(workdir, tracking):
    metrics = main([
        *TINY, tracking, "mlflow.experiment=cexpr-input-dependent", "fusion.kind=input_dependent", "ablation=false",
        "trainer.max_epochs=2", "visual.modalities=[]",
    ])
    assert np.isfinite(metrics["compound_f1/fusion_pfsa"])


def test_fusion_trains_on_afew_alone(workdir, tracking):
    metrics = main([
        *TINY, tracking, "mlflow.experiment=cexpr-afew", "data.basic_sets=[afew]", "ablation=false",
        "trainer.max_epochs=2", "visual.modalities=[]",
    ])
    assert np.isfinite(metrics["basic_val_f1/fusion"])


def test_unknown_modality_is_a_config_error(workdir):
    with pytest.raises(ConfigError, match=r"no table \['face'\]"):
        main([*TINY, "data.modalities=[audio,face]", "visual.modalities=[]"])


def test_visual_tables_are_cached_between_runs_and_a_damaged_one_is_rebuilt(workdir, tracking):
    args = [
        *TINY, tracking, "mlflow.experiment=cexpr-cache", "ablation=false", "trainer.max_epochs=1",
        "visual.frames_per_window=2", "visual.modalities=[zero_shot_clip]",
    ]
    main(args)
    tables = sorted((workdir / "tables" / "cexpr").rglob("zero_shot_clip.csv"))
    # basic probabilities of the basic training and the compound videos, and the direct compound ones
    assert [t.relative_to(workdir / "tables" / "cexpr").parts[1:] for t in tables] == [
        ("afew", "zero_shot_clip.csv"),
        ("affwild2", "zero_shot_clip.csv"),
        ("cexpr", "compound", "zero_shot_clip.csv"),
        ("cexpr", "zero_shot_clip.csv"),
    ]
    stamps = [t.stat().st_mtime_ns for t in tables]
    main(args)
    assert [t.stat().st_mtime_ns for t in tables] == stamps

    # cut the compound videos' table after its fourth line: still a well-formed table, only the manifest can tell
    damaged = tables[3]
    good = damaged.read_bytes()
    damaged.write_bytes(b"".join(good.splitlines(keepends=True)[:4]))
    assert len(read_modality_table(damaged).segment_ids) == 3
    main(args)
    assert damaged.read_bytes() == good  # recomputed (the same random CLIP, seeded), not read
def test_more_than_one_process_is_refused(workdir):
    with pytest.raises(ConfigError, match="trainer.devices and trainer.num_nodes must be 1"):
        main([*TINY, "trainer.devices=2", "visual.modalities=[]"])


def test_face_models_are_trained_in_the_run_and_give_their_tables(workdir, tracking):
    metrics = main([
        *TINY, tracking, "mlflow.experiment=cexpr-faces", "ablation=false", "trainer.max_epochs=1",
        "visual.modalities=[static_face,dynamic_face]", "data.modalities=[audio,static_face,dynamic_face]",
        "visual.frames_per_window=4", "face.frames_per_window=2", "face.static.epochs=1", "face.dynamic.epochs=2",
    ])
    for name in ("static_face", "dynamic_face"):
        assert 0.0 <= metrics[f"basic_val_f1/{name}"] <= 1.0
        (table,) = (workdir / "tables" / "cexpr").glob(f"*/affwild2/{name}.csv")
        assert read_modality_table(table).present.all()  # cross-fitted: every basic window has a prediction


def test_unknown_pfsa_prototypes_are_a_config_error(workdir):
    with pytest.raises(ConfigError, match=r"compound.pfsa_prototypes=\[class_means,means\]: expected a list of "
                                          r"class_means \| clip_text"):
        main([*TINY, "compound.pfsa_prototypes=[class_means,means]", "visual.modalities=[]"])


@pytest.mark.parametrize("visual", ["visual.modalities=[zero_shot_clip]", "visual.modalities=[]"])
def test_no_basic_sets_is_a_config_error_before_any_data_is_read(workdir, visual):
    with pytest.raises(ConfigError, match=r"data.basic_sets=\[\]: expected a non-empty subset of \['affwild2', 'afew'\]"):
        main([*TINY, "data.basic_sets=[]", visual, "data.root=" + str(workdir / "absent")])
