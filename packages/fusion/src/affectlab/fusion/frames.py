"""From segment predictions to the challenge's per-frame output: aggregation, the submission file, the scorer.

- `segments_to_frames`: each segment's probabilities go to every frame it covers and are averaged where segments
  overlap; a frame no segment covers takes the previous frame's prediction (frames before the first covered frame
  take the first covered frame's).
- `write_submission` / `read_submission`: the ABAW compound-expression file, header `image_location,<classes>`
  (spaces in a class name become underscores) then one line per frame, `VIDEO/00001.jpg,<class index>` (frames
  numbered from 1, five digits).
- `score_frames` / `score_submission`: the challenge metric, per-frame macro-F1 over the compound classes.
  Ground-truth frames outside them (Other, unannotated -1) are not scored. The mean runs over the classes that occur
  in the ground truth or the predictions (scikit-learn's `f1_score(average="macro")`); a class in neither is NaN.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def submission_header(classes: Sequence[str]) -> str:
    """The first line of the challenge file for these compound classes."""
    return "image_location," + ",".join(name.replace(" ", "_") for name in classes)

_LINE = re.compile(r"(.+)/(\d+)\.jpg,([0-9]+)")


def segments_to_frames(starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, num_frames: int) -> np.ndarray:
    """Segments [starts[i], ends[i]) (frame indices) with scores [S, K] -> per-frame scores [num_frames, K]."""
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or starts.shape != ends.shape or starts.shape != scores.shape[:1]:
        raise ValueError(f"starts {starts.shape}, ends {ends.shape}, scores {scores.shape}; expected [S], [S], [S, K]")
    bad = np.nonzero((starts < 0) | (ends <= starts) | (ends > num_frames))[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"segment {i} covers frames [{starts[i]}, {ends[i]}); expected 0 <= start < end <= {num_frames}"
        )
    if starts.size == 0:
        raise ValueError("no segments: every frame needs at least one segment before it to take a prediction from")
    # difference arrays: +scores where a segment starts, -scores where it ends, then a running sum; one bincount
    # per class, laid out [K, F] so that every pass runs over contiguous memory
    size = num_frames + 1
    delta = np.stack(
        [np.bincount(starts, column, size) - np.bincount(ends, column, size) for column in scores.T]
    )
    sums = np.cumsum(delta[:, :-1], axis=1)
    counts = np.cumsum(np.bincount(starts, minlength=size) - np.bincount(ends, minlength=size))[:-1]
    covered = counts > 0
    sums /= np.maximum(counts, 1)
    if covered.all():
        return sums.T
    # fill: index of the latest covered frame at or before each frame, the first covered one for leading frames
    source = np.maximum.accumulate(np.where(covered, np.arange(num_frames), -1))
    source[source < 0] = int(np.argmax(covered))
    return sums[:, source].T


def write_submission(path: str | Path, predictions: Mapping[str, np.ndarray], classes: Sequence[str]) -> Path:
    """{video: per-frame compound index [F]} -> the challenge file for these compound classes; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [submission_header(classes)]
    for video, labels in predictions.items():
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"video {video!r}: labels span {labels.min()}..{labels.max()}; "
                             f"expected 0..{len(classes) - 1}")
        lines.extend(f"{video}/{k:05d}.jpg,{label}" for k, label in enumerate(labels.tolist(), start=1))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_submission(path: str | Path, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """The challenge file back as {video: per-frame compound index}; frames must run 1, 2, ... per video."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    header = submission_header(classes)
    if not lines or lines[0].strip() != header:
        found = lines[0].strip() if lines else ""
        raise ValueError(f"{path}:1: header is {found!r}; expected {header!r}")
    videos: dict[str, list[int]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line.strip())
        if not match or int(match[3]) >= len(classes):
            raise ValueError(f"{path}:{lineno}: {line.strip()!r}; expected 'VIDEO/00001.jpg,<0..{len(classes) - 1}>'")
        video, frame, label = match[1], int(match[2]), int(match[3])
        labels = videos.setdefault(video, [])
        if frame != len(labels) + 1:
            raise ValueError(f"{path}:{lineno}: frame {frame} of {video!r}; expected frame {len(labels) + 1}")
        labels.append(label)
    return {video: np.asarray(labels, dtype=np.int64) for video, labels in videos.items()}


@dataclass(frozen=True)
class FrameScore:
    macro_f1: float
    per_class_f1: dict[str, float]  # NaN for a class in neither the truth nor the predictions
    num_frames: int  # frames scored


def score_frames(predictions: np.ndarray, truth: np.ndarray, classes: Sequence[str]) -> FrameScore:
    """Per-frame macro-F1 over the compound `classes`; truth outside them (Other, -1) is skipped."""
    predictions, truth = np.asarray(predictions, dtype=np.int64), np.asarray(truth, dtype=np.int64)
    if predictions.shape != truth.shape:
        raise ValueError(f"{predictions.shape[0]} predicted frames for {truth.shape[0]} true frames; expected equal")
    n = len(classes)
    scored = (truth >= 0) & (truth < n)
    if predictions[scored].size and (predictions[scored].min() < 0 or predictions[scored].max() >= n):
        raise ValueError(f"predictions span {predictions.min()}..{predictions.max()}; expected 0..{n - 1}")
    confusion = np.bincount(truth[scored] * n + predictions[scored], minlength=n * n).reshape(n, n)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
    macro = float(np.nanmean(f1)) if np.isfinite(f1).any() else 0.0
    return FrameScore(macro, dict(zip(classes, f1.tolist())), int(scored.sum()))


def score_submission(path: str | Path, truth: Mapping[str, np.ndarray], classes: Sequence[str]) -> FrameScore:
    """Score a submission file against {video: per-frame truth}; every video and frame must be predicted."""
    predicted = read_submission(path, classes)
    missing = sorted(set(truth) - set(predicted))
    if missing:
        raise ValueError(f"{path}: no predictions for video(s) {missing[:5]}; expected every scored video")
    for video, labels in truth.items():
        if len(predicted[video]) != len(labels):
            raise ValueError(f"{path}: video {video!r} has {len(predicted[video])} frames; expected {len(labels)}")
    videos = sorted(truth)
    return score_frames(
        np.concatenate([predicted[v] for v in videos]), np.concatenate([np.asarray(truth[v]) for v in videos]), classes
    )
