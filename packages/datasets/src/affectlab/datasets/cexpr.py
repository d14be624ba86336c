"""C-EXPR-DB, the compound-expression videos of the ABAW challenges: annotations, frame labels, windows, folds.

    annotation/<VIDEO>.csv     one row per annotated segment: "Begin Time - hh:mm:ss.ms", "End Time - hh:mm:ss.ms",
                               then one column per class (CEXPR_CLASSES) holding "1" (perhaps padded with spaces)
                               for the segment's class and nothing otherwise
    folds/split-K/             train.txt, val.txt, test.txt: `Class-Name/VV_Class-Name_k,<class id>` per line, the
                               k-th (from 0) segment of that class in video VV; class_id.yaml: class name -> 0..6
                               (Other, id 7, is not in it)

Times are kept in integer milliseconds so that 10 ms segments survive exactly. Frame k of a video at `fps` is at
k / fps seconds and takes the label of the segment [begin, end) that contains that instant, -1 if none does.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from affectlab.datasets import video
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import load_label_set
from affectlab.datasets.textfile import read_text

# The annotation's column order (labelsets/cexpr.yaml); a label is an index into this tuple (Other = 7). Each
# compound's two basic emotions (AffWild2's names) are the label set's pairs.
CEXPR_LABELS = load_label_set("cexpr")
CEXPR_CLASSES: tuple[str, ...] = CEXPR_LABELS.classes
COMPOUND_PAIRS: dict[str, tuple[str, str]] = {c: CEXPR_LABELS.pairs[c] for c in CEXPR_LABELS.compounds}
TIME_COLUMNS = ("Begin Time - hh:mm:ss.ms", "End Time - hh:mm:ss.ms")
HEADER = TIME_COLUMNS + CEXPR_CLASSES
OTHER = CEXPR_CLASSES.index("Other")

_TIME = re.compile(r"(\d+):([0-5]\d):([0-5]\d)\.(\d{1,3})")
_FOLD_CLIP = re.compile(r"([A-Za-z-]+)/(\w+?)_([A-Za-z-]+)_(\d+)")


@dataclass(frozen=True)
class CexprSegment:
    begin_ms: int
    end_ms: int
    label: int  # index into CEXPR_CLASSES
    source: str  # "path:line" of the CSV row


def parse_time(text: str, where: str) -> int:
    """'hh:mm:ss.ms' -> milliseconds ('00:01:02.5' is 62 500 ms)."""
    match = _TIME.fullmatch(text.strip())
    if not match:
        raise DatasetError(f"{where}: time {text!r}; expected hh:mm:ss.ms such as '00:01:02.345'")
    hours, minutes, seconds, fraction = match.groups()
    return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(fraction.ljust(3, "0"))


def read_cexpr_annotation(path: str | Path, duration_s: float | None = None) -> list[CexprSegment]:
    """The segments of one annotation CSV, in time order; `duration_s` (the video's length) bounds the end times."""
    path = Path(path)
    text = read_text(path, "annotation file", "a C-EXPR-DB CSV")
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise DatasetError(f"{path}: empty file; expected the header row {list(HEADER)} and one row per segment")
    if tuple(cell.strip() for cell in header) != HEADER:
        raise DatasetError(f"{path}:1: header is {header!r}; expected the columns {list(HEADER)}")
    segments: list[CexprSegment] = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(HEADER):
            raise DatasetError(f"{where}: {len(row)} cells {row!r}; expected {len(HEADER)} ({', '.join(HEADER)})")
        begin, end = parse_time(row[0], f"{where} begin"), parse_time(row[1], f"{where} end")
        marks = [c for c, cell in enumerate(row[2:]) if cell.strip()]
        for c in marks:
            if row[2 + c].strip() != "1":
                raise DatasetError(f"{where}: column {CEXPR_CLASSES[c]!r} holds {row[2 + c]!r}; expected '1' or empty")
        if len(marks) != 1:
            found = [CEXPR_CLASSES[c] for c in marks] or "no class"
            raise DatasetError(f"{where}: marks {found}; expected exactly one class column holding '1'")
        if end <= begin:
            raise DatasetError(f"{where}: ends at {row[1].strip()}, not after its begin {row[0].strip()}")
        if segments and begin < segments[-1].end_ms:
            raise DatasetError(
                f"{where}: begins at {row[0].strip()}, before the previous row's end "
                f"({segments[-1].end_ms} ms); expected rows in time order, not overlapping"
            )
        if duration_s is not None and end > round(duration_s * 1000):
            raise DatasetError(
                f"{where}: ends at {row[1].strip()}, past the video's end ({duration_s:.3f} s)"
            )
        segments.append(CexprSegment(begin, end, marks[0], where))
    return segments


def frame_labels(segments: list[CexprSegment], num_frames: int, fps: float) -> np.ndarray:
    """[num_frames] label of each frame (index into CEXPR_CLASSES), -1 where no segment covers it."""
    if not segments:
        return np.full(num_frames, -1, dtype=np.int64)
    times_ms = np.arange(num_frames) * (1000.0 / fps)
    begins = np.array([s.begin_ms for s in segments], dtype=np.float64)
    ends = np.array([s.end_ms for s in segments], dtype=np.float64)
    labels = np.array([s.label for s in segments] + [-1], dtype=np.int64)  # index -1 picks the trailing -1
    which = np.searchsorted(begins, times_ms, side="right") - 1
    inside = (which >= 0) & (times_ms < ends[which.clip(0)])
    return labels[np.where(inside, which, -1)]


def segment_windows(
    num_frames: int, fps: float, window_s: float = 4.0, hop_s: float = 2.0, min_last_s: float = 1.0
) -> np.ndarray:
    """[S, 2] frame ranges [start, end) of windows `window_s` long every `hop_s`, cut at the video's end.

    A window shorter than `min_last_s` (only the last ones can be) is dropped: the window before it, which overlaps
    it, already covers its frames. A video shorter than `min_last_s` is one window.
    """
    if num_frames < 1 or fps <= 0:
        raise ValueError(f"num_frames={num_frames}, fps={fps}; expected at least one frame and a positive rate")
    length, hop, shortest = round(window_s * fps), max(1, round(hop_s * fps)), round(min_last_s * fps)
    starts = np.arange(0, num_frames, hop)
    ends = np.minimum(starts + length, num_frames)
    keep = (ends - starts) >= min(shortest, num_frames)
    return np.stack([starts[keep], ends[keep]], axis=1)


def window_id(video: str, index: int) -> str:
    """The segment id of a video's index-th window, the key of every modality table: "01/0003"."""
    return f"{video}/{index:04d}"


def sample_frames(start: int, end: int, num: int = 20) -> np.ndarray:
    """`num` frame indices spread uniformly over [start, end): the middle frame of each of `num` equal parts."""
    if end <= start:
        raise ValueError(f"window [{start}, {end}) is empty")
    return start + ((np.arange(num) + 0.5) * ((end - start) / num)).astype(np.int64)


@dataclass(frozen=True)
class FoldClip:
    clip: str  # "Sadly-Fearful/24_Sadly-Fearful_0", as listed
    video: str  # "24"
    label: int  # index into CEXPR_CLASSES
    occurrence: int  # the clip is the occurrence-th (from 0) segment of `label` in the video's annotation
    source: str


def read_class_ids(path: str | Path) -> dict[str, int]:
    """class_id.yaml, checked against CEXPR_CLASSES' order; Other (never listed) is added as 7."""
    path = Path(path)
    text = read_text(path, "class id file", "a YAML mapping class name -> id")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DatasetError(f"{path}: not valid YAML ({error}); expected a mapping class name -> id") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: holds a {type(data).__name__}; expected a mapping class name -> id")
    for name, index in data.items():
        if name not in CEXPR_CLASSES or index != CEXPR_CLASSES.index(name):
            expected = CEXPR_CLASSES.index(name) if name in CEXPR_CLASSES else f"one of {list(CEXPR_CLASSES)}"
            raise DatasetError(f"{path}: {name!r}: {index!r}; expected {expected}")
    return {**data, "Other": OTHER}


def read_fold_list(path: str | Path, class_ids: dict[str, int]) -> list[FoldClip]:
    """One fold list, `Class-Name/VV_Class-Name_k,<class id>` per line."""
    path = Path(path)
    lines = read_text(path, "fold list", "lines 'Class-Name/VV_Class-Name_k,<id>'").splitlines()
    clips = []
    first_seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        clip, _, label_text = line.strip().rpartition(",")
        match = _FOLD_CLIP.fullmatch(clip)
        if not match or match[1] != match[3] or not label_text.strip().isdigit():
            raise DatasetError(f"{where}: {line.strip()!r}; expected 'Class-Name/VV_Class-Name_k,<class id>'")
        name = match[1].replace("-", " ")
        if name not in class_ids or class_ids[name] != int(label_text):
            raise DatasetError(
                f"{where}: class {name!r} with id {label_text.strip()}; expected id {class_ids.get(name, '?')} "
                f"of a class in {sorted(class_ids)}"
            )
        if clip in first_seen:
            raise DatasetError(f"{where}: clip {clip!r} repeats line {first_seen[clip]}; expected each clip once")
        first_seen[clip] = lineno
        clips.append(FoldClip(clip, match[2], class_ids[name], int(match[4]), where))
    return clips


def read_cexpr_folds(folds_root: str | Path, split: int) -> dict[str, list[FoldClip]]:
    """{"train", "val", "test": clips} of folds/split-<split>/."""
    folder = Path(folds_root) / f"split-{split}"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such fold folder; expected split-K with train.txt, val.txt, test.txt")
    class_ids = read_class_ids(folder / "class_id.yaml")
    parts = {part: read_fold_list(folder / f"{part}.txt", class_ids) for part in ("train", "val", "test")}
    # The release's val.txt is its test.txt; what must never happen is a training clip being evaluated.
    trained = {clip.clip: clip.source for clip in parts["train"]}
    for clip in parts["val"] + parts["test"]:
        if clip.clip in trained:
            raise DatasetError(f"{clip.source}: clip {clip.clip!r} is also a training clip ({trained[clip.clip]}); "
                               "expected val and test to share no clip with train")
    return parts


def fold_segment(clip: FoldClip, segments: list[CexprSegment]) -> CexprSegment:
    """The annotated segment a fold clip stands for: the clip.occurrence-th segment of its class."""
    same = [s for s in segments if s.label == clip.label]
    if clip.occurrence >= len(same):
        raise DatasetError(
            f"{clip.source}: {clip.clip!r} is occurrence {clip.occurrence} of {CEXPR_CLASSES[clip.label]!r}; "
            f"the annotation of video {clip.video} has {len(same)}"
        )
    return same[clip.occurrence]


# A video is a file FFmpeg can open (affectlab.datasets.video), or a folder of frames 00001.jpg, 00002.jpg, ... (the
# challenge's cropped-aligned layout) with its rate in fps.txt.
FRAME_FOLDER_FPS = "fps.txt"


@dataclass(frozen=True)
class CexprVideo:
    name: str  # "01": the annotation file's stem
    path: Path  # the video file or frame folder
    annotation: Path
    num_frames: int
    fps: float

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def video_info(path: str | Path) -> tuple[int, float]:
    """(number of frames, frames per second) of a video file or a frame folder."""
    path = Path(path)
    if path.is_dir():
        frames = len(list(path.glob("*.jpg")))
        fps_file = path / FRAME_FOLDER_FPS
        text = read_text(fps_file, "frame rate file", "the frame rate") if fps_file.is_file() else ""
        try:
            fps = float(text.strip())
        except ValueError:
            raise DatasetError(f"{fps_file}: missing or not a number ({text.strip()[:40]!r}); "
                               "expected the frame rate") from None
        if frames == 0 or not math.isfinite(fps) or fps <= 0:
            raise DatasetError(f"{path}: {frames} frames at {fps} fps; expected frames 00001.jpg... and fps > 0")
        return frames, fps
    count, _ = video.probe_video(path)  # names the file if it cannot be read
    fps = video.frame_rate(path)
    if not math.isfinite(fps) or fps <= 0:
        raise DatasetError(f"{path}: frame rate {fps}; expected a video with a positive frame rate")
    return count, fps


def read_frames(path: str | Path, indices: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] uint8 RGB frames at 0-based `indices` of a video file or a frame folder."""
    path = Path(path)
    if path.is_dir():
        from PIL import Image

        frames = []
        for i in indices:
            frame = path / f"{int(i) + 1:05d}.jpg"
            try:
                with Image.open(frame) as image:
                    frames.append(np.asarray(image.convert("RGB")))
            except (OSError, SyntaxError) as exc:  # missing, not an image, truncated
                raise DatasetError(f"{frame}: cannot read frame {int(i)} ({exc}); expected a readable JPEG") from None
        return np.stack(frames)
    frames = video.read_frames(path, indices)
    return np.stack([frames[int(i)] for i in indices])


def find_video(folder: Path, stem: str, annotation: Path) -> Path:
    """The video of `annotation` in `folder`: <stem>.mp4 (or another of VIDEO_SUFFIXES) or a frame folder <stem>/."""
    candidates = [folder / stem] + [folder / f"{stem}{suffix}" for suffix in video.VIDEO_SUFFIXES]
    found = [c for c in candidates if c.exists()]
    if len(found) > 1:
        raise DatasetError(f"{annotation}: several videos for it {[str(c) for c in found]}; expected exactly one")
    if not found:
        raise DatasetError(
            f"{annotation}: no video for it; expected {folder / stem}.mp4 (or another of {video.VIDEO_SUFFIXES}) "
            f"or a frame folder {folder / stem}/"
        )
    return found[0]


def list_cexpr_videos(root: str | Path) -> list[CexprVideo]:
    """Every annotated video under `root` (annotation/<V>.csv with videos/<V>.mp4 or a frame folder videos/<V>/)."""
    root = Path(root)
    annotations = sorted((root / "annotation").glob("*.csv"))
    if not annotations:
        raise DatasetError(f"{root / 'annotation'}: no annotation CSVs; expected C-EXPR-DB's annotation/<video>.csv")
    videos = []
    for annotation in annotations:
        path = find_video(root / "videos", annotation.stem, annotation)
        num_frames, fps = video_info(path)
        videos.append(CexprVideo(annotation.stem, path, annotation, num_frames, fps))
    return videos
