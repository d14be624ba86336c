"""Data preparation: face and body boxes for a user's own clips, written in RAER's official format.

    images/<clip_dir>/<k>.jpg or images/<clip_dir>.<video suffix>   the user's clips (what RaerDataset reads)
    -> bounding_box/face.json   {clip_dir: {"<k>.jpg": [x1, y1, x2, y2]}}  (frames without a detected face: no entry)
    -> bounding_box/body.json   {clip_dir: [x1, y1, x2, y2]}               (null when no face was found in the clip)

The face of a frame is the largest face the detector finds in it (a classroom clip follows one student). The body box
is the region the clip's faces cover, widened by BODY_SIDES face widths to each side, BODY_ABOVE face heights up and
BODY_BELOW face heights down, so that it takes in the shoulders, the hands and the desk in front of the student.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.video import VIDEO_SUFFIXES, iter_frames, probe_video

FaceDetector = Callable[[np.ndarray], list[tuple[float, float, float, float]]]  # RGB H x W x 3 -> face boxes

BODY_SIDES, BODY_ABOVE, BODY_BELOW = 1.0, 0.5, 3.0  # in face widths / heights around the clip's faces
_FRAME = re.compile(r"[1-9][0-9]*\.jpg")


def haar_face_detector(min_size: int = 24) -> FaceDetector:
    """OpenCV's frontal-face Haar cascade, whose model file ships inside the opencv-python(-headless) package."""
    try:
        import cv2
    except ImportError:
        raise DatasetError("the face detector needs OpenCV: install opencv-python-headless (its Haar cascade model "
                           "ships inside the package)") from None
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))

    def detect(frame: np.ndarray) -> list[tuple[float, float, float, float]]:
        grey = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY))
        found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
        return [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in found]

    return detect


def largest_face(found: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float] | None:
    """The largest of a detector's face boxes (the clip's student, the video's speaker); None when it found none."""
    return max(found, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), default=None)


def find_clips(images: Path) -> dict[str, Path]:
    """{clip_dir: frame folder or video file} under `images/`, clip_dir relative to it without a video suffix."""
    clips: dict[str, Path] = {}
    for path in sorted(images.rglob("*")):
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            clips[str(path.relative_to(images).with_suffix("")).replace("\\", "/")] = path
        elif path.is_dir() and (path / "1.jpg").is_file():
            clips[str(path.relative_to(images)).replace("\\", "/")] = path
    return clips


def clip_frames(source: Path):
    """(1-based frame number, RGB frame) of a frame folder (numeric order) or a video file."""
    if source.is_dir():
        numbers = sorted(int(p.stem) for p in source.iterdir() if _FRAME.fullmatch(p.name))
        for k in numbers:
            with Image.open(source / f"{k}.jpg") as image:
                yield k, np.asarray(image.convert("RGB"))
    else:
        count, _ = probe_video(source)
        for index, frame in iter_frames(source):  # one sequential pass with flat memory, also on long recordings
            if index >= count:
                break
            yield index + 1, frame


def body_box(faces: list[tuple[float, float, float, float]], width: int, height: int) -> list[int] | None:
    """The clip's faces' region widened to take in the student's body and desk, clamped to the frame."""
    if not faces:
        return None
    boxes = np.asarray(faces, dtype=np.float64)
    face_w = float(np.median(boxes[:, 2] - boxes[:, 0]))
    face_h = float(np.median(boxes[:, 3] - boxes[:, 1]))
    x1 = boxes[:, 0].min() - BODY_SIDES * face_w
    y1 = boxes[:, 1].min() - BODY_ABOVE * face_h
    x2 = boxes[:, 2].max() + BODY_SIDES * face_w
    y2 = boxes[:, 3].max() + BODY_BELOW * face_h
    return [int(max(0, np.floor(x1))), int(max(0, np.floor(y1))), int(min(width, np.ceil(x2))),
            int(min(height, np.ceil(y2)))]


def prepare_boxes(root: str | Path, detector: FaceDetector | None = None) -> dict[str, int]:
    """Detect faces in every clip under `<root>/images` and write `<root>/bounding_box/{face,body}.json`.

    Returns {clip_dir: frames with a face}. Existing box files are replaced."""
    root = Path(root)
    images = root / "images"
    clips = find_clips(images) if images.is_dir() else {}
    if not clips:
        raise DatasetError(f"{images}: no clips found; expected frame folders (1.jpg, 2.jpg, ...) or video files "
                           f"({', '.join(VIDEO_SUFFIXES)})")
    detector = detector or haar_face_detector()
    face_json: dict[str, dict[str, list[int]]] = {}
    body_json: dict[str, list[int] | None] = {}
    for clip_dir, source in clips.items():
        boxes: dict[str, list[int]] = {}
        size = (1, 1)
        for k, frame in clip_frames(source):
            size = (frame.shape[1], frame.shape[0])
            face = largest_face(detector(frame))
            if face is not None:
                boxes[f"{k}.jpg"] = [int(round(v)) for v in face]
        face_json[clip_dir] = boxes
        body_json[clip_dir] = body_box([tuple(b) for b in boxes.values()], *size)
    (root / "bounding_box").mkdir(parents=True, exist_ok=True)
    (root / "bounding_box" / "face.json").write_text(json.dumps(face_json), encoding="utf-8")
    (root / "bounding_box" / "body.json").write_text(json.dumps(body_json), encoding="utf-8")
    return {clip_dir: len(boxes) for clip_dir, boxes in face_json.items()}
