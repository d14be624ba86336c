"""The two video frame readers of affectlab.datasets.video: PyAV (the default, decoding only the packets the asked
frames need) and decord. On H.264 with B-frames and several keyframes they must give the very same frames; on
Motion-JPEG the PyAV reader gives what Pillow gives for the same JPEG. Clips are written here with PyAV."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from affectlab.datasets import DatasetError, RaerDataset, load_raer_split, make_synthetic_raer, write_mjpeg_avi
from affectlab.datasets.video import (
    READERS,
    frame_rate,
    iter_frames,
    probe_video,
    read_frames,
    read_images,
    read_spread,
    videos_of,
)
from affectlab.lab.config import ConfigError, load_config
from builders import write_mp4


def moving_frames(count: int, size=(64, 48)) -> list[np.ndarray]:
    """Frames that differ from one another (a bright square moving over a gradient), so a frame read at the wrong
    index shows."""
    width, height = size
    base = np.linspace(0, 200, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)
    frames = []
    for k in range(count):
        frame = base.copy()
        x = (5 * k) % (width - 12)
        frame[10:22, x:x + 12] = (250, 40 + 7 * k % 200, 30)
        frames.append(frame)
    return frames


def write_h264(path, frames, *, gop: int, bframes: int):
    """H.264 with a keyframe exactly every `gop` frames and up to `bframes` B-frames between references."""
    options = {"g": str(gop), "keyint_min": str(gop), "bf": str(bframes), "sc_threshold": "0"}
    return write_mp4(path, frames, fps=25, options=options)


@pytest.mark.parametrize("gop,bframes", [(7, 2), (250, 3), (1, 0)])
def test_pyav_reads_the_frames_decord_reads_on_h264(tmp_path, gop, bframes):
    path = write_h264(tmp_path / "clip.mp4", moving_frames(30), gop=gop, bframes=bframes)
    assert probe_video(path) == probe_video(path, "decord") == (30, (64, 48))
    for indices in ([0], [29], [3, 17, 28], [12, 5, 5, 20], list(range(30)), [8, 9, 10, 22, 23]):
        ours, theirs = read_frames(path, indices), read_frames(path, indices, "decord")
        assert sorted(ours) == sorted(theirs) == sorted(set(indices))
        for k in ours:
            assert np.array_equal(ours[k], theirs[k]), (indices, k)
    for reader in READERS:  # first and last among 4 spread over the 30 frames: 0, 9.67, 19.33, 29 rounded
        spread, chosen = read_spread(path, 4, reader), read_frames(path, [0, 10, 19, 29], reader)
        assert all(np.array_equal(frame, chosen[k]) for frame, k in zip(spread, [0, 10, 19, 29], strict=True))
    images = read_images(path, [4, 11])
    assert np.array_equal(np.asarray(images[11]), read_frames(path, [11], "decord")[11])


def numbered_frames(count: int, size=(96, 64)) -> list[np.ndarray]:
    """Moving frames whose top 16 rows are flat at grey level 6 * k: frame k's number survives lossy coding."""
    frames = moving_frames(count, size)
    for k, frame in enumerate(frames):
        frame[:16] = 6 * k
    return frames


def frame_number(frame: np.ndarray) -> int:
    return int(round(float(frame[2:14, 8:-8].mean()) / 6))


@pytest.mark.parametrize("codec,name,options", [
    ("mpeg4", "clip.mp4", {"bf": "2", "g": "12"}),  # MPEG-4 Part 2 with B-frames
    ("mpeg2video", "clip.mpg", {"bf": "2", "g": "9"}),  # open groups of pictures
    ("libx265", "clip.mp4", {"g": "10", "x265-params": "log-level=none"}),  # HEVC
    ("libvpx-vp9", "clip.webm", {"g": "10"}),
])
def test_pyav_gives_the_asked_frame_after_seeking_in_other_codecs(tmp_path, codec, name, options):
    """The PyAV reader must give frame k for k. decord does not here: on these MPEG-4 Part 2 and MPEG-2 clips it
    gave frames 3, 12, 19, 27, 35, 35 and 3, 3, 19, 36, 38, 38 for 3, 10, 17, 25, 33, 39, and 3, 11, 18, 25, 33, 39 on
    the HEVC one."""
    # 4 Mb/s: B-frames that are not mush, so the frame numbers survive
    path = write_mp4(tmp_path / name, numbered_frames(40), fps=25, codec=codec, options=options, bit_rate=4_000_000)
    assert probe_video(path) == (40, (96, 64)) and frame_rate(path) == 25.0
    for indices in ([3, 10, 17, 25, 33, 39], [39], [0, 21], list(range(40))):
        frames = read_frames(path, indices)
        assert {k: frame_number(frames[k]) for k in indices} == {k: k for k in indices}
    assert [frame_number(frame) for _, frame in iter_frames(path)] == list(range(40))


