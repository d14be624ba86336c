"""The embedded default dataset: a small synthetic RAER written in the official release layout.

Each clip shows one "student" at a desk. The label needs BOTH streams: the face carries one of three expressions
(A: straight mouth, B: red smile, C: round mouth under frowning brows) inside the face box, and the desk, inside the
body box but well below the face box, carries one of two objects (a book or a phone):

    Neutrality = A + book     Enjoyment = B + book     Confusion = C + book
    Fatigue = C + phone       Distraction = A + phone

so a face-only model tops out at 60% UAR (it cannot split Neutrality/Distraction or Confusion/Fatigue), a context-only
model at 40%, and face + context can reach 100%. Position, colours, background, motion and noise vary per clip.

Both label sets are written: the five classes in `annotation/{train,test}.txt` and the four valence/arousal quadrants
(raer_four) in `annotation/four/{train,test}.txt`, each clip's quadrant following from its five-class label
(FOUR_OF_FIVE). With `num_votes` > 1 every line carries that many annotators' votes instead of one label, a strict
majority for the true class and the rest spread over the other classes. With `video=True` each clip is one
Motion-JPEG AVI `images/<clip_dir>.avi` instead of a folder of JPEG frames.
"""

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.generated import generate_once
from affectlab.datasets.raer import RAER_CONTEXTS
from affectlab.datasets.video import write_mjpeg_avi

# Bump when the drawing changes, so cached datasets made by older code are not reused.
GENERATOR_VERSION = 3

FACE_TYPE = ("A", "B", "C", "C", "A")  # per class, in raer_five order
CONTEXT_TYPE = ("book", "book", "book", "phone", "phone")  # per class, in raer_five order
# raer_four label of each raer_five class: Neutrality is calm and positive, Enjoyment lively and positive, Confusion
# and Distraction restless and negative, Fatigue low and negative.
FOUR_OF_FIVE = (1, 0, 2, 3, 2)
SCENES = RAER_CONTEXTS

# The layout is drawn for a 160x120 frame and scaled to the requested size.
_BASE_HEIGHT = 120
_BODY_W, _BODY_H = 72, 100
_FACE_W, _FACE_H = 34, 38
_DESK_TOP = 62  # below the body box top; leaves > 20 px (the default face margin) between face box and desk objects
_MISSING_FACE_BOX_RATE = 0.05


