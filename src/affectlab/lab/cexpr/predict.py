"""A trained compound-expression model on your own videos:

    lightning run experiments/cexpr.py predict model=REF input=PATH [output=DIR]

The model is what a cexpr run trained: MHPF over its modalities, and the visual modality predictors it computed
(zero-shot CLIP, the static and dynamic face models, each fold model's probabilities averaged as for C-EXPR-DB's
videos). A video is cut into the run's windows (4 s every 2 s); the modalities that come from frames are computed,
the others (audio, texts) are missing and masked, as MHPF does for any missing modality; the fused basic-emotion
probabilities become compounds by the run's PPA, spread over the frames.

Out: ``predictions.csv`` (video, frame, time_s, one score column per compound, label) and ``submission.csv``, the
per-frame labels in the ABAW challenge file format.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from affectlab.datasets import videos_of
from affectlab.datasets.cexpr import segment_windows, video_info
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.integrity import write_atomic
from affectlab.fusion import create_mhpf, fused_probabilities, ppa_scores, segments_to_frames, write_submission
from affectlab.lab.cexpr.data import (
    BASIC_EMOTIONS,
    COMPOUND_EXPRESSIONS,
    NUM_BASIC,
    PAIRS,
    WindowedVideo,
    zero_shot_clip,
)
from affectlab.lab.cexpr.modalities import MODELS, VISUAL_MODALITIES, read_window_frames
from affectlab.lab.config import ConfigError
from affectlab.lab.export import Bundle, example_clip, log_model, read_bundle, resolve, write_bundle
from affectlab.lab.report import Progress
from affectlab.lab.run import start
from affectlab.lab.tracking import tracking_uri
from affectlab.models.clip import create_clip
from affectlab.models.face_expression import StaticFaceExpression, TemporalEmotionHead


def frame_modalities(modalities: list[str], models: Collection[str]) -> list[str]:
    """The fused modalities predict computes from a video's frames: zero-shot CLIP, and the face models of `models`
    (the trained models kept). ConfigError when there is none: nothing a video could be given to."""
    visual = [m for m in modalities if m in VISUAL_MODALITIES and (m == "zero_shot_clip" or m in models)]
    if not visual:
        raise ConfigError(f"the model fuses {modalities}, none of which comes from a video's frames; predict on "
                          f"a video needs one of {list(VISUAL_MODALITIES)} (visual.modalities when training)")
    return visual


class Predictor:
    """A cexpr model as a function of videos to per-frame compound expressions."""

    def __init__(self, cfg: DictConfig, modalities: list[str], mhpf: torch.nn.Module, models: dict[str, dict],
                 folder: Path | None = None):
        self.cfg, self.modalities, self.mhpf, self.folder = cfg, modalities, mhpf.eval(), folder
        self.visual = frame_modalities(modalities, models)
        clip = models["clip"]
        quiet = logging.getLogger()  # open_clip's "no pretrained weights loaded": they are the bundle's, loaded below
        level, quiet.level = quiet.level, logging.ERROR
        try:
            self.clip = create_clip(clip["backbone"], clip["pretrained"] if not clip["state"] else None)
        finally:
            quiet.level = level
        if clip["state"]:
            self.clip.model.load_state_dict(clip["state"])
        self.clip.model.eval()
        self.zero_shot = zero_shot_clip(self.clip) if "zero_shot_clip" in self.visual else None
        self.static = [self._net(StaticFaceExpression(NUM_BASIC, cfg.face.static.backbone), state)
                       for state in models.get("static_face", {}).get("folds", [])]
        dynamic = models.get("dynamic_face", {})
        spec = cfg.face.dynamic
        self.dynamic = [self._net(TemporalEmotionHead(dynamic["dim"], cfg.visual.frames_per_window, NUM_BASIC,
                                                      spec.depth, spec.heads), state)
                        for state in dynamic.get("folds", [])]
        self.dynamic_stats = (dynamic.get("mean"), dynamic.get("std"))

    @staticmethod
    def _net(net: torch.nn.Module, state: dict) -> torch.nn.Module:
        net.load_state_dict(state)
        return net.eval()

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Predictor:
        cfg = OmegaConf.create(bundle.meta["config"])
        modalities = list(bundle.meta["modalities"])
        mhpf = create_mhpf(cfg.fusion.kind, len(modalities), NUM_BASIC, cfg.fusion.num_heads)
        mhpf.load_state_dict(torch.load(bundle.file("mhpf"), map_location="cpu", weights_only=True))
        models = {name.removeprefix("model-"): torch.load(bundle.file(name), map_location="cpu", weights_only=True)
                  for name in bundle.meta["files"] if name.startswith("model-")}
        return cls(cfg, modalities, mhpf, models, bundle.folder)

    @torch.no_grad()
    def modality_probabilities(self, video: WindowedVideo) -> tuple[np.ndarray, np.ndarray]:
        """[N, M, 8] basic-emotion probabilities of the video's windows (NaN where missing) and presence [N, M]."""
        frames = read_window_frames([video], self.cfg, self.clip, with_faces=bool(self.static))
        count = len(video.windows)
        probs = np.full((count, len(self.modalities), NUM_BASIC), np.nan)
        for m, name in enumerate(self.modalities):
            if name == "zero_shot_clip" and self.zero_shot is not None:
                probs[:, m] = self.zero_shot.from_embeddings(frames.embeddings)[0].double().numpy()
            elif name == "dynamic_face" and self.dynamic:
                mean, std = self.dynamic_stats
                embeddings = frames.embeddings if mean is None else (frames.embeddings - mean) / std
                probs[:, m] = np.mean([head(embeddings).double().numpy() for head in self.dynamic], axis=0)
            elif name == "static_face" and self.static:
                probs[:, m] = np.mean([net(frames.faces).double().numpy() for net in self.static], axis=0)
        return probs, ~np.isnan(probs).any(axis=2)

    @torch.no_grad()
    def video(self, path: Path) -> pd.DataFrame:
        """One row per frame of the video: compound scores and the label."""
        count, fps = video_info(path)
        data = self.cfg.data
        windows = segment_windows(count, fps, data.window_s, data.hop_s, data.min_last_s)
        if not len(windows):
            raise DatasetError(f"{path}: {count} frame(s) at {fps:g} fps make no window of {data.window_s} s; expected "
                               f"a video of at least {data.min_last_s} s")
        video = WindowedVideo(path.stem, path, count, windows, np.full(count, -1))
        probs, present = self.modality_probabilities(video)
        fused = self.mhpf(torch.as_tensor(np.nan_to_num(probs), dtype=torch.float32), torch.as_tensor(present))
        basic = fused_probabilities(fused).double().numpy()
        scores = ppa_scores(basic, PAIRS, weighted=self.cfg.compound.ppa_weighted, mask=self.cfg.compound.ppa_mask)
        per_frame = segments_to_frames(windows[:, 0], windows[:, 1], scores, count)
        table = pd.DataFrame(per_frame, columns=list(COMPOUND_EXPRESSIONS))
        table.insert(0, "time_s", np.arange(count) / fps)
        table.insert(0, "frame", np.arange(1, count + 1))
        table.insert(0, "video", path.stem)
        table["label"] = [COMPOUND_EXPRESSIONS[i] for i in per_frame.argmax(axis=1)]
        return table

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The pyfunc's predict: a ``path`` column of videos -> one row per frame of each."""
        if "path" not in frame.columns:
            raise DatasetError(f"the input has columns {list(frame.columns)}; expected a 'path' column of videos")
        paths = [Path(str(p)).expanduser() for p in frame["path"]]
        paths = [self.folder / p if not p.exists() and self.folder and (self.folder / p).exists() else p for p in paths]
        return pd.concat([self.video(p) for p in named_once(paths)], ignore_index=True)


