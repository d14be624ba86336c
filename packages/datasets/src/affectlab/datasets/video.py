"""Video clips: frames (and sound) read with decord, and a Motion-JPEG AVI writer that needs no encoder library.

decord readers hold FFmpeg state that must not cross a fork, so `read_frames` opens a reader, reads and drops it;
a Dataset calls it inside `__getitem__` and DataLoader workers each open their own.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from affectlab.datasets.errors import DatasetError

# What decord (FFmpeg) reads and a clip may be stored as; `images/<clip_dir>` or `images/<clip_dir><suffix>`.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


def _reason(exc: Exception) -> str:
    """decord's message without its C++ source locations ("[15:07:39] /src/video_reader.cc:83: ")."""
    text = re.sub(r"\[[\d:]+\] [^\s:]+:\d+: ", "", str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return text or type(exc).__name__


def _reader(path: Path):
    import decord

    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, decord.DECORDError) as exc:  # decord reports bad containers as DECORDError
        raise DatasetError(f"{path}: cannot open video ({_reason(exc)}); expected a video decord reads "
                           f"({', '.join(VIDEO_SUFFIXES)})") from exc


def probe_video(path: str | Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (width, height)) of a video file. Decodes the first and the last frame: a file cut short (an
    interrupted copy) still opens and counts its frames, and only decoding its end shows the damage, which is better
    found here, when bad clips can be skipped, than in the middle of training."""
    path = Path(path)
    reader = _reader(path)
    count = len(reader)
    if count < 1:
        raise DatasetError(f"{path}: video has 0 frames; expected at least 1")
    try:
        height, width = reader[0].shape[:2]
        if count > 1:
            reader.get_batch([count - 1])
    except Exception as exc:  # decord raises its own error types from C++
        raise DatasetError(f"{path}: cannot decode its {count} frames ({_reason(exc)}); expected a readable video, "
                           "not a truncated or damaged file") from exc
    return count, (int(width), int(height))


def read_frames(path: str | Path, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """{0-based index: H x W x 3 uint8 RGB frame} for the distinct `indices`, decoded in one pass."""
    path = Path(path)
    wanted = sorted(set(int(k) for k in indices))
    reader = _reader(path)
    if wanted and (wanted[0] < 0 or wanted[-1] >= len(reader)):
        outside = [k for k in wanted if not 0 <= k < len(reader)]
        raise DatasetError(f"{path}: frames {outside} asked for, but the video has {len(reader)} frames (0-based "
                           f"0..{len(reader) - 1}); expected the video as long as its annotation says")
    try:
        frames = reader.get_batch(wanted).asnumpy()
    except Exception as exc:
        reason = _reason(exc)
        raise DatasetError(f"{path}: cannot decode frames {wanted} ({reason}); expected a readable video") from exc
    finally:
        del reader
    return dict(zip(wanted, frames))


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray | None:
    """The clip's sound track as a mono float32 waveform [N] at `sample_rate`, or None when the file has no audio
    stream (a silent clip is a missing modality, not an error). A file that is not a readable media file raises."""
    import decord

    path = Path(path)
    try:
        reader = decord.AudioReader(str(path), ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
    except (RuntimeError, decord.DECORDError) as exc:
        if "find audio stream" in str(exc):
            return None
        raise DatasetError(f"{path}: cannot open its audio ({_reason(exc)}); expected a media file decord reads "
                           f"({', '.join(VIDEO_SUFFIXES)})") from exc
    try:
        samples = reader[:].asnumpy().reshape(-1).astype(np.float32, copy=False)
    except Exception as exc:  # decord raises its own error types from C++
        raise DatasetError(f"{path}: cannot decode its audio ({_reason(exc)}); expected a readable file, not a "
                           "truncated or damaged one") from exc
    finally:
        del reader
    return samples if samples.size else None


def write_mjpeg_avi(path: str | Path, frames: Sequence[np.ndarray], fps: int = 25, quality: int = 90) -> Path:
    """Write H x W x 3 uint8 frames as a Motion-JPEG AVI (RIFF, one JPEG per frame, with an idx1 index).

    Every FFmpeg build decodes it; PIL encodes the JPEGs, so no video encoder library is needed.
    """
    path = Path(path)
    if not frames:
        raise DatasetError(f"{path}: no frames to write; expected at least 1")
    jpegs = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
        jpegs.append(buffer.getvalue())
    height, width = np.asarray(frames[0]).shape[:2]
    largest = max(len(j) for j in jpegs)

    def chunk(fourcc: bytes, data: bytes) -> bytes:  # RIFF chunks are padded to an even size
        return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")

    def listed(kind: bytes, data: bytes) -> bytes:
        return b"LIST" + struct.pack("<I", len(data) + 4) + kind + data

    count = len(jpegs)
    # AVIMAINHEADER: µs per frame, max bytes/s, padding, flags (AVIF_HASINDEX), frames, initial, streams,
    # buffer size, width, height, 4 reserved.
    main_header = struct.pack("<14I", 1_000_000 // fps, largest * fps, 0, 0x10, count, 0, 1, largest,
                              width, height, 0, 0, 0, 0)
    # AVISTREAMHEADER: type, handler, flags, priority, language, initial frames, scale, rate, start, length,
    # buffer size, quality (-1 = default), sample size, frame rectangle.
    stream_header = b"vids" + b"MJPG" + struct.pack("<IHHIIIIIIII4H", 0, 0, 0, 0, 1, fps, 0, count, largest,
                                                    0xFFFFFFFF, 0, 0, 0, width, height)
    # BITMAPINFOHEADER of the compressed frames.
    stream_format = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
    header = listed(b"hdrl", chunk(b"avih", main_header)
                    + listed(b"strl", chunk(b"strh", stream_header) + chunk(b"strf", stream_format)))
    movie, index, offset = [], [], 4  # idx1 offsets count from the 'movi' fourcc
    for jpeg in jpegs:
        data = chunk(b"00dc", jpeg)
        index.append(b"00dc" + struct.pack("<III", 0x10, offset, len(jpeg)))  # 0x10: key frame
        movie.append(data)
        offset += len(data)
    body = b"AVI " + header + listed(b"movi", b"".join(movie)) + chunk(b"idx1", b"".join(index))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path