def make_synthetic_raer(
    root: str | Path,
    *,
    num_train: int = 250,
    num_test: int = 100,
    num_frames: int = 16,
    frame_size: tuple[int, int] = (160, 120),
    seed: int = 0,
    num_votes: int = 1,
    video: bool = False,
) -> Path:
    """Write a synthetic RAER under `root` (images/, annotation/, bounding_box/) and return `root`."""
    root = Path(root)
    width, height = frame_size
    if width < 64 or height < 48 or width < height:
        raise DatasetError(f"synthetic RAER frame_size is {frame_size}; expected a landscape frame of at least 64x48")
    if num_train < 0 or num_test < 0 or num_frames < 1 or num_votes < 1:
        raise DatasetError(
            f"synthetic RAER got num_train={num_train}, num_test={num_test}, num_frames={num_frames}, "
            f"num_votes={num_votes}; expected clip counts >= 0, at least 1 frame and at least 1 vote"
        )
    face_json: dict[str, dict[str, list[int]]] = {}
    body_json: dict[str, list[int]] = {}
    clip_number = 0
    for split, count in (("train", num_train), ("test", num_test)):
        # Balanced classes: label i % 5, shuffled so the annotation order carries no label information.
        labels = np.random.default_rng([seed, 0 if split == "train" else 1]).permutation(np.arange(count) % 5)
        lines, four_lines = [], []
        for label in labels.tolist():
            clip_number += 1
            rng = np.random.default_rng([seed, 2, clip_number])
            clip_dir = f"{SCENES[int(rng.integers(len(SCENES)))]}/{clip_number:06d}"
            frames, face_boxes, body_box = _draw_clip(label, num_frames, frame_size, rng)
            _save_clip(root / "images" / clip_dir, frames, video)
            face_json[clip_dir] = face_boxes
            body_json[clip_dir] = body_box
            votes = _votes(label, num_votes, np.random.default_rng([seed, 3, clip_number]))
            lines.append(f"{clip_dir} {num_frames} {' '.join(str(v + 1) for v in votes)}\n")
            four_lines.append(f"{clip_dir} {num_frames} {' '.join(str(FOUR_OF_FIVE[v] + 1) for v in votes)}\n")
        (root / "annotation" / "four").mkdir(parents=True, exist_ok=True)
        (root / "annotation" / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
        (root / "annotation" / "four" / f"{split}.txt").write_text("".join(four_lines), encoding="utf-8")
    (root / "bounding_box").mkdir(parents=True, exist_ok=True)
    (root / "bounding_box" / "face.json").write_text(json.dumps(face_json), encoding="utf-8")
    (root / "bounding_box" / "body.json").write_text(json.dumps(body_json), encoding="utf-8")
    return root


def ensure_synthetic_raer(cache_dir: str | Path | None = None, **params) -> Path:
    """The synthetic RAER for `params` (keywords of `make_synthetic_raer`), generated once and cached.

    The folder is named by a hash of the parameters and appears only complete: it is written to a temporary folder
    and renamed into place, so an interrupted run leaves nothing that a later call would use.
    """
    return generate_once(make_synthetic_raer, "synthetic_raer", GENERATOR_VERSION, params, cache_dir)


def _votes(label: int, num_votes: int, rng: np.random.Generator) -> list[int]:
    """`num_votes` annotators' 0-based votes: a strict majority for `label`, the others for random other classes."""
    if num_votes == 1:
        return [label]
    agreeing = int(rng.integers(num_votes // 2 + 1, num_votes + 1))
    others = [c for c in range(len(FACE_TYPE)) if c != label]
    return [label] * agreeing + [int(c) for c in rng.choice(others, size=num_votes - agreeing)]


def _save_clip(path: Path, frames: list[Image.Image], video: bool) -> None:
    if video:
        write_mjpeg_avi(path.with_name(path.name + ".avi"), [np.asarray(f) for f in frames])
        return
    path.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames, start=1):
        frame.save(path / f"{k}.jpg", quality=90)


def _draw_clip(label: int, num_frames: int, frame_size: tuple[int, int], rng: np.random.Generator):
    """Draw the frames of one clip; returns them, its face boxes {frame_file: box} and its body box."""
    width, height = frame_size
    unit = height / _BASE_HEIGHT
    body_w, body_h = (_BODY_W + rng.uniform(-3, 3)) * unit, (_BODY_H + rng.uniform(-3, 3)) * unit
    sway = 2 * unit  # slight motion across frames, within the body box
    left = rng.uniform(4 * unit + sway, width - body_w - 4 * unit - sway)
    top = rng.uniform(2 * unit + sway, height - body_h - 2 * unit - sway)
    face_dx = rng.uniform(-3, 3) * unit
    phase, period = rng.uniform(0, 2 * math.pi), rng.uniform(6, 12)
    look = _clip_look(rng)
    background = _background(frame_size, rng)

    frames = []
    face_boxes: dict[str, list[int]] = {}
    for k in range(1, num_frames + 1):
        dx = sway * math.sin(phase + 2 * math.pi * k / period)
        dy = 0.5 * sway * math.cos(phase + 2 * math.pi * k / period)
        image = background.copy()
        face_box = _draw_student(
            ImageDraw.Draw(image), left + dx, top + dy, body_w, body_h, face_dx, unit, label, look
        )
        frames.append(image)
        if rng.random() >= _MISSING_FACE_BOX_RATE:
            jitter = rng.uniform(-1, 1, 4) * unit  # a detector's box is never pixel-exact
            face_boxes[f"{k}.jpg"] = [int(round(v + j)) for v, j in zip(face_box, jitter)]
    body_box = [
        max(0, math.floor(left - sway)),
        max(0, math.floor(top - 0.5 * sway)),
        min(width, math.ceil(left + body_w + sway)),
        min(height, math.ceil(top + body_h + 0.5 * sway)),
    ]
    return frames, face_boxes, body_box


def _clip_look(rng: np.random.Generator) -> dict:
    """Per-clip colours and object placement; none of them depends on the label."""
    skin = rng.uniform(0.55, 1.0)
    return {
        "skin": (int(235 * skin), int(190 * skin), int(150 * skin)),
        "shirt": tuple(int(v) for v in rng.integers(40, 140, 3)),
        "desk": tuple(int(v) for v in np.array([120, 80, 45]) * rng.uniform(0.8, 1.2)),
        "cover": tuple(int(v) for v in rng.integers(0, 200, 3)),
        "paper": int(rng.integers(225, 256)),
        "screen": (int(rng.integers(20, 90)), int(rng.integers(185, 256)), int(rng.integers(215, 256))),
        "object_dx": rng.uniform(-6, 6),
    }


def _background(frame_size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A muted room: a vertical colour gradient, a few dim rectangles (board, shelves, windows) and sensor noise."""
    width, height = frame_size
    top, bottom = rng.uniform(60, 190, 3), rng.uniform(60, 190, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 5))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.1, 0.4) * width, rng.uniform(0.1, 0.4) * height
        colour = tuple(int(v) for v in (top + rng.uniform(-40, 40, 3)).clip(30, 200))
        draw.rectangle((x, y, x + w, y + h), fill=colour)
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * 6
    return Image.fromarray((np.asarray(image) + noise).clip(0, 255).astype(np.uint8))


def _draw_student(draw, left, top, body_w, body_h, face_dx, unit, label, look) -> tuple[float, float, float, float]:
    """A student at a desk with the class's face cue and desk object; returns the face box (x1, y1, x2, y2)."""
    centre = left + body_w / 2
    face_w, face_h = _FACE_W * unit, _FACE_H * unit
    fx1, fy1 = centre + face_dx - face_w / 2, top + 2 * unit
    fx2, fy2 = fx1 + face_w, fy1 + face_h
    desk_top = top + _DESK_TOP * unit

    draw.rectangle((left + 6 * unit, fy2 - 2 * unit, left + body_w - 6 * unit, top + body_h), fill=look["shirt"])
    draw.rectangle((left, desk_top, left + body_w, top + body_h), fill=look["desk"])
    draw.ellipse((fx1, fy1, fx2, fy2), fill=look["skin"])
    _draw_face_cue(draw, fx1, fy1, face_w, face_h, FACE_TYPE[label])
    object_centre = (centre + look["object_dx"] * unit, desk_top + 0.55 * (top + body_h - desk_top))
    _draw_desk_object(draw, object_centre, unit, CONTEXT_TYPE[label], look)
    return fx1, fy1, fx2, fy2


def _draw_face_cue(draw, x, y, w, h, face_type: str) -> None:
    dark = (30, 20, 20)
    eye = 0.08 * w
    for ex in (0.32, 0.68):
        draw.ellipse((x + ex * w - eye, y + 0.42 * h - eye, x + ex * w + eye, y + 0.42 * h + eye), fill=dark)
    if face_type == "A":  # straight mouth
        draw.line((x + 0.26 * w, y + 0.75 * h, x + 0.74 * w, y + 0.75 * h), fill=dark, width=max(2, round(0.1 * h)))
    elif face_type == "B":  # wide red smile: the lower half of an ellipse
        draw.chord((x + 0.2 * w, y + 0.52 * h, x + 0.8 * w, y + 0.92 * h), 0, 180, fill=(215, 25, 35))
    else:  # round open mouth under thick frowning brows
        draw.ellipse((x + 0.38 * w, y + 0.64 * h, x + 0.62 * w, y + 0.9 * h), fill=dark)
        brow = max(2, round(0.1 * h))
        draw.line((x + 0.16 * w, y + 0.2 * h, x + 0.44 * w, y + 0.3 * h), fill=dark, width=brow)
        draw.line((x + 0.56 * w, y + 0.3 * h, x + 0.84 * w, y + 0.2 * h), fill=dark, width=brow)


def _draw_desk_object(draw, centre, unit, context_type: str, look) -> None:
    cx, cy = centre
    if context_type == "book":  # wide, open, white pages in a coloured cover
        half_w, half_h = 23 * unit, 12 * unit
        draw.rectangle((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=look["cover"])
        paper = (look["paper"],) * 3
        inset = 2 * unit
        draw.rectangle((cx - half_w + inset, cy - half_h + inset, cx - unit, cy + half_h - inset), fill=paper)
        draw.rectangle((cx + unit, cy - half_h + inset, cx + half_w - inset, cy + half_h - inset), fill=paper)
    else:  # narrow, upright, black with a bright cyan screen
        half_w, half_h = 8 * unit, 13 * unit
        draw.rectangle((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=(15, 15, 20))
        inset = 2 * unit
        draw.rectangle((cx - half_w + inset, cy - half_h + inset, cx + half_w - inset, cy + half_h - 3 * inset),
                       fill=look["screen"])
