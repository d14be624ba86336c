"""Video clips: frames read with PyAV (FFmpeg) or decord, sound with decord, and a Motion-JPEG AVI writer that needs
no encoder library.

Two frame readers, chosen by `reader=`:
- "pyav" (the default): the stream's packets are indexed once per call; only the packets the asked frames need are
  decoded (just those frames in an intra-only stream such as Motion-JPEG, whose JPEGs go to Pillow's libjpeg-turbo;
  from the keyframe before the first asked frame in an inter-coded one such as H.264), and only the asked frames
  are converted to RGB. It decodes H.264 about 1.5x and Motion-JPEG about 2x faster than decord here
  (`benchmarks/test_raer_loader_speed.py`).
- "decord": decord's VideoReader.get_batch, as the RAER issue first specified.
Readers hold FFmpeg state that must not cross a fork, so each call opens a reader, reads and drops it; a Dataset
calls them inside `__getitem__` and DataLoader workers each open their own.
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

# What FFmpeg reads and a clip may be stored as; `images/<clip_dir>` or `images/<clip_dir><suffix>`.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
READERS = ("pyav", "decord")  # the frame readers; the first is the default


def videos_of(path: str | Path, expected: str = "a video file or a folder of videos") -> list[Path]:
    """A video file itself, or the video files of a folder (by suffix, sorted by name; sub-folders are not entered,
    nor taken for videos whatever their name). DatasetError for a folder without any, ending with what was
    `expected`."""
    path = Path(path)
    if path.is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not found:
        raise DatasetError(f"{path}: no video files in it ({', '.join(VIDEO_SUFFIXES)}); expected {expected}")
    return found


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


def check_reader(reader: str) -> str:
    if reader not in READERS:
        raise DatasetError(f"video reader {reader!r}; expected one of {', '.join(READERS)}")
    return reader


def probe_video(path: str | Path, reader: str = READERS[0]) -> tuple[int, tuple[int, int]]:
    """(frame count, (width, height)) of a video file. Decodes the first and the last frame: a file cut short (an
    interrupted copy) still opens and counts its frames, and only decoding its end shows the damage, which is better
    found here, when bad clips can be skipped, than in the middle of training."""
    path = Path(path)
    if check_reader(reader) == "pyav":
        with _PyAvClip(path) as clip:
            count = len(clip.order)
            if count < 1:
                raise DatasetError(f"{path}: video has 0 frames; expected at least 1")
            try:
                first = clip.decode(sorted({0, count - 1}), images=False)[0]
            except _DecodeError as error:
                raise DatasetError(f"{path}: cannot decode its {count} frames ({error.reason}); expected a "
                                   "readable video, not a truncated or damaged file") from None
            return count, (int(first.shape[1]), int(first.shape[0]))
    decoder = _reader(path)
    count = len(decoder)
    if count < 1:
        raise DatasetError(f"{path}: video has 0 frames; expected at least 1")
    try:
        height, width = decoder[0].shape[:2]
        if count > 1:
            decoder.get_batch([count - 1])
    except Exception as exc:  # decord raises its own error types from C++
        raise DatasetError(f"{path}: cannot decode its {count} frames ({_reason(exc)}); expected a readable video, "
                           "not a truncated or damaged file") from exc
    return count, (int(width), int(height))


def read_images(path: str | Path, indices: Sequence[int], reader: str = READERS[0]) -> dict[int, Image.Image]:
    """{0-based index: RGB PIL image} for the distinct `indices`, decoded in one pass."""
    return _read(Path(path), indices, reader, images=True)


def read_frames(path: str | Path, indices: Sequence[int], reader: str = READERS[0]) -> dict[int, np.ndarray]:
    """{0-based index: H x W x 3 uint8 RGB frame} for the distinct `indices`, decoded in one pass."""
    return _read(Path(path), indices, reader, images=False)


def read_spread(path: str | Path, frames: int, reader: str = READERS[0]) -> list[np.ndarray]:
    """`frames` H x W x 3 uint8 RGB frames spread evenly over the whole video, its first and last among them (one
    frame when the video has one), with the video opened and decoded once."""
    path = Path(path)
    if check_reader(reader) == "decord":
        count, _ = probe_video(path, reader)
        wanted = _spread(count, frames)
        decoded = _decord_frames(path, sorted(set(wanted)))
        return [decoded[k] for k in wanted]
    with _PyAvClip(path) as clip:
        if not clip.order:
            raise DatasetError(f"{path}: video has 0 frames; expected at least 1")
        wanted = _spread(len(clip.order), frames)
        decoded = _decode(path, clip, sorted(set(wanted)), images=False)
    return [decoded[k] for k in wanted]


def _spread(count: int, frames: int) -> list[int]:
    return np.linspace(0, count - 1, frames).round().astype(int).tolist() if count > 1 else [0]


def _read(path: Path, indices: Sequence[int], reader: str, images: bool) -> dict:
    wanted = sorted(set(int(k) for k in indices))
    if check_reader(reader) == "decord":
        frames = _decord_frames(path, wanted)
        return {k: Image.fromarray(frame) for k, frame in frames.items()} if images else frames
    with _PyAvClip(path) as clip:
        _check_range(path, wanted, len(clip.order))
        return _decode(path, clip, wanted, images)


def _decode(path: Path, clip: _PyAvClip, wanted: list[int], images: bool) -> dict:
    try:
        return clip.decode(wanted, images)
    except _DecodeError as error:
        raise DatasetError(f"{path}: cannot decode frames {wanted} ({error.reason}); expected a readable "
                           "video") from None


def _check_range(path: Path, wanted: list[int], count: int) -> None:
    if wanted and (wanted[0] < 0 or wanted[-1] >= count):
        outside = [k for k in wanted if not 0 <= k < count]
        raise DatasetError(f"{path}: frames {outside} asked for, but the video has {count} frames (0-based "
                           f"0..{count - 1}); expected the video as long as its annotation says")


def _decord_frames(path: Path, wanted: list[int]) -> dict[int, np.ndarray]:
    decoder = _reader(path)
    _check_range(path, wanted, len(decoder))
    try:
        frames = decoder.get_batch(wanted).asnumpy()
    except Exception as exc:
        reason = _reason(exc)
        raise DatasetError(f"{path}: cannot decode frames {wanted} ({reason}); expected a readable video") from exc
    finally:
        del decoder
    return dict(zip(wanted, frames))


class _DecodeError(DatasetError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _PyAvClip:
    """One video file opened with PyAV: its video stream's packets (read once, in decode order) and which packet
    holds the k-th frame in display order (`order[k]`, by presentation time)."""

    def __init__(self, path: Path):
        import av

        self.container, self.stream = _open_pyav(path)
        try:
            self.packets = [p for p in self.container.demux(self.stream) if p.size]  # the last one flushes
        except av.FFmpegError as exc:
            self.close()
            raise DatasetError(f"{path}: cannot read its packets ({_pyav_reason(exc)}); expected a readable video, "
                               "not a truncated or damaged file") from None
        except BaseException:
            self.close()
            raise
        # Display order: by presentation time, or the decode order where a container gives none (AVI may not).
        stamps = [p.pts for p in self.packets]
        self.timed = all(t is not None for t in stamps)
        self.order = sorted(range(len(self.packets)), key=stamps.__getitem__) if self.timed \
            else list(range(len(self.packets)))
        self.display_index = {stamps[i]: k for k, i in enumerate(self.order)} if self.timed else None  # pts -> k
        self.intra = all(p.is_keyframe for p in self.packets)

    def __enter__(self) -> _PyAvClip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def decode(self, wanted: list[int], images: bool) -> dict:
        """The display-order frames `wanted` (sorted, in range) as RGB PIL images (`images`) or H x W x 3 uint8
        arrays; _DecodeError when one cannot be decoded."""
        import av

        try:
            if self.intra:  # every packet decodes alone: decode just the wanted ones
                return {k: self._intra_frame(self.packets[self.order[k]], images) for k in wanted}
            return self._inter_frames(wanted, images)
        except (av.FFmpegError, OSError, SyntaxError, ValueError) as exc:  # Pillow: OSError "image file is truncated"
            raise _DecodeError(_pyav_reason(exc)) from None

    @staticmethod
    def _convert(frame, images: bool):
        """An FFmpeg frame as RGB: to_ndarray is ~15x faster than PyAV's to_image."""
        array = frame.to_ndarray(format="rgb24")
        return Image.fromarray(array) if images else array

    def _intra_frame(self, packet, images: bool):
        context = self.stream.codec_context
        image = _pillow_jpeg(context, packet)
        if image is not None:
            return image if images else np.asarray(image)
        frames = context.decode(packet) or context.decode(None)
        context.flush_buffers()
        if not frames:
            raise _DecodeError(f"packet at {packet.pts} gave no frame")
        return self._convert(frames[0], images)

    def _inter_frames(self, wanted: list[int], images: bool) -> dict:
        """Decode from the keyframe before the first wanted frame's packet, converting only the wanted frames; from
        the first packet when that start misses one (a frame that refers to an earlier group of pictures). Without
        timestamps frames are counted from the first packet."""
        start = 0
        if self.timed:
            first_packet = min(self.order[k] for k in wanted)
            start = max((i for i in range(first_packet + 1) if self.packets[i].is_keyframe), default=0)
        for begin in ([start, 0] if start else [0]):
            found = self._decode_from(begin, set(wanted), images)
            if len(found) == len(wanted):
                return found
        missing = sorted(set(wanted) - set(found))
        raise _DecodeError(f"frames {missing} never came out of the decoder")

    def _decode_from(self, begin: int, wanted: set[int], images: bool) -> dict:
        context = self.stream.codec_context
        context.flush_buffers()
        found: dict = {}
        shown = 0  # the display index of the next frame, where there are no timestamps (begin is 0 then)

        def take(frames) -> None:
            nonlocal shown
            for frame in frames:
                k = self.display_index.get(frame.pts) if self.timed else shown
                shown += 1
                if k in wanted and k not in found:
                    found[k] = self._convert(frame, images)

        for packet in self.packets[begin:]:
            take(context.decode(packet))
            if len(found) == len(wanted):
                return found
        take(context.decode(None))
        return found