def test_pyav_gives_pillows_decode_of_a_motion_jpeg_frame(tmp_path):
    frames = moving_frames(6)
    path = write_mjpeg_avi(tmp_path / "clip.avi", frames, quality=85)
    ours = read_frames(path, [1, 4])
    for k in (1, 4):
        jpeg = io.BytesIO()
        Image.fromarray(frames[k]).save(jpeg, format="JPEG", quality=85)  # the bytes write_mjpeg_avi stores
        assert np.array_equal(ours[k], np.asarray(Image.open(jpeg).convert("RGB")))
        assert np.abs(ours[k].astype(int) - read_frames(path, [k], "decord")[k]).mean() < 3  # FFmpeg's decoder


@pytest.mark.parametrize("reader", READERS)
def test_iter_frames_gives_every_frame_in_order_as_read_frames_does(tmp_path, reader):
    h264 = write_h264(tmp_path / "clip.mp4", moving_frames(23), gop=6, bframes=2)
    mjpeg = write_mjpeg_avi(tmp_path / "clip.avi", moving_frames(9))
    for path, count in ((h264, 23), (mjpeg, 9)):
        every = read_frames(path, range(count), reader)
        streamed = list(iter_frames(path, reader, chunk=4))
        assert [k for k, _ in streamed] == list(range(count))
        for k, frame in streamed:
            assert np.array_equal(frame, every[k]), (path.name, k)


def test_pyav_reader_errors_name_the_file(tmp_path):
    path = write_h264(tmp_path / "clip.mp4", moving_frames(10), gop=5, bframes=2)
    with pytest.raises(DatasetError, match=r"clip\.mp4: frames \[10\] asked for, but the video has 10 frames"):
        read_frames(path, [2, 10])
    with pytest.raises(DatasetError, match=r"video reader 'opencv'; expected one of pyav, decord"):
        read_frames(path, [2], reader="opencv")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DatasetError, match=r"cut\.mp4: cannot open video \(.*\); expected a video FFmpeg reads"):
        probe_video(cut)  # the mp4 index (moov) is written last: a cut file has none


def test_raer_video_readers_give_the_same_tensors_on_h264(tmp_path):
    root = make_synthetic_raer(tmp_path / "raer", num_train=3, num_test=0, num_frames=12, frame_size=(64, 48),
                               video=True)
    for avi in sorted((root / "images").rglob("*.avi")):  # the same clips as H.264
        write_h264(avi.with_suffix(".mp4"), [read_frames(avi, range(12))[k] for k in range(12)], gop=5, bframes=2)
        avi.unlink()
    clips = load_raer_split(root, "train")
    datasets = [RaerDataset(root, clips, num_segments=4, image_size=16, video_reader=reader) for reader in READERS]
    assert datasets[0].cache_key() != datasets[1].cache_key()  # crop caches are kept apart by reader
    for index in range(len(clips)):
        first, second = datasets[0][index], datasets[1][index]
        for stream in ("face", "context"):
            assert torch.equal(first[stream], second[stream])
    with pytest.raises(DatasetError, match=r"video reader 'cv2'"):
        RaerDataset(root, clips, video_reader="cv2")


def test_raer_config_rejects_an_unknown_video_reader():
    with pytest.raises(ConfigError, match=r"data.video_reader=cv2: expected one of pyav \| decord"):
        load_config("raer", ["data.video_reader=cv2"], environ={})


def test_videos_of_lists_the_video_files_of_a_folder_and_nothing_else(tmp_path):
    for name in ("b.mp4", "a.AVI", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "c.mp4").mkdir()  # a folder, whatever its name, is not a video
    assert videos_of(tmp_path) == [tmp_path / "a.AVI", tmp_path / "b.mp4"]
    assert videos_of(tmp_path / "notes.txt") == [tmp_path / "notes.txt"]  # a file given is taken as it is
    with pytest.raises(DatasetError, match=r"c.mp4: no video files in it \(.mp4, .avi.*\); expected a video file"):
        videos_of(tmp_path / "c.mp4")
