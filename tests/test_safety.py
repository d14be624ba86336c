"""What an outside check found, each pinned down: checkpoints read without running code, the architecture a checkpoint
records checked on load, the authors' pixels and activations, concurrent starts on a new MLflow store, a full disk,
and the run page that opens on what the run found."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from affectlab.datasets.integrity import DiskFullError, file_record, write_atomic
from affectlab.lab.checkpoints import ArchitectureError, UnsafeCheckpointError, load_checkpoint, resolve_resume
from affectlab.lab.config import ConfigError, load_config
from builders import TINY_RUN


class Payload:
    """Unpickling this runs code: it would create the file named."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> Path:
    """A checkpoint-looking file whose unpickling would run a command (torch.save of an object with __reduce__)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "epoch": 3, "global_step": 9, "payload": Payload(marker)}, path)
    return path


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path: Path):
    marker = tmp_path / "ran"
    checkpoint = plant(tmp_path / "ckpt" / "run" / "last.ckpt", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load: it holds posix.system"):
        load_checkpoint(checkpoint)
    with pytest.raises(UnsafeCheckpointError):
        resolve_resume(str(checkpoint), tmp_path / "ckpt")  # resume=PATH
    with pytest.raises(UnsafeCheckpointError):
        resolve_resume("auto", tmp_path / "ckpt")  # resume=auto finds it
    assert not marker.exists()


def test_a_crafted_stage_of_the_face_models_is_refused(tmp_path: Path):
    from affectlab.lab.cexpr.modalities import load_stage
    from affectlab.lab.checkpoints import record_path

    marker = tmp_path / "ran"
    stage = plant(tmp_path / "fold0.pt", marker)
    record_path(stage).write_text(__import__("json").dumps(file_record(stage)))  # even with a matching record
    with pytest.raises(UnsafeCheckpointError):
        load_stage(stage)
    assert not marker.exists()


def tiny(workdir: Path, *extra: str):
    return load_config("raer", [*TINY_RUN, f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
                                f"checkpoint_dir={workdir}/ckpt", "trainer.max_epochs=1", *extra], environ={})


def test_a_checkpoint_records_its_architecture_and_another_one_is_refused_on_load(workdir: Path):
    from affectlab.lab.raer.train import evaluate, train

    train(tiny(workdir))
    checkpoint = next((workdir / "ckpt").rglob("best-*.ckpt"))
    record = load_checkpoint(checkpoint)["affectlab"]
    assert record["architecture"]["temporal_activation"] == "gelu" and record["classes"][0] == "Neutrality"
    with pytest.raises(ArchitectureError, match=r"temporal_activation: 'gelu' there, 'gelu_tanh' here"):
        evaluate(tiny(workdir, f"resume={checkpoint}", "model.temporal_activation=gelu_tanh"))
    with pytest.raises(ArchitectureError, match="temporal_activation"):
        train(tiny(workdir, f"resume={checkpoint}", "model.temporal_activation=gelu_tanh"))


def test_the_authors_weights_need_their_activations():
    from affectlab.lab.raer.nets import build_net

    cfg = load_config("raer", ["model.checkpoint=/nowhere/model_best.pth"], environ={})
    with pytest.raises(ConfigError, match=r"temporal_activation=gelu_tanh and quick_gelu=true.*config=raer_authors"):
        build_net(cfg)


def test_raer_authors_feeds_pixels_over_255_and_the_default_clips_normalisation():
    from affectlab.datasets.raer import normalise_pixels
    from affectlab.lab.raer.nets import pixels

    frames = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    authors = pixels(load_config("raer", ["config=raer_authors"], environ={}), 224, (0.5,) * 3, (0.2,) * 3)
    torch.testing.assert_close(normalise_pixels(frames, authors.mean, authors.std), frames.float() / 255)
    default = pixels(load_config("raer", [], environ={}), 224, (0.5,) * 3, (0.2,) * 3)
    torch.testing.assert_close(normalise_pixels(frames, default.mean, default.std), (frames.float() / 255 - 0.5) / 0.2)


STORE_STARTER = textwrap.dedent("""
    import sys, time
    from omegaconf import OmegaConf
    from affectlab.lab.tracking import make_logger
    uri, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    cfg = OmegaConf.create({"mlflow": {"tracking_uri": uri, "experiment": "race", "run_name": name, "tags": {},
                                       "retry_seconds": 1, "wait_at_end": 1}})
    logger = make_logger(cfg)
    logger.log_metrics({"m": 1.0}, step=0)
    logger.finalize("success")
