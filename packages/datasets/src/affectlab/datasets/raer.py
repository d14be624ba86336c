"""RAER (learning-related emotions in classrooms) in its official release layout, as a PyTorch dataset.

    images/<clip_dir>/<k>.jpg        frames 1.jpg ... N.jpg of one clip (no zero padding; clip_dir may hold slashes)
    images/<clip_dir>.mp4            ... or the clip as one video file (any suffix of VIDEO_SUFFIXES), read by decord
    annotation/{train,test}.txt      one clip per line: `<clip_dir> <num_frames> <label>`, label 1-based or a class
                                     name; or `<clip_dir> <num_frames> <vote_1> ... <vote_K>`, one vote per annotator
    bounding_box/face.json           {clip_dir: {frame_file: [x1, y1, x2, y2]}}, a frame may lack a box; for a video,
                                     frame_file is "<k>.jpg" or "<k>" with k the 1-based frame number
    bounding_box/body.json           {clip_dir: [x1, y1, x2, y2]}, one box per clip

Each item gives two streams of T frames (TSN sampling): the face crop and the body context, letterboxed.
Everything a user can get wrong is checked when the dataset is built, so errors name a file before any training;
pass a list as `skipped` to drop bad clips instead (each one's message is appended to it).
"""

import hashlib
import json
import math
import random
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from affectlab.datasets.errors import DatasetError, DatasetWarning
from affectlab.datasets.labelsets import LabelSet, load_label_set
from affectlab.datasets.video import VIDEO_SUFFIXES, probe_video, read_frames
from affectlab.datasets.votes import majority_label, soft_label
from affectlab.datasets.textfile import read_text

RAER_CLASSES: tuple[str, ...] = load_label_set("raer_five").classes

