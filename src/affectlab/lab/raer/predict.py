"""A trained RAER model on your own videos:

    lightning run experiments/raer.py predict model=REF input=PATH [output=DIR] [window_s=2 hop_s=1 whole_frame=false]

PATH is a video file, a folder of videos, or a RAER-layout folder (its annotated clips, read as training reads them,
with the true label beside the prediction). A video is cut into windows of ``window_s`` seconds every ``hop_s``, each
sampling the model's frame count; faces are found with the project's detector and the body/context box derived as
`prepare` derives it (affectlab.datasets.windows), the crops made exactly as in training. REF: see
`affectlab.lab.export.resolve` (none: the newest version of the registered model affectlab-raer; with
``config=raer_authors model.checkpoint=…`` the authors' released weights).

Out: ``predictions.csv`` (video, window, start_s, end_s, one probability column per class, label) and one
``<video>.timeline.png`` per video, written only once every input was predicted.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from affectlab.datasets import RaerDataset, load_label_set, load_raer_split, videos_of
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.integrity import write_atomic
from affectlab.datasets.raer import normalise_pixels
from affectlab.lab.checkpoints import check_architecture
from affectlab.lab.config import ConfigError
from affectlab.lab.export import Bundle, example_clip, log_model, read_bundle, resolve
from affectlab.lab.raer.nets import InputSpec, architecture, build_net
from affectlab.lab.report import Progress
from affectlab.lab.run import start
from affectlab.lab.tracking import tracking_uri

if TYPE_CHECKING:
    from affectlab.datasets.windows import WindowPlan


class Predictor:
    """A RAER model as a function of videos (and RAER-layout folders) to per-window class probabilities."""

    def __init__(self, net: torch.nn.Module, classes: list[str], inputs: InputSpec, cfg: DictConfig,
                 folder: Path | None = None):
        self.net, self.classes, self.inputs, self.cfg, self.folder = net.eval(), classes, inputs, cfg, folder
        self.num_frames = int(cfg.data.num_segments)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Predictor:
        """The network the bundle's config describes, built without downloading anything (its weights are all in the
        bundle), checked against the architecture the bundle records, with the bundle's weights."""
        cfg = OmegaConf.create(bundle.meta["config"])
        saved = bundle.meta["architecture"]
        cfg.model.pretrained, cfg.model.checkpoint = None, None
        if "quick_gelu" in saved:
            cfg.model.quick_gelu = saved["quick_gelu"]
        quiet = logging.getLogger()  # open_clip's "no pretrained weights loaded": they are the bundle's, loaded below
        with torch.random.fork_rng():  # building draws random weights that the bundle's replace
            level, quiet.level = quiet.level, logging.ERROR
            try:
                net, classes, inputs = build_net(cfg)
            finally:
                quiet.level = level
        check_architecture({"architecture": saved}, architecture(cfg, net, inputs), f"model {bundle.folder}")
        weights = torch.load(bundle.file("weights"), map_location="cpu", weights_only=True)
        if all(k.startswith("net.") for k in weights):  # a training checkpoint's module: its net's weights
            weights = {k.removeprefix("net."): v for k, v in weights.items()}
        net.load_state_dict(weights, strict=True)
        if classes != bundle.classes:
            raise ConfigError(f"model {bundle.folder}: its classes {bundle.classes} are not those of its label set "
                              f"{cfg.data.label_set} ({classes})")
        return cls(net, classes, inputs, cfg, bundle.folder)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Predictor:
        """The network a config builds (the authors' weights with config=raer_authors model.checkpoint=…)."""
        net, classes, inputs = build_net(cfg)
        return cls(net, classes, inputs, cfg)

    @torch.no_grad()
    def probabilities(self, faces: np.ndarray, contexts: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """uint8 crops [W, T, 3, S, S] of each stream -> class probabilities [W, C]. CLIP-CAER's image encoder sees
        each distinct crop once: overlapping windows share frames, and their crops with them."""
        crops = {"face": faces, "context": contexts}
        if not len(faces):
            return np.zeros((0, len(self.classes)))
        if hasattr(self.net, "encode_video"):
            inputs = {stream: self._embedded(crops[stream], batch_size) for stream in self.net_streams}
            logits = torch.cat([self.net(**{s: x[i:i + batch_size] for s, x in inputs.items()})
                                for i in range(0, len(faces), batch_size)])
        else:
            logits = torch.cat([self.net(**{s: self._pixels(crops[s][i:i + batch_size]) for s in self.net_streams})
                                for i in range(0, len(faces), batch_size)])
        return torch.softmax(logits.float(), dim=-1).numpy()

    def _pixels(self, crops: np.ndarray) -> torch.Tensor:
        return normalise_pixels(torch.from_numpy(np.ascontiguousarray(crops)), self.inputs.mean, self.inputs.std)

    def _embedded(self, crops: np.ndarray, batch_size: int) -> torch.Tensor:
        """[W, T, 3, S, S] crops -> [W, T, D] image-encoder embeddings, each distinct crop encoded once."""
        flat = crops.reshape(-1, *crops.shape[2:])
        first: dict[bytes, int] = {}
        where = np.array([first.setdefault(crop.tobytes(), len(first)) for crop in flat])
        distinct = flat[np.unique(where, return_index=True)[1]]  # the crop of id k at row k
        encoded = torch.cat([self.net.image_encoder(self._pixels(distinct[i:i + 4 * batch_size]))
                             for i in range(0, len(distinct), 4 * batch_size)])
        return encoded[torch.from_numpy(where)].view(*crops.shape[:2], -1)

    @property
    def net_streams(self) -> tuple[str, ...]:
        return tuple(self.cfg.model.streams)

    def video(self, path: Path, *, window_s: float, hop_s: float, whole_frame: bool, batch_size: int = 16,
              progress: Progress | None = None, plan: WindowPlan | None = None) -> pd.DataFrame:
        """One row per window of the video at `path` (`plan`: its plan_windows with these settings, if made already)."""
        from affectlab.datasets.windows import cut_windows

        rows = []
        for chunk in cut_windows(path, num_frames=self.num_frames, window_s=window_s, hop_s=hop_s,
                                 image_size=self.inputs.image_size, face_margin=self.cfg.data.face_margin,
                                 reader=self.cfg.data.video_reader, whole_frame=whole_frame, plan=plan):
            probs = self.probabilities(chunk.faces, chunk.contexts, batch_size)
            for k in range(len(chunk)):
                rows.append({"video": path.name, "window": chunk.first + k, "start_s": float(chunk.start_s[k]),
                             "end_s": float(chunk.end_s[k]), "face_found": bool(chunk.face_found[k]),
                             **dict(zip(self.classes, probs[k].tolist()))})
            if progress is not None:
                progress.advance(len(chunk))
        return self._labelled(rows)

    def raer_folder(self, root: Path, batch_size: int = 16, progress: Progress | None = None) -> pd.DataFrame:
        """One row per annotated clip of a RAER-layout folder (both splits present), with its true label."""
        label_set = load_label_set(self.cfg.data.label_set)
        rows = []
        for split in ("train", "test"):
            if not (root / label_set.annotation_file(split)).is_file():
                continue
            try:
                clips = load_raer_split(root, split, label_set)
            except DatasetError as error:
                raise DatasetError(f"{error} (the model predicts {len(self.classes)} classes of {label_set.name}: "
                                   f"{', '.join(self.classes)})") from None
            dataset = RaerDataset(root, clips, num_segments=self.num_frames, train=False,
                                  image_size=self.inputs.image_size, face_margin=self.cfg.data.face_margin,
                                  normalise=False, num_classes=len(self.classes), contexts=None,
                                  video_reader=self.cfg.data.video_reader)
            for index, clip in enumerate(clips):
                item = dataset[index]
                probs = self.probabilities(item["face"][None].numpy(), item["context"][None].numpy(), batch_size)[0]
                rows.append({"video": clip.clip_dir, "window": 0, "start_s": math.nan, "end_s": math.nan,
                             "face_found": True, **dict(zip(self.classes, probs.tolist())),
                             "true": self.classes[clip.label], "split": split})
                if progress is not None:
                    progress.advance()
        if not rows:
            raise DatasetError(f"{root}: a RAER layout without annotation files for {label_set.name} "
                               f"({label_set.annotation_file('train')}, {label_set.annotation_file('test')})")
        return self._labelled(rows)

    def _labelled(self, rows: list[dict]) -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        frame.insert(frame.columns.get_loc(self.classes[-1]) + 1, "label",
                     [self.classes[i] for i in frame[self.classes].to_numpy().argmax(axis=1)])
        return frame

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The pyfunc's predict: a ``path`` column (videos, or RAER-layout folders) and optional ``window_s``,
        ``hop_s``, ``whole_frame`` columns -> the rows the predict command writes."""
        if "path" not in frame.columns:
            raise DatasetError(f"the input has columns {list(frame.columns)}; expected a 'path' column of videos")
        defaults = self.cfg.get("predict") or {}
        parts = []
        for _, row in frame.iterrows():
            path = Path(str(row["path"])).expanduser()
            if not path.exists() and self.folder is not None and (self.folder / path).exists():
                path = self.folder / path  # the model's own example clip
            if path.is_dir() and (path / "annotation").is_dir():
                parts.append(self.raer_folder(path))
                continue
            options = {name: row[name] if name in row and pd.notna(row[name]) else defaults.get(name, fallback)
                       for name, fallback in (("window_s", 2.0), ("hop_s", 1.0), ("whole_frame", False))}
            parts.append(self.video(path, window_s=float(options["window_s"]), hop_s=float(options["hop_s"]),
                                    whole_frame=str(options["whole_frame"]).lower() in ("true", "1")))
        return pd.concat(parts, ignore_index=True)


def predictor_for(cfg: DictConfig) -> Predictor:
    """The model `predict.model` names; the authors' weights when it is null and model.checkpoint is set; else the
    newest registered affectlab-raer."""
    if cfg.predict.model is None and cfg.model.checkpoint:
        return Predictor.from_config(cfg)
    folder = resolve(cfg.predict.model, "raer", tracking_uri(cfg.mlflow.tracking_uri))
    predictor = Predictor.from_bundle(read_bundle(folder))
    defaults = _defaults()
    for key, mine in (("data.num_segments", cfg.data.num_segments), ("data.label_set", cfg.data.label_set)):
        theirs = OmegaConf.select(predictor.cfg, key)
        if mine != OmegaConf.select(defaults, key) and mine != theirs:  # set by the user, not what the model knows
            raise ConfigError(f"{key}={mine}: the model {folder} was trained with {key}={theirs}; its weights "
                              f"predict {len(predictor.classes)} classes from {predictor.num_frames} frames")
    return predictor


def _defaults() -> DictConfig:
    from affectlab.lab.config import defaults, schema_of

    return defaults(schema_of("raer"))


def predict(cfg: DictConfig) -> Path:
    """The predict command: every input predicted first, then predictions.csv and the timelines written."""
    from affectlab.lab.timeline import plot_timeline

    settings = cfg.predict
    if not settings.input:
        raise ConfigError("predict needs input=<a video, a folder of videos, or a RAER-layout folder>")
    start(cfg)  # threads for this machine (num_threads), seeded
    source = Path(str(settings.input)).expanduser()
    if not source.exists():
        raise DatasetError(f"input={settings.input}: no such file or folder")
    predictor = predictor_for(cfg)
    if source.is_dir() and (source / "annotation").is_dir():
        clips = sum(1 for split in ("train", "test")
                    for line in _lines(source / load_label_set(predictor.cfg.data.label_set).annotation_file(split)))
        with Progress(clips, f"clips of {source.name}") as progress:
            frames = [predictor.raer_folder(source, settings.batch_size, progress)]
        videos = []
    else:
        from affectlab.datasets.windows import plan_windows

        videos = videos_of(source, "a video, a folder of videos or a RAER-layout folder (annotation/, bounding_box/)")
        plans = [plan_windows(v, num_frames=predictor.num_frames, window_s=settings.window_s, hop_s=settings.hop_s,
                              reader=predictor.cfg.data.video_reader) for v in videos]
        with Progress(sum(len(p) for p in plans), f"windows of {len(videos)} video(s)") as progress:
            frames = [predictor.video(v, window_s=settings.window_s, hop_s=settings.hop_s,
                                      whole_frame=settings.whole_frame, batch_size=settings.batch_size,
                                      progress=progress, plan=plan) for v, plan in zip(videos, plans)]
    table = pd.concat(frames, ignore_index=True)
    output = Path(str(settings.output)).expanduser()
    write_atomic(output / "predictions.csv", lambda scratch: table.to_csv(scratch, index=False, float_format="%.6f"))
    for video in videos:
        rows = table[table["video"] == video.name]

        def plot(scratch: Path) -> None:  # called at once, by write_atomic
            png = scratch.with_suffix(".png")  # matplotlib names the format by the suffix; write_atomic's is .tmp
            try:
                plot_timeline(rows["start_s"], rows["end_s"], rows[predictor.classes].to_numpy(), predictor.classes,
                              png, title=video.name)
                png.replace(scratch)
            finally:
                png.unlink(missing_ok=True)

        write_atomic(output / f"{video.name}.timeline.png", plot)
    counts = table["label"].value_counts().to_dict()
    print(f"{len(table)} window(s) of {max(len(videos), 1)} input(s) -> {output / 'predictions.csv'}"
          f"{' and ' + str(len(videos)) + ' timeline(s)' if videos else ''}; labels: {counts}", flush=True)
    return output


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []


def log_raer_model(logger, bundle: Bundle) -> str | None:
    """Log a RAER bundle as the MLflow model of the run (registered as affectlab-raer), with an example clip."""
    example_clip(bundle.folder)
    columns = [("video", "string"), ("window", "long"), ("start_s", "double"), ("end_s", "double"),
               ("face_found", "boolean"), *((name, "double") for name in bundle.classes), ("label", "string")]
    example = pd.DataFrame({"path": ["example.avi"], "window_s": [2.0], "hop_s": [1.0], "whole_frame": [True]})
    inputs = [("path", "string", True), ("window_s", "double", False), ("hop_s", "double", False),
              ("whole_frame", "boolean", False)]
    return log_model(logger, bundle, example, columns, inputs)