""")


@pytest.mark.slow  # two processes importing MLflow and Lightning
def test_two_runs_started_at_once_on_a_new_store_both_log(tmp_path: Path):
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 8  # both processes imported and waiting: they open the new store together
    env = {**os.environ, "AFFECTLAB_CACHE": str(tmp_path / "cache")}  # no empty store made yet: both would migrate
    processes = [subprocess.Popen([sys.executable, "-c", STORE_STARTER, uri, name, str(start)], env=env,
                                  stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["a", "b"]


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_half_file(tmp_path: Path):
    target = tmp_path / "cache" / "table.npy"
    write_atomic(target, lambda scratch: scratch.write_bytes(b"old"))

    def fills_the_disk(scratch: Path) -> None:
        scratch.write_bytes(b"x" * 5_000_000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as error:
        write_atomic(target, fills_the_disk)
    message = str(error.value)
    assert "disk full: writing" in message and str(target) in message and "5.0 MB" in message and "free" in message
    assert "\n" not in message
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["table.npy"]


def test_a_full_disk_while_checkpointing_stops_the_run_in_one_line_and_the_rerun_resumes(workdir, monkeypatch, capsys):
    from affectlab.lab import checkpoints
    from affectlab.lab.cli import console
    from affectlab.lab.raer import EXPERIMENT, main

    settings = [*TINY_RUN, f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}", f"checkpoint_dir={workdir}/ckpt",
                "trainer.max_epochs=2"]
    real_save, saves = torch.save, []

    def save(obj, target, *args, **kwargs):  # the third checkpoint finds the disk full
        saves.append(target)
        if len(saves) == 3:
            raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save)
    monkeypatch.setattr("affectlab.datasets.integrity.shutil.disk_usage",
                        lambda path: type("usage", (), {"free": 1_000_000})())
    with pytest.raises(SystemExit) as stopped:
        console(EXPERIMENT, settings)
    assert stopped.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("raer:")]
    assert len(err) == 1 and err[0].startswith("raer: error: disk full: writing ") and "1.0 MB free" in err[0]
    assert not list((workdir / "ckpt").rglob("*.tmp"))  # nothing half-written
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    metrics = main([*settings, "resume=auto"])  # continues from the last intact checkpoint
    assert 0.0 <= metrics["test/uar"] <= 1.0


def test_the_run_page_opens_on_the_task_metrics_and_figures(workdir: Path):
    from affectlab.lab.raer.train import train

    train(tiny(workdir))
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("raer").experiment_id])[0]
    note = run.data.tags["mlflow.note.content"]
    # the headline metrics first, then the figures shown, then the tables linked
    assert note.index("| test/uar |") < note.index("![confusion_matrix.png]") < note.index("[test_by_context.csv]")
    names = set(run.data.metrics)
    assert not {n for n in names if n.startswith("lr-")}  # Lightning's own names for the learning rates are not kept
    assert {n for n in names if n.startswith("train/lr/")}  # the learning rates, under the project's names
    datasets = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(datasets) == {"RAER train", "RAER val", "RAER test"}
    assert {t.key: t.value for t in datasets["RAER train"].tags}.get("toy") == "true"  # the synthetic set, said


def test_the_paper_configuration_of_mhpf_trains_with_the_authors_loss_and_init():
    from affectlab.fusion import MHPF_INITS, MHPF_LOSSES

    cfg = load_config("cexpr", [], environ={})
    assert (cfg.fusion.loss, cfg.fusion.init) == ("authors_ce", "authors")
    assert MHPF_LOSSES[cfg.fusion.loss].__name__ == "authors_cross_entropy"
    assert MHPF_INITS[cfg.fusion.init].__name__ == "authors_init"


# --- paths read from data files never leave their folder -----------------------------------------------------------


@pytest.mark.parametrize("clip_dir", ["../../outside", "/etc", "Class/../../../x", "~/clip"])
def test_a_raer_clip_path_that_leaves_the_data_set_is_refused_with_its_line(tmp_path, clip_dir):
    from affectlab.datasets import DatasetError, read_annotation

    annotation = tmp_path / "train.txt"
    annotation.write_text(f"Class/Classroom/ok 4 1\n{clip_dir} 4 2\n")
    with pytest.raises(DatasetError, match=rf"train.txt:2: path '{clip_dir}' would leave"):
        read_annotation(annotation)


def escaped(dataset, clip_dir: str = "../../escaped"):
    """The dataset with its first clip's folder rewritten to leave the data set (as a bug or a crafted object would)."""
    import dataclasses

    dataset._clips[0] = dataclasses.replace(dataset._clips[0], clip_dir=clip_dir)
    return dataset


def test_the_raer_reader_and_both_caches_refuse_a_clip_outside_their_folder(tmp_path):
    from affectlab.datasets import DatasetError, RaerDataset, write_crop_cache
    from affectlab.datasets.raer import _clip_source
    from affectlab.lab.raer.features import FrameFeatures
    from builders import flat_frame, write_raer

    clips = write_raer(tmp_path / "raer", {"Class/Classroom/a": [flat_frame((200, 10, 10))] * 4})
    dataset = RaerDataset(tmp_path / "raer", clips, num_segments=2, image_size=16)
    bad = escaped(dataset)
    with pytest.raises(DatasetError, match=r"train.txt:1: path '../../escaped' would leave"):
        _clip_source(tmp_path / "raer" / "images", bad._clips[0])
    with pytest.raises(DatasetError, match="would leave"):
        write_crop_cache(bad, tmp_path / "crops")  # the crop cache writer
    assert not (tmp_path / "escaped").exists()
    features = FrameFeatures.__new__(FrameFeatures)
    features.root, features._clips = tmp_path / "features", bad._clips
    with pytest.raises(DatasetError, match="would leave"):
        features._paths(0, "face")  # the feature cache writer


def test_other_readers_take_no_path_that_leaves_their_folder(tmp_path):
    from affectlab.datasets import DatasetError
    from affectlab.datasets.cexpr import read_fold_list
    from affectlab.lab.meld.data import read_meld_utterances

    folds = tmp_path / "train.txt"
    folds.write_text("Sadly-Fearful/24_Sadly-Fearful_0,5\n../../etc/passwd,5\n")
    with pytest.raises(DatasetError, match=r"train.txt:2: '../../etc/passwd,5'; expected"):
        read_fold_list(folds, {"Sadly Fearful": 5})
    meld = tmp_path / "train_sent_emo.csv"
    meld.write_text("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,"
                    "EndTime\n1,hi,Joey,joy,positive,../../x,0,1,1,0,1\n")
    with pytest.raises(DatasetError, match=r"train_sent_emo.csv:2: Dialogue_ID='../../x'"):
        read_meld_utterances(meld, "train")
