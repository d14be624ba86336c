"""The MELD experiment's text model on your own texts:

    lightning run experiments/meld.py predict model=REF input=PATH [output=DIR] [text_column=text]

The model is the transcript approach trained on MELD (the words alone: a fine-tuned sequence classifier, or its LoRA
adapters), registered as affectlab-meld when a run trains it. PATH: a text file (one text per line) or a CSV, TSV,
JSONL table with a text column. Out: ``predictions.csv`` (text, one probability column per emotion, label).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.integrity import write_atomic
from affectlab.datasets.text_tables import read_texts
from affectlab.fusion.textualize import text_part
from affectlab.lab.config import ConfigError
from affectlab.lab.export import Bundle, log_model, read_bundle, resolve, write_bundle
from affectlab.lab.meld.module import text_classifier
from affectlab.lab.report import Progress
from affectlab.lab.run import start
from affectlab.lab.tracking import tracking_uri

MODEL_TRAINING = "meld/transcript"  # the training whose model is exported: the words alone, on MELD


class Predictor:
    """MELD's text classifier as a function of texts to emotion probabilities."""

    def __init__(self, net: torch.nn.Module, classes: list[str], batch_size: int = 32):
        self.net, self.classes, self.batch_size = net.eval(), classes, batch_size

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Predictor:
        cfg = OmegaConf.create(bundle.meta["config"])
        # "newly initialised head" (the bundle's weights follow); a level set on modeling_utils also makes it check
        # the tensor-parallel plan, whose "layers were not sharded" warning is as empty here: both are quieted
        quiet = [logging.getLogger(f"transformers.{name}") for name in ("modeling_utils", "distributed.tensor_parallel")]
        levels = [logger.level for logger in quiet]
        for logger in quiet:
            logger.setLevel(logging.ERROR)
        try:
            with torch.random.fork_rng():
                net = text_classifier(cfg, len(bundle.classes), {})
        finally:
            for logger, level in zip(quiet, levels):
                logger.setLevel(level)
        weights = torch.load(bundle.file("weights"), map_location="cpu", weights_only=True)
        if all(k.startswith("net.") for k in weights):  # a training checkpoint's module: its net's weights
            weights = {k.removeprefix("net."): v for k, v in weights.items()}
        net.load_state_dict(weights, strict=True)
        return cls(net, bundle.classes)

    @torch.no_grad()
    def probabilities(self, texts: list[str], progress: Progress | None = None) -> torch.Tensor:
        prompts = [text_part(t) for t in texts]  # what the model read in training: the transcript part of the prompt
        out = []
        for first in range(0, len(prompts), self.batch_size):
            out.append(torch.softmax(self.net(prompts[first:first + self.batch_size]).float(), dim=-1))
            if progress is not None:
                progress.advance(len(out[-1]))
        return torch.cat(out)

    def table(self, texts: list[str], progress: Progress | None = None) -> pd.DataFrame:
        probs = self.probabilities(texts, progress).numpy()
        frame = pd.DataFrame(probs, columns=self.classes)
        frame.insert(0, "text", texts)
        frame["label"] = [self.classes[i] for i in probs.argmax(axis=1)]
        return frame

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The pyfunc's predict: a ``text`` column -> text, one probability column per emotion, label."""
        if "text" not in frame.columns:
            raise DatasetError(f"the input has columns {list(frame.columns)}; expected a 'text' column")
        texts = [str(t) for t in frame["text"]]
        if not texts or not all(t.strip() for t in texts):
            raise DatasetError("the input has an empty text; expected a text in every row")
        return self.table(texts)


def export(sweep, name: str, cfg: DictConfig, net: torch.nn.Module, classes: list[str]) -> str | None:
    """The model of the training `name` logged to its MLflow run and registered as affectlab-meld."""
    if sweep.parent is None:
        return None
    config = {"model": {"text": OmegaConf.to_container(cfg.model.text, resolve=True)}}
    logger = sweep.child_logger(name, None, existing=True)
    example = pd.DataFrame({"text": ["Oh my God, this is amazing!"]})
    outputs = [("text", "string"), *((c, "double") for c in classes), ("label", "string")]
    with tempfile.TemporaryDirectory(prefix="affectlab-bundle-") as folder:  # the weights: not left in /tmp
        bundle = write_bundle(Path(folder), "meld", classes, config,
                              {"weights": {k: v.cpu() for k, v in net.state_dict().items()}}, training=name)
        return log_model(logger, bundle, example, outputs, [("text", "string", True)])


def predict(cfg: DictConfig) -> Path:
    settings = cfg.predict
    if not settings.input:
        raise ConfigError("predict needs input=<a text file, one text per line, or a CSV/TSV/JSONL table>")
    start(cfg)  # threads for this machine (num_threads), seeded
    texts = read_texts(Path(str(settings.input)).expanduser(), settings.text_column)
    folder = resolve(settings.model, "meld", tracking_uri(cfg.mlflow.tracking_uri))
    predictor = Predictor.from_bundle(read_bundle(folder))
    with Progress(len(texts), f"texts of {Path(str(settings.input)).name}") as progress:
        table = predictor.table(texts, progress)
    output = Path(str(settings.output)).expanduser()
    write_atomic(output / "predictions.csv", lambda scratch: table.to_csv(scratch, index=False, float_format="%.6f"))
    print(f"{len(table)} text(s) -> {output / 'predictions.csv'}; labels: {table['label'].value_counts().to_dict()}",
          flush=True)
    return output
