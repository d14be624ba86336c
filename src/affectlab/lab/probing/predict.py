"""The trained probes as something to use: the bundle a run logs (registered as ``affectlab-probing``), the
`Predictor` built from it, and the predict command.

    lightning run experiments/probing.py predict model=REF input=texts.txt [output=DIR]

Texts (a text file, one per line, or a CSV/TSV/JSONL/JSON/Parquet table with a text column: `read_texts`) -> every layer's probe
probabilities (``predictions.csv``: text, layer, one column per class, label) and, for the first texts, the best
layer's probe read token by token (``trajectories/NN.csv`` + ``.png``). The bundle holds the probes' weights and
standardisation, the layers, the pooling, the input format, the classes and the language model's name and revision:
the language model itself is loaded by name, as in training.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.integrity import write_atomic
from affectlab.datasets.text_tables import read_texts
from affectlab.lab.config import ConfigError
from affectlab.lab.export import Bundle, ModelNotFoundError, log_model, read_bundle, resolve, write_bundle
from affectlab.lab.probing.data import build_extractor, model_source
from affectlab.lab.run import start
from affectlab.lab.sweep import slug
from affectlab.lab.tracking import tracking_uri
from affectlab.probing import LayerProbes, load_model, plot_token_trajectory, token_trajectory

EXPERIMENT = "probing"


def write_probe_bundle(folder: Path, cfg: DictConfig, probes: LayerProbes, classes: Sequence[str], layers: list[int],
                       info: dict, best_layer: int, multi_label: bool) -> Bundle:
    """The bundle of a run's probes: weights and standardisation, and what reads the texts the way training did."""
    kind = probes.kind
    architecture = {"kind": kind, "width": int(probes.w1.shape[2]) if kind == "mlp" else None,
                    "hidden_size": int(info["hidden_size"]), "num_classes": len(classes), "layers": list(layers)}
    language_model = {"name": str(cfg.model.name), "revision": info["revision"], "input_format": cfg.model.input_format,
                      "pooling": info["pooling"], "max_length": int(info["max_length"]),
                      "padding_side": cfg.model.padding_side}
    return write_bundle(folder, EXPERIMENT, classes, OmegaConf.to_container(cfg, resolve=True),
                        {"probes": {k: v.detach().cpu() for k, v in probes.state_dict().items()}},
                        architecture=architecture, language_model=language_model, best_layer=int(best_layer),
                        multi_label=bool(multi_label))


def output_columns(classes: Sequence[str]) -> list[tuple[str, str]]:
    return [("text", "string"), ("layer", "long"), *((name, "double") for name in classes), ("label", "string")]


def log_probe_model(logger, bundle: Bundle, example_texts: Sequence[str]) -> str | None:
    """The bundle as the run's MLflow model, registered as affectlab-probing (None off rank 0)."""
    return log_model(logger, bundle, pd.DataFrame({"text": list(example_texts)}), output_columns(bundle.classes),
                     [("text", "string", True)])


