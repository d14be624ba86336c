"""PPA, PFSA and segment->frame aggregation: vectorised NumPy against a plain Python loop, on one CPU core.

The issue asks for at least a million frames per second. Each test times the vectorised function on 1M frames and
the loop on a slice, prints frames/s and the ratio, and hands the vectorised call to pytest-benchmark
(`pytest benchmarks --benchmark-enable` for its statistics; the project's default runs each once).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from affectlab.datasets.labelsets import load_label_set
from affectlab.fusion import MASK_THRESHOLD, pair_weights, pfsa_scores, ppa_scores, segments_to_frames

PAIRS = load_label_set("cexpr").pair_index()  # C-EXPR-DB's seven compounds as pairs of the eight basic classes


def ppa_predict(probs, **options):
    return ppa_scores(probs, PAIRS, **options).argmax(axis=-1)

FRAMES = 1_000_000
LOOP_FRAMES = 20_000
REQUIRED_FPS = 1_000_000


@pytest.fixture(autouse=True)
def one_core():
    with threadpool_limits(limits=1):
        yield


def _best_seconds(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _report(name: str, vector_s: float, loop_s: float) -> float:
    vector_fps, loop_fps = FRAMES / vector_s, LOOP_FRAMES / loop_s
    ratio = vector_fps / loop_fps
    print(f"\n{name}: vectorised {vector_fps:,.0f} frames/s, loop {loop_fps:,.0f} frames/s, ratio {ratio:,.0f}x")
    return vector_fps


def _probs(n: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).standard_normal((n, 8))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def _ppa_loop(probs: list[list[float]]) -> list[int]:
    weights = pair_weights(PAIRS, 8, True).tolist()
    pairs = [list(p) for p in PAIRS]
    out = []
    for row in probs:
        row = [p if p >= MASK_THRESHOLD else 0.0 for p in row]
        scores = [w[0] * row[i] + w[1] * row[j] for (i, j), w in zip(pairs, weights)]
        out.append(scores.index(max(scores)))
    return out


def test_ppa_speed(benchmark):
    probs = _probs(FRAMES)
    rows = probs[:LOOP_FRAMES].tolist()
    assert _ppa_loop(rows) == ppa_predict(probs[:LOOP_FRAMES], weighted=True, mask=True).tolist()
    vector_s = _best_seconds(lambda: ppa_predict(probs, weighted=True, mask=True))
    fps = _report("PPA (weighted, masked)", vector_s, _best_seconds(lambda: _ppa_loop(rows), 1))
    benchmark(ppa_predict, probs, weighted=True, mask=True)
    assert fps >= REQUIRED_FPS


def _pfsa_loop(features: list[list[float]], prototypes: list[list[float]]) -> list[int]:
    import math

    norms = [math.sqrt(sum(v * v for v in p)) for p in prototypes]
    out = []
    for f in features:
        fn = math.sqrt(sum(v * v for v in f))
        sims = [sum(a * b for a, b in zip(f, p)) / (fn * n) for p, n in zip(prototypes, norms)]
        scores = [sims[i] + sims[j] for i, j in PAIRS]
        out.append(scores.index(max(scores)))  # the softmax keeps the argmax
    return out


def test_pfsa_speed(benchmark):
    features = _probs(FRAMES, seed=1)  # the fused 8-probability feature, as the experiment uses
    prototypes = _probs(8, seed=2)
    rows = features[:LOOP_FRAMES].tolist()
    assert _pfsa_loop(rows, prototypes.tolist()) == pfsa_scores(rows, prototypes, PAIRS).argmax(axis=1).tolist()
    vector_s = _best_seconds(lambda: pfsa_scores(features, prototypes, PAIRS))
    fps = _report("PFSA", vector_s, _best_seconds(lambda: _pfsa_loop(rows, prototypes.tolist()), 1))
    benchmark(pfsa_scores, features, prototypes, PAIRS)
    assert fps >= REQUIRED_FPS


def _aggregate_loop(starts, ends, scores, num_frames):
    classes = len(scores[0])
    sums = [[0.0] * classes for _ in range(num_frames)]
    counts = [0] * num_frames
    for start, end, row in zip(starts, ends, scores):
        for frame in range(start, end):
            counts[frame] += 1
            sums[frame] = [a + b for a, b in zip(sums[frame], row)]
    out, previous = [], None
    for frame in range(num_frames):
        if counts[frame]:
            previous = [v / counts[frame] for v in sums[frame]]
        out.append(previous)
    return out


def _windows(num_frames: int, length: int = 40, hop: int = 20):
    starts = np.arange(0, num_frames - length // 2, hop)
    return starts, np.minimum(starts + length, num_frames)


def test_frame_aggregation_speed(benchmark):
    starts, ends = _windows(FRAMES)  # 4 s windows every 2 s at 10 fps
    scores = _probs(len(starts), seed=3)[:, :7]
    loop_starts, loop_ends = _windows(LOOP_FRAMES)
    loop_scores = scores[: len(loop_starts)]
    expected = segments_to_frames(loop_starts, loop_ends, loop_scores, LOOP_FRAMES)
    loop_args = (loop_starts.tolist(), loop_ends.tolist(), loop_scores.tolist(), LOOP_FRAMES)
    np.testing.assert_allclose(_aggregate_loop(*loop_args), expected)
    vector_s = _best_seconds(lambda: segments_to_frames(starts, ends, scores, FRAMES))
    loop_s = _best_seconds(lambda: _aggregate_loop(*loop_args), 1)
    fps = _report("segment->frame aggregation", vector_s, loop_s)
    benchmark(segments_to_frames, starts, ends, scores, FRAMES)
    assert fps >= REQUIRED_FPS
