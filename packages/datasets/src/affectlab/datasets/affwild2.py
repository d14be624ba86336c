"""Basic-expression training data for the fusion: AffWild2's expression labels and AFEW's folder-per-class clips.

    AffWild2   EXPR_Set/<split>/<video>.txt: the header "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other",
               then one label per frame (0..7, in that order), -1 where the frame is not annotated
    AFEW       <root>/<Class>/<clip>.avi (or a folder of frames), one folder per class: Angry, Disgust, Fear, Happy,
               Neutral, Sad, Surprise; no Other

Both give labels in AffWild2's order (AFFWILD2_EXPRESSIONS), the order of every modality table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import load_label_set
from affectlab.datasets.textfile import read_text
from affectlab.datasets.video import VIDEO_SUFFIXES

AFFWILD2_EXPRESSIONS: tuple[str, ...] = load_label_set("basic8").classes
AFEW_FOLDERS: dict[str, str] = {
    "Angry": "Anger",
    "Disgust": "Disgust",
    "Fear": "Fear",
    "Happy": "Happiness",
    "Neutral": "Neutral",
    "Sad": "Sadness",
    "Surprise": "Surprise",
}


def read_affwild2_expression(path: str | Path) -> np.ndarray:
    """[num_frames] labels of one AffWild2 expression file (index into AFFWILD2_EXPRESSIONS, -1 unannotated)."""
    path = Path(path)
    lines = read_text(path, "expression label file", f"the header {','.join(AFFWILD2_EXPRESSIONS)}").splitlines()
    expected = ",".join(AFFWILD2_EXPRESSIONS)
    if not lines or lines[0].replace(" ", "") != expected:
        found = lines[0] if lines else ""
        raise DatasetError(f"{path}:1: header {found!r}; expected {expected!r}")
    labels = []
    for lineno, line in enumerate(lines[1:], start=2):
        text = line.strip()
        if not text:
            continue
        try:
            label = int(text)
        except ValueError:
            label = None
        if label is None or not -1 <= label < len(AFFWILD2_EXPRESSIONS):
            last = len(AFFWILD2_EXPRESSIONS) - 1
            raise DatasetError(f"{path}:{lineno}: label {text!r}; expected an integer -1..{last}")
        labels.append(label)
    if not labels:
        raise DatasetError(f"{path}: no frame labels after the header; expected one label per frame")
    return np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True)
class AfewClip:
    path: Path  # a video file or a frame folder
    label: int  # index into AFFWILD2_EXPRESSIONS


def read_afew(root: str | Path) -> list[AfewClip]:
    """Every clip under AFEW's class folders, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected AFEW's class folders {sorted(AFEW_FOLDERS)}")
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in AFEW_FOLDERS)
    if unknown:
        raise DatasetError(f"{root}: unknown class folder(s) {unknown}; expected only {sorted(AFEW_FOLDERS)}")
    clips = [
        AfewClip(item, AFFWILD2_EXPRESSIONS.index(emotion))
        for folder, emotion in AFEW_FOLDERS.items()
        if (root / folder).is_dir()
        for item in sorted((root / folder).iterdir())
        if not item.name.startswith(".")
    ]
    if not clips:
        raise DatasetError(f"{root}: no clips in the class folders {sorted(AFEW_FOLDERS)}")
    for clip in clips:  # decord may spend minutes failing to read a stray notes.txt, so refuse it by name first
        if not clip.path.is_dir() and clip.path.suffix and clip.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise DatasetError(f"{clip.path}: neither a video ({', '.join(VIDEO_SUFFIXES)}) nor a frame folder; "
                               "expected only clips in AFEW's class folders")
    seen: dict[tuple[str, str], Path] = {}
    for clip in clips:  # a clip's id is <Class>/<stem>: 001.avi beside 001.mp4 or a frame folder 001/ is ambiguous
        key = (clip.path.parent.name, clip.path.stem)
        if key in seen:
            raise DatasetError(f"{clip.path}: same clip id {'/'.join(key)!r} as {seen[key]}; expected one file or "
                               "frame folder per clip")
        seen[key] = clip.path
    return clips