class Predictor:
    """Per-layer probe probabilities of texts, and a text's per-token trajectory at the best layer."""

    def __init__(self, bundle: Bundle, probes: LayerProbes, extractor):
        self.bundle, self.probes, self.extractor = bundle, probes, extractor
        self.classes = bundle.classes
        self.layers = list(bundle.meta["architecture"]["layers"])
        self.best_layer = int(bundle.meta["best_layer"])
        self.multi_label = bool(bundle.meta["multi_label"])

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Predictor:
        if bundle.experiment != EXPERIMENT:
            raise ModelNotFoundError(f"{bundle.folder}: a model of {bundle.experiment!r}, not of {EXPERIMENT!r}")
        shape, lm = bundle.meta["architecture"], bundle.meta["language_model"]
        probes = LayerProbes(len(shape["layers"]), shape["hidden_size"], shape["num_classes"], kind=shape["kind"],
                             width=shape["width"] or 256)
        probes.load_state_dict(torch.load(bundle.file("probes"), map_location="cpu", weights_only=True))
        model, tokenizer = load_model(model_source(lm["name"]), revision=None if lm["revision"] == "local"
                                      else lm["revision"])
        spec = {"padding_side": lm["padding_side"], "layers": shape["layers"], "pooling": lm["pooling"],
                "input_format": lm["input_format"], "max_length": lm["max_length"]}
        return cls(bundle, probes.eval(), build_extractor(spec, model, tokenizer, layers=list(shape["layers"])))

    @torch.no_grad()
    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """``[L, N, C]``: every layer's probe probabilities (softmax; sigmoid per label when multi-label)."""
        logits = self.probes(self.extractor(list(texts)))
        return logits.sigmoid() if self.multi_label else logits.softmax(-1)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame[text]`` -> one row per text and layer: text, layer, a probability column per class, label (the
        most probable class; multi-label: the classes above 0.5, comma-separated)."""
        if "text" not in frame.columns:
            raise DatasetError(f"the input has columns {list(frame.columns)}; expected a 'text' column")
        texts = [str(text) for text in frame["text"]]
        if not texts:
            raise DatasetError("no text to predict: expected at least one row")
        probabilities = self.probabilities(texts)
        rows = []
        for index, text in enumerate(texts):
            for position, layer in enumerate(self.layers):
                values = probabilities[position, index]
                if self.multi_label:
                    label = ",".join(c for c, p in zip(self.classes, values.tolist()) if p > 0.5)
                else:
                    label = self.classes[int(values.argmax())]
                rows.append({"text": text, "layer": layer, **dict(zip(self.classes, values.double().tolist())),
                             "label": label})
        return pd.DataFrame(rows, columns=[name for name, _ in output_columns(self.classes)])

    def trajectory(self, text: str):
        """The best layer's probe read at every token of ``text`` (a `TokenTrajectory` of probabilities)."""
        return token_trajectory(self.extractor, text, self.probes, self.classes, layer=self.best_layer,
                                kind="probability", multi_label=self.multi_label)


def predict(cfg: DictConfig) -> pd.DataFrame:
    """The predict command: checks the input and the model first (one line for what is wrong, nothing written),
    then writes ``predictions.csv`` and the trajectories into ``predict.output``; returns the predictions."""
    spec = cfg.predict
    if spec.input is None:
        raise ConfigError("predict.input is not set: give the texts as input=PATH (a .txt file, one text per line, or "
                          "a table with a text column)")
    start(cfg)  # threads for this machine (num_threads), seeded
    texts = read_texts(Path(str(spec.input)).expanduser(), str(spec.text_column))
    folder = resolve(None if spec.model is None else str(spec.model), EXPERIMENT, tracking_uri(cfg.mlflow.tracking_uri))
    bundle = read_bundle(folder)
    predictor = Predictor.from_bundle(bundle)  # refuses another experiment's model
    frame = predictor.predict_frame(pd.DataFrame({"text": texts}))
    trajectories = [predictor.trajectory(text) for text in texts[: int(spec.trajectories)]]
    output = Path(str(spec.output)).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / "predictions.csv", lambda scratch: frame.to_csv(scratch, index=False))
    with tempfile.TemporaryDirectory(prefix="affectlab-") as temporary:
        for index, (text, trajectory) in enumerate(zip(texts, trajectories)):
            stem = output / "trajectories" / f"{index:03d}-{slug(text)[:40] or 'text'}"
            stem.parent.mkdir(exist_ok=True)
            write_atomic(stem.with_suffix(".csv"), trajectory.write_csv)
            figure = plot_token_trajectory(trajectory, Path(temporary) / "trajectory.png",
                                           title=f"layer {trajectory.layer}: {text[:60]}")
            write_atomic(stem.with_suffix(".png"), lambda scratch: scratch.write_bytes(figure.read_bytes()))
    print(f"{len(texts)} texts x {len(predictor.layers)} layers -> {output / 'predictions.csv'}"
          + (f"; {len(trajectories)} trajectories (layer {predictor.best_layer}) in {output / 'trajectories'}"
             if trajectories else ""), flush=True)
    return frame
