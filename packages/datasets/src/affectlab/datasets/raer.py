"""RAER (learning-related emotions in classrooms) in its official release layout, as a PyTorch dataset.

    images/<clip_dir>/<k>.jpg        frames 1.jpg ... N.jpg of one clip (no zero padding; clip_dir may hold slashes)
    annotation/{train,test}.txt      one clip per line: `<clip_dir> <num_frames> <label>`, label 1-based
    bounding_box/face.json           {clip_dir: {frame_file: [x1, y1, x2, y2]}}, a frame may lack a box
    bounding_box/body.json           {clip_dir: [x1, y1, x2, y2]}, one box per clip

Each item gives two streams of T frames (TSN sampling): the face crop and the body context, letterboxed.
Everything a user can get wrong is checked when the dataset is built, so errors name a file before any training.
"""

import json
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import load_label_set

RAER_CLASSES: tuple[str, ...] = load_label_set("raer_five").classes

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Detector boxes at the frame border may overshoot by a pixel or two; more than this means the box is for another frame.
BOX_TOLERANCE_PX = 4.0

_FRAME_NAME = re.compile(r"([1-9][0-9]*)\.jpg")


@dataclass(frozen=True)
class RaerClip:
    clip_dir: str
    num_frames: int
    label: int  # 0-based
    source: str  # "path:line" of the annotation line


