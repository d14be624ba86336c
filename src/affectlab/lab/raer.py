"""CLIP-CAER on RAER: the LightningDataModule, the LightningModule and the run, composed from affectlab's packages.

Reads top to bottom: data → model → training → test with the best checkpoint → MLflow artifacts.
`python experiments/raer.py describe|compare [key=value ...]` runs the dataset summary (describe.py) or the
paper's comparison table (compare.py) instead of one training run.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

from affectlab.datasets import (
    RaerDataset,
    ensure_synthetic_raer,
    load_label_set,
    load_raer_split,
    stratified_split,
    write_crop_cache,
)
from affectlab.datasets.prepare import prepare_boxes
from affectlab.datasets.raer import normalise_pixels
from affectlab.datasets.video import READERS
from affectlab.lab.checkpoints import (
    AtomicCheckpointIO,
    resume_point,
    ResumableDataLoader,
    resume_callbacks,
)
from affectlab.lab.config import ConfigError, flatten, load_config
from affectlab.lab.features import frame_features
from affectlab.lab.report import plot_confusion, print_summary
from affectlab.lab.sampling import ClassBalancedSampler
from affectlab.lab.sharding import eval_shards, rank_and_world, train_sampler
from affectlab.lab.launcher import trainer_arguments
from affectlab.lab.threads import set_torch_threads
from affectlab.lab.tracking import make_logger
from affectlab.models import ClipCaer, FormerDfer, class_balanced_weights, create_clip, load_clip_caer_checkpoint

STREAMS = ("face", "context")
LOSSES = ("ce", "soft_ce", "cb_ls")


def dataset_root(data: DictConfig) -> Path:
    """``data.root``, or the embedded synthetic RAER (generated once and cached) when it is null."""
    if data.root:
        root = Path(data.root).expanduser()
        if not root.is_dir():
            raise ConfigError(f"data.root={data.root!r} is not a folder (expected RAER's release layout)")
        return root
    return ensure_synthetic_raer(**OmegaConf.to_container(data.synthetic))


class RaerDataModule(L.LightningDataModule):
    """RAER in its official layout (``data.root``), or the embedded synthetic set when no root is given."""

    def __init__(self, data: DictConfig, *, image_size: int, mean, std, seed: int = 0,
                 frozen_encoder: torch.nn.Module | None = None, streams: Sequence[str] = STREAMS):
        super().__init__()
        self.cfg = data
        # A frozen image encoder (model.freeze_image_encoder) with data.feature_cache: clips as cached embeddings.
        self.frozen_encoder, self.streams = frozen_encoder, tuple(streams)
        self.image_size, self.mean, self.std, self.seed = image_size, tuple(mean), tuple(std), seed
        self.label_set = load_label_set(data.label_set)
        if data.on_bad_clip not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_clip={data.on_bad_clip!r}: expected 'error' or 'skip'")
        if data.sampler not in ("random", "class_balanced"):
            raise ConfigError(f"data.sampler={data.sampler!r}: expected 'random' or 'class_balanced'")
        if data.video_reader not in READERS:
            raise ConfigError(f"data.video_reader={data.video_reader!r}: expected one of {', '.join(READERS)}")
        self.skipped: dict[str, list[str]] = {}  # split -> messages of the clips left out (data.on_bad_clip=skip)

    def root(self) -> Path:
        return dataset_root(self.cfg)

    def prepare_data(self) -> None:
        self.root()  # builds the synthetic set once, on the first process of each node

    def setup(self, stage: str | None = None) -> None:
        root = self.root()
        common = dict(
            root=root,
            num_segments=self.cfg.num_segments,
            image_size=self.image_size,
            face_margin=self.cfg.face_margin,
            mean=self.mean,
            std=self.std,
            num_classes=len(self.label_set.classes),
            contexts=self.cfg.contexts,
            cache=self.crop_cache(root),
            normalise=False,  # uint8 through the workers; on_after_batch_transfer normalises on the device
            video_reader=self.cfg.video_reader,
        )
        if stage in ("fit", "validate", None):
            skipped = self._skip_list("train")
            train_clips, val_clips = stratified_split(
                load_raer_split(root, "train", self.label_set, skipped=skipped), self.cfg.val_fraction, seed=self.seed
            )
            if not val_clips:
                raise ConfigError("data.val_fraction must leave at least one validation clip per class")
            self.train_set = self._features(RaerDataset(clips=train_clips, train=True, seed=self.seed,
                                                        skipped=skipped, **common))
            self.val_set = self._features(RaerDataset(clips=val_clips, train=False, skipped=skipped, **common))
            self._warn_skipped("train")
        if stage in ("test", None):
            skipped = self._skip_list("test")
            clips = load_raer_split(root, "test", self.label_set, skipped=skipped)
            self.test_set = self._features(RaerDataset(clips=clips, train=False, skipped=skipped, **common))
            self._warn_skipped("test")

    def crop_cache(self, root: Path) -> Path | None:
        """Where the preprocessed crops live (``data.crop_cache``: ``auto`` = ``<root>/crops/<S>px-margin<M>``); the
        datasets read them when the folder is complete (``python experiments/raer.py cache`` writes it)."""
        if not self.cfg.crop_cache:
            return None
        if self.cfg.crop_cache == "auto":
            return root / "crops" / f"{self.image_size}px-margin{self.cfg.face_margin}"
        return Path(self.cfg.crop_cache).expanduser()

    def _features(self, dataset: RaerDataset):
        """With a frozen encoder and ``data.feature_cache`` (``auto`` = ``<root>/features``): the dataset's clips as
        the encoder's per-frame embeddings, computed once into the cache (affectlab.lab.features)."""
        if not self.reads_features:
            return dataset
        folder = self.cfg.get("feature_cache")
        folder = dataset.root / "features" if folder == "auto" else Path(folder).expanduser()
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        return frame_features(dataset, self.frozen_encoder, folder, self.streams, device=device)

    def write_cache(self) -> Path:
        """Write the crops of every train and test clip to the crop cache folder; returns the folder."""
        self.setup(None)
        folder = self.crop_cache(self.root())
        if folder is None:
            raise ConfigError("data.crop_cache is null; set it to auto or a folder to write the crop cache")
        for dataset in (self.train_set, self.val_set, self.test_set):
            write_crop_cache(dataset, folder)
        return folder

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # The same floats the dataset would give with normalise=True, made on the device from a quarter of the bytes.
        for stream in STREAMS:
            if stream in batch and batch[stream].dtype == torch.uint8:  # not cached embeddings
                batch[stream] = normalise_pixels(batch[stream], self.mean, self.std)
        return batch

    def _skip_list(self, split: str) -> list[str] | None:
        """Where the bad clips of a split are collected with data.on_bad_clip=skip; None (raise) with error."""
        if self.cfg.on_bad_clip == "error":
            return None
        self.skipped[split] = []
        return self.skipped[split]

    def _warn_skipped(self, split: str) -> None:
        messages = self.skipped.get(split)
        if messages:
            rank_zero_warn(f"data.on_bad_clip=skip: left out {len(messages)} bad clip(s) of the {split} split "
                           f"(counted in MLflow as data/skipped/{split}); the first: {messages[0]}")

    @property
    def reads_features(self) -> bool:
        """True when the clips come from the frozen-encoder feature cache (`_features`)."""
        return self.frozen_encoder is not None and bool(self.cfg.get("feature_cache"))

    def _loader(self, dataset, sampler, shuffle: bool = False, drop_last: bool = False,
                train: bool = False) -> DataLoader:
        # A cached clip is a row gather from one memory-mapped array: loader workers would only add their start-up
        # and a copy per batch. (With workers, the uncached path draws frames from each worker's generator, so the
        # cached path picks the same frames as the uncached one with data.num_workers=0.)
        workers = 0 if self.reads_features else self.cfg.num_workers
        return (ResumableDataLoader if train else DataLoader)(  # training resumes mid-epoch from a checkpoint
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            shuffle=shuffle if sampler is None else None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        if self.cfg.sampler == "class_balanced":
            rank, world = rank_and_world(self.trainer)
            return self._loader(self.train_set, ClassBalancedSampler(self.train_set.labels, self.seed, rank, world),
                                train=True)
        sampler = train_sampler(self.train_set, self.seed, self.trainer)
        return self._loader(self.train_set, sampler, shuffle=sampler is None, train=True)

    def _eval_loader(self, dataset) -> DataLoader:
        return self._loader(*eval_shards(dataset, self.trainer))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "uar": MulticlassRecall(num_classes, average="macro"),  # unweighted average recall
            "war": MulticlassAccuracy(num_classes, average="micro"),  # weighted average recall = accuracy
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class ClipCaerModule(L.LightningModule):
    """Trains a video classifier (ClipCaer, FormerDfer) that maps ``{stream: [B, T, 3, H, W]}`` to class logits.

    loss: ``ce`` (cross-entropy on the majority label, the paper's), ``soft_ce`` (cross-entropy on the annotators'
    vote shares) or ``cb_ls`` (class-balanced weights, Cui et al. 2019, with label smoothing ``label_smoothing``).
    contexts: the recording contexts (``data.contexts``) for per-context test UAR/WAR.
    """

    def __init__(self, net: torch.nn.Module, class_names: Sequence[str], optim: DictConfig, streams: Sequence[str],
                 *, loss: str = "ce", label_smoothing: float = 0.0, cb_beta: float = 0.999,
                 contexts: Sequence[str] | None = None):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"model.loss={loss!r}: expected one of {list(LOSSES)}")
        self.net = net
        self.class_names = list(class_names)
        self.optim_cfg = optim
        self.streams = tuple(streams)
        self.loss_name, self.label_smoothing, self.cb_beta = loss, float(label_smoothing), float(cb_beta)
        self.contexts = list(contexts or [])
        n = len(self.class_names)
        self.register_buffer("class_weights", torch.ones(n), persistent=False)  # set from the train split (cb_ls)
        self.val_metrics = _metrics(n, "val/")
        self.test_metrics = _metrics(n, "test/")
        self.test_recall = MulticlassRecall(n, average=None)
        self.test_confusion = MulticlassConfusionMatrix(n)
        self.test_context_confusion = torch.nn.ModuleList(MulticlassConfusionMatrix(n) for _ in self.contexts)
        self.mlflow_run_id: str | None = None
        self.artifact_dir = Path(tempfile.mkdtemp(prefix="affectlab-"))

    def setup(self, stage: str) -> None:
        if self.loss_name == "cb_ls" and stage == "fit":  # the datamodule is set up first
            labels = torch.as_tensor(self.trainer.datamodule.train_set.labels)
            counts = torch.bincount(labels, minlength=len(self.class_names)).tolist()
            self.class_weights = class_balanced_weights(counts, self.cb_beta)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(**{stream: batch[stream] for stream in self.streams})

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if self.loss_name == "soft_ce":
            return F.cross_entropy(logits, batch["soft_label"])
        if self.loss_name == "cb_ls":
            return F.cross_entropy(logits, batch["label"], weight=self.class_weights,
                                   label_smoothing=self.label_smoothing)
        return F.cross_entropy(logits, batch["label"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
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
        self.test_recall.update(preds, labels)
        self.test_confusion.update(preds, labels)
        scenes = batch["scene"][batch["valid"]]
        for scene, confusion in enumerate(self.test_context_confusion):
            confusion.update(preds[scenes == scene], labels[scenes == scene])
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        recall = self.test_recall.compute()  # a collective under DDP: every rank computes
        matrix = self.test_confusion.compute().cpu().numpy()
        for name, value in zip(self.class_names, recall):
            self.log(f"test/recall/{name}", value, sync_dist=False)
        self.test_recall.reset()
        self.test_confusion.reset()
        self.context_rows = []
        for context, confusion in zip(self.contexts, self.test_context_confusion):
            counts = confusion.compute().double()  # synchronised across processes like every metric
            confusion.reset()
            clips = int(counts.sum())
            if clips == 0:
                continue  # a context without test clips has no UAR
            support = counts.sum(dim=1)
            # UAR: mean recall over the classes present in this context; WAR: accuracy over its clips.
            uar = float((counts.diagonal()[support > 0] / support[support > 0]).mean())
            war = float(counts.diagonal().sum() / clips)
            self.log(f"test/context/{context}/uar", uar, sync_dist=False)
            self.log(f"test/context/{context}/war", war, sync_dist=False)
            self.log(f"test/context/{context}/clips", float(clips), sync_dist=False)
            self.context_rows.append({"context": context, "clips": clips, "uar": uar, "war": war})
        if self.trainer.is_global_zero:
            self.confusion_png = plot_confusion(
                matrix, self.class_names, self.artifact_dir / "confusion_matrix.png", title="test"
            )
            if self.context_rows:
                self.context_table = self.artifact_dir / "test_by_context.csv"
                with self.context_table.open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=["context", "clips", "uar", "war"])
                    writer.writeheader()
                    writer.writerows(self.context_rows)

    def configure_optimizers(self):
        """SGD with the paper's per-part learning rates and a multi-step schedule (CLIP-CAER, Sec. 4.2)."""
        cfg = self.optim_cfg
        groups = [
            {"params": params, "lr": float(cfg.lr[name]), "name": name}
            for name, params in self.net.param_groups().items()
            if params
        ]
        if cfg.name == "sgd":
            optimizer = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        elif cfg.name == "adamw":
            optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        else:
            raise ConfigError(f"optim.name={cfg.name!r}: expected 'sgd' or 'adamw'")
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


@dataclass
class InputSpec:
    """What a network expects of its frames: the square size and the normalisation."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def build_net(cfg: DictConfig) -> tuple[torch.nn.Module, list[str], object]:
    """The network a config describes (``model.name``: ``clip_caer`` or ``former_dfer``), its class names, and the
    input it expects (``image_size``, ``mean``, ``std``; for CLIP-CAER the ClipParts of its CLIP)."""
    label_set = load_label_set(cfg.data.label_set)
    streams = tuple(cfg.model.streams)
    unknown = [s for s in streams if s not in STREAMS]
    if unknown or not streams:
        raise ConfigError(f"model.streams={list(streams)}: expected a non-empty subset of {list(STREAMS)}")
    if cfg.model.name == "former_dfer":
        if streams != ("face",):
            raise ConfigError(f"model.name=former_dfer reads faces only; set model.streams=[face], not {list(streams)}")
        spec = cfg.model.former_dfer
        net = FormerDfer(spec.backbone, len(label_set.classes), num_frames=cfg.data.num_segments,
                         pretrained=spec.pretrained, temporal_depth=cfg.model.temporal_depth,
                         temporal_heads=cfg.model.temporal_heads)
        data = net.data_config
        return net, list(label_set.classes), InputSpec(int(spec.image_size), tuple(data["mean"]), tuple(data["std"]))
    if cfg.model.name != "clip_caer":
        raise ConfigError(f"model.name={cfg.model.name!r}: expected 'clip_caer' or 'former_dfer'")
    if cfg.model.text not in ("descriptors", "class_names"):
        raise ConfigError(f"model.text={cfg.model.text!r}: expected 'descriptors' or 'class_names'")
    texts = label_set.descriptors if cfg.model.text == "descriptors" else label_set.classes
    clip = create_clip(cfg.model.backbone, cfg.model.pretrained, quick_gelu=cfg.model.quick_gelu)
    net = ClipCaer(
        clip.model,
        clip.tokenizer,
        list(texts),
        num_frames=cfg.data.num_segments,
        streams=streams,
        n_ctx=cfg.model.n_ctx,
        learnable_ctx=cfg.model.learnable_ctx,
        temporal_depth=cfg.model.temporal_depth,
        temporal_heads=cfg.model.temporal_heads,
        logit_scale=cfg.model.logit_scale,
        freeze_image_encoder=cfg.model.freeze_image_encoder,
        temporal_mlp_dim=cfg.model.temporal_mlp_dim,
        temporal_activation=cfg.model.temporal_activation,
    )
    if cfg.model.checkpoint:  # the authors' released CLIP-CAER weights, over everything built above
        load_clip_caer_checkpoint(net, cfg.model.checkpoint)
    return net, list(label_set.classes), clip


def run(cfg: DictConfig) -> dict[str, float]:
    """Train, select on validation, test the best checkpoint once; returns the test metrics."""
    L.seed_everything(cfg.seed, workers=True)
    set_torch_threads(cfg.num_threads, cfg.data.num_workers)
    net, class_names, clip = build_net(cfg)
    frozen = net.image_encoder if cfg.model.name == "clip_caer" and cfg.model.freeze_image_encoder else None
    datamodule = RaerDataModule(cfg.data, image_size=clip.image_size, mean=clip.mean, std=clip.std, seed=cfg.seed,
                                frozen_encoder=frozen, streams=cfg.model.streams)
    module = ClipCaerModule(net, class_names, cfg.optim, cfg.model.streams, loss=cfg.model.loss,
                            label_smoothing=cfg.model.label_smoothing, cb_beta=cfg.model.cb_beta,
                            contexts=cfg.data.contexts)

    resume, run_id, folder = resume_point(cfg.resume, Path(cfg.checkpoint_dir))
    logger = make_logger(cfg, run_id=run_id)
    checkpoints = ModelCheckpoint(
        dirpath=folder,
        filename="best-{epoch:02d}",
        monitor="val/uar",
        mode="max",
        save_last=True,
    )
    trainer_kwargs = trainer_arguments(OmegaConf.to_container(cfg.trainer, resolve=True))  # checked, 16-mixed on CPU
    plugins = trainer_kwargs.pop("plugins", [])  # 16-mixed on the CPU is a precision plugin
    callbacks = [checkpoints, *resume_callbacks(folder, cfg.checkpoint_every)]  # + mid-epoch checkpoints
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if trainer_kwargs.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        **trainer_kwargs,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        plugins=[*plugins, AtomicCheckpointIO()],  # a checkpoint is complete or absent, never half-written
        use_distributed_sampler=False,  # the datamodule shards itself, without counting padding twice
    )
    if trainer.is_global_zero and not run_id:
        logger.log_hyperparams(flatten(cfg))
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    best = checkpoints.best_model_path or None
    results = trainer.test(module, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False)
    metrics = {k: float(v) for k, v in results[0].items()} if results else {}
    if trainer.is_global_zero:
        config_file = module.artifact_dir / "config.yaml"
        OmegaConf.save(cfg, config_file)
        experiment = logger.experiment
        experiment.log_artifact(logger.run_id, str(config_file))
        if getattr(module, "confusion_png", None):
            experiment.log_artifact(logger.run_id, str(module.confusion_png))
        if getattr(module, "context_table", None):
            experiment.log_artifact(logger.run_id, str(module.context_table))
        _log_skipped(experiment, logger.run_id, datamodule.skipped, module.artifact_dir)
        if best:
            experiment.log_artifact(logger.run_id, best, artifact_path="checkpoints")
        print_summary(metrics, title=f"RAER test ({cfg.model.name}, {cfg.model.backbone}, MLflow run {logger.run_id})")
    return metrics


def _log_skipped(experiment, run_id: str, skipped: dict[str, list[str]], folder: Path) -> None:
    """With data.on_bad_clip=skip: how many clips each split left out (a metric) and why (skipped_clips.txt)."""
    if not skipped:
        return
    for split, messages in skipped.items():
        experiment.log_metric(run_id, f"data/skipped/{split}", len(messages))
    lines = [f"{split}\t{message}" for split, messages in skipped.items() for message in messages]
    if lines:
        (folder / "skipped_clips.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        experiment.log_artifact(run_id, str(folder / "skipped_clips.txt"))


COMMANDS = ("train", "describe", "compare", "cache", "prepare", "evaluate")


def main(argv: Sequence[str] | None = None):
    """``[train|describe|compare|cache|prepare] [config=NAME] [key=value ...]``: one training run (the default), the
    dataset summary, the comparison of methods over seeds, writing the preprocessed crop cache, or detecting the face
    and body boxes of the clips under ``data.root`` (bounding_box/face.json and body.json)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    cfg = load_config("raer", argv)
    if command == "describe":
        from affectlab.lab.describe import describe

        return describe(cfg)
    if command == "compare":
        from affectlab.lab.compare import compare

        return compare(cfg)
    if command == "prepare":
        if not cfg.data.root:
            raise ConfigError("prepare needs data.root=<folder with images/> (your clips: frame folders or videos)")
        found = prepare_boxes(dataset_root(cfg.data))
        print(f"boxes written for {len(found)} clips; {sum(v == 0 for v in found.values())} without any face found")
        return found
    if command == "evaluate":  # val and test metrics of the checkpoint resume=PATH, without training
        from affectlab.lab.evaluate import evaluate

        return evaluate(cfg)
    if command == "cache":
        _, _, inputs = build_net(cfg)
        datamodule = RaerDataModule(cfg.data, image_size=inputs.image_size, mean=inputs.mean, std=inputs.std,
                                    seed=cfg.seed)
        folder = datamodule.write_cache()
        print(f"crop cache written to {folder}")
        return folder
    return run(cfg)
