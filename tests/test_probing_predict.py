"""The probing experiment's predict command: a trained run's probes (its registered MLflow model) read texts from a
file and give every layer's probabilities and the best layer's per-token trajectories; the same model loaded by
mlflow.pyfunc in a fresh process gives the same numbers; bad input is one clear line and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from affectlab.lab.cli import console
from affectlab.lab.export import write_bundle
from affectlab.lab.probing import EXPERIMENT, main
from builders import child_env, emotion_texts, write_table

TEXTS = ["I am so furious with you right now", "I am so happy and delighted today", "the bus leaves at nine"]
CLASSES = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose mlflow.db holds one probing run on a small corpus, its probes registered as affectlab-probing."""
    folder = tmp_path_factory.mktemp("trained")
    files = {"train": write_table(folder / "train.csv", emotion_texts(12)),
             "test": write_table(folder / "test.csv", emotion_texts(4, offset=100))}
    main(["data.source=files", *(f"data.{split}={path}" for split, path in files.items()), "data.val_fraction=0.2",
          "model.layers=[0,3,6]", "trainer.accelerator=cpu", "report.resamples=50", "num_threads=1",
          f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}", f"checkpoint_dir={folder / 'checkpoints'}"])
    return folder


def tracking(trained: Path) -> str:
    return f"mlflow.tracking_uri=sqlite:///{trained / 'mlflow.db'}"


def test_predict_writes_every_layers_probabilities_and_the_best_layers_trajectories(trained: Path, tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join([TEXTS[0], "", TEXTS[1], TEXTS[2]]) + "\n", encoding="utf-8")  # a blank line skipped
    output = tmp_path / "out"
    frame = main(["predict", f"input={texts}", f"output={output}", "trajectories=2", tracking(trained)])
    written = pd.read_csv(output / "predictions.csv")
    assert list(written.columns) == ["text", "layer", *CLASSES, "label"]
    assert len(written) == 3 * 3 and written["text"].tolist()[:3] == [TEXTS[0]] * 3
    assert written["layer"].tolist()[:3] == [0, 3, 6]
    assert (written[CLASSES].sum(axis=1) - 1.0).abs().max() < 1e-6
    assert (written[CLASSES].idxmax(axis=1) == written["label"]).all()
    assert written.loc[written["layer"] == 6, "label"].tolist()[:2] == ["anger", "joy"]  # the texts say it plainly
    pd.testing.assert_frame_equal(written, frame, check_exact=False, atol=1e-9)
    trajectories = sorted((output / "trajectories").iterdir())
    assert [p.suffix for p in trajectories] == [".csv", ".png", ".csv", ".png"]
    tokens = pd.read_csv(trajectories[0])
    assert list(tokens.columns) == ["token_index", "token", *CLASSES] and "furious" in tokens["token"].tolist()
    assert (tokens[CLASSES].sum(axis=1) - 1.0).abs().max() < 1e-4


def test_a_table_of_texts_is_read_by_its_column(trained: Path, tmp_path: Path):
    table = tmp_path / "texts.jsonl"
    table.write_text("".join(json.dumps({"id": i, "sentence": t}) + "\n" for i, t in enumerate(TEXTS)))
    frame = main(["predict", f"input={table}", "text_column=sentence", f"output={tmp_path / 'out'}", "trajectories=0",
                  tracking(trained)])
    assert frame["text"].drop_duplicates().tolist() == TEXTS and not (tmp_path / "out" / "trajectories").exists()


@pytest.mark.parametrize("case", ["empty file", "no such model", "another experiment's model", "no input"])
def test_bad_input_is_one_line_and_writes_nothing(trained: Path, tmp_path: Path, capsys, case: str):
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXTS[0] + "\n")
    model = []
    if case == "empty file":
        texts.write_text("\n  \n")
    elif case == "no such model":
        model = ["model=models:/affectlab-probing/99"]
    elif case == "another experiment's model":
        bundle = write_bundle(tmp_path / "raer-model", "raer", ["a", "b"], {}, {})
        model = [f"model={bundle.folder}"]
    output = tmp_path / "out"
    given = [] if case == "no input" else [f"input={texts}"]
    with pytest.raises(SystemExit) as exit:
        console(EXPERIMENT, ["predict", *given, *model, f"output={output}", tracking(trained)])
    errors = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code in (1, 2) and len(errors) == 1 and errors[0].startswith("probing: error: "), errors
    expected = {"empty file": "holds no text", "no such model": "models:/affectlab-probing/99",
                "another experiment's model": "a model of 'raer', not of 'probing'",
                "no input": "input=PATH"}[case]
    assert expected in errors[0]
    assert not output.exists()


@pytest.mark.slow  # a fresh process imports mlflow, torch and transformers and loads the model
def test_the_registered_model_in_a_fresh_process_gives_the_commands_probabilities(trained: Path, tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    command = main(["predict", f"input={texts}", f"output={tmp_path / 'out'}", "trajectories=0", tracking(trained)])
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri('sqlite:///{trained / 'mlflow.db'}')\n"
        "model = mlflow.pyfunc.load_model('models:/affectlab-probing/latest')\n"
        f"model.predict(pd.DataFrame({{'text': {TEXTS!r}}})).to_csv(sys.stdout, index=False)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=child_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    from io import StringIO

    fresh = pd.read_csv(StringIO(done.stdout))
    pd.testing.assert_frame_equal(fresh, command, check_exact=False, atol=1e-6)
