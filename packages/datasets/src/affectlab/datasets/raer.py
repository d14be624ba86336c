"""RAER (learning-related emotions in classrooms) in its official release layout, as a PyTorch dataset.

    images/<clip_dir>/<k>.jpg        frames 1.jpg ... N.jpg of one clip (no zero padding; clip_dir may hold slashes)
    images/<clip_dir>.mp4            ... or the clip as one video file (any suffix of VIDEO_SUFFIXES), read with PyAV or decord
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
from affectlab.datasets.integrity import file_record, inside, matches, write_atomic
from affectlab.datasets.labelsets import LabelSet, load_label_set
from affectlab.datasets.video import READERS, VIDEO_SUFFIXES, check_reader, probe_video, read_images
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

CACHE_META = "crops.json"  # in a crop cache folder: what the crops were made with, and a record of every clip's files
CACHE_LAYOUT = "uint8-TCHW-v2"  # how crops are stored; a cache written in another layout is refused, not misread
CACHE_FILES = ("faces.npy", "contexts.npy")  # per clip folder, each [N, 3, S, S] uint8
CLIP_RECORD = "record.json"  # per clip folder, written after its crops: their sizes and SHA-256 (resumes a build)

# PIL's resize first averages whole blocks of pixels down to within this factor of the output, then filters the rest:
# a third less time for the crops of a 1080p frame than the bilinear filter all the way (None), nearly the same pixels.
REDUCING_GAP: float | None = 2.0

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
            inside("the data set's folder", clip_dir, where)  # a clip_dir that leaves the data set is refused here
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
    "scene": long, "index": int}`, CLIP-normalised float32; with `normalise=False` the frames stay uint8 pixels
    (a quarter of the bytes through DataLoader workers) for `normalise_pixels` to turn into the very same floats on
    the device (the RAER datamodule does this after each batch is moved).

    face: the frame's face box widened by `face_margin` px (clamped to the frame), resized to S x S; the whole frame
    when that frame has no face box. context: the clip's body box (the whole frame without one), resized with its
    aspect ratio kept and centred on a black S x S canvas. soft_label: the annotators' vote shares (one-hot without
    votes). scene: the index in `contexts` of the folder the clip was recorded in (-1 when `contexts` is None).

    A clip is a folder of JPEG frames or a video file, read by `video_reader` ("pyav", the default, or "decord"; see
    affectlab.datasets.video), the reader opened in `__getitem__` so that DataLoader workers each open their own. A video whose frame count differs from its annotation uses the smaller
    count, with one DatasetWarning for that clip.

    Training draws frames from torch's global RNG so that DataLoader worker seeding (and `seed_everything`) decides
    them and they change every epoch; evaluation takes segment centres.

    In the JSON files an explicit `null` (or `[]`) box means "no box": a clip missing from face.json or body.json is
    an error, since it usually means the annotation and the boxes come from different releases. With `skipped` (a
    list), a clip with any such error is left out and its message appended to the list instead.

    cache: a folder written by `write_crop_cache` for the same input size, face margin and box files; its clips are
    read from there (the same tensors, without decoding any frame). A clip the cache lacks, or whose crop files no
    longer match their recorded size and SHA-256 (checked before a clip's first read in each process), is decoded
    from its source instead, with a DatasetWarning; `write_crop_cache` rebuilds it.
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
        num_classes: int = len(RAER_CLASSES),
        contexts: Sequence[str] | None = None,
        skipped: list[str] | None = None,
        cache: str | Path | None = None,
        normalise: bool = True,
        video_reader: str = READERS[0],
    ) -> None:
        self.root = Path(root)
        self.num_segments = num_segments
        self.train = train
        self.image_size = image_size
        self.face_margin = face_margin
        self.num_classes = num_classes
        self.contexts = tuple(contexts) if contexts is not None else None
        self.video_reader = check_reader(video_reader)
        self.mean, self.std, self.normalise = tuple(mean), tuple(std), normalise

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
                    count, size = probe_video(source, self.video_reader)
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
        self.cache: Path | None = None
        self._cache_records: dict[str, dict] = {}
        self._cache_verified: set[int] = set()  # clips whose cached files matched their records in this process
        self._cache_warned: set[int] = set()
        if cache is not None and (Path(cache) / CACHE_META).is_file():
            self.cache = Path(cache)
            self._cache_records = self._check_cache()

    def _check_cache(self) -> dict[str, dict]:
        """The cache's per-clip records, after checking that it was made for this input size, margin and boxes."""
        path = self.cache / CACHE_META
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: not a crop cache manifest ({exc}); delete the cache folder or rebuild it "
                               "with write_crop_cache") from exc
        expected = self.cache_key()
        if {k: meta.get(k) for k in expected} != expected:
            shown = {k: v for k, v in meta.items() if k != "clips"}
            raise DatasetError(f"{path}: crops made with {shown}; expected {expected}; "
                               "delete the cache folder or rebuild it with write_crop_cache")
        records = meta.get("clips", {})
        missing = [clip.clip_dir for clip in self._clips if clip.clip_dir not in records]
        if missing:
            warnings.warn(f"{path}: {len(missing)} of {len(self._clips)} clips are not in the crop cache (the first: "
                          f"{missing[0]!r}); they are decoded from their frames", DatasetWarning, stacklevel=3)
        return records

    def cache_key(self) -> dict:
        """What the cached crops depend on: their layout, the input size, the face margin, the box files and, for
        video clips, the video reader."""
        digest = hashlib.sha256()
        for name in ("face.json", "body.json"):
            digest.update((self.root / "bounding_box" / name).read_bytes())
        key = {"layout": CACHE_LAYOUT, "image_size": self.image_size, "face_margin": self.face_margin,
               "boxes": digest.hexdigest()[:16]}
        if any(self._is_video):  # the readers' JPEG decoders differ slightly for Motion-JPEG
            key["video_reader"] = self.video_reader
        return key

    def _cached(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The clip's cached uint8 crops [N, 3, S, S] (memory-mapped), or None when the cache lacks the clip or its
        files differ from their records (truncated, overwritten): those are never read."""
        clip = self._clips[index]
        folder = self.cache / clip.clip_dir
        if index not in self._cache_verified:
            record = self._cache_records.get(clip.clip_dir)
            if record is None:
                return None
            if record.get("frames") != self._frame_counts[index] or not all(
                matches(folder / name, record.get(name)) for name in CACHE_FILES
            ):
                if index not in self._cache_warned:
                    self._cache_warned.add(index)
                    warnings.warn(f"{folder}: cached crops are damaged or stale (size or SHA-256 differ from "
                                  f"{self.cache / CACHE_META}); decoding clip {clip.clip_dir!r} from its frames "
                                  "instead; write_crop_cache rebuilds it", DatasetWarning, stacklevel=3)
                return None
            self._cache_verified.add(index)
        return tuple(np.load(folder / name, mmap_mode="r") for name in CACHE_FILES)

    def all_crops(self, index: int, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """uint8 face crops and letterboxed contexts [N, 3, S, S] of every frame of clip `index` (for the cache);
        a video is decoded `chunk` frames at a time, so a long clip never sits in memory at full size."""
        count = self._frame_counts[index]
        faces, contexts = (np.empty((count, 3, self.image_size, self.image_size), np.uint8) for _ in range(2))
        for start in range(0, count, chunk):
            frames = list(range(start, min(start + chunk, count)))
            self._fill_crops(index, frames, frames, faces, contexts)
        return faces, contexts

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

    @property
    def frame_counts(self) -> list[int]:
        """Per clip, how many frames it has: the frames `tsn_indices` draws from and `all_crops` gives."""
        return list(self._frame_counts)

    @property
    def sources(self) -> list[Path]:
        """Per clip, its frame folder or video file."""
        return [Path(source) for source in self._sources]

    def __getitem__(self, index: int) -> dict:
        frames = tsn_indices(self._frame_counts[index], self.num_segments, self.train)
        cached = self._cached(index) if self.cache is not None else None
        if cached is not None:
            faces, contexts = cached[0][frames], cached[1][frames]  # reads just the T sampled frames, one copy each
        else:
            distinct = sorted(set(frames))  # short clips repeat frames; decode each once
            faces, contexts = (np.empty((len(distinct), 3, self.image_size, self.image_size), np.uint8)
                               for _ in range(2))
            self._fill_crops(index, distinct, range(len(distinct)), faces, contexts)
            if len(distinct) < len(frames):
                rows = [distinct.index(k) for k in frames]
                faces, contexts = faces[rows], contexts[rows]
        face, context = torch.from_numpy(faces), torch.from_numpy(contexts)
        if self.normalise:
            face, context = normalise_pixels(face, self.mean, self.std), normalise_pixels(context, self.mean, self.std)
        clip = self._clips[index]
        return {
            "face": face,
            "context": context,
            "label": torch.tensor(clip.label, dtype=torch.long),
            "soft_label": torch.from_numpy(clip.soft_label(self.num_classes)),
            "scene": torch.tensor(self._scenes[index], dtype=torch.long),
            "index": index,
        }

    def _boxes(self, index: int, k: int, width: int, height: int):
        """The widened face box of 0-based frame k and the clip's body box, in that frame's pixels."""
        face_box = self._face_boxes[index][k].tolist()
        return crop_regions(None if math.isnan(face_box[0]) else face_box, self._body_boxes[index], width, height,
                            self.face_margin)

    def _fill_crops(self, index: int, frames: Sequence[int], rows: Sequence[int], faces: np.ndarray,
                    contexts: np.ndarray) -> None:
        """Crop 0-based frame `frames[i]` of clip `index` into row `rows[i]` of `faces` and `contexts` ([*, 3, S, S]
        uint8): the face crop and the letterboxed context, from one decode of the frame."""
        if self._is_video[index]:
            decoded = read_images(self._sources[index], frames, self.video_reader)
            for k, row in zip(frames, rows):
                self._crop_into(index, k, decoded[k], None, faces[row], contexts[row])
            return
        for k, row in zip(frames, rows):
            image, full_size = self._decode_jpeg(index, k)
            self._crop_into(index, k, image, full_size, faces[row], contexts[row])

    def _decode_jpeg(self, index: int, k: int) -> tuple[Image.Image, tuple[int, int]]:
        """0-based JPEG frame k as RGB, decoded at the smallest scale that keeps both of its crops at >= S pixels;
        and the frame's full size."""
        size = self.image_size
        path = Path(self._sources[index]) / f"{k + 1}.jpg"
        try:
            with Image.open(path) as image:
                width, height = image.size
                face_box, body_box = self._boxes(index, k, width, height)
                # JPEG decodes at 1/2, 1/4 or 1/8 scale in the DCT domain, for a fraction of the work; allow it
                # while the face crop keeps >= S pixels both ways and the context >= S along its longer side.
                reduce = min(
                    (face_box[2] - face_box[0]) / size,
                    (face_box[3] - face_box[1]) / size,
                    max(body_box[2] - body_box[0], body_box[3] - body_box[1]) / size,
                )
                if reduce >= 2:
                    image.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
                image.load()
                if image.mode != "RGB":  # greyscale or CMYK JPEGs; converting an RGB one would only copy it
                    image = image.convert("RGB")
        except (OSError, SyntaxError) as exc:
            raise DatasetError(f"{path}: cannot decode frame ({exc}); expected a readable JPEG") from exc
        return image, (width, height)

    def _crop_into(self, index: int, k: int, image: Image.Image, full_size: tuple[int, int] | None,
                   face: np.ndarray, context: np.ndarray) -> None:
        """Write frame k's face crop and letterboxed context ([3, S, S] uint8) from its decoded RGB image, which may
        be a reduced decode of a `full_size` frame."""
        width, height = full_size or image.size
        face_box, body_box = self._boxes(index, k, width, height)
        crop_into(image, face_box, body_box, face, context, full_size)


def crop_regions(face_box, body_box, width: int, height: int, face_margin: float):
    """(face region, context region) of a width x height frame, as float (x1, y1, x2, y2): the face box widened by
    `face_margin` px on every side and the body box, both clamped to the frame; the whole frame for a box that is
    None. What RaerDataset crops a frame with, and affectlab.datasets.windows a user's video."""
    whole = (0.0, 0.0, width, height)
    face_region = whole if face_box is None else _widen(face_box, face_margin, width, height)
    body_region = whole if body_box is None else _clamp(body_box, width, height)
    return face_region, body_region


def crop_into(image: Image.Image, face_region, body_region, face: np.ndarray | None, context: np.ndarray,
              full_size: tuple[int, int] | None = None) -> None:
    """Write a frame's face crop (its face region resized to S x S) and its context (the body region letterboxed on a
    black S x S canvas) into `face` and `context` ([3, S, S] uint8); `face` None: the context only. The regions are in
    the pixels of the full frame; `image` is its RGB decode, which may be a reduced one of a `full_size` frame."""
    width, height = full_size or image.size
    sx, sy = image.width / width, image.height / height
    if face is not None:
        size = face.shape[-1]
        resized = image.resize((size, size), Image.BILINEAR, box=_scale(face_region, sx, sy),
                               reducing_gap=REDUCING_GAP)
        face[:] = np.asarray(resized).transpose(2, 0, 1)
    _letterbox_into(image, _scale(body_region, sx, sy), context)


def normalise_pixels(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 frames [..., 3, H, W] -> float32 (pixel / 255 - mean) / std per channel, on the frames' device.

    Computed as pixel * (1 / (255 std)) - mean / std with both constants rounded to float32 once, as two separate
    operations, so the floats are the same wherever it runs: in a DataLoader worker or on the GPU after transfer.
    """
    std64 = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * std64)).to(torch.float32).view(3, 1, 1).to(pixels.device)
    shift = (torch.tensor(mean, dtype=torch.float64) / std64).to(torch.float32).view(3, 1, 1).to(pixels.device)
    return pixels.to(torch.float32).mul_(scale).sub_(shift)


def write_crop_cache(dataset: RaerDataset, folder: str | Path) -> Path:
    """Store the face and context crops of every frame of every clip of `dataset` at its input size, as uint8
    `<folder>/<clip_dir>/{faces,contexts}.npy` [N, 3, S, S]; a RaerDataset given `cache=folder` then reads the T
    sampled frames of a clip from there (memory-mapped) instead of decoding frames, and gives the same tensors.

    Resumable and safe to interrupt: each file is written atomically and a clip's `record.json` (sizes and SHA-256
    of its two files) only after them, so a clip whose files match its record is kept and any other clip is
    (re)built; `crops.json` gathers the records of every clip at the end, merged with those already there (several
    datasets, e.g. train and test, may share one folder)."""
    folder = Path(folder)
    key = dataset.cache_key()
    manifest_path = folder / CACHE_META
    records: dict[str, dict] = {}
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = {}
        if {k: previous.get(k) for k in key} == key:  # crops made otherwise are all rebuilt
            records = previous.get("clips", {})
    for index, clip in enumerate(dataset.clips):
        target = inside(folder, clip.clip_dir, clip.source)
        record = _clip_record(target / CLIP_RECORD)
        expected_frames = dataset._frame_counts[index]
        if not (record is not None and record.get("key") == key and record.get("frames") == expected_frames
                and all(matches(target / name, record.get(name)) for name in CACHE_FILES)):
            (target / CLIP_RECORD).unlink(missing_ok=True)  # until both files are written again
            crops = dataset.all_crops(index)
            for name, array in zip(CACHE_FILES, crops):
                write_atomic(target / name, lambda scratch, array=array: _save_npy(scratch, array))
            record = {"key": key, "frames": expected_frames, **{name: file_record(target / name) for name in CACHE_FILES}}
            write_atomic(target / CLIP_RECORD, lambda scratch, record=record: scratch.write_text(json.dumps(record)))
        records[clip.clip_dir] = {k: v for k, v in record.items() if k != "key"}
    manifest = {**key, "clips": records}
    write_atomic(manifest_path, lambda scratch: scratch.write_text(json.dumps(manifest), encoding="utf-8"))
    return folder


def _clip_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:  # np.save given a path would append ".npy" to the scratch file's name
        np.save(handle, array)


def _clip_source(images: Path, clip: RaerClip) -> Path:
    """The clip's frame folder `images/<clip_dir>`, or its video file `images/<clip_dir>` / `images/<clip_dir>.<ext>`."""
    folder = inside(images, clip.clip_dir, clip.source)
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


def _letterbox_into(image: Image.Image, box, out: np.ndarray) -> None:
    """The box region resized to fit `out` ([3, S, S] uint8) with its aspect ratio kept, centred on black."""
    size = out.shape[-1]
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    scale = size / max(box_w, box_h)
    new_w, new_h = max(1, round(box_w * scale)), max(1, round(box_h * scale))
    fitted = image.resize((new_w, new_h), Image.BILINEAR, box=box, reducing_gap=REDUCING_GAP)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    out[:] = 0
    out[:, top : top + new_h, left : left + new_w] = np.asarray(fitted).transpose(2, 0, 1)
