"""A user's own video cut into windows for a clip model: the frames each window samples, found faces, and the face
and context crops of those frames made exactly as RaerDataset makes them in training.

Windows: [start_s, start_s + window_s) every hop_s seconds from 0; the first window that reaches the end of the video
ends there (a shorter, last window, or the only window of a video shorter than window_s) and is the last. Frame k is
at k / fps seconds (the stream's average rate). A window samples `num_frames` frames as evaluation does
(`tsn_indices`: the centres of T equal segments).

Faces: the project's detector (prepare's Haar cascade, or any `FaceDetector`) on the frames the windows sample, and on
no other. Each sampled frame's face is searched first around the face of the previous sampled frame (`track`: the
same person, in a region a little larger than that face, scaled to make it TRACK_FACE_PX wide, ~2 ms; then in a
wider one), and when that finds nothing as `prepare` does: the largest face of the whole frame, downscaled by
`detect_scale` for the detector and its box scaled back (~30 ms at 640x360). Boxes are rounded to whole pixels, as
face.json stores them. In a window, a sampled frame without a face takes the box of the nearest sampled frame with
one, else the whole frame (as training does for a frame without a box); the window's body box is `prepare.body_box`
of its frames' faces.

The video is decoded once, front to back, up to the last sampled frame; frames that no sampled frame refers to are
skipped, only the sampled ones are converted to RGB, and each is kept until the last window that uses it is cut.
Windows come out in chunks (`VideoWindows`), so memory stays flat on long videos.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.prepare import FaceDetector, body_box, haar_face_detector, largest_face
from affectlab.datasets.raer import crop_into, crop_regions, tsn_indices
from affectlab.datasets.video import READERS, _open_pyav, _pillow_jpeg, _pyav_reason, check_reader, frame_rate, \
    iter_frames, probe_video

# The whole-frame search runs on frames downscaled by this: with the Haar cascade's 24 px minimum, faces from ~48 px
# of the video up are found, for a quarter of the full-size search's time.
DETECT_SCALE = 0.5
# Tracking: the region searched reaches TRACK_REACH[0] face widths (heights) beyond the previous sampled frame's face
# on every side (then TRACK_REACH[1], for a head that moved further) and is scaled to make that face TRACK_FACE_PX
# wide; the Haar cascade then looks for faces from TRACK_MIN_FACE_PX (a face shrinking by a fifth) to the region's
# size. ~2 ms a frame for any face of 60 px or more, against ~30 ms for a whole 640x360 frame at DETECT_SCALE
# (benchmarks/test_predict_speed.py). The cascade's boxes grow looser as the face it sees gets smaller and as the
# region allows. Mean IoU with the astronaut's face on the videos of tests/test_video_windows.py (320x240, fast moves)
# and of the benchmark (640x360): tracked so 0.87 / 0.86 (at 64 px 0.89 / 0.88, 8% more time; at 48 px with a reach
# of 0.3, 0.69 / 0.68); the whole frame searched at DETECT_SCALE 0.77 / 0.75, at full size (as prepare does, 4x the
# time) 0.90 / 0.80.
TRACK_REACH = (0.15, 0.5)
TRACK_FACE_PX = 60
TRACK_MIN_FACE_PX = 48
CHUNK = 32  # windows per VideoWindows
_EPS = 1e-6  # seconds x fps that land on a frame boundary count as on it, despite float rounding


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of a video lie: per window its start and end in seconds, the frames it spans and the T it
    samples (0-based frame numbers)."""

    video: Path
    fps: float
    frame_count: int
    start_s: np.ndarray  # [W] float64
    end_s: np.ndarray  # [W] float64
    spans: np.ndarray  # [W, 2] int64: the window's first frame and the frame after its last
    frames: np.ndarray  # [W, T] int64, non-decreasing along T
    # the display index of each packet's timestamp, for cut_windows to skip unneeded frames (None: read the frames
    # in the order they come)
    display: dict[int, int] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.start_s)


