"""A trained compound-expression model used on videos: predict on one of the run's own videos gives the run's own
per-frame labels (same visual models, same fusion, same PPA), through the command and through the registered MLflow
model; a model with no visual modality says so."""

from __future__ import annotations

import tempfile

import mlflow
import numpy as np
import pandas as pd
import pytest

from affectlab.datasets.labelsets import load_label_set
from affectlab.fusion import read_submission
from affectlab.lab.cexpr import main
from affectlab.lab.cexpr.data import compound_videos, resolve_root
from affectlab.datasets.errors import DatasetError
from affectlab.lab.config import ConfigError, load_config
from affectlab.lab.export import example_clip
from builders import TINY_CEXPR

COMPOUNDS = load_label_set("cexpr").compounds

TINY = [
    *TINY_CEXPR,
    "data.train_samples_per_epoch=null",
    "trainer.max_epochs=4",
    "early_stopping.patience=2",
    "visual.frames_per_window=4",
    "ablation=false",
    "data.modalities=[zero_shot_clip,static_face,dynamic_face]",
]


def test_predict_on_the_runs_own_video_gives_the_runs_own_frame_labels(workdir, monkeypatch):
    tracking = f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}"
    main([*TINY, tracking])
    run = mlflow.MlflowClient(tracking.split("=", 1)[1]).search_runs(
        [mlflow.MlflowClient(tracking.split("=", 1)[1]).get_experiment_by_name("cexpr").experiment_id])[0]
    submitted = read_submission(workdir / "mlartifacts" / run.info.run_id / "artifacts" / "submission_ppa.csv",
                                COMPOUNDS)
    cfg = load_config("cexpr", TINY, environ={})
    video = compound_videos(resolve_root(cfg.data), cfg.data)[0]

    main(["predict", f"input={video.path}", f"output={workdir / 'out'}", tracking])
    table = pd.read_csv(workdir / "out" / "predictions.csv")
    assert len(table) == video.num_frames and table["frame"].tolist() == list(range(1, video.num_frames + 1))
    np.testing.assert_array_equal([COMPOUNDS.index(x) for x in table["label"]], submitted[video.name])
    challenge = read_submission(workdir / "out" / "submission.csv", COMPOUNDS)
    np.testing.assert_array_equal(challenge[video.path.stem], submitted[video.name])

    mlflow.set_tracking_uri(tracking.split("=", 1)[1])
    model = mlflow.pyfunc.load_model("models:/affectlab-cexpr/latest")
    answer = model.predict(pd.DataFrame({"path": [str(video.path)]}))
    np.testing.assert_allclose(answer[list(COMPOUNDS)], table[list(COMPOUNDS)], atol=1e-5)

    # the model as a folder (a registered one is downloaded to a temporary folder): predict itself leaves nothing there
    folder = mlflow.artifacts.download_artifacts("models:/affectlab-cexpr/latest", dst_path=str(workdir / "model"))
    scratch = workdir / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    main(["predict", f"input={video.path}", f"output={workdir / 'again'}", f"model={folder}", tracking])
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in (workdir / "again").iterdir()) == ["predictions.csv", "submission.csv"]
    assert (workdir / "again" / "submission.csv").read_bytes() == (workdir / "out" / "submission.csv").read_bytes()


def test_a_model_without_visual_modalities_is_not_offered_for_videos(workdir, capsys):
    tracking = f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}"
    main([*[t for t in TINY if not t.startswith("data.modalities")], tracking, "visual.modalities=[]",
          "data.modalities=[audio]"])
    assert "none of which comes from a video's frames" in capsys.readouterr().out
    video = example_clip(workdir)
    with pytest.raises(ConfigError, match="no model is registered as affectlab-cexpr"):
        main(["predict", f"input={video}", tracking, f"output={workdir / 'out'}"])
    assert not (workdir / "out").exists()


def test_two_videos_of_one_name_are_refused_before_any_model_is_read(workdir):
    for name in ("a.mp4", "a.avi"):  # the submission file names both "a"
        (workdir / name).write_bytes(b"")
    with pytest.raises(DatasetError, match=r"a.avi and .*a.mp4: two videos named 'a'; expected one video per name"):
        main(["predict", f"input={workdir}", f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}"])


def test_a_folder_named_like_a_video_is_not_a_video(workdir):
    (workdir / "videos" / "a.mp4").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"videos: no video files in it"):
        main(["predict", f"input={workdir / 'videos'}", f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}"])


def test_only_zero_shot_clip_and_kept_face_models_come_from_frames():
    from affectlab.lab.cexpr.predict import frame_modalities

    assert frame_modalities(["audio", "static_face", "zero_shot_clip", "dynamic_face"], ["clip", "dynamic_face"]) == [
        "zero_shot_clip", "dynamic_face"]
    with pytest.raises(ConfigError, match=r"fuses \['audio', 'static_face'\], none of which comes from a video's "):
        frame_modalities(["audio", "static_face"], ["clip"])  # a face model not kept cannot be run on a video
