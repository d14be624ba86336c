"""Textualized vs feature-based multimodal emotion recognition on MELD and C-EXPR-DB (Richet et al., 2024).

Reads top to bottom: data (MELD utterances, C-EXPR-DB fold clips, their cue tables) -> items (a prompt and feature
vectors per sample) -> one LightningModule for either approach -> every training (MELD; C-EXPR-DB's 5 folds without
and with Other) as a nested MLflow run -> mean ± std per setting in the parent run, a summary table and figure.

- text: the prompt of `affectlab.fusion.textualize` (transcript + textualized cues) into a transformers sequence
  classifier (`affectlab.models.text_classifier`), fine-tuned (or, with ``model.text.lora.enabled``, its LoRA
  adapters and head only: the way a causal LM such as Qwen3 is tuned).
- transcript: the same classifier on the transcript alone (the prompt's text part; the text-only ablation), which on
  the real MELD CSVs measures what the words alone are worth, whatever the cues.
- features: the transcript's embedding by the same (frozen) text encoder, the visual and audio cue vectors, fused by
  `affectlab.models.attention_fusion.AttentionFusion` with missing modalities masked.

MELD's transcripts and labels are the real CSVs (`data.meld.dir`); its segments are `train/dia{D}_utt{U}` and
`dev/dia{D}_utt{U}`. C-EXPR-DB's segments are the fold clips (`Sadly-Fearful/24_Sadly-Fearful_0`). Their cues come
from `data.cue_tables` (a folder with meld/ and cexpr/ in the format of textualize's docstring), or are synthetic
(the embedded default: no feature extractor runs here), so the numbers on synthetic cues measure the pipeline only.
MELD is evaluated on dev (the test split is not distributed here); a slice of train is the validation set.
"""

from __future__ import annotations

import csv
import json
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score
from torchmetrics.functional.classification import multiclass_f1_score

from affectlab.datasets.cexpr import CEXPR_CLASSES, OTHER, fold_segment, read_cexpr_annotation, read_cexpr_folds
from affectlab.datasets.emotion_corpus import EMOTIONS, fix_encoding
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.generated import cache_root
from affectlab.datasets.integrity import write_atomic
from affectlab.fusion.textualize import MODALITIES, CueTables, load_cue_tables, write_synthetic_cue_tables
from affectlab.lab.checkpoints import (
    AtomicCheckpointIO,
    epoch_checkpoints,
    new_run_folder,
    ResumableDataLoader,
    checkpoint_run_id,
    newest_intact,
    resolve_resume,
)
from affectlab.lab.config import ConfigError, flatten, load_config
from affectlab.lab.meld_clips import CLIP_MODALITIES, ClipEncoder, clip_features
from affectlab.lab.report import plot_confusion
from affectlab.lab.sharding import eval_shards, train_sampler
from affectlab.lab.threads import set_torch_threads
from affectlab.lab.tracking import make_logger
from affectlab.models.attention_fusion import AttentionFusion
from affectlab.models.text_classifier import create_text_classifier

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"  # ../shared/data beside the project
APPROACHES = ("transcript", "text", "features")
TEXT_APPROACHES = {"transcript": ["text"]}  # the prompt's modalities of a text approach other than "text"
TASKS = ("meld", "cexpr")


# --- data ------------------------------------------------------------------------------------------------------------


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


def meld_splits(cfg: DictConfig) -> dict[str, list[Sample]]:
    """{"train", "dev"}: the real CSVs subsampled as configured, or synthetic ones when ``data.meld.dir`` is null, or
    auto and the shared data is absent."""
    meld = cfg.data.meld
    if meld.dir is None:
        return synthetic_meld(meld, cfg.seed)
    folder = SHARED_DATA / "meld" if meld.dir == "auto" else Path(str(meld.dir)).expanduser()
    if meld.dir == "auto" and not folder.is_dir():
        rank_zero_warn(f"{folder} is absent: MELD is replaced by synthetic utterances (data.meld.dir=<folder> to fix)")
        return synthetic_meld(meld, cfg.seed)
    if not folder.is_dir():
        raise ConfigError(f"data.meld.dir={meld.dir!r} is not a folder (expected train_sent_emo.csv, dev_sent_emo.csv)")
    train = read_meld_utterances(folder / "train_sent_emo.csv", "train")
    dev = read_meld_utterances(folder / "dev_sent_emo.csv", "dev")
    return {"train": random_sample(train, meld.train_size, cfg.seed),
            "dev": random_sample(dev, meld.dev_size, cfg.seed)}


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