@dataclass(frozen=True)
class VideoWindows:
    """Consecutive windows `first`, `first` + 1, ... of one video, cut for a clip model.

    faces / contexts: uint8 [W, T, 3, S, S], RGB pixels (`raer.normalise_pixels` makes the model's input of them).
    face_boxes: [W, T, 4] float32, each frame's face box before the margin (NaN: the whole frame was the face);
    body_boxes: [W, 4] float32 (NaN: the whole frame was the context). detected: [W, T] bool, the detector found the
    face in that very frame; face_found: [W] bool, in at least one frame of the window."""

    video: Path
    first: int
    start_s: np.ndarray
    end_s: np.ndarray
    frames: np.ndarray
    faces: np.ndarray
    contexts: np.ndarray
    face_boxes: np.ndarray
    body_boxes: np.ndarray
    detected: np.ndarray
    face_found: np.ndarray

    def __len__(self) -> int:
        return len(self.start_s)


def plan_windows(path: str | Path, *, num_frames: int, window_s: float, hop_s: float,
                 reader: str = READERS[0]) -> WindowPlan:
    """The windows of the video at `path` (see the module's docstring), from its frame count and rate alone: it opens
    the file and counts its frames without decoding any. DatasetError, naming the file, for an unreadable or empty
    video, a window or hop that is not a positive number of seconds, or a window too short for `num_frames`."""
    path = Path(path)
    for name, value in (("window_s", window_s), ("hop_s", hop_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise DatasetError(f"{path}: {name}={value!r}; expected a positive number of seconds")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise DatasetError(f"{path}: num_frames={num_frames!r}; expected the model's frame count, an integer >= 1")
    display = _display_order(path, check_reader(reader))
    count = len(display) if isinstance(display, dict) else display
    fps = frame_rate(path)
    if not fps > 0:
        raise DatasetError(f"{path}: the video states no frame rate; expected one (FFmpeg's avg_frame_rate) to place "
                           "windows in seconds")
    per_window = math.floor(window_s * fps + _EPS)
    if per_window < num_frames:
        raise DatasetError(
            f"{path}: window_s={window_s} holds {per_window} frame(s) at {fps:g} fps; expected at least the model's "
            f"{num_frames} frames per window (window_s >= {num_frames / fps:g})"
        )
    starts, ends, spans, frames = [], [], [], []
    duration = count / fps
    w = 0
    while True:
        start = w * hop_s
        first = math.ceil(start * fps - _EPS)
        if first >= count:  # a hop longer than the window can step past the end
            break
        end_frame = math.ceil((start + window_s) * fps - _EPS)
        last = end_frame >= count
        end_frame = min(end_frame, count)
        starts.append(start)
        ends.append(duration if last else start + window_s)
        spans.append((first, end_frame))
        frames.append([first + k for k in tsn_indices(end_frame - first, num_frames, train=False)])
        if last:
            break
        w += 1
    return WindowPlan(path, fps, count, np.asarray(starts, np.float64), np.asarray(ends, np.float64),
                      np.asarray(spans, np.int64).reshape(len(spans), 2),
                      np.asarray(frames, np.int64).reshape(len(frames), num_frames),
                      display if isinstance(display, dict) else None)


def cut_windows(path: str | Path, *, num_frames: int, window_s: float, hop_s: float, image_size: int,
                face_margin: float, reader: str = READERS[0], whole_frame: bool = False,
                detector: FaceDetector | None = None, detect_scale: float = DETECT_SCALE, track: bool = True,
                chunk: int = CHUNK, plan: WindowPlan | None = None) -> Iterator[VideoWindows]:
    """The windows of a video with their face and context crops, `chunk` windows at a time (see the module's
    docstring). The video is checked and the windows planned when this is called (`plan_windows`' errors are raised
    here); the frames are decoded as the chunks are taken.

    whole_frame: no face detection; every frame is its own face crop and context, as in training for a clip without
    boxes. detector: RGB frame -> face boxes (default: prepare's Haar cascade; a detector given is used for the
    tracked regions too). detect_scale: the whole-frame search's downscale (1.0 finds faces down to the detector's
    minimum, at about 4x the time of the default 0.5). track: search around the previous sampled frame's face first,
    following one person (False: the largest face of each whole frame, as `prepare` does, ~15x the detector's time).
    reader: "pyav" (the default) or "decord", as for RaerDataset. plan: what `plan_windows` gave for this video and
    these num_frames, window_s, hop_s and reader, when it was called already (the container is then not read again
    to plan; the windows are the same).

    Once the last chunk is taken, a video in which no frame had a face raises DatasetError (unless whole_frame):
    write what was predicted only after the iterator is exhausted."""
    if plan is None:
        plan = plan_windows(path, num_frames=num_frames, window_s=window_s, hop_s=hop_s, reader=reader)
    elif plan.video != Path(path) or plan.frames.shape[1] != num_frames:
        raise DatasetError(f"{path}: the plan given is of {plan.video} with {plan.frames.shape[1]} frames per window; "
                           f"expected plan_windows of this video with num_frames={num_frames}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DatasetError(f"{plan.video}: image_size={image_size!r}; expected the model's input size, an integer >= 1")
    if not 0 < detect_scale <= 1:
        raise DatasetError(f"{plan.video}: detect_scale={detect_scale!r}; expected 0 < detect_scale <= 1")
    if chunk < 1:
        raise DatasetError(f"{plan.video}: chunk={chunk!r}; expected at least 1 window per chunk")
    finder = None
    if not whole_frame:
        tracker = (detector or _haar(TRACK_MIN_FACE_PX)) if track else None
        finder = _FaceFinder(detector or _haar(), tracker, detect_scale)
    return _cut(plan, image_size, face_margin, reader, finder, chunk)


def _cut(plan: WindowPlan, image_size: int, face_margin: float, reader: str, finder: _FaceFinder | None,
         chunk: int) -> Iterator[VideoWindows]:
    count = len(plan)
    uses = Counter(int(k) for row in plan.frames for k in set(row.tolist()))  # frame -> windows still to cut with it
    needed_until = plan.frames.max(axis=1)  # per window, the last frame it samples
    held: dict[int, Image.Image] = {}
    faces_of: dict[int, tuple[int, int, int, int] | None] = {}
    face_crops: dict[int, dict] = {}  # frame -> {face box: its face crop}, for the next window using that frame
    batch = _Batch(plan, 0, min(chunk, count), image_size)
    cut, any_face = 0, False
    frames = _sampled_frames(plan.video, reader, set(uses), plan.display)
    try:
        for index, frame in frames:
            held[index] = Image.fromarray(frame)
            faces_of[index] = finder(frame) if finder is not None else None
            while cut < count and needed_until[cut] <= index:
                missing = sorted(k for k in set(plan.frames[cut].tolist()) if k not in held)
                if missing:  # timestamps that map to no frame, or out of order
                    raise DatasetError(f"{plan.video}: frames {missing} never came out of the decoder; expected a "
                                       "readable video with one timestamp per frame")
                any_face |= batch.add(cut, held, faces_of, face_crops, face_margin)
                for k in set(plan.frames[cut].tolist()):
                    uses[k] -= 1
                    if not uses[k]:
                        del uses[k], held[k], faces_of[k]
                        face_crops.pop(k, None)
                cut += 1
                if cut - batch.first == len(batch.start_s) and cut < count:
                    yield batch.windows()
                    batch = _Batch(plan, cut, min(cut + chunk, count), image_size)
            if cut == count:
                break  # the frames after the last window's last sampled frame are not needed
    finally:
        frames.close()
    if cut < count:
        raise DatasetError(f"{plan.video}: decoding ended before frame {int(needed_until[cut]) + 1} of the "
                           f"{plan.frame_count} its container lists; expected a readable video, not a truncated or "
                           "damaged file")
    yield batch.windows()
    if finder is not None and not any_face:
        raise DatasetError(
            f"{plan.video}: no face found in any frame of {plan.video.name} ({finder.searched} frames searched); "
            "pass whole_frame=true (predict ... whole_frame=true) to use the whole frame as the face, or a larger "
            f"detect_scale than {finder.scale} for small faces"
        )


class _Batch:
    """The arrays of windows first..stop-1, filled one window at a time."""

    def __init__(self, plan: WindowPlan, first: int, stop: int, size: int):
        self.plan, self.first = plan, first
        self.start_s, self.end_s = plan.start_s[first:stop], plan.end_s[first:stop]
        self.frames = plan.frames[first:stop]
        n, t = self.frames.shape
        self.faces = np.empty((n, t, 3, size, size), np.uint8)
        self.contexts = np.empty((n, t, 3, size, size), np.uint8)
        self.face_boxes = np.full((n, t, 4), np.nan, np.float32)
        self.body_boxes = np.full((n, 4), np.nan, np.float32)
        self.detected = np.zeros((n, t), bool)

    def add(self, w: int, held: dict[int, Image.Image], faces_of: dict, face_crops: dict, face_margin: float) -> bool:
        """Crop window w from the held frames and their faces (a face crop made for an earlier window is copied from
        `face_crops`, where this window's are kept); whether any of its frames had a face."""
        row = w - self.first
        sampled = self.frames[row].tolist()
        found = sorted(k for k in set(sampled) if faces_of[k] is not None)
        width, height = held[sampled[0]].size
        body = body_box([faces_of[k] for k in found], width, height)
        if body is not None:
            self.body_boxes[row] = body
        for t, k in enumerate(sampled):
            # A frame without a face takes the nearest one's in this window (the earlier on a tie), else the whole
            # frame.
            nearest = min(found, key=lambda j: abs(j - k), default=None)
            face = faces_of[nearest] if nearest is not None else None
            if face is not None:
                self.face_boxes[row, t] = face
            self.detected[row, t] = faces_of[k] is not None
            face_region, body_region = crop_regions(face, body, width, height, face_margin)
            made = face_crops.setdefault(k, {}).get(face)
            if made is not None:
                self.faces[row, t] = made
            crop_into(held[k], face_region, body_region, None if made is not None else self.faces[row, t],
                      self.contexts[row, t])
            if made is None:
                face_crops[k][face] = self.faces[row, t].copy()
        return bool(found)

    def windows(self) -> VideoWindows:
        return VideoWindows(self.plan.video, self.first, self.start_s, self.end_s, self.frames, self.faces,
                            self.contexts, self.face_boxes, self.body_boxes, self.detected,
                            self.detected.any(axis=1))


class _FaceFinder:
    """The face of each sampled frame, in frame order: near the previous sampled frame's face, else the largest in the
    whole (downscaled) frame; as whole pixels of the frame."""

    def __init__(self, detector: FaceDetector, tracker: FaceDetector | None, scale: float):
        self.detector, self.tracker, self.scale = detector, tracker, scale
        self.previous: tuple[int, int, int, int] | None = None
        self.searched = 0  # frames searched

    def __call__(self, frame: np.ndarray) -> tuple[int, int, int, int] | None:
        height, width = frame.shape[:2]
        face = None
        if self.tracker is not None and self.previous is not None:
            x1, y1, x2, y2 = self.previous
            for reach in TRACK_REACH:
                reach_x, reach_y = round(reach * (x2 - x1)), round(reach * (y2 - y1))
                region = (max(0, x1 - reach_x), max(0, y1 - reach_y), min(width, x2 + reach_x),
                          min(height, y2 + reach_y))
                face = self._search(self.tracker, frame, region, min(1.0, TRACK_FACE_PX / max(x2 - x1, 1)))
                if face is not None:
                    break
        if face is None:
            face = self._search(self.detector, frame, (0, 0, width, height), self.scale)
        self.previous = face
        self.searched += 1
        return face

    @staticmethod
    def _search(detector: FaceDetector, frame: np.ndarray, region: tuple[int, int, int, int], scale: float):
        """The largest face `detector` finds in `region` of the frame resized by `scale`, in whole frame pixels."""
        import cv2

        x1, y1, x2, y2 = region
        part = frame[y1:y2, x1:x2]
        size = (max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale)))
        if size != (x2 - x1, y2 - y1):
            part = cv2.resize(part, size, interpolation=cv2.INTER_AREA)
        face = largest_face(detector(part))
        if face is None:
            return None
        sx, sy = size[0] / (x2 - x1), size[1] / (y2 - y1)
        box = (x1 + face[0] / sx, y1 + face[1] / sy, x1 + face[2] / sx, y1 + face[3] / sy)
        return tuple(int(round(v)) for v in box)


@functools.cache
def _haar(min_size: int = 24) -> FaceDetector:
    """prepare's Haar cascade, loaded once per process for all the videos cut."""
    return haar_face_detector(min_size)


def _sampled_frames(path: Path, reader: str, wanted: set[int],
                    display: dict[int, int] | None) -> Iterator[tuple[int, np.ndarray]]:
    """(0-based index, H x W x 3 uint8 RGB frame) of the `wanted` frames, in order, from one sequential pass over the
    video that stops after the last of them: `video.iter_frames` without the work for the other frames. They are not
    converted to RGB (on 640x360 H.264 that is over half of iter_frames' time, and windows of 2 s every 1 s sample a
    sixth of the frames); those no other frame refers to (most B-frames) are not decoded, with `display` (packet
    timestamp -> display index) to tell which packet holds which frame; a Motion-JPEG frame not wanted is not decoded
    at all. Without `display` the frames are counted as they come out."""
    if reader == "decord":
        yield from ((k, frame) for k, frame in iter_frames(path, reader) if k in wanted)
        return
    import av

    remaining = len(wanted)
    container, stream = _open_pyav(path)
    context, index = stream.codec_context, 0
    jpegs = context.name == "mjpeg"  # one intra-coded frame per packet
    skipping = "DEFAULT"
    try:
        for packet in container.demux(stream):  # the last packet (size 0) drains the decoder
            if jpegs and packet.size:
                if index in wanted:
                    image = _pillow_jpeg(context, packet)
                    if image is None:  # a JPEG Pillow does not read: FFmpeg's decoder
                        decoded = context.decode(packet)
                        if not decoded:
                            raise DatasetError(f"{path}: frame {index} decodes to nothing; expected a readable video")
                        image = decoded[0].to_ndarray(format="rgb24")
                    yield index, np.asarray(image)
                    remaining -= 1
                index += 1
            else:
                if display is not None and packet.size:
                    wanted_here = display.get(packet.pts) in wanted
                    if skipping != ("DEFAULT" if wanted_here else "NONREF"):
                        skipping = context.skip_frame = "DEFAULT" if wanted_here else "NONREF"
                for frame in context.decode(packet if packet.size else None):
                    k = display.get(frame.pts) if display is not None else index
                    index += 1
                    if k in wanted:
                        yield k, frame.to_ndarray(format="rgb24")
                        remaining -= 1
            if not remaining:
                return
    except DatasetError:
        raise
    except (av.FFmpegError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode frame {index} ({_pyav_reason(exc)}); expected a readable video, "
                           "not a truncated or damaged file") from None
    finally:
        container.close()


def _display_order(path: Path, reader: str) -> dict[int, int] | int:
    """How many frames the video's container lists (its video packets, read without decoding any), as RaerDataset
    counts them: as {packet timestamp: display index} when every packet has its own timestamp, else as their number.
    DatasetError for a file that is not a readable video or has no frame."""
    if reader == "decord":
        return probe_video(path, reader)[0]
    import av

    container, stream = _open_pyav(path)
    try:
        stamps = [packet.pts for packet in container.demux(stream) if packet.size]
    except av.FFmpegError as exc:
        raise DatasetError(f"{path}: cannot read its packets ({_pyav_reason(exc)}); expected a readable video, not a "
                           "truncated or damaged file") from None
    finally:
        container.close()
    if not stamps:
        raise DatasetError(f"{path}: video has 0 frames; expected at least 1")
    if None in stamps or len(set(stamps)) < len(stamps):
        return len(stamps)
    return {stamp: k for k, stamp in enumerate(sorted(stamps))}
