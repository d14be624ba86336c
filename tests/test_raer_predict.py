"""A trained RAER model used on a user's own video: the predict command on a video with a real face, the registered
MLflow model in a fresh process and behind `mlflow models serve`, the authors' weights, RAER-layout folders, and
every bad input as one line with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from affectlab.lab.cli import console
from affectlab.lab.raer import EXPERIMENT, main
from builders import TINY_RUN, astronaut_frames, authors_state_dict, free_port, write_mp4

CLASSES = ["Neutrality", "Enjoyment", "Confusion", "Fatigue", "Distraction"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny training (4 frames per clip), its store with affectlab-raer registered, and a 6 s video of the
    astronaut's face moving."""
    folder = tmp_path_factory.mktemp("raer-predict")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    main([*TINY_RUN, f"mlflow.tracking_uri={uri}", f"checkpoint_dir={folder}/ckpt"])
    frames, _ = astronaut_frames(150)
    video = write_mp4(folder / "videos" / "astronaut.mp4", frames, fps=25)
    return {"folder": folder, "uri": uri, "video": video}


def predict(trained: dict, out: Path, *extra: str) -> pd.DataFrame:
    main(["predict", f"input={trained['video']}", f"output={out}", f"mlflow.tracking_uri={trained['uri']}", *extra])
    return pd.read_csv(out / "predictions.csv")


def test_every_training_registers_its_model_with_a_signature_and_example(trained):
    client = MlflowClient(trained["uri"])
    version = client.get_latest_versions("affectlab-raer")[0]
    run = client.get_run(version.run_id)
    assert run.data.metrics["test/uar"] >= 0
    import mlflow.models

    info = mlflow.models.get_model_info(f"models:/affectlab-raer/{version.version}")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["path", "window_s", "hop_s", "whole_frame"]
    assert [c["name"] for c in info.signature.outputs.to_dict()][-6:] == [*CLASSES, "label"]


def test_predict_on_a_video_with_a_real_face_writes_windows_and_a_timeline(trained, tmp_path):
    table = predict(trained, tmp_path / "out")
    assert list(table.columns) == ["video", "window", "start_s", "end_s", "face_found", *CLASSES, "label"]
    assert len(table) == 5 and table["window"].tolist() == [0, 1, 2, 3, 4]  # 6 s: windows of 2 s every 1 s
    np.testing.assert_allclose(table[["start_s", "end_s"]].to_numpy()[[0, -1]], [[0, 2], [4, 6]])
    np.testing.assert_allclose(table[CLASSES].sum(axis=1), 1.0, atol=1e-5)
    assert table["face_found"].all()
    assert (table["label"] == table[CLASSES].idxmax(axis=1)).all()
    png = tmp_path / "out" / "astronaut.mp4.timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_predict_leaves_nothing_in_the_temporary_folder(trained, tmp_path, monkeypatch):
    import mlflow.artifacts

    # the model as a folder: a registered one is downloaded to a temporary folder that the prediction reads from
    model = mlflow.artifacts.download_artifacts("models:/affectlab-raer/latest", dst_path=str(tmp_path / "model"),
                                                tracking_uri=trained["uri"], registry_uri=trained["uri"])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    predict(trained, tmp_path / "out", f"model={model}")
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["astronaut.mp4.timeline.png", "predictions.csv"]