def frame_rate(path: str | Path) -> float:
    """The video's average frame rate in frames per second (FFmpeg's avg_frame_rate, else its guess; 0.0 when it has
    neither)."""
    path = Path(path)
    container, stream = _open_pyav(path)
    try:
        rate = stream.average_rate or stream.guessed_rate
    finally:
        container.close()
    return float(rate) if rate else 0.0


def iter_frames(path: str | Path, reader: str = READERS[0], chunk: int = 32):
    """(0-based index, H x W x 3 uint8 RGB frame) of every frame of a video in display order, with flat memory: PyAV
    decodes it in one sequential pass (a long recording is neither held nor re-read); decord reads `chunk` frames at
    a time."""
    path = Path(path)
    if check_reader(reader) == "decord":
        count, _ = probe_video(path, reader)
        for start in range(0, count, chunk):
            yield from sorted(_decord_frames(path, list(range(start, min(start + chunk, count)))).items())
        return
    import av

    container, stream = _open_pyav(path)
    context, index = stream.codec_context, 0
    try:
        for packet in container.demux(stream):  # the last packet (size 0) drains the decoder
            image = _pillow_jpeg(context, packet) if packet.size else None
            frames = [np.asarray(image)] if image is not None else \
                [frame.to_ndarray(format="rgb24") for frame in context.decode(packet if packet.size else None)]
            for frame in frames:
                yield index, frame
                index += 1
    except (av.FFmpegError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode frame {index} ({_pyav_reason(exc)}); expected a readable video, "
                           "not a truncated or damaged file") from None
    finally:
        container.close()


def _open_pyav(path: Path):
    """(container, its first video stream) opened with PyAV, decoding on one thread; DatasetError naming the file."""
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot open video ({_pyav_reason(exc)}); expected a video FFmpeg reads "
                           f"({', '.join(VIDEO_SUFFIXES)})") from None
    if not container.streams.video:
        container.close()
        raise DatasetError(f"{path}: cannot open video (no video stream); expected a video FFmpeg reads "
                           f"({', '.join(VIDEO_SUFFIXES)})")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # one thread per DataLoader worker
    return container, stream


def _pillow_jpeg(context, packet) -> Image.Image | None:
    """A Motion-JPEG packet decoded by Pillow (libjpeg-turbo, about 2x FFmpeg's JPEG decoder), or None: another
    codec, or a JPEG Pillow does not read (e.g. one without its Huffman tables), which FFmpeg then decodes."""
    if context.name != "mjpeg":
        return None
    try:
        with Image.open(io.BytesIO(bytes(packet))) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError):
        return None


def _pyav_reason(exc: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends (the DatasetError names it already)."""
    text = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [""])[0]
    return re.sub(r"^\[Errno -?\d+\] ", "", text) or type(exc).__name__


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
