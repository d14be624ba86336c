"""RAER as a LightningDataModule: its release layout (``data.root``) or the embedded synthetic set, the validation
split carved from train, crop and feature caches, bad clips skipped or refused, loaders that shard across processes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from affectlab.datasets import (
    RaerDataset,
    ensure_synthetic_raer,
    load_label_set,
    load_raer_split,
    stratified_split,
    write_crop_cache,
)
from affectlab.datasets.raer import normalise_pixels
from affectlab.lab.resumable import ResumableDataLoader
from affectlab.lab.config import ConfigError
from affectlab.lab.raer.features import frame_features
from affectlab.lab.raer.nets import STREAMS
from affectlab.lab.sampling import ClassBalancedSampler
from affectlab.lab.sharding import eval_shards, rank_and_world, train_sampler


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
            self.train_set = self._features(RaerDataset(clips=train_clips, train=True, skipped=skipped, **common))
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