@pytest.mark.slow  # a fresh Python process imports the project and loads the model (~17 s)
def test_the_registered_model_in_a_fresh_process_gives_the_commands_probabilities(trained, tmp_path):
    table = predict(trained, tmp_path / "out")
    script = ("import sys, mlflow.pyfunc, pandas as pd\n"
              "model = mlflow.pyfunc.load_model('models:/affectlab-raer/latest')\n"
              "model.predict(pd.DataFrame({'path': [sys.argv[1]]})).to_csv(sys.argv[2], index=False)\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained["uri"]}
    done = subprocess.run([sys.executable, "-c", script, str(trained["video"]), str(tmp_path / "pyfunc.csv")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "pyfunc.csv")[CLASSES], table[CLASSES], atol=2e-6)


@pytest.mark.slow  # a real `mlflow models serve` process (uvicorn), importing the project
@pytest.mark.timeout(600)
def test_mlflow_models_serve_answers_on_invocations(trained, tmp_path):
    table = predict(trained, tmp_path / "out")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained["uri"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                               "models:/affectlab-raer/latest", "--env-manager", "local", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(1)
        body = json.dumps({"dataframe_split": {"columns": ["path"], "data": [[str(trained["video"])]]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = pd.DataFrame(json.loads(response.read())["predictions"])
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    np.testing.assert_allclose(answer[CLASSES], table[CLASSES], atol=2e-6)


def test_a_checkpoint_or_a_run_id_names_the_model_too(trained, tmp_path):
    by_registry = predict(trained, tmp_path / "a")
    checkpoint = next((trained["folder"] / "ckpt").rglob("best-*.ckpt"))
    by_checkpoint = predict(trained, tmp_path / "b", f"model={checkpoint}")
    run_id = MlflowClient(trained["uri"]).get_latest_versions("affectlab-raer")[0].run_id
    by_run = predict(trained, tmp_path / "c", f"model={run_id}")
    for other in (by_checkpoint, by_run):
        np.testing.assert_allclose(other[CLASSES], by_registry[CLASSES], atol=1e-6)


def test_a_raer_folder_is_predicted_clip_by_clip_beside_its_true_labels(trained, tmp_path):
    from affectlab.datasets import ensure_synthetic_raer

    root = ensure_synthetic_raer(num_train=40, num_test=20, num_frames=8)
    main(["predict", f"input={root}", f"output={tmp_path}", f"mlflow.tracking_uri={trained['uri']}"])
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert len(table) == 60 and set(table["split"]) == {"train", "test"}
    assert set(table["true"]) == set(CLASSES)
    np.testing.assert_allclose(table[CLASSES].sum(axis=1), 1.0, atol=1e-5)


def test_the_authors_weights_predict_through_their_config(trained, tmp_path):
    state, _ = authors_state_dict(torch.Generator().manual_seed(3))
    torch.save(state, tmp_path / "model_best.pth")
    table = predict(trained, tmp_path / "out", "config=raer_authors", f"model.checkpoint={tmp_path / 'model_best.pth'}",
                    "model.backbone=affectlab-tiny", "model.temporal_mlp_dim=128", "data.num_segments=16")
    assert len(table) == 5
    np.testing.assert_allclose(table[CLASSES].sum(axis=1), 1.0, atol=1e-5)


def bad(trained: dict, capsys, out: Path, *args: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        console(EXPERIMENT, ["predict", f"output={out}", f"mlflow.tracking_uri={trained['uri']}", *args])
    assert stopped.value.code in (1, 2)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("raer:")]
    assert len(err) == 1, err
    assert not out.exists()  # nothing written, not even half
    return err[0]


def test_bad_input_is_one_line_and_nothing_is_written(trained, tmp_path, capsys):
    from affectlab.datasets.video import write_mjpeg_avi

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    assert str(garbage) in bad(trained, capsys, tmp_path / "o1", f"input={garbage}")
    flat = write_mjpeg_avi(tmp_path / "wall.avi", [np.full((120, 160, 3), 90, np.uint8)] * 60, fps=25)
    assert "whole_frame=true" in bad(trained, capsys, tmp_path / "o2", f"input={flat}")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no video files" in bad(trained, capsys, tmp_path / "o3", f"input={empty}")
    assert "no such checkpoint file" in bad(trained, capsys, tmp_path / "o4", f"input={trained['video']}",
                                            "model=nowhere.ckpt")
    assert "models:/affectlab-raer/99" in bad(trained, capsys, tmp_path / "o5", f"input={trained['video']}",
                                              "model=models:/affectlab-raer/99")
    assert "trained with data.num_segments=4" in bad(trained, capsys, tmp_path / "o6", f"input={trained['video']}",
                                                     "data.num_segments=16")
    assert "predict needs input=" in bad(trained, capsys, tmp_path / "o7")


def test_a_video_with_no_face_runs_on_whole_frames_when_asked(trained, tmp_path):
    from affectlab.datasets.video import write_mjpeg_avi

    flat = write_mjpeg_avi(tmp_path / "wall.avi", [np.full((120, 160, 3), 90, np.uint8)] * 60, fps=25)
    main(["predict", f"input={flat}", f"output={tmp_path / 'out'}", "whole_frame=true",
          f"mlflow.tracking_uri={trained['uri']}"])
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(table) == 2 and not table["face_found"].any()