def read_annotation(path: str | Path, num_classes: int = 5) -> list[RaerClip]:
    """Clips of one annotation file (`<clip_dir> <num_frames> <label>` per line, labels 1..num_classes)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: annotation file not found; expected lines '<clip_dir> <num_frames> <label>'"
        ) from None
    clips: list[RaerClip] = []
    first_seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 3:
            raise DatasetError(
                f"{where}: {line.strip()!r} has {len(fields)} fields; expected '<clip_dir> <num_frames> <label>'"
            )
        clip_dir, frames_text, label_text = fields
        try:
            num_frames, label = int(frames_text), int(label_text)
        except ValueError:
            raise DatasetError(
                f"{where}: {line.strip()!r} has a non-integer frame count or label; expected integers"
            ) from None
        if num_frames < 1:
            raise DatasetError(f"{where}: num_frames is {num_frames}; expected at least 1")
        if not 1 <= label <= num_classes:
            raise DatasetError(f"{where}: label is {label}; expected 1..{num_classes}")
        if clip_dir in first_seen:
            raise DatasetError(
                f"{where}: clip {clip_dir!r} repeats line {first_seen[clip_dir]}; expected each clip once"
            )
        first_seen[clip_dir] = lineno
        clips.append(RaerClip(clip_dir=clip_dir, num_frames=num_frames, label=label - 1, source=where))
    return clips


def load_raer_split(root: str | Path, split: str) -> list[RaerClip]:
    """Clips of `annotation/{split}.txt` under a RAER root ("train" or "test")."""
    return read_annotation(Path(root) / "annotation" / f"{split}.txt")


def stratified_split(clips: list[RaerClip], val_fraction: float, seed: int) -> tuple[list[RaerClip], list[RaerClip]]:
    """(train, val): a seeded `val_fraction` of every class; each class with at least 2 clips keeps one on each side."""
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction is {val_fraction}; expected 0 <= val_fraction < 1")
    by_class: dict[int, list[int]] = defaultdict(list)
    for position, clip in enumerate(clips):
        by_class[clip.label].append(position)
    val_positions: set[int] = set()
    rng = random.Random(seed)
    for label in sorted(by_class):
        # Sorting by clip_dir first makes the split depend on which clips there are, not on the order they came in.
        members = sorted(by_class[label], key=lambda p: clips[p].clip_dir)
        rng.shuffle(members)
        count = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) >= 2:
            count = max(count, 1)
        count = min(count, len(members) - 1)  # train keeps at least one clip of every class
        val_positions.update(members[:count])
    train = [clip for p, clip in enumerate(clips) if p not in val_positions]
    val = [clip for p, clip in enumerate(clips) if p in val_positions]
    return train, val


def tsn_indices(num_frames: int, num_segments: int, train: bool, generator: torch.Generator | None = None) -> list[int]:
    """0-based frame indices, one per segment (TSN, Wang et al. 2016): T equal segments of the clip; a random frame
    of each segment when training (torch's global RNG unless `generator`), its centre otherwise. A clip shorter than
    T gives all its frames, then the last one repeated."""
    if num_frames < 1 or num_segments < 1:
        raise DatasetError(f"tsn_indices got num_frames={num_frames}, num_segments={num_segments}; expected both >= 1")
    if num_frames < num_segments:
        return list(range(num_frames)) + [num_frames - 1] * (num_segments - num_frames)
    starts = torch.arange(num_segments) * num_frames // num_segments
    lengths = torch.arange(1, num_segments + 1) * num_frames // num_segments - starts
    if train:
        offsets = (torch.rand(num_segments, generator=generator) * lengths).long().clamp(max=lengths - 1)
    else:
        offsets = lengths // 2
    return (starts + offsets).tolist()


class RaerDataset(torch.utils.data.Dataset):
    """RAER clips as `{"face": [T,3,S,S], "context": [T,3,S,S], "label": long, "index": int}`, CLIP-normalised.

    face: the frame's face box widened by `face_margin` px (clamped to the frame), resized to S x S; the whole frame
    when that frame has no face box. context: the clip's body box (the whole frame without one), resized with its
    aspect ratio kept and centred on a black S x S canvas.

    Training draws frames from torch's global RNG so that DataLoader worker seeding (and `seed_everything`) decides
    them and they change every epoch; evaluation takes segment centres. `seed` is kept for configs that pass it and
    does not change the sampling.

    In the JSON files an explicit `null` (or `[]`) box means "no box": a clip missing from face.json or body.json is
    an error, since it usually means the annotation and the boxes come from different releases.
    """

    def __init__(
        self,
        root: str | Path,
        clips: list[RaerClip],
        *,
        num_segments: int = 16,
        train: bool = False,
        image_size: int = 224,
        face_margin: int = 20,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.num_segments = num_segments
        self.train = train
        self.image_size = image_size
        self.face_margin = face_margin
        self.seed = seed
        # (pixel / 255 - mean) / std as one multiply-add on uint8 H x W x 3 pixels.
        self._pixel_scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).astype(np.float32)
        self._pixel_shift = (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).astype(np.float32)
        self._clips = list(clips)

        face_path = self.root / "bounding_box" / "face.json"
        body_path = self.root / "bounding_box" / "body.json"
        face_json = _read_json(face_path, "{clip_dir: {frame_file: [x1, y1, x2, y2]}}")
        body_json = _read_json(body_path, "{clip_dir: [x1, y1, x2, y2]}")

        # Per clip: its folder, how many frames 1.jpg..N.jpg it has, a face box per frame ([N, 4], NaN = no box:
        # whole frame) and its body box (None = whole frame). Compact arrays keep the dataset cheap to copy to workers.
        self._folders: list[str] = []
        self._frame_counts: list[int] = []
        self._face_boxes: list[np.ndarray] = []
        self._body_boxes: list[tuple[float, float, float, float] | None] = []
        for clip in self._clips:
            folder = self.root / "images" / clip.clip_dir
            count = _count_frames(folder, clip)
            sizes = [_frame_size(folder / f"{k}.jpg") for k in range(1, count + 1)]
            self._folders.append(str(folder))
            self._frame_counts.append(count)
            self._face_boxes.append(_clip_face_boxes(face_json, face_path, clip, sizes))
            self._body_boxes.append(_clip_body_box(body_json, body_path, clip, sizes))

    def __len__(self) -> int:
        return len(self._clips)

    @property
    def clips(self) -> list[RaerClip]:
        return list(self._clips)

    @property
    def labels(self) -> list[int]:
        return [clip.label for clip in self._clips]

    def __getitem__(self, index: int) -> dict:
        frames = tsn_indices(self._frame_counts[index], self.num_segments, self.train)
        crops = {k: self._crops(index, k) for k in set(frames)}  # short clips repeat frames; decode each once
        faces = [crops[k][0] for k in frames]
        contexts = [crops[k][1] for k in frames]
        return {
            "face": self._normalise(faces),
            "context": self._normalise(contexts),
            "label": torch.tensor(self._clips[index].label, dtype=torch.long),
            "index": index,
        }

    def _crops(self, index: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The face crop and the letterboxed context of 0-based frame k, from one decode of the frame."""
        size = self.image_size
        path = Path(self._folders[index]) / f"{k + 1}.jpg"
        try:
            with Image.open(path) as image:
                width, height = image.size
                face_box = self._face_boxes[index][k].tolist()
                if math.isnan(face_box[0]):
                    face_box = (0.0, 0.0, width, height)
                else:
                    face_box = _widen(face_box, self.face_margin, width, height)
                body_box = self._body_boxes[index]
                body_box = (0.0, 0.0, width, height) if body_box is None else _clamp(body_box, width, height)
                # JPEG can decode at 1/2, 1/4 or 1/8 scale almost for free; allow it while both crops keep >= S pixels.
                reduce = min(
                    (face_box[2] - face_box[0]) / size,
                    (face_box[3] - face_box[1]) / size,
                    max(body_box[2] - body_box[0], body_box[3] - body_box[1]) / size,
                )
                if reduce >= 2:
                    image.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
                image = image.convert("RGB")
        except (OSError, SyntaxError) as exc:
            raise DatasetError(f"{path}: cannot decode frame ({exc}); expected a readable JPEG") from exc
        sx, sy = image.width / width, image.height / height
        face = image.resize((size, size), Image.BILINEAR, box=_scale(face_box, sx, sy))
        context = _letterbox(image, _scale(body_box, sx, sy), size)
        return np.asarray(face), np.asarray(context)

    def _normalise(self, frames: list[np.ndarray]) -> torch.Tensor:
        # numpy, not torch: small element-wise ops in torch go through its thread pool, which is slow in workers.
        pixels = np.stack(frames).astype(np.float32) * self._pixel_scale - self._pixel_shift
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))