# --- items: what the models read -------------------------------------------------------------------------------------


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


# --- the LightningModule ---------------------------------------------------------------------------------------------


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "f1_weighted": MulticlassF1Score(num_classes, average="weighted"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
        },
        prefix=prefix,
    )


class EmotionModule(L.LightningModule):
    """Trains any approach with cross-entropy: ``text`` and ``transcript`` call ``net(their prompts)``, ``features``
    calls ``net(features, present)``; all map a batch to logits [B, classes]. AdamW with a linear warm-up over
    ``warmup`` of the steps, then a linear decay to 0 (the usual schedule for fine-tuning a BERT-like encoder)."""

    def __init__(self, net: torch.nn.Module, approach: str, num_classes: int, lr: float, weight_decay: float,
                 warmup: float = 0.0):
        super().__init__()
        if approach not in APPROACHES:
            raise ConfigError(f"approach {approach!r}: expected one of {list(APPROACHES)}")
        if not 0.0 <= float(warmup) < 1.0:
            raise ConfigError(f"optim.warmup={warmup!r}: expected the share of the training steps, in [0, 1)")
        self.net, self.approach, self.lr, self.weight_decay = net, approach, float(lr), float(weight_decay)
        self.warmup = float(warmup)
        self.val_metrics = _metrics(num_classes, "val/")
        self.test_metrics = _metrics(num_classes, "test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.confusion: np.ndarray | None = None

    def forward(self, batch: dict) -> torch.Tensor:
        if self.approach == "features":
            return self.net(batch["features"], batch["present"])
        return self.net(batch[self.approach])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch), batch["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(batch["label"]))
        return loss

    def _evaluate(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        keep = batch["valid"]
        return self(batch).argmax(dim=-1)[keep], batch["label"][keep]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_metrics.update(*self._evaluate(batch))
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        preds, labels = self._evaluate(batch)
        self.test_metrics.update(preds, labels)
        self.test_confusion.update(preds, labels)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        self.confusion = self.test_confusion.compute().cpu().numpy()  # a collective under DDP: every rank computes
        self.test_confusion.reset()

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        # the steps counted from the data, not by estimated_stepping_batches: that loads a training loader of its own,
        # which took the resumed loader's place and broke a mid-epoch resume (different batches after it)
        data, world = self.trainer.datamodule, max(1, self.trainer.world_size)
        total = max(1, int(self.trainer.max_epochs) * -(-len(data.train_set) // (data.batch_size * world)))
        warm = int(self.warmup * total)

        def factor(step: int) -> float:
            return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# --- one training ----------------------------------------------------------------------------------------------------


def lora_options(cfg: DictConfig) -> dict | None:
    """``model.text.lora`` without its ``enabled`` switch, or None when LoRA is off."""
    lora = OmegaConf.to_container(cfg.model.text.lora) if cfg.model.text.lora else None
    if not lora or not lora.pop("enabled", True):
        return None
    return lora


def build_net(cfg: DictConfig, approach: str, num_classes: int, feature_sizes: dict[str, int]) -> torch.nn.Module:
    text = cfg.model.text
    if approach != "features":
        return create_text_classifier(
            text.name, num_classes, max_length=text.max_length,
            random_config=OmegaConf.to_container(text.random_config) if text.random_config else None,
            lora=lora_options(cfg), pooling=text.pooling,
        )
    spec = cfg.model.features
    return AttentionFusion(dict(feature_sizes), num_classes, dim=spec.dim,
                           depth=spec.depth, heads=spec.heads, dropout=spec.dropout)


# --- checkpoints: a folder per run, a subfolder per training -------------------------------------------------------

RUN_RECORD = "run.json"  # in a run's checkpoint folder: the parent MLflow run id
RESULT = "result.json"  # in a training's folder once it is tested: its test metrics and confusion matrix


@dataclass
class Resume:
    """Where this run's checkpoints go and what it continues: ``folder`` (one subfolder per training), the parent
    MLflow run id (None: a new run) and the checkpoint to continue the unfinished training from (None: none)."""

    folder: Path
    parent_run_id: str | None = None
    checkpoint: str | None = None

    def training_folder(self, run_name: str) -> Path:
        return self.folder / run_name.replace("/", "--")


def _new_run_folder(root: Path) -> Path:
    """A fresh folder that every process of the run names alike (torchrun's processes share the launch's port)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return root / time.strftime(f"%Y%m%d-ddp{os.environ.get('MASTER_PORT', '')}")
    return new_run_folder(root)


def resolve_run(cfg: DictConfig) -> Resume:
    """``resume``: null (a new run), ``auto`` (the newest run folder under ``checkpoint_dir``; a new run when there is
    none) or a checkpoint path (its run). A resumed run skips the trainings already tested (their ``result.json``)
    and continues the unfinished one from its newest intact checkpoint (``resolve_resume``'s checks)."""
    root = Path(str(cfg.checkpoint_dir)).expanduser()
    if not cfg.resume:
        return Resume(_new_run_folder(root))
    if cfg.resume == "auto":
        records = sorted(root.glob(f"*/{RUN_RECORD}"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        if not records:
            rank_zero_warn(f"resume=auto: no run under {root} to continue; starting a new run")
            return Resume(_new_run_folder(root))
        folder = records[0].parent
        checkpoint = newest_intact(folder)  # the newest intact checkpoint of the run's trainings
    else:
        checkpoint = resolve_resume(str(cfg.resume), root)  # raises on a missing or damaged file
        folder = Path(checkpoint).parent.parent
    record = folder / RUN_RECORD
    try:
        parent = json.loads(record.read_text(encoding="utf-8"))["parent_run_id"]
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"resume={cfg.resume!r}: {record} does not name the run's MLflow run ({error}); expected a "
                          f"checkpoint under {root}/<run>/<training>/") from error
    return Resume(folder, parent, str(checkpoint) if checkpoint else None)


def fit_and_test(cfg: DictConfig, approach: str, data: PromptDataModule, num_classes: int,
                 feature_sizes: dict[str, int], run_name: str, parent, resume: Resume,
                 max_epochs: int | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Train one model for ``max_epochs`` (None: ``trainer.max_epochs``) and test the last one; a nested MLflow run
    under ``parent`` (None off rank 0) holds its curves. Checkpoints (``last.ckpt`` at epoch ends, ``step-latest.ckpt`` mid-epoch) go to
    its folder of ``resume``; a training tested before a crash is not run again, one cut short continues from its
    checkpoint into its MLflow run. Returns the test metrics and confusion matrix."""
    folder = resume.training_folder(run_name)
    done = folder / RESULT
    if done.is_file():
        result = json.loads(done.read_text(encoding="utf-8"))
        print(f"{run_name}: tested before the resume ({done}), not trained again")
        return result["metrics"], np.asarray(result["confusion"])
    checkpoint = resume.checkpoint if resume.checkpoint and Path(resume.checkpoint).parent == folder else None
    L.seed_everything(cfg.seed, workers=True)
    net = build_net(cfg, approach, num_classes, feature_sizes)
    lr = cfg.optim.lr_features if approach == "features" else cfg.optim.lr_text
    module = EmotionModule(net, approach, num_classes, lr, cfg.optim.weight_decay, cfg.optim.warmup)
    logger = None
    if parent is not None:
        child = checkpoint_run_id(checkpoint)
        if child is None:
            child = parent.experiment.create_run(parent.experiment_id, run_name=run_name,
                                                 tags={"mlflow.parentRunId": parent.run_id}).info.run_id
        logger = make_logger(cfg, run_id=child)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if max_epochs is not None:
        trainer_kwargs["max_epochs"] = max_epochs
    trainer = L.Trainer(
        **trainer_kwargs,
        logger=logger if logger is not None else False,
        # fixed epochs, the last model is tested (nothing is selected on the test split); the checkpoints are for
        # crashes: the epoch's last.ckpt and the mid-epoch step-latest.ckpt
        callbacks=epoch_checkpoints(folder, cfg.checkpoint_every),
        plugins=[AtomicCheckpointIO()],  # a checkpoint is complete or absent, never half-written
        use_distributed_sampler=False,  # the datamodule shards itself
    )
    if checkpoint:
        print(f"{run_name}: continuing from {checkpoint}")
    trainer.fit(module, datamodule=data, ckpt_path=checkpoint)
    results = trainer.test(module, datamodule=data, verbose=False)
    metrics = {k: float(v) for k, v in results[0].items()}
    if trainer.is_global_zero:
        result = json.dumps({"metrics": metrics, "confusion": module.confusion.tolist()})
        write_atomic(done, lambda scratch: scratch.write_text(result, encoding="utf-8"))
        for stale in folder.glob("*.ckpt*"):  # a tested training resumes from result.json: ~270 MB each for MiniLM
            stale.unlink(missing_ok=True)
    return metrics, module.confusion


def majority_f1(train: Items, test: Items, num_classes: int) -> dict[str, float]:
    """The baseline that always predicts the most frequent training class."""
    majority = Counter(train.labels).most_common(1)[0][0]
    labels = torch.tensor(test.labels)
    preds = torch.full_like(labels, majority)
    return {f"test/f1_{avg}": float(multiclass_f1_score(preds, labels, num_classes, average=avg))
            for avg in ("weighted", "macro")}


# --- the run ---------------------------------------------------------------------------------------------------------


def check_config(cfg: DictConfig) -> None:
    for key, values, allowed in (("tasks", cfg.tasks, TASKS), ("approaches", cfg.approaches, APPROACHES),
                                 ("prompt.modalities", cfg.prompt.modalities, MODALITIES),
                                 ("model.features.modalities", cfg.model.features.modalities, MODALITIES)):
        if not values or any(v not in allowed for v in values):
            raise ConfigError(f"{key}={list(values) if values else values}: expected a non-empty subset of "
                              f"{list(allowed)}")
    if cfg.data.on_bad_clip not in ("error", "skip"):
        raise ConfigError(f"data.on_bad_clip={cfg.data.on_bad_clip!r}: expected error or skip")
    epochs = cfg.data.cexpr.max_epochs
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise ConfigError(f"data.cexpr.max_epochs={epochs!r}: expected a positive number of epochs, or null for "
                          "trainer.max_epochs")
    bad = [k for k in cfg.data.cexpr.folds if k not in range(5)]
    if bad:
        raise ConfigError(f"data.cexpr.folds has {bad}; expected fold numbers 0..4")


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


def run_setting(cfg: DictConfig, setting: str, splits: dict[str, list[Sample]], class_names: Sequence[str],
                tables: CueTables, encoder, parent, run_prefix: str, artifacts: Path,
                resume: Resume, clips: ClipVectors | None = None,
                max_epochs: int | None = None) -> dict[str, dict[str, float]]:
    """Both approaches (and the majority baseline) on one split set; returns {approach: test metrics}."""
    every = [s for part in splits.values() for s in part]
    if encoder is not None:
        text_features = embed_transcripts(encoder, tables, every, cfg.data.batch_size)
    else:  # the text approach alone reads no feature vectors
        text_features = {s.segment: np.zeros(1) for s in every}
    items = {part: build_items(samples, tables, text_features, cfg, clips) for part, samples in splits.items()}
    sizes = feature_sizes(cfg, text_features, tables, clips)  # the feature model's tokens, in the items' order
    data = PromptDataModule(items["train"], items["val"], items["test"], cfg.data.batch_size, cfg.data.num_workers,
                            cfg.seed)
    results = {"majority": majority_f1(items["train"], items["test"], len(class_names))}
    for approach in cfg.approaches:
        metrics, confusion = fit_and_test(cfg, approach, data, len(class_names), sizes, f"{run_prefix}/{approach}",
                                          parent, resume, max_epochs)
        results[approach] = metrics
        if parent is not None and setting == "meld":
            png = plot_confusion(confusion, class_names, artifacts / f"confusion_meld_{approach}.png",
                                 title=f"MELD dev, {approach}")
            parent.experiment.log_artifact(parent.run_id, str(png))
    return results


SETTINGS = {"meld": "MELD dev (7 emotions)", "cexpr_without_other": "C-EXPR-DB, 7 compounds",
            "cexpr_with_other": "C-EXPR-DB, 7 compounds + Other"}


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and test both approaches in every configured setting; returns the parent run's summary metrics
    (``<setting>/<approach>/f1_weighted`` and ``f1_macro``, with ``_std`` over C-EXPR-DB's folds)."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    set_torch_threads(cfg.num_threads, cfg.data.num_workers)
    resume = resolve_run(cfg)
    parent = make_logger(cfg, run_id=resume.parent_run_id)
    if parent is not None and resume.parent_run_id is None:
        parent.log_hyperparams(flatten(cfg))
        record = json.dumps({"parent_run_id": parent.run_id})
        resume.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(resume.folder / RUN_RECORD, lambda scratch: scratch.write_text(record, encoding="utf-8"))
    scratch = Path(tempfile.mkdtemp(prefix="affectlab-meld-"))
    text_spec = cfg.model.text
    encoder = None
    if "features" in cfg.approaches:  # frozen: the feature model's text token
        encoder = create_text_classifier(
            text_spec.name, 2, max_length=text_spec.max_length,
            random_config=OmegaConf.to_container(text_spec.random_config) if text_spec.random_config else None,
            pooling=text_spec.pooling,
        ).eval()

    per_setting: dict[str, list[dict[str, dict[str, float]]]] = {}
    if "meld" in cfg.tasks:
        meld = meld_splits(cfg)
        val_count = max(1, int(round(cfg.data.val_fraction * len(meld["train"]))))
        order = random.Random(cfg.seed).sample(range(len(meld["train"])), len(meld["train"]))
        splits = {"train": [meld["train"][i] for i in sorted(order[val_count:])],
                  "val": [meld["train"][i] for i in sorted(order[:val_count])], "test": meld["dev"]}
        tables = cue_tables(cfg, "meld", meld["train"] + meld["dev"], len(EMOTIONS), scratch)
        clips = meld_clip_vectors(cfg, meld["train"] + meld["dev"], parent) if "features" in cfg.approaches else None
        per_setting["meld"] = [run_setting(cfg, "meld", splits, EMOTIONS, tables, encoder, parent, "meld", scratch,
                                           resume, clips)]
    if "cexpr" in cfg.tasks:
        folds_dir = _folder(cfg.data.cexpr.folds_dir, SHARED_DATA / "cexpr" / "folds")
        annotation_dir = _folder(cfg.data.cexpr.annotation_dir, SHARED_DATA / "cexpr" / "annotation")
        if folds_dir is None:
            rank_zero_warn(f"{SHARED_DATA / 'cexpr' / 'folds'} is absent: C-EXPR-DB is skipped "
                           "(data.cexpr.folds_dir=<folder> to fix)")
        for other in (cfg.data.cexpr.other if folds_dir is not None else []):
            setting = "cexpr_with_other" if other else "cexpr_without_other"
            classes = CEXPR_CLASSES if other else CEXPR_CLASSES[:OTHER]
            folds = {k: cexpr_fold(folds_dir, annotation_dir, k, other) for k in cfg.data.cexpr.folds}
            every = [s for fold in folds.values() for part in fold.values() for s in part]
            tables = cue_tables(cfg, "cexpr", every, len(CEXPR_CLASSES), scratch / setting)
            per_setting[setting] = [run_setting(cfg, setting, fold, classes, tables, encoder, parent,
                                                f"{setting}/fold{k}", scratch, resume,
                                                max_epochs=cfg.data.cexpr.max_epochs)
                                    for k, fold in folds.items()]

    if not per_setting:
        raise ConfigError(f"tasks={list(cfg.tasks)}: nothing to run (no MELD task and no C-EXPR-DB folds found)")
    summary = summarise(per_setting)
    if parent is not None:
        client = parent.experiment
        for key, value in summary.items():
            client.log_metric(parent.run_id, key, value)
        table = summary_table(per_setting)
        client.log_table(parent.run_id, data=table, artifact_file="summary.json")
        png = plot_summary(per_setting, scratch / "summary.png")
        client.log_artifact(parent.run_id, str(png))
        config_file = scratch / "config.yaml"
        OmegaConf.save(cfg, config_file)
        client.log_artifact(parent.run_id, str(config_file))
        client.set_terminated(parent.run_id)
        print_table(table, f"weighted / macro F1 on the test part (MLflow run {parent.run_id}, experiment "
                           f"{cfg.mlflow.experiment})")
    return summary


def _stats(runs: list[dict[str, dict[str, float]]], approach: str, metric: str) -> tuple[float, float]:
    values = np.array([r[approach][f"test/{metric}"] for r in runs])
    return float(values.mean()), float(values.std())  # population std over the folds


def summarise(per_setting: dict[str, list[dict]]) -> dict[str, float]:
    summary = {}
    for setting, runs in per_setting.items():
        for approach in runs[0]:
            for metric in ("f1_weighted", "f1_macro"):
                mean, std = _stats(runs, approach, metric)
                summary[f"{setting}/{approach}/{metric}"] = mean
                if len(runs) > 1:
                    summary[f"{setting}/{approach}/{metric}_std"] = std
    return summary


def summary_table(per_setting: dict[str, list[dict]]) -> dict[str, list]:
    """Columns: setting, approach, runs (folds), weighted F1 and macro F1 as "mean ± std"."""
    table: dict[str, list] = {"setting": [], "approach": [], "runs": [], "f1_weighted": [], "f1_macro": []}
    for setting, runs in per_setting.items():
        for approach in runs[0]:
            table["setting"].append(SETTINGS[setting])
            table["approach"].append(approach)
            table["runs"].append(len(runs))
            for metric in ("f1_weighted", "f1_macro"):
                mean, std = _stats(runs, approach, metric)
                table[metric].append(f"{mean:.4f} ± {std:.4f}" if len(runs) > 1 else f"{mean:.4f}")
    return table


def print_table(table: dict[str, list], title: str) -> None:
    view = Table(title=title)
    for column in table:
        view.add_column(column, justify="left" if column in ("setting", "approach") else "right")
    for row in zip(*table.values()):
        view.add_row(*(str(v) for v in row))
    Console().print(view)


def plot_summary(per_setting: dict[str, list[dict]], path: Path) -> Path:
    """Weighted and macro F1 of every approach in every setting, mean with the std over folds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(per_setting)
    approaches = list(per_setting[settings[0]][0])
    fig, axes = plt.subplots(1, 2, figsize=(4 + 2.5 * len(settings), 4), sharey=True)
    width = 0.8 / len(approaches)
    for ax, metric in zip(axes, ("f1_weighted", "f1_macro")):
        for j, approach in enumerate(approaches):
            stats = [_stats(per_setting[s], approach, metric) for s in settings]
            ax.bar(np.arange(len(settings)) + j * width, [m for m, _ in stats], width, yerr=[s for _, s in stats],
                   label=approach, capsize=3)
        ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2, [SETTINGS[s] for s in settings], rotation=20,
                      ha="right", fontsize=8)
        ax.set_title(metric.replace("_", " "))
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("test F1")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    import sys

    cfg = load_config("meld", sys.argv[1:] if argv is None else argv)
    return run(cfg)
