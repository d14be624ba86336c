"""A user's own video cut into windows for prediction (affectlab.datasets.windows): the face found in every window on
real face pictures, window timing, crops identical to RaerDataset's for the same frames and boxes, whole-frame mode,
the errors a user can cause; and the timeline figure of the predictions (affectlab.lab.timeline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from affectlab.datasets import DatasetError, RaerDataset, read_annotation
from affectlab.datasets.prepare import haar_face_detector
from affectlab.datasets.raer import crop_into, crop_regions
from affectlab.datasets.video import read_images, write_mjpeg_avi
from affectlab.datasets.windows import cut_windows, plan_windows
from affectlab.lab.timeline import plot_timeline
from builders import astronaut_frames, background, write_mp4, zero_frames

FPS, T, SIZE, MARGIN = 25, 8, 48, 20
WIDTH, HEIGHT = 320, 240
# The astronaut's head and shoulders, and where the Haar cascade finds her face in the full 512 x 512 photo.


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes [..., 4]."""
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    def area(box: np.ndarray) -> np.ndarray:
        return (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])

    return w * h / (area(a) + area(b) - w * h)


def cut(path: Path, **options) -> SimpleNamespace:
    """Every window of the video (1 s windows every 0.5 s unless `options` say otherwise), the arrays of its chunks
    concatenated."""
    settings = dict(num_frames=T, window_s=1.0, hop_s=0.5, image_size=SIZE, face_margin=MARGIN) | options
    chunks = list(cut_windows(path, **settings))
    names = ("start_s", "end_s", "frames", "faces", "contexts", "face_boxes", "body_boxes", "detected", "face_found")
    return SimpleNamespace(**{name: np.concatenate([getattr(c, name) for c in chunks]) for name in names})


def flat_video(path: Path, count: int, colour=(40, 160, 90)) -> Path:
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8) + np.asarray(colour, np.uint8)
    return write_mjpeg_avi(path, [frame] * count, fps=FPS)


@pytest.mark.parametrize("track", [True, False], ids=["tracked", "every-frame-searched"])
def test_every_window_finds_the_astronauts_face(tmp_path, track):
    frames, faces = astronaut_frames(75)
    video = write_mp4(tmp_path / "talk.mp4", frames, fps=FPS)
    windows = cut(video, track=track)
    assert len(windows.start_s) == 5 and windows.face_found.all() and windows.detected.all()
    truth = faces[windows.frames]
    assert iou(windows.face_boxes, truth).min() > 0.7
    centres = (windows.face_boxes[..., :2] + windows.face_boxes[..., 2:]) / 2
    assert np.abs(centres - (truth[..., :2] + truth[..., 2:]) / 2).max() < 8  # px, of a 93 px face
    # The crop shows her face: it is far nearer her true face (with the margin) than the same box moved aside by 80 px.
    def crop(k: int, box, aside: bool = False) -> np.ndarray:
        x1, y1, x2, y2 = box
        dx = (80 if x1 < 117 else -80) if aside else 0  # into the frame
        region = (x1 - MARGIN + dx, y1 - MARGIN, x2 + MARGIN + dx, y2 + MARGIN)
        return np.asarray(Image.fromarray(frames[k]).resize((SIZE, SIZE), box=region), np.float64).transpose(2, 0, 1)

    sampled = windows.frames.ravel().tolist()
    crops = windows.faces.reshape(-1, 3, SIZE, SIZE).astype(np.float64)
    to_face = np.mean([np.abs(c - crop(k, faces[k])).mean() for c, k in zip(crops, sampled)])
    to_aside = np.mean([np.abs(c - crop(k, faces[k], aside=True)).mean() for c, k in zip(crops, sampled)])
    assert to_face < 0.5 * to_aside


def test_tracked_faces_are_as_close_to_her_face_as_searching_every_whole_frame(tmp_path):
    frames, faces = astronaut_frames(75)
    video = write_mjpeg_avi(tmp_path / "talk.avi", frames, fps=FPS)
    tracked, searched = cut(video), cut(video, track=False)
    tracked_iou = iou(tracked.face_boxes, faces[tracked.frames]).mean()
    assert tracked_iou > 0.8 and tracked_iou >= iou(searched.face_boxes, faces[searched.frames]).mean()