def named_once(videos: list[Path]) -> list[Path]:
    """The videos, each named by its file name without the extension, as a row of predictions.csv and the ABAW
    submission file name it; DatasetError for two videos of one name (a.mp4 and a.avi would merge into one entry)."""
    seen: dict[str, Path] = {}
    for path in videos:
        other = seen.setdefault(path.stem, path)
        if other != path:
            raise DatasetError(f"{other} and {path}: two videos named {path.stem!r}; expected one video per name (the "
                               "ABAW submission file names a video by its file name without the extension)")
    return videos


def export(logger, cfg: DictConfig, modalities: list[str], bank, tables: Path | None) -> str | None:
    """The fusion of every modality (the bank's last net) and the visual models it reads, as an MLflow model
    registered as affectlab-cexpr."""
    if logger is None:
        return None
    models = sorted((tables / MODELS).glob("*.pt")) if tables is not None else []
    try:
        frame_modalities(modalities, [path.stem for path in models])
    except ConfigError as error:
        print(f"the run's model is not registered: {error}", flush=True)
        return None
    last = len(bank.subsets) - 1
    files: dict[str, object] = {"mhpf": dict(zip(bank.names, (p.cpu() for p in bank.state_of(last))))}
    files.update({f"model-{path.stem}": path for path in models})
    outputs = [("video", "string"), ("frame", "long"), ("time_s", "double"),
               *((c, "double") for c in COMPOUND_EXPRESSIONS), ("label", "string")]
    example = pd.DataFrame({"path": ["example.avi"]})
    with tempfile.TemporaryDirectory(prefix="affectlab-bundle-") as folder:  # the face models: not left in /tmp
        bundle = write_bundle(Path(folder), "cexpr", list(COMPOUND_EXPRESSIONS),
                              OmegaConf.to_container(cfg, resolve=True), files, modalities=modalities,
                              basic=list(BASIC_EMOTIONS))
        example_clip(bundle.folder)
        return log_model(logger, bundle, example, outputs, [("path", "string", True)])


def predict(cfg: DictConfig) -> Path:
    settings = cfg.predict
    if not settings.input:
        raise ConfigError("predict needs input=<a video or a folder of videos>")
    start(cfg)  # threads for this machine (num_threads), seeded
    source = Path(str(settings.input)).expanduser()
    if not source.exists():
        raise DatasetError(f"input={settings.input}: no such file or folder")
    videos = named_once(videos_of(source))
    predictor = Predictor.from_bundle(read_bundle(resolve(settings.model, "cexpr",
                                                          tracking_uri(cfg.mlflow.tracking_uri))))
    tables = []
    with Progress(len(videos), "videos") as progress:
        for video in videos:
            tables.append(predictor.video(video))
            progress.advance()
    table = pd.concat(tables, ignore_index=True)
    output = Path(str(settings.output)).expanduser()
    labels = {name: np.array([COMPOUND_EXPRESSIONS.index(x) for x in rows["label"]])
              for name, rows in table.groupby("video", sort=False)}
    write_atomic(output / "predictions.csv", lambda path: table.to_csv(path, index=False, float_format="%.6f"))
    write_atomic(output / "submission.csv", lambda path: write_submission(path, labels, COMPOUND_EXPRESSIONS))
    print(f"{len(table)} frame(s) of {len(videos)} video(s) -> {output / 'predictions.csv'} and the challenge file "
          f"{output / 'submission.csv'}; modalities from the frames: {predictor.visual}", flush=True)
    return output