# Where RAER clips were recorded: the leading folders of clip_dir (e.g. "SelfStudy/Library/000123").
RAER_CONTEXTS: tuple[str, ...] = (
    "Class/Classroom",
    "SelfStudy/Classroom",
    "SelfStudy/Laboratory",
    "SelfStudy/Library",
    "SelfStudy/Dormitory",
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Detector boxes at the frame border may overshoot by a pixel or two; more than this means the box is for another frame.
BOX_TOLERANCE_PX = 4.0

CACHE_META = "crops.json"  # in a crop cache folder: the image size and face margin the crops were made with

_FRAME_NAME = re.compile(r"([1-9][0-9]*)\.jpg")


@dataclass(frozen=True)
class RaerClip:
    clip_dir: str
    num_frames: int
    label: int  # 0-based; with votes, the majority (see votes.majority_label for the tie rule)
    source: str  # "path:line" of the annotation line
    votes: tuple[int, ...] | None = None  # votes per class when the line carries more than one annotator's vote

    def soft_label(self, num_classes: int) -> np.ndarray:
        """The share of annotators per class; one-hot at `label` without votes."""
        if self.votes is None:
            return np.eye(num_classes, dtype=np.float32)[self.label]
        return soft_label(self.votes)


def read_annotation(
    path: str | Path, classes: int | Sequence[str] = 5, *, skipped: list[str] | None = None
) -> list[RaerClip]:
    """Clips of one annotation file: `<clip_dir> <num_frames> <label>` per line, or `<clip_dir> <num_frames>
    <vote_1> ... <vote_K>` with the same K annotators on every line. A label or vote is 1..C or a class name of
    `classes` (the names in label order, or just their number C). `skipped`: collect bad lines there instead of
    raising."""
    path = Path(path)
    names = {} if isinstance(classes, int) else {name.lower(): i for i, name in enumerate(classes)}
    num_classes = classes if isinstance(classes, int) else len(classes)
    lines = read_text(path, "annotation file", "lines '<clip_dir> <num_frames> <label>'").splitlines()
    clips: list[RaerClip] = []
    first_seen: dict[str, int] = {}
    annotators: tuple[int, int] | None = None  # (votes per line, the line that set it)
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        try:
            if len(fields) < 3:
                raise DatasetError(
                    f"{where}: {line.strip()!r} has {len(fields)} fields; expected '<clip_dir> <num_frames> <label>' "
                    "or '<clip_dir> <num_frames> <vote_1> ... <vote_K>'"
                )
            clip_dir, frames_text, *label_texts = fields
            if annotators is not None and len(label_texts) != annotators[0]:
                raise DatasetError(
                    f"{where}: {len(label_texts)} label(s)/votes on this line but line {annotators[1]} has "
                    f"{annotators[0]}; expected the same number of annotators on every line"
                )
            try:
                num_frames = int(frames_text)
            except ValueError:
                raise DatasetError(
                    f"{where}: {line.strip()!r} has a non-integer frame count or label; expected integers"
                ) from None
            if num_frames < 1:
                raise DatasetError(f"{where}: num_frames is {num_frames}; expected at least 1")
            labels = [_parse_label(text, names, num_classes, where, line) for text in label_texts]
            if clip_dir in first_seen:
                raise DatasetError(
                    f"{where}: clip {clip_dir!r} repeats line {first_seen[clip_dir]}; expected each clip once"
                )
        except DatasetError as error:
            if skipped is None:
                raise
            skipped.append(str(error))
            continue
        if annotators is None:
            annotators = (len(label_texts), lineno)
        first_seen[clip_dir] = lineno
        if len(labels) == 1:
            clips.append(RaerClip(clip_dir=clip_dir, num_frames=num_frames, label=labels[0], source=where))
        else:
            votes = tuple(int(v) for v in np.bincount(labels, minlength=num_classes))
            clips.append(RaerClip(clip_dir, num_frames, majority_label(votes), where, votes))
    if not any(line.strip() for line in lines):
        raise DatasetError(f"{path}: no clip lines (empty file); expected lines '<clip_dir> <num_frames> <label>'")
    return clips


def _parse_label(text: str, names: dict[str, int], num_classes: int, where: str, line: str) -> int:
    """A 1-based label number or a class name (any case) -> 0-based label."""
    if text.lower() in names:
        return names[text.lower()]
    try:
        label = int(text)
    except ValueError:
        if names:
            raise DatasetError(
                f"{where}: unknown label name {text!r}; expected 1..{num_classes} or one of {list(names)}"
            ) from None
        raise DatasetError(
            f"{where}: {line.strip()!r} has a non-integer frame count or label; expected integers"
        ) from None
    if not 1 <= label <= num_classes:
        raise DatasetError(f"{where}: label is {label}; expected 1..{num_classes}")
    return label - 1


def load_raer_split(
    root: str | Path, split: str, label_set: str | LabelSet = "raer_five", *, skipped: list[str] | None = None
) -> list[RaerClip]:
    """Clips of a split ("train" or "test") under a RAER root, from the label set's annotation file of that split
    (`annotation/{split}.txt` for raer_five)."""
    labels = load_label_set(label_set) if isinstance(label_set, str) else label_set
    return read_annotation(Path(root) / labels.annotation_file(split), labels.classes, skipped=skipped)


def clip_context(clip_dir: str, contexts: Sequence[str]) -> int:
    """Index of the recording context whose folders clip_dir starts with (the longest such context)."""
    matches = [i for i, c in enumerate(contexts) if clip_dir.startswith(c.rstrip("/") + "/")]
    if not matches:
        raise DatasetError(f"clip {clip_dir!r} lies in no known context folder; expected it under one of "
                           f"{list(contexts)} (set data.contexts to your own folders)")
    return max(matches, key=lambda i: len(contexts[i]))


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
    """RAER clips as `{"face": [T,3,S,S], "context": [T,3,S,S], "label": long, "soft_label": [C] float,
    "scene": long, "index": int}`, CLIP-normalised.

    face: the frame's face box widened by `face_margin` px (clamped to the frame), resized to S x S; the whole frame
    when that frame has no face box. context: the clip's body box (the whole frame without one), resized with its
    aspect ratio kept and centred on a black S x S canvas. soft_label: the annotators' vote shares (one-hot without
    votes). scene: the index in `contexts` of the folder the clip was recorded in (-1 when `contexts` is None).

    A clip is a folder of JPEG frames or a video file (read with decord, the reader opened in `__getitem__` so that
    DataLoader workers each open their own). A video whose frame count differs from its annotation uses the smaller
    count, with one DatasetWarning for that clip.

    Training draws frames from torch's global RNG so that DataLoader worker seeding (and `seed_everything`) decides
    them and they change every epoch; evaluation takes segment centres. `seed` is kept for configs that pass it and
    does not change the sampling.

    In the JSON files an explicit `null` (or `[]`) box means "no box": a clip missing from face.json or body.json is
    an error, since it usually means the annotation and the boxes come from different releases. With `skipped` (a
    list), a clip with any such error is left out and its message appended to the list instead.

    cache: a folder written by `write_crop_cache` for the same input size, face margin and box files; its clips are
    read from there (the same tensors, without decoding any frame).
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
        num_classes: int = len(RAER_CLASSES),
        contexts: Sequence[str] | None = None,
        skipped: list[str] | None = None,
        cache: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.num_segments = num_segments
        self.train = train
        self.image_size = image_size
        self.face_margin = face_margin
        self.seed = seed
        self.num_classes = num_classes
        self.contexts = tuple(contexts) if contexts is not None else None
        # (pixel / 255 - mean) / std as one multiply-add on uint8 H x W x 3 pixels.
        self._pixel_scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).astype(np.float32)
        self._pixel_shift = (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).astype(np.float32)
        values = np.arange(256, dtype=np.float32)[None, :]
        self._pixel_table = values * self._pixel_scale[:, None] - self._pixel_shift[:, None]  # [3, 256]

        face_path = self.root / "bounding_box" / "face.json"
        body_path = self.root / "bounding_box" / "body.json"
        face_json = _read_json(face_path, "{clip_dir: {frame_file: [x1, y1, x2, y2]}}")
        body_json = _read_json(body_path, "{clip_dir: [x1, y1, x2, y2]}")

        # Per clip: its folder or video file, how many frames it has, a face box per frame ([N, 4], NaN = no box:
        # whole frame) and its body box (None = whole frame). Compact arrays keep the dataset cheap to copy to workers.
        self._clips: list[RaerClip] = []
        self._sources: list[str] = []
        self._is_video: list[bool] = []
        self._frame_counts: list[int] = []
        self._face_boxes: list[np.ndarray] = []
        self._body_boxes: list[tuple[float, float, float, float] | None] = []
        self._scenes: list[int] = []
        for clip in clips:
            try:
                scene = -1
                if self.contexts is not None:
                    try:
                        scene = clip_context(clip.clip_dir, self.contexts)
                    except DatasetError as error:
                        raise DatasetError(f"{clip.source}: {error}") from None
                if not 0 <= clip.label < num_classes:
                    raise DatasetError(f"{clip.source}: label index {clip.label} outside the {num_classes} classes")
                source = _clip_source(self.root / "images", clip)
                if source.is_dir():
                    count = _count_frames(source, clip)
                    sizes = [_frame_size(source / f"{k}.jpg") for k in range(1, count + 1)]
                else:
                    count, size = probe_video(source)
                    if count != clip.num_frames:
                        warnings.warn(
                            f"{clip.source}: annotation says {clip.num_frames} frames but {source} has {count}; "
                            f"using the first {min(count, clip.num_frames)}",
                            DatasetWarning,
                            stacklevel=2,
                        )
                        count = min(count, clip.num_frames)
                    sizes = [size] * count
                face_boxes = _clip_face_boxes(face_json, face_path, clip, sizes)
                body_box = _clip_body_box(body_json, body_path, clip, sizes)
            except DatasetError as error:
                if skipped is None:
                    raise
                skipped.append(str(error))
                continue
            self._clips.append(clip)
            self._sources.append(str(source))
            self._is_video.append(not source.is_dir())
            self._frame_counts.append(count)
            self._face_boxes.append(face_boxes)
            self._body_boxes.append(body_box)
            self._scenes.append(scene)
        self.cache = Path(cache) if cache is not None and (Path(cache) / CACHE_META).is_file() else None
        if self.cache is not None:
            self._check_cache()

    def _check_cache(self) -> None:
        meta = json.loads((self.cache / CACHE_META).read_text(encoding="utf-8"))
        expected = self.cache_key()
        if {k: meta.get(k) for k in expected} != expected:
            raise DatasetError(f"{self.cache / CACHE_META}: crops made with {meta}; expected {expected}; "
                               "delete the cache folder or rebuild it with write_crop_cache")

    def cache_key(self) -> dict:
        """What the cached crops depend on: the input size, the face margin and the box files' contents."""
        digest = hashlib.sha256()
        for name in ("face.json", "body.json"):
            digest.update((self.root / "bounding_box" / name).read_bytes())
        return {"image_size": self.image_size, "face_margin": self.face_margin, "boxes": digest.hexdigest()[:16]}

    def _cached(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The clip's cached uint8 crops [N, S, S, 3] (memory-mapped), or None when the cache lacks the clip."""
        folder = self.cache / self._clips[index].clip_dir
        if not (folder / "faces.npy").is_file():
            return None
        faces = np.load(folder / "faces.npy", mmap_mode="r")
        contexts = np.load(folder / "contexts.npy", mmap_mode="r")
        if len(faces) < self._frame_counts[index]:
            raise DatasetError(f"{folder}: cache holds {len(faces)} frames; expected {self._frame_counts[index]}")
        return faces, contexts

    def all_crops(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 face crops and letterboxed contexts [N, S, S, 3] of every frame of clip `index` (for the cache)."""
        frames = list(range(self._frame_counts[index]))
        if self._is_video[index]:
            decoded = read_frames(self._sources[index], frames)
            crops = [self._crop(index, k, Image.fromarray(decoded[k])) for k in frames]
        else:
            crops = [self._crops(index, k) for k in frames]
        return np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops])

    def __len__(self) -> int:
        return len(self._clips)

    @property
    def clips(self) -> list[RaerClip]:
        return list(self._clips)

    @property
    def labels(self) -> list[int]:
        return [clip.label for clip in self._clips]

    @property
    def scenes(self) -> list[int]:
        """Per clip, its index in `contexts` (-1 without contexts)."""
        return list(self._scenes)

    def __getitem__(self, index: int) -> dict:
        frames = tsn_indices(self._frame_counts[index], self.num_segments, self.train)
        cached = self._cached(index) if self.cache is not None else None
        if cached is not None:
            crops = {k: (cached[0][k], cached[1][k]) for k in set(frames)}
        elif self._is_video[index]:
            decoded = read_frames(self._sources[index], frames)
            crops = {k: self._crop(index, k, Image.fromarray(decoded[k])) for k in decoded}
        else:
            crops = {k: self._crops(index, k) for k in set(frames)}  # short clips repeat frames; decode each once
        faces = [crops[k][0] for k in frames]
        contexts = [crops[k][1] for k in frames]
        clip = self._clips[index]
        return {
            "face": self._normalise(faces),
            "context": self._normalise(contexts),
            "label": torch.tensor(clip.label, dtype=torch.long),
            "soft_label": torch.from_numpy(clip.soft_label(self.num_classes)),
            "scene": torch.tensor(self._scenes[index], dtype=torch.long),
            "index": index,
        }

    def _boxes(self, index: int, k: int, width: int, height: int):
        """The widened face box of 0-based frame k and the clip's body box, in that frame's pixels."""
        face_box = self._face_boxes[index][k].tolist()
        if math.isnan(face_box[0]):
            face_box = (0.0, 0.0, width, height)
        else:
            face_box = _widen(face_box, self.face_margin, width, height)
        body_box = self._body_boxes[index]
        body_box = (0.0, 0.0, width, height) if body_box is None else _clamp(body_box, width, height)
        return face_box, body_box

    def _crop(self, index: int, k: int, image: Image.Image, full_size: tuple[int, int] | None = None):
        """The face crop and the letterboxed context of frame k from its decoded RGB image (which may be a reduced
        decode of a `full_size` frame)."""
        width, height = full_size or image.size
        face_box, body_box = self._boxes(index, k, width, height)
        sx, sy = image.width / width, image.height / height
        face = image.resize((self.image_size, self.image_size), Image.BILINEAR, box=_scale(face_box, sx, sy))
        context = _letterbox(image, _scale(body_box, sx, sy), self.image_size)
        return np.asarray(face), np.asarray(context)

    def _crops(self, index: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The face crop and the letterboxed context of 0-based JPEG frame k, from one decode of the frame."""
        size = self.image_size
        path = Path(self._sources[index]) / f"{k + 1}.jpg"
        try:
            with Image.open(path) as image:
                width, height = image.size
                face_box, body_box = self._boxes(index, k, width, height)
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
        return self._crop(index, k, image, (width, height))

    def _normalise(self, frames: list[np.ndarray]) -> torch.Tensor:
        # Transpose the uint8 pixels (a quarter of the bytes), then look each value up in a 256-entry table per
        # channel (the same float32 multiply-add, done once per value): twice as fast as converting every pixel.
        # numpy, not torch: small element-wise ops in torch go through its thread pool, which is slow in workers.
        pixels = np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2))
        out = np.empty(pixels.shape, dtype=np.float32)
        for channel in range(3):
            np.take(self._pixel_table[channel], pixels[:, channel], out=out[:, channel])
        return torch.from_numpy(out)


def write_crop_cache(dataset: RaerDataset, folder: str | Path) -> Path:
    """Store the face and context crops of every frame of every clip of `dataset` at its input size, as uint8
    `<folder>/<clip_dir>/{faces,contexts}.npy` (read back memory-mapped, one sampled frame at a time). A RaerDataset
    given `cache=folder` then reads them instead of decoding frames; the tensors are the same."""
    folder = Path(folder)
    for index, clip in enumerate(dataset.clips):
        target = folder / clip.clip_dir
        target.mkdir(parents=True, exist_ok=True)
        faces, contexts = dataset.all_crops(index)
        np.save(target / "faces.npy", faces)
        np.save(target / "contexts.npy", contexts)
    meta = dataset.cache_key()
    (folder / CACHE_META).write_text(json.dumps(meta), encoding="utf-8")  # last: a cache without it is not used
    return folder


def _clip_source(images: Path, clip: RaerClip) -> Path:
    """The clip's frame folder `images/<clip_dir>`, or its video file `images/<clip_dir>` / `images/<clip_dir>.<ext>`."""
    folder = images / clip.clip_dir
    if folder.is_dir():
        return folder
    if folder.is_file() and folder.suffix.lower() in VIDEO_SUFFIXES:
        return folder
    for suffix in VIDEO_SUFFIXES:
        video = folder.with_name(folder.name + suffix)
        if video.is_file():
            return video
    raise DatasetError(
        f"{clip.source}: clip folder {folder} does not exist; expected frames 1.jpg..{clip.num_frames}.jpg "
        f"or a video file {folder.name}{{{','.join(VIDEO_SUFFIXES)}}} beside it"
    )


def _read_json(path: Path, expected: str) -> dict:
    text = read_text(path, "box file", expected)  # names the file when it is missing or not UTF-8
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); expected {expected}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level is a {type(data).__name__}; expected {expected}")
    return data


def _count_frames(folder: Path, clip: RaerClip) -> int:
    """How many frames 1.jpg..N.jpg the folder holds (all of them, even beyond the annotation's count)."""
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
        value = per_frame.get(frame, per_frame.get(str(k)))  # a video's frames may be keyed by number alone
        box = _check_box(value, size, f"{face_path}: clip {clip.clip_dir!r} frame {frame}")
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
