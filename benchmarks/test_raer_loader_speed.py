"""RAER loader throughput in clips per second, on 1920x1080 frames (the real RAER frame size), each path beside a
naive baseline measured in the same run: decode every frame of the clip at full size with PIL, crop the face and the
context, resize, then keep the T sampled ones. Paths: JPEG frame folders and Motion-JPEG video files (both decode only
the T sampled frames), and the preprocessed crop cache; one DataLoader worker and two. Clips have FRAMES frames, so
the uncached paths' advantage grows with the clip length (FRAMES / SEGMENTS).

The issue's targets: the cached loader at least 10x the naive one, the uncached JPEG path at least 2x.
`uv run pytest benchmarks/test_raer_loader_speed.py -s` prints the table (the project's default run does not collect
benchmarks/).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from affectlab.datasets import RaerDataset, load_raer_split, make_synthetic_raer, write_crop_cache
from affectlab.datasets.raer import _letterbox

CLIPS, FRAMES, SEGMENTS, SIZE = 8, 48, 16, 224


class NaiveRaer(Dataset):
    """The baseline: every frame of the clip fully decoded with PIL, cropped and resized; then T of them kept."""

    def __init__(self, dataset: RaerDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        data = self.dataset
        folder = Path(data._sources[index])
        keep = np.linspace(0, data._frame_counts[index] - 1, data.num_segments).round().astype(int)
        faces, contexts = [], []
        for k in range(data._frame_counts[index]):
            image = Image.open(folder / f"{k + 1}.jpg").convert("RGB")
            face_box, body_box = data._boxes(index, int(k), *image.size)
            faces.append(np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR, box=face_box)))
            contexts.append(np.asarray(_letterbox(image, body_box, SIZE)))
        return {"face": data._normalise([faces[k] for k in keep]),
                "context": data._normalise([contexts[k] for k in keep])}


@pytest.fixture(scope="module")
def full_hd(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("raer-1080p")
    kwargs = dict(num_train=CLIPS, num_test=0, num_frames=FRAMES, frame_size=(1920, 1080))
    return {"jpeg": make_synthetic_raer(base / "jpeg", **kwargs),
            "video": make_synthetic_raer(base / "video", video=True, **kwargs)}


def clips_per_second(dataset: Dataset, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, shuffle=False,
                        persistent_workers=False, prefetch_factor=2 if workers else None)
    start = time.perf_counter()
    count = sum(1 for _ in loader)
    return count / (time.perf_counter() - start)


@pytest.mark.parametrize("workers", [1, 2])
def test_loader_throughput_against_naive(full_hd, workers, tmp_path):
    torch.set_num_threads(1)
    root = full_hd["jpeg"]
    clips = load_raer_split(root, "train")
    jpeg = RaerDataset(root, clips, num_segments=SEGMENTS, image_size=SIZE)
    video = RaerDataset(full_hd["video"], load_raer_split(full_hd["video"], "train"), num_segments=SEGMENTS,
                        image_size=SIZE)
    cache = write_crop_cache(jpeg, tmp_path / "crops")
    cached = RaerDataset(root, clips, num_segments=SEGMENTS, image_size=SIZE, cache=cache)

    naive = clips_per_second(NaiveRaer(jpeg), workers)
    rates = {"jpeg frames": clips_per_second(jpeg, workers), "video (decord)": clips_per_second(video, workers),
             "crop cache": clips_per_second(cached, workers)}
    print(f"\n{workers} worker(s), 1920x1080, {SEGMENTS} frames/clip at {SIZE}px: naive PIL {naive:.2f} clips/s")
    for name, rate in rates.items():
        print(f"  {name:15s} {rate:7.2f} clips/s  = {rate / naive:5.1f}x naive")
    assert rates["crop cache"] >= 10 * naive
    assert rates["jpeg frames"] >= 2 * naive