def test_the_detector_sees_only_the_sampled_frames_downscaled(tmp_path):
    seen: list[tuple[int, int]] = []

    def haar(frame: np.ndarray):
        seen.append(frame.shape[:2])
        return detect(frame)

    detect = haar_face_detector()
    video = write_mjpeg_avi(tmp_path / "talk.avi", astronaut_frames(75)[0], fps=FPS)
    windows = cut(video, detector=haar)
    sampled = len(np.unique(windows.frames))
    # The first frame whole at detect_scale 0.5; every other one in a region around the previous face (a second, wider
    # one when the head moved too far for the first), each found there: no other whole frame.
    assert seen[0] == (HEIGHT // 2, WIDTH // 2)
    assert all(h * w < HEIGHT * WIDTH / 4 for h, w in seen[1:])
    assert sampled <= len(seen) <= 2 * sampled - 1


def test_a_frame_without_a_face_takes_the_nearest_face_of_its_window(tmp_path):
    sampled = [3, 9, 15, 21, 28, 34, 40, 46]  # window 0 of a 2 s window at 25 fps
    frames, _ = astronaut_frames(50, hidden=frozenset({9, 21, 28}))
    video = write_mjpeg_avi(tmp_path / "talk.avi", frames, fps=FPS)
    windows = cut(video, window_s=2.0, hop_s=2.0)
    assert windows.frames[0].tolist() == sampled
    assert windows.detected[0].tolist() == [True, False, True, False, False, True, True, True]
    boxes = {k: box for k, box in zip(sampled, windows.face_boxes[0].tolist())}
    # 9 is nearer 3 than 15 (a tie goes to the earlier frame); 21 is nearest 15; 28 is nearest 34
    assert boxes[9] == boxes[3] and boxes[21] == boxes[15] and boxes[28] == boxes[34]
    assert boxes[3] != boxes[15] != boxes[34]


def test_windows_step_by_hop_and_the_last_one_ends_with_the_video(tmp_path):
    video = flat_video(tmp_path / "clip.avi", 110)  # 4.4 s
    plan = plan_windows(video, num_frames=T, window_s=2.0, hop_s=1.0)
    assert plan.fps == FPS and plan.frame_count == 110
    assert plan.start_s.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert plan.end_s.tolist() == [2.0, 3.0, 4.0, 4.4]  # the last window is shorter and ends with the video
    assert plan.spans.tolist() == [[0, 50], [25, 75], [50, 100], [75, 110]]
    assert plan.frames[0].tolist() == [3, 9, 15, 21, 28, 34, 40, 46]  # the centres of 8 segments of 50 frames
    assert plan.frames[3].tolist() == [77, 81, 85, 90, 94, 98, 103, 107]  # of 8 segments of 35 frames
    seconds = plan.frames / FPS
    assert (seconds >= plan.start_s[:, None]).all() and (seconds < plan.end_s[:, None]).all()
    windows = cut(video, window_s=2.0, hop_s=1.0, whole_frame=True)
    assert windows.frames.tolist() == plan.frames.tolist() and windows.end_s.tolist() == plan.end_s.tolist()


def test_a_hop_longer_than_the_window_leaves_gaps(tmp_path):
    plan = plan_windows(flat_video(tmp_path / "clip.avi", 110), num_frames=T, window_s=1.0, hop_s=2.0)
    assert plan.start_s.tolist() == [0.0, 2.0, 4.0] and plan.end_s.tolist() == [1.0, 3.0, 4.4]
    assert plan.spans.tolist() == [[0, 25], [50, 75], [100, 110]]


def test_a_video_shorter_than_a_window_is_one_window_over_all_of_it(tmp_path):
    windows = cut(flat_video(tmp_path / "clip.avi", 5), window_s=2.0, hop_s=1.0, whole_frame=True)
    assert windows.start_s.tolist() == [0.0] and windows.end_s.tolist() == [0.2]
    assert windows.frames.tolist() == [[0, 1, 2, 3, 4, 4, 4, 4]]  # as RaerDataset samples a clip shorter than T


def test_chunks_of_windows_add_up_to_the_whole(tmp_path):
    video = write_mjpeg_avi(tmp_path / "talk.avi", astronaut_frames(75)[0], fps=FPS)
    options = dict(num_frames=T, window_s=1.0, hop_s=0.25, image_size=SIZE, face_margin=MARGIN)
    chunks = list(cut_windows(video, chunk=4, **options))
    whole = list(cut_windows(video, chunk=100, **options))
    assert [len(c) for c in chunks] == [4, 4, 1] and [c.first for c in chunks] == [0, 4, 8]  # windows at 0..2 s
    for name in ("frames", "faces", "contexts", "face_boxes", "body_boxes"):
        np.testing.assert_array_equal(np.concatenate([getattr(c, name) for c in chunks]), getattr(whole[0], name))


def raer_item(root: Path, video: Path, count: int, frames: list[int], face_boxes: np.ndarray,
              body: np.ndarray) -> dict:
    """RaerDataset's item (uint8, the windows' T, size and margin) of a RAER root holding `video` of `count` frames
    as its one clip, with face.json giving its 1-based `frames` the `face_boxes` (NaN: no box) and body.json the
    `body` box."""
    clip = root / "images" / f"talk{video.suffix}"
    clip.parent.mkdir(parents=True)
    shutil.copyfile(video, clip)
    faces = {f"{k}.jpg": [int(v) for v in box] for k, box in zip(frames, face_boxes.tolist()) if not np.isnan(box[0])}
    body_box = None if np.isnan(body[0]) else [int(v) for v in body]
    for name, content in (("face.json", {"talk": faces}), ("body.json", {"talk": body_box})):
        (root / "bounding_box").mkdir(exist_ok=True)
        (root / "bounding_box" / name).write_text(json.dumps(content))
    (root / "annotation").mkdir()
    (root / "annotation" / "test.txt").write_text(f"talk {count} 1\n")
    clips = read_annotation(root / "annotation" / "test.txt")
    return RaerDataset(root, clips, num_segments=T, image_size=SIZE, face_margin=MARGIN, normalise=False)[0]


def test_crops_equal_raer_datasets_for_an_inner_window(tmp_path):
    frames, _ = astronaut_frames(100, hidden=frozenset({45}))
    video = write_mjpeg_avi(tmp_path / "talk.avi", frames, fps=FPS)
    windows = cut(video)
    w = 3  # [1.5 s, 2.5 s): frames 38..62, sampling 39, 42, 45 (her face hidden: the nearest face's box), ...
    first, stop = plan_windows(video, num_frames=T, window_s=1.0, hop_s=0.5).spans[w]
    assert windows.frames[w].tolist()[:3] == [39, 42, 45] and not windows.detected[w, 2]
    # The window as a RAER clip of its own: the same frames (Motion-JPEG: the same JPEG bytes) and the boxes the
    # windows used; RaerDataset samples the same frames from it.
    clip = write_mjpeg_avi(tmp_path / "window.avi", frames[first:stop], fps=FPS)
    item = raer_item(tmp_path / "raer", clip, stop - first, (windows.frames[w] - first + 1).tolist(),
                     windows.face_boxes[w], windows.body_boxes[w])
    np.testing.assert_array_equal(item["face"].numpy(), windows.faces[w])
    np.testing.assert_array_equal(item["context"].numpy(), windows.contexts[w])


def test_crops_equal_raer_datasets_for_a_whole_h264_video(tmp_path):
    frames, _ = astronaut_frames(40)
    video = write_mp4(tmp_path / "talk.mp4", frames, fps=FPS)
    windows = cut(video, window_s=5.0, hop_s=5.0)  # 1.6 s: one window over all of it, sampled as RaerDataset does
    item = raer_item(tmp_path / "raer", video, 40, (windows.frames[0] + 1).tolist(), windows.face_boxes[0],
                     windows.body_boxes[0])
    np.testing.assert_array_equal(item["face"].numpy(), windows.faces[0])
    np.testing.assert_array_equal(item["context"].numpy(), windows.contexts[0])


def test_every_windows_crops_are_of_the_frames_the_video_reader_gives(tmp_path):
    # H.264 with B-frames (libx264's defaults): the windows decode in one pass, skipping frames no sampled one needs;
    # the project's random-access reader (RaerDataset's) must give the very same sampled frames.
    frames, _ = astronaut_frames(75)
    video = write_mp4(tmp_path / "talk.mp4", frames, fps=FPS)
    windows = cut(video, hop_s=0.25)
    decoded = read_images(video, np.unique(windows.frames).tolist())
    face, context = np.empty((3, SIZE, SIZE), np.uint8), np.empty((3, SIZE, SIZE), np.uint8)
    for w, t in np.ndindex(windows.frames.shape):
        k = int(windows.frames[w, t])
        body = None if np.isnan(windows.body_boxes[w, 0]) else windows.body_boxes[w].tolist()
        crop_into(decoded[k], *crop_regions(windows.face_boxes[w, t].tolist(), body, WIDTH, HEIGHT, MARGIN), face,
                  context)
        np.testing.assert_array_equal(windows.faces[w, t], face)
        np.testing.assert_array_equal(windows.contexts[w, t], context)


def test_the_decord_reader_gives_the_same_windows(tmp_path):
    video = write_mp4(tmp_path / "talk.mp4", astronaut_frames(50)[0], fps=FPS)  # H.264: both readers decode alike
    pyav, decord = cut(video), cut(video, reader="decord")
    for name in ("frames", "faces", "contexts", "face_boxes", "body_boxes"):
        np.testing.assert_array_equal(getattr(decord, name), getattr(pyav, name))


def test_whole_frame_mode_crops_the_whole_frame_without_detecting(tmp_path):
    frame = np.zeros((180, 320, 3), np.uint8)
    frame[:, :160] = (200, 30, 30)  # left half red, right half blue; no face anywhere
    frame[:, 160:] = (30, 30, 200)
    video = write_mjpeg_avi(tmp_path / "room.avi", [frame] * 30, fps=FPS)
    windows = cut(video, whole_frame=True)
    assert not windows.face_found.any() and np.isnan(windows.face_boxes).all() and np.isnan(windows.body_boxes).all()
    face = windows.faces[0, 0]  # the 16:9 frame squeezed to 48 x 48
    assert face[0, :, :20].min() > 150 and face[2, :, :20].max() < 80
    assert face[2, :, 28:].min() > 150 and face[0, :, 28:].max() < 80
    context = windows.contexts[0, 0]  # letterboxed: 48 x 27 of picture between black bars
    assert context[:, :10].max() == 0 and context[:, -10:].max() == 0
    assert context[0, 12:36, :20].min() > 150 and context[2, 12:36, 28:].min() > 150


def test_no_face_in_any_frame_names_the_video_and_the_whole_frame_option(tmp_path):
    video = write_mjpeg_avi(tmp_path / "empty_room.avi", [background()] * 30, fps=FPS)
    with pytest.raises(DatasetError, match=r"empty_room\.avi: no face found in any frame of empty_room\.avi .*"
                                           r"pass whole_frame=true \(predict \.\.\. whole_frame=true\)"):
        list(cut_windows(video, num_frames=T, window_s=1.0, hop_s=0.5, image_size=SIZE, face_margin=MARGIN))


def test_an_unreadable_file_is_named(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n")
    with pytest.raises(DatasetError, match=r"notes\.mp4: cannot open video .*expected a video FFmpeg reads"):
        cut_windows(path, num_frames=T, window_s=1.0, hop_s=0.5, image_size=SIZE, face_margin=MARGIN)


def test_a_video_with_no_frames_is_named(tmp_path):
    path = write_mjpeg_avi(tmp_path / "empty.avi", [np.zeros((24, 32, 3), np.uint8)])
    path.write_bytes(zero_frames(path.read_bytes()))
    with pytest.raises(DatasetError, match=r"empty\.avi: video has 0 frames; expected at least 1"):
        cut_windows(path, num_frames=T, window_s=1.0, hop_s=0.5, image_size=SIZE, face_margin=MARGIN)


@pytest.mark.parametrize("window_s, hop_s, bad", [(0.0, 0.5, "window_s=0.0"), (-1, 0.5, "window_s=-1"),
                                                  (1.0, 0, "hop_s=0"), (1.0, float("nan"), "hop_s=nan")])
def test_a_window_or_hop_that_is_not_positive_is_refused(tmp_path, window_s, hop_s, bad):
    video = flat_video(tmp_path / "clip.avi", 10)
    with pytest.raises(DatasetError, match=rf"clip\.avi: {bad}; expected a positive number of seconds"):
        cut_windows(video, num_frames=T, window_s=window_s, hop_s=hop_s, image_size=SIZE, face_margin=MARGIN)


def test_a_window_too_short_for_the_models_frames_is_refused(tmp_path):
    video = flat_video(tmp_path / "clip.avi", 10)
    with pytest.raises(DatasetError, match=r"clip\.avi: window_s=0\.2 holds 5 frame\(s\) at 25 fps; expected at least "
                                           r"the model's 8 frames per window \(window_s >= 0\.32\)"):
        cut_windows(video, num_frames=T, window_s=0.2, hop_s=0.2, image_size=SIZE, face_margin=MARGIN)


def test_timeline_shows_the_label_band_over_the_class_lines(tmp_path):
    classes = ["Neutrality", "Enjoyment", "Confusion"]
    starts = np.arange(20) * 1.0
    probs = np.full((20, 3), 0.1)
    probs[:10, 2], probs[10:, 0] = 0.8, 0.8  # Confusion, then Neutrality
    path = plot_timeline(starts, starts + 2, probs, classes, tmp_path / "talk.timeline.png", "talk.mp4")
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape[1] > 2 * image.shape[0] > 600  # wide and legible
    tab10 = {"Neutrality": (31, 119, 180), "Enjoyment": (255, 127, 14), "Confusion": (44, 160, 44)}
    near = {name: (np.abs(image - colour).sum(axis=-1) < 30) for name, colour in tab10.items()}
    assert all(mask.sum() > 200 for mask in near.values())  # every class has its line
    # The band: the rows that are all label colour; Confusion on its left half, Neutrality on its right.
    band_rows = np.flatnonzero((near["Confusion"] | near["Neutrality"]).sum(axis=1) > 0.6 * image.shape[1])
    band_rows = band_rows[band_rows < image.shape[0] // 3]  # the lines at 0.8 span the width lower down
    assert len(band_rows) > 10
    row = band_rows[len(band_rows) // 2]
    columns = np.flatnonzero(near["Confusion"][row] | near["Neutrality"][row])
    assert near["Confusion"][row, columns[5]] and near["Neutrality"][row, columns[-5]]
    with pytest.raises(ValueError, match=r"probs of shape \(20, 3\) and 2 classes"):
        plot_timeline(starts, starts + 2, probs, classes[:2], tmp_path / "bad.png")


def test_a_plan_made_already_is_cut_without_reading_the_container_again(tmp_path, monkeypatch):
    from affectlab.datasets import windows

    frames, _ = astronaut_frames(60)
    video = write_mp4(tmp_path / "talk.mp4", frames, fps=FPS)
    plan = plan_windows(video, num_frames=T, window_s=1.0, hop_s=0.5)
    fresh = cut(video)
    listed = []  # each time a container's packets are listed to plan
    real = windows._display_order
    monkeypatch.setattr(windows, "_display_order", lambda *args: listed.append(args) or real(*args))
    given = cut(video, plan=plan)
    assert listed == []
    for name, value in vars(fresh).items():
        np.testing.assert_array_equal(getattr(given, name), value, err_msg=name)
    with pytest.raises(DatasetError, match=r"the plan given is of .*talk.mp4 with 8 frames per window; expected "):
        cut(video, num_frames=4, plan=plan)
