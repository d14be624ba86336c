"""Predicting on a user's own video against decoding it, in one run: windows/s and frames/s of the predict path beside
the frames/s of decoding alone, and the ratio (the issue's target: predict at >= 50% of decode-only throughput with
the default model on this CPU).

The videos: 60 s at 25 fps, 640x360, H.264 by libx264 with its defaults (what ffmpeg gives users): the head and
shoulders of scikit-image's astronaut photo (a real face, ~95 px) panning over a gradient; "clean" as drawn (0.6 MB,
80 kbit/s: cheaper to decode than any camera's video, so the hardest case for the ratio), "camera noise" with +-6
levels of per-pixel noise a frame, as a sensor gives (3.7 MB, 490 kbit/s).
- decode only: `video.iter_frames` over the whole video, every frame to RGB (what any reader of it must do);
- windows only: `windows.cut_windows`, 2 s windows every 1 s, T frames each: the face detector on the sampled
  frames (tracked), the face and context crops as in training;
- predict: the predict command's path (`affectlab.lab.raer.predict.Predictor.video`): those windows through
  CLIP-CAER (each distinct crop through the image encoder once), softmax: the default model of the raer experiment
  (the tiny CLIP affectlab-tiny, five classes, its T and face margin), one torch thread.
Each is timed ROUNDS times, alternating, and the fastest round of each is compared. The ratio asserted is of CPU time
(every thread of the process): on the 2 shared cores the wall-clock of one pass swings by 2x with the other jobs
(decode-only wall-clock 450-2340 frames/s across runs of these videos), its CPU time by up to 1.5x.

    OMP_NUM_THREADS=1 uv run pytest -s benchmarks/test_predict_speed.py

Measured on the 2 shared cores (load average 1.4-5.3 from other jobs), CPU time, fastest of 3 rounds, clean video:
- first version: faces searched in every sampled frame, whole and at half size (~30 ms a frame), every frame
  converted to RGB: predict / decode only 0.26;
- faces tracked (a region around the previous face, at 48 px: ~1 ms but loose boxes, IoU 0.68 with the face), only
  the sampled frames converted to RGB: 0.53;
- now (tracked at 60 px in a tight region, then a wider one: ~1.9 ms a frame, IoU 0.86; frames no sampled frame
  refers to not decoded; a frame's face crop made once for the windows sharing it; the cascades loaded once),
  2026-12-06 19:39-19:46 UTC, four runs:
    clean:        decode only 1887-2383 frames per CPU-s; windows only 1296-1476 (51-58 windows per CPU-s);
                  predict 1058-1270 (42-50 windows per CPU-s); predict / decode only 0.56, 0.48, 0.61, 0.64
    camera noise: decode only 1014-1221; windows only 930-1075; predict 809-950 (32-37 windows per CPU-s);
                  predict / decode only 0.80, 0.78, 0.70, 0.78
  Wall-clock in the same runs: clean 916-1146 predicted frames/s (36-45 windows/s), the ratio 0.48-1.37 as the
  decode-only pass was slowed or not by the other jobs.
  On the clean video the target is met with no margin (one run of four at 0.48 fails): there the model is a fifth of
  the predict time (CLIP-CAER's forward on 16 frames a window, ~4.7 ms), the Haar cascade on the sampled frames a
  third, and decoding H.264 this cheap (80 kbit/s) leaves little to compare with; a video with a camera's noise costs
  twice as much to decode and predict runs at ~0.75 of it.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from skimage.data import astronaut

from affectlab.datasets.video import iter_frames
from affectlab.datasets.windows import cut_windows
from affectlab.lab.config import load_config
from affectlab.lab.raer.predict import Predictor

SECONDS, FPS, WIDTH, HEIGHT = 60, 25, 640, 360
WINDOW_S, HOP_S = 2.0, 1.0
ROUNDS = 3
NOISE = {"clean": 0, "camera noise": 6}  # +- levels of uniform per-pixel noise, drawn anew for every frame
CONFIG = load_config("raer", [], environ={})  # the experiment's defaults


@pytest.fixture(scope="module", params=list(NOISE))
def video(request, tmp_path_factory) -> Path:
    """The astronaut's head and shoulders (rows 0-359 of the 512 x 512 photo) panning left and right over a gradient."""
    path = tmp_path_factory.mktemp("predict") / f"astronaut, {request.param}.mp4"
    person = astronaut()[:HEIGHT].astype(np.int16)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([xs * 255 // WIDTH, ys * 255 // HEIGHT, np.full_like(xs, 96)], axis=-1).astype(np.int16)
    rng, noise = np.random.default_rng(0), NOISE[request.param]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for k in range(SECONDS * FPS):
            frame = background.copy()
            x = int(64 + 64 * np.sin(k / 40))
            frame[:, x : x + person.shape[1]] = person
            if noise:
                frame += rng.integers(-noise, noise + 1, size=(HEIGHT, WIDTH, 1), dtype=np.int16)
            pixels = np.clip(frame, 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def model() -> tuple[Predictor, int]:
    # One torch thread: with two, this tiny model's forward costs ~3x the CPU time on this 2-core machine (the
    # OpenMP threads wait for each other) and predict drops to ~0.3x decode-only CPU time.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    predictor = Predictor.from_config(CONFIG)
    return predictor, predictor.inputs.image_size


def decode_only(path: Path) -> int:
    return sum(1 for _ in iter_frames(path))


def cut(path: Path, image_size: int):
    return cut_windows(path, num_frames=CONFIG.data.num_segments, window_s=WINDOW_S, hop_s=HOP_S,
                       image_size=image_size, face_margin=CONFIG.data.face_margin)


def windows_only(path: Path, image_size: int) -> int:
    return sum(len(windows) for windows in cut(path, image_size))


def predict(path: Path, predictor: Predictor, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities [W, C], face found [W]) of every window of the video, as the predict command makes them."""
    with torch.inference_mode():
        table = predictor.video(path, window_s=WINDOW_S, hop_s=HOP_S, whole_frame=False, batch_size=32)
    return table[predictor.classes].to_numpy(), table["face_found"].to_numpy()


def fastest(run, rounds: list) -> None:
    """Time one call of `run` into `rounds`: (wall-clock s, CPU s of every thread of the process, its result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    rounds.append((time.perf_counter() - wall, time.process_time() - cpu, result))


def test_predict_throughput_against_decode_only(video, model):
    net, image_size = model
    frames = SECONDS * FPS
    timings: dict[str, list] = {"decode only": [], "windows only": [], "predict": []}
    for _ in range(ROUNDS):
        fastest(lambda: decode_only(video), timings["decode only"])
        fastest(lambda: windows_only(video, image_size), timings["windows only"])
        fastest(lambda: predict(video, net, image_size), timings["predict"])
    assert all(result == frames for _, _, result in timings["decode only"])
    probs, found = timings["predict"][0][2]
    count = len(probs)
    best = {name: (min(t for t, _, _ in runs), min(c for _, c, _ in runs)) for name, runs in timings.items()}
    print(f"\n{video.name}: {SECONDS} s, {WIDTH}x{HEIGHT} at {FPS} fps, H.264 ({video.stat().st_size / 1e6:.1f} MB); "
          f"{count} windows of {WINDOW_S:g} s every {HOP_S:g} s, {CONFIG.data.num_segments} frames each at "
          f"{image_size} px, {CONFIG.model.backbone}; fastest of {ROUNDS} rounds, wall-clock (CPU time)")
    for name, (wall, cpu) in best.items():
        rates = f"{frames / wall:7.1f} frames/s ({frames / cpu:7.1f} per CPU-s)"
        if name != "decode only":
            rates += f", {count / wall:5.1f} windows/s ({count / cpu:5.1f} per CPU-s)"
        print(f"  {name:13s} {rates}")
    (decode_wall, decode_cpu), (predict_wall, predict_cpu) = best["decode only"], best["predict"]
    print(f"  predict / decode only: {decode_wall / predict_wall:.2f} wall-clock, {decode_cpu / predict_cpu:.2f} "
          "CPU time")
    assert count == 59 and found.all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # CPU time: on the shared machine the wall-clock of one single-threaded pass swings by 2x with the other jobs.
    assert decode_cpu / predict_cpu >= 0.5
