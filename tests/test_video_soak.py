"""Soak: the video loader reads 2,000 clips through 2 DataLoader workers without its memory growing.

Video readers have had leaks (decord's kept FFmpeg contexts or frame buffers after they were dropped); RaerDataset
opens a new reader (PyAV by default, `video_reader`) for every item, so a leak there grows with every clip read.
Twelve distinct small videos (Motion-JPEG AVI and MPEG-4 Part 2 MP4, which has inter frames and so real decoder
state) stand behind 2,000 index entries: every entry
opens its file and decodes its frames again. Each item carries its worker's resident memory (VmRSS) and peak (VmHWM),
read from /proc in the worker itself.

The bound: after a warm-up of WARM_UP items per worker (allocator arenas, decord's and PyTorch's first allocations),
neither worker's resident memory nor the main process's may grow by more than GROWTH_BOUND_MB. The frames are 160x120,
so leaking one decoded frame (57.6 kB) per clip would add about 52 MB over a worker's last 900 clips, and leaking a
reader (demuxer and decoder contexts, hundreds of kB) far more; the allocator's own fluctuation is a few MB.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from affectlab.datasets import RaerDataset, load_raer_split, write_mjpeg_avi

CLIPS = 2000
WORKERS = 2
WARM_UP = 100  # items per worker before the first measurement
GROWTH_BOUND_MB = 20.0
FRAME_SIZE = (160, 120)
FRAMES_PER_VIDEO = 12


def memory_kb() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in kB: current and peak resident memory."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


class Repeated(torch.utils.data.Dataset):
    """`length` entries over the clips of `dataset`, each a full read, tagged with the reading process's memory."""

    def __init__(self, dataset: RaerDataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index % len(self.dataset)]
        rss, hwm = memory_kb()
        return {"face": item["face"], "context": item["context"], "rss": rss, "hwm": hwm, "pid": os.getpid(),
                "index": index}


def write_videos(root: Path, count: int) -> None:
    """`count` clips of FRAMES_PER_VIDEO moving-gradient frames, half Motion-JPEG AVI and half MPEG-4 MP4, as RAER."""
    import cv2

    width, height = FRAME_SIZE
    ramp = np.add.outer(np.arange(height), np.arange(width))
    lines = []
    for c in range(count):
        frames = [np.stack([(ramp + 9 * k + 40 * c) % 256, (ramp * 2 + k) % 256, np.full_like(ramp, 30 * c % 256)],
                           axis=-1).astype(np.uint8) for k in range(FRAMES_PER_VIDEO)]
        if c % 2 == 0:
            write_mjpeg_avi(root / "images" / f"clip{c:02d}.avi", frames)
        else:
            writer = cv2.VideoWriter(str(root / "images" / f"clip{c:02d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                                     FRAME_SIZE)
            assert writer.isOpened(), "OpenCV cannot write MPEG-4 here"
            for frame in frames:
                writer.write(frame[..., ::-1].copy())  # OpenCV takes BGR
            writer.release()
        lines.append(f"clip{c:02d} {FRAMES_PER_VIDEO} {c % 5 + 1}\n")
    (root / "annotation").mkdir(parents=True)
    (root / "annotation" / "train.txt").write_text("".join(lines))
    (root / "bounding_box").mkdir()
    face = {f"clip{c:02d}": {str(k): [40, 30, 100, 90] for k in range(1, FRAMES_PER_VIDEO + 1)} for c in range(count)}
    (root / "bounding_box" / "face.json").write_text(json.dumps(face))
    body = {f"clip{c:02d}": [0, 0, width, height] for c in range(count)}
    (root / "bounding_box" / "body.json").write_text(json.dumps(body))


def test_video_loader_memory_does_not_grow_over_2000_clips(tmp_path):
    pytest.importorskip("cv2")
    write_videos(tmp_path, 12)
    dataset = RaerDataset(tmp_path, load_raer_split(tmp_path, "train"), num_segments=4, image_size=16, train=True)
    assert sum(dataset._is_video) == 12  # every clip is read from its video file
    loader = torch.utils.data.DataLoader(Repeated(dataset, CLIPS), batch_size=10, num_workers=WORKERS)
    main_start = memory_kb()
    samples: dict[int, list[tuple[int, int, int]]] = {}  # worker pid -> [(index, rss, hwm)] in reading order
    main_warm = None
    for batch_number, batch in enumerate(loader):
        assert batch["face"].shape == (10, 4, 3, 16, 16) and torch.isfinite(batch["context"]).all()
        for pid, index, rss, hwm in zip(batch["pid"].tolist(), batch["index"].tolist(), batch["rss"].tolist(),
                                        batch["hwm"].tolist()):
            samples.setdefault(pid, []).append((index, rss, hwm))
        if batch_number + 1 == WORKERS * WARM_UP // 10:
            main_warm = memory_kb()
    main_end = memory_kb()

    assert sum(len(s) for s in samples.values()) == CLIPS and len(samples) == WORKERS
    growth = {}
    print(f"\n{CLIPS} clips read by {WORKERS} workers (12 videos, {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, a new decord reader "
          "per clip); resident memory in MB, current (peak):")
    for pid, series in samples.items():
        series.sort()
        (_, warm_rss, warm_hwm), (_, end_rss, end_hwm) = series[WARM_UP - 1], series[-1]
        first_rss = series[0][1]
        growth[f"worker {pid}"] = (end_rss - warm_rss) / 1024
        print(f"  worker {pid}: first clip {first_rss / 1024:.1f}, after {WARM_UP} clips {warm_rss / 1024:.1f} "
              f"({warm_hwm / 1024:.1f}), after {len(series)} clips {end_rss / 1024:.1f} ({end_hwm / 1024:.1f}); "
              f"growth after warm-up {growth[f'worker {pid}']:+.1f}")
    growth["main"] = (main_end[0] - main_warm[0]) / 1024
    print(f"  main: start {main_start[0] / 1024:.1f} ({main_start[1] / 1024:.1f}), after warm-up "
          f"{main_warm[0] / 1024:.1f} ({main_warm[1] / 1024:.1f}), end {main_end[0] / 1024:.1f} "
          f"({main_end[1] / 1024:.1f}); growth after warm-up {growth['main']:+.1f}")
    print(f"  bound: {GROWTH_BOUND_MB:.0f} MB")
    assert all(value < GROWTH_BOUND_MB for value in growth.values()), growth
