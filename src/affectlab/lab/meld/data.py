"""What the MELD experiment reads: MELD's utterances (the real CSVs, subsampled) or synthetic ones, C-EXPR-DB's fold
clips, their cue tables (given, or synthetic), and the items every approach trains on: a prompt, feature vectors and
which are present, the label; a datamodule over fixed train/val/test items that shards across processes.

MELD's segments are `train/dia{D}_utt{U}`, `dev/dia{D}_utt{U}` (and `test/...`); C-EXPR-DB's are the fold clips
(`Sadly-Fearful/24_Sadly-Fearful_0`). MELD trains on train, validates on dev and reports on test when
`test_sent_emo.csv` is there; without it (as in ../shared/data), dev is the test split and a slice of train validates.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from affectlab.datasets.cexpr import OTHER, fold_segment, read_cexpr_annotation, read_cexpr_folds
from affectlab.datasets.emotion_corpus import EMOTIONS, fix_encoding
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.generated import cache_root
from affectlab.fusion.textualize import CueTables, load_cue_tables, write_synthetic_cue_tables
from affectlab.lab.resumable import ResumableDataLoader
from affectlab.lab.config import ConfigError
from affectlab.lab.meld.clips import CLIP_MODALITIES, ClipEncoder, clip_features
from affectlab.lab.config import SHARED_DATA
from affectlab.lab.report import loud_warning
from affectlab.lab.sharding import eval_shards, train_sampler
from affectlab.lab.tracking import log_dataset

TEXT_APPROACHES = {"transcript": ["text"]}  # the prompt's modalities of a text approach other than "text"


@dataclass(frozen=True)
class Sample:
    segment: str  # the key of the cue tables
    label: int
    transcript: str | None  # None: the cue tables' transcript
    source: str  # "file:line" it came from


def read_meld_utterances(path: str | Path, split: str) -> list[Sample]:
    """MELD's ``<split>_sent_emo.csv``, one sample per row, keyed ``<split>/dia{D}_utt{U}``; labels index EMOTIONS.

    Unlike `read_meld` (a text corpus), rows are kept one for one (repeated short utterances too) with their ids,
    so that each finds its clip's cues; mis-encoded characters are repaired with the same `fix_encoding`.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; expected MELD's {split}_sent_emo.csv")
    samples = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in ("Utterance", "Emotion", "Dialogue_ID", "Utterance_ID") if c not in columns]
        if missing:
            raise DatasetError(f"{path}:1: no column {missing}; has {reader.fieldnames}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            emotion = (row["Emotion"] or "").strip().lower()
            if emotion not in EMOTIONS:
                raise DatasetError(f"{where}: emotion {row['Emotion']!r} is not one of MELD's {list(EMOTIONS)}")
            text = " ".join(fix_encoding(row["Utterance"] or "").split())
            if not text:
                raise DatasetError(f"{where}: the utterance is empty; expected the transcript of the clip")
            dialogue, utterance = (row["Dialogue_ID"] or "").strip(), (row["Utterance_ID"] or "").strip()
            if not (dialogue.isdigit() and utterance.isdigit()):
                raise DatasetError(f"{where}: Dialogue_ID={dialogue!r}, Utterance_ID={utterance!r}; expected integers")
            samples.append(Sample(f"{split}/dia{dialogue}_utt{utterance}", EMOTIONS.index(emotion), text, where))
    if not samples:
        raise DatasetError(f"{path}: no utterance rows")
    return samples


def random_sample(samples: Sequence[Sample], size: int | None, seed: int) -> list[Sample]:
    """``size`` samples drawn uniformly (the class distribution kept in expectation), all when None."""
    if size is None or size >= len(samples):
        return list(samples)
    return [samples[i] for i in sorted(random.Random(seed).sample(range(len(samples)), size))]


def synthetic_meld(meld: DictConfig, seed: int) -> dict[str, list[Sample]]:
    """MELD-shaped samples without transcripts (the synthetic cue tables write them), when the CSVs are absent."""
    rng = random.Random(seed)
    sizes = {"train": meld.train_size or 300, "dev": meld.dev_size or 100}
    return {split: [Sample(f"{split}/dia{i}_utt0", rng.randrange(len(EMOTIONS)), None, f"synthetic {split} {i}")
                    for i in range(size)] for split, size in sizes.items()}


MELD_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


@dataclass
class MeldSplits:
    """MELD's train/val/test samples and how each was made (``how``: split -> one line); ``toy`` when synthetic."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    how: dict[str, str]
    toy: bool
    source: str

    def parts(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def every(self) -> list[Sample]:
        return self.train + self.val + self.test


def carve_val(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """``(train, val)``: ``fraction`` of the samples (at least one) drawn uniformly for validation; order kept."""
    count = max(1, int(round(fraction * len(samples))))
    chosen = set(random.Random(seed).sample(range(len(samples)), count))
    return ([s for i, s in enumerate(samples) if i not in chosen], [s for i, s in enumerate(samples) if i in chosen])


def meld_splits(cfg: DictConfig) -> MeldSplits:
    """Train on train, validate on dev, report on test when ``test_sent_emo.csv`` is in the folder; without it, dev is
    the test split and validation is carved from train (``data.val_fraction``), as the console and the MLflow tag
    ``data.meld.test`` say. Each split is subsampled as configured. Synthetic utterances when ``data.meld.dir`` is
    null, or auto and the shared data is absent (a loud warning: their figures mean nothing)."""
    meld = cfg.data.meld
    folder = SHARED_DATA / "meld" if meld.dir == "auto" else Path(str(meld.dir)).expanduser() if meld.dir else None
    if folder is not None and not folder.is_dir():
        if meld.dir != "auto":
            raise ConfigError(f"data.meld.dir={meld.dir!r} is not a folder (expected {', '.join(MELD_FILES.values())}"
                              ", the test file optional)")
        loud_warning(f"{folder} is absent: MELD is replaced by SYNTHETIC utterances, whose figures MEAN NOTHING "
                     "(data.meld.dir=<folder of MELD's CSVs> to fix)")
        folder = None
    elif folder is None:
        rank_zero_warn("data.meld.dir=null: MELD is replaced by SYNTHETIC utterances, whose figures mean nothing")
    if folder is None:
        synthetic = synthetic_meld(meld, cfg.seed)
        train, val = carve_val(synthetic["train"], cfg.data.val_fraction, cfg.seed)
        carved = f"carved from synthetic train ({cfg.data.val_fraction:g} of it)"
        return MeldSplits(train, val, synthetic["dev"], {"train": "synthetic", "val": carved, "test": "synthetic dev"},
                          True, "synthetic MELD")
    read = {split: read_meld_utterances(folder / name, split) for split, name in MELD_FILES.items()
            if split != "test" or (folder / name).is_file()}
    train = random_sample(read["train"], meld.train_size, cfg.seed)
    dev = random_sample(read["dev"], meld.dev_size, cfg.seed)
    sampled = {"train": f"{len(train)} of {len(read['train'])}", "dev": f"{len(dev)} of {len(read['dev'])}"}
    if "test" in read:
        test = random_sample(read["test"], meld.test_size, cfg.seed)
        how = {"train": f"{MELD_FILES['train']} ({sampled['train']})",
               "val": f"{MELD_FILES['dev']} ({sampled['dev']}): validates",
               "test": f"{MELD_FILES['test']} ({len(test)} of {len(read['test'])}): reports"}
        return MeldSplits(train, dev, test, how, False, str(folder))
    train, val = carve_val(train, cfg.data.val_fraction, cfg.seed)
    how = {"train": f"{MELD_FILES['train']} ({sampled['train']}) less the validation part",
           "val": f"carved from train ({cfg.data.val_fraction:g} of the sample, seed {cfg.seed})",
           "test": f"{MELD_FILES['dev']} ({sampled['dev']}): no {MELD_FILES['test']} in {folder}, so MELD's dev split "
                   "is the test split and validation is carved from train"}
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"MELD: {how['test']}", flush=True)
    return MeldSplits(train, val, dev, how, False, str(folder))


def log_meld_splits(parent, splits: MeldSplits) -> None:
    """The splits as the run's dataset inputs (toy when synthetic) and how the test split was made as a tag."""
    if parent is None:
        return
    for split, samples in splits.parts().items():
        digest = hashlib.sha256("\n".join(f"{s.segment}\t{s.label}" for s in samples).encode()).hexdigest()[:16]
        log_dataset(parent, f"meld/{split}", f"{splits.source}: {splits.how[split]}", len(samples), context=split,
                    digest=digest, toy=splits.toy)
    parent.experiment.set_tag(parent.run_id, "data.meld.test", splits.how["test"])


def _folder(configured, default: Path) -> Path | None:
    """``auto`` -> ``default`` when it exists (else None); otherwise the configured folder, which must exist."""
    if configured == "auto":
        return default if default.is_dir() else None
    if configured is None:
        return None
    path = Path(str(configured)).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{path}: not a folder")
    return path


def cexpr_fold(folds_dir: Path, annotation_dir: Path | None, split: int, other: bool) -> dict[str, list[Sample]]:
    """One C-EXPR-DB fold as {"train", "val", "test"}; ``other`` False drops the Other clips (7 classes).

    With the annotation folder, each clip must be a segment of its video's annotation: a fold list naming a clip that
    does not exist is an error naming the list and its line.
    """
    parts = read_cexpr_folds(folds_dir, split)
    annotations: dict[str, list] = {}
    found = {}
    for part, clips in parts.items():
        samples = []
        for clip in clips:
            if clip.label == OTHER and not other:
                continue
            if annotation_dir is not None:
                if clip.video not in annotations:
                    path = annotation_dir / f"{clip.video}.csv"
                    if not path.is_file():
                        raise DatasetError(f"{clip.source}: clip {clip.clip!r} names video {clip.video}, which has no "
                                           f"annotation {path}")
                    annotations[clip.video] = read_cexpr_annotation(path)
                fold_segment(clip, annotations[clip.video])  # raises, naming clip.source, if there is no such clip
            samples.append(Sample(clip.clip, clip.label, None, clip.source))
        found[part] = samples
    return found


def cue_tables(cfg: DictConfig, name: str, samples: Sequence[Sample], num_classes: int, folder: Path) -> CueTables:
    """``data.cue_tables``/<name>/ when configured, else synthetic tables for ``samples`` written under ``folder``.
    Transcripts given by the samples (MELD's CSV) take the place of the tables' own."""
    if cfg.data.cue_tables:
        tables = load_cue_tables(Path(str(cfg.data.cue_tables)).expanduser() / name)
    else:
        synthetic = OmegaConf.to_container(cfg.data.synthetic)
        unique = {s.segment: s for s in samples}
        given = {s.segment: s.transcript for s in unique.values() if s.transcript is not None}
        write_synthetic_cue_tables(folder / name, [(s.segment, s.label) for s in unique.values()], num_classes,
                                   transcripts=given or None, seed=cfg.seed, **synthetic)
        tables = load_cue_tables(folder / name)
    given = {s.segment: s.transcript for s in samples if s.transcript is not None}
    if given:
        tables.transcripts = {**(tables.transcripts or {}), **given}
    for sample in samples:  # a sample must at least have its words
        if sample.segment not in (tables.transcripts or {}):
            raise DatasetError(f"{sample.source}: segment {sample.segment!r} has no transcript in {tables.source}")
    return tables


class Items(Dataset):
    """One dict per sample: the prompt, the feature vectors {modality: [D]}, which are present, the label."""

    def __init__(self, items: list[dict]):
        self.items = items
        self.labels = [int(item["label"]) for item in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return dict(self.items[index])


def build_items(samples: Sequence[Sample], tables: CueTables, text_features: dict[str, np.ndarray],
                cfg: DictConfig, clips: ClipVectors | None = None) -> Items:
    """``clips``: the vectors read from the samples' video clips (MELD with ``data.meld.clips``), which add the
    ``video`` and ``speech`` tokens to the feature model's modalities."""
    sizes = feature_sizes(cfg, text_features, tables, clips)
    modalities = list(sizes)
    items = []
    for sample in samples:
        vectors = {"text": text_features[sample.segment], **tables.features(sample.segment),
                   **(clips.vectors[sample.segment] if clips else {})}
        items.append({
            "text": tables.prompt(sample.segment, list(cfg.prompt.modalities), cfg.prompt.avd_levels),
            **{approach: tables.prompt(sample.segment, parts, cfg.prompt.avd_levels)
               for approach, parts in TEXT_APPROACHES.items()},
            "features": {m: torch.as_tensor(vectors[m] if vectors[m] is not None else np.zeros(sizes[m]),
                                            dtype=torch.float32) for m in modalities},
            "present": torch.tensor([vectors[m] is not None for m in modalities]),
            "label": torch.tensor(sample.label),
        })
    return Items(items)


@dataclass
class ClipVectors:
    """The clip-derived vectors of every segment ({segment: {"video": [D] | None, "speech": [M] | None}})."""

    vectors: dict[str, dict[str, np.ndarray | None]]
    sizes: dict[str, int]


def feature_sizes(cfg: DictConfig, text_features: dict[str, np.ndarray], tables: CueTables,
                  clips: ClipVectors | None = None) -> dict[str, int]:
    """{modality: vector size} of the feature model's tokens, in order: ``model.features.modalities``, then the
    clips' ``video`` and ``speech`` when there are clips."""
    every = {"text": len(next(iter(text_features.values()))), **tables.feature_sizes, **(clips.sizes if clips else {})}
    modalities = list(cfg.model.features.modalities) + (list(CLIP_MODALITIES) if clips else [])
    return {m: every[m] for m in modalities}


def meld_clip_vectors(cfg: DictConfig, samples: Sequence[Sample], parent) -> ClipVectors | None:
    """With ``data.meld.clips``: the clips' video and speech vectors (cached), their counts logged to MLflow and
    warned about when some are missing; None without."""
    meld = cfg.data.meld
    if meld.clips is None:
        return None
    folder = Path(str(meld.clips)).expanduser()
    spec = cfg.model.features.clip_encoder
    encoder = ClipEncoder(spec.name, spec.pretrained, frames=spec.frames, sample_rate=spec.sample_rate,
                          n_mels=spec.n_mels)
    cache = Path(str(meld.clip_cache)).expanduser() if meld.clip_cache != "auto" else cache_root() / "meld_clips"
    vectors, counts = clip_features(samples, folder, encoder, cache, cfg.data.on_bad_clip)
    if counts.missing or counts.silent or counts.skipped:
        rank_zero_warn(f"MELD clips under {folder}: {counts.found} read, {counts.missing} utterances without a clip, "
                       f"{counts.silent} clips without sound, {counts.skipped} unreadable and skipped"
                       + (f" (first: {counts.skipped_files[0]})" if counts.skipped_files else "")
                       + "; their video/speech tokens are masked")
    if counts.found == 0:
        raise DatasetError(f"{folder}: no clip of the {len(samples)} MELD utterances is there; expected "
                           "<folder>/{train,dev}/dia{D}_utt{U}.mp4 or MELD.Raw's train_splits/ and "
                           "dev_splits_complete/")
    if parent is not None:
        for key, value in counts.as_metrics().items():
            parent.experiment.log_metric(parent.run_id, key, value)
    return ClipVectors(vectors, encoder.sizes)


def embed_transcripts(encoder, tables: CueTables, samples: Sequence[Sample], batch_size: int) -> dict[str, np.ndarray]:
    """The frozen text encoder's mean-pooled embedding of each sample's transcript (the feature model's text token)."""
    segments = sorted({s.segment for s in samples})
    vectors = encoder.embed([tables.transcript(s) for s in segments], batch_size=batch_size).numpy()
    return dict(zip(segments, vectors))


class PromptDataModule(L.LightningDataModule):
    """Fixed train/val/test Items; evaluation shards count every sample once across processes."""

    def __init__(self, train: Items, val: Items, test: Items, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        self.train_set, self.val_set, self.test_set = train, val, test
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def _loader(self, dataset, sampler=None, shuffle=False, train: bool = False) -> DataLoader:
        return (ResumableDataLoader if train else DataLoader)(  # training resumes mid-epoch from a checkpoint
            dataset, batch_size=self.batch_size, sampler=sampler, shuffle=shuffle if sampler is None else None,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        sampler = train_sampler(self.train_set, self.seed, self.trainer)
        return self._loader(self.train_set, sampler, shuffle=sampler is None, train=True)

    def _eval_loader(self, dataset: Items) -> DataLoader:
        return self._loader(*eval_shards(dataset, self.trainer))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)