def _read_json(path: Path, expected: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: box file not found; expected {expected}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); expected {expected}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level is a {type(data).__name__}; expected {expected}")
    return data


def _count_frames(folder: Path, clip: RaerClip) -> int:
    """How many frames 1.jpg..N.jpg the folder holds (all of them, even beyond the annotation's count)."""
    if not folder.is_dir():
        raise DatasetError(
            f"{clip.source}: clip folder {folder} does not exist; expected frames 1.jpg..{clip.num_frames}.jpg"
        )
    numbers = {int(m.group(1)) for entry in folder.iterdir() if (m := _FRAME_NAME.fullmatch(entry.name))}
    present = max(numbers, default=0)
    gaps = [k for k in range(1, present) if k not in numbers]
    if gaps:
        raise DatasetError(
            f"{folder / f'{gaps[0]}.jpg'}: frame is missing ({clip.source}); "
            f"expected frames 1.jpg..{present}.jpg without gaps"
        )
    if present < clip.num_frames:
        raise DatasetError(
            f"{clip.source}: annotation says {clip.num_frames} frames but {folder} holds {present} frame files "
            f"named 1.jpg, 2.jpg, ...; expected at least {clip.num_frames}"
        )
    return present


def _frame_size(path: Path) -> tuple[int, int]:
    # Image.open reads the header only, so this checks every frame without decoding it.
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DatasetError(f"{path}: unreadable frame ({exc}); expected a JPEG image") from exc
    if width < 1 or height < 1:
        raise DatasetError(f"{path}: frame size is {width}x{height}; expected a non-empty image")
    return width, height


def _clip_face_boxes(face_json: dict, face_path: Path, clip: RaerClip, sizes: list[tuple[int, int]]) -> np.ndarray:
    if clip.clip_dir not in face_json:
        raise DatasetError(
            f"{face_path}: no entry for clip {clip.clip_dir!r} ({clip.source}); "
            "expected {frame_file: [x1, y1, x2, y2]}"
        )
    per_frame = face_json[clip.clip_dir]
    if not isinstance(per_frame, dict):
        raise DatasetError(
            f"{face_path}: clip {clip.clip_dir!r} holds a {type(per_frame).__name__}; "
            "expected {frame_file: [x1, y1, x2, y2]}"
        )
    boxes = np.full((len(sizes), 4), np.nan, dtype=np.float32)
    for k, size in enumerate(sizes, start=1):
        frame = f"{k}.jpg"
        box = _check_box(per_frame.get(frame), size, f"{face_path}: clip {clip.clip_dir!r} frame {frame}")
        if box is not None:
            boxes[k - 1] = box
    return boxes


def _clip_body_box(body_json: dict, body_path: Path, clip: RaerClip, sizes: list[tuple[int, int]]):
    if clip.clip_dir not in body_json:
        raise DatasetError(
            f"{body_path}: no entry for clip {clip.clip_dir!r} ({clip.source}); expected [x1, y1, x2, y2]"
        )
    box = None
    for size in sorted(set(sizes)):  # one box for the clip must fit every frame size in it
        box = _check_box(body_json[clip.clip_dir], size, f"{body_path}: clip {clip.clip_dir!r}")
    return box


def _check_box(value, size: tuple[int, int], where: str) -> tuple[float, float, float, float] | None:
    if value is None or value == []:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise DatasetError(f"{where}: box is {value!r}; expected [x1, y1, x2, y2] numbers")
    x1, y1, x2, y2 = (float(v) for v in value)
    width, height = size
    if x2 <= x1 or y2 <= y1:
        raise DatasetError(f"{where}: box is {value!r}; expected x2 > x1 and y2 > y1")
    tol = BOX_TOLERANCE_PX
    outside = x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol
    if outside or x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        raise DatasetError(
            f"{where}: box is {value!r}, outside the {width}x{height} frame; "
            f"expected 0 <= x <= {width}, 0 <= y <= {height}"
        )
    return x1, y1, x2, y2


def _clamp(box, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))


def _widen(box, margin: float, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return _clamp((x1 - margin, y1 - margin, x2 + margin, y2 + margin), width, height)


def _scale(box, sx: float, sy: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return x1 * sx, y1 * sy, x2 * sx, y2 * sy


def _letterbox(image: Image.Image, box, size: int) -> Image.Image:
    """The box region resized to fit S x S with its aspect ratio kept, centred on black."""
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    scale = size / max(box_w, box_h)
    new_w, new_h = max(1, round(box_w * scale)), max(1, round(box_h * scale))
    canvas = Image.new("RGB", (size, size))
    fitted = image.resize((new_w, new_h), Image.BILINEAR, box=box)
    canvas.paste(fitted, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas
