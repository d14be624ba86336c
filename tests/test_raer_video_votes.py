"""RAER beyond frame folders: clips as video files (decord), annotator votes, both label sets, recording contexts,
and skipping bad clips. Every test builds its own tiny data in tmp_path."""

import json
import warnings

import numpy as np
import pytest
import torch

from affectlab.datasets import (
    RAER_CONTEXTS,
    DatasetError,
    DatasetWarning,
    RaerDataset,
    clip_context,
    fleiss_kappa,
    load_label_set,
    load_raer_split,
    majority_label,
    make_synthetic_raer,
    read_annotation,
    write_mjpeg_avi,
)
from affectlab.datasets.synthetic_raer import FOUR_OF_FIVE
from builders import flat_frame, raer_annotation, to_pixels, write_raer


def write_video_raer(root, clip_dir, frames, *, annotated=None, label=1):
    write_mjpeg_avi(root / "images" / f"{clip_dir}.avi", frames, quality=95)
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    (root / "annotation" / "train.txt").write_text(f"{clip_dir} {annotated or len(frames)} {label}\n")
    (root / "bounding_box").mkdir(parents=True, exist_ok=True)
    (root / "bounding_box" / "face.json").write_text(json.dumps({clip_dir: {}}))
    (root / "bounding_box" / "body.json").write_text(json.dumps({clip_dir: None}))
    return load_raer_split(root, "train")


# --- video files --------------------------------------------------------------------------------------------------


def test_video_clip_gives_the_frames_a_folder_gives(tmp_path):
    frames = [flat_frame((20 * k, 10 * k, 200 - 15 * k), (32, 24)) for k in range(1, 9)]
    folder_clips = write_raer(tmp_path / "folder", {"Class/Classroom/0001": frames})
    video_clips = write_video_raer(tmp_path / "video", "Class/Classroom/0001", frames)
    from_folder = RaerDataset(tmp_path / "folder", folder_clips, num_segments=8, image_size=8)[0]
    from_video = RaerDataset(tmp_path / "video", video_clips, num_segments=8, image_size=8)[0]
    for stream in ("face", "context"):
        difference = np.abs(to_pixels(from_folder[stream]) - to_pixels(from_video[stream]))
        assert difference.max() < 6, stream  # two JPEG decoders, same frames in the same order


def test_video_face_boxes_keyed_by_frame_number(tmp_path):
    frames = [flat_frame((128, 128, 128), (40, 30)) for _ in range(4)]
    for frame in frames:
        frame[10:20, 10:20] = (230, 20, 20)
    clips = write_video_raer(tmp_path, "c", frames)
    (tmp_path / "bounding_box" / "face.json").write_text(json.dumps({"c": {str(k): [10, 10, 20, 20] for k in range(1, 5)}}))
    item = RaerDataset(tmp_path, clips, num_segments=4, image_size=8, face_margin=0)[0]
    pixels = to_pixels(item["face"])
    assert pixels[..., 0].mean() > 180 and pixels[..., 1].mean() < 70  # the whole crop is the red box


def test_video_shorter_than_annotated_uses_its_frames_and_warns_once(tmp_path):
    frames = [flat_frame((25 * k,) * 3, (32, 24)) for k in range(1, 7)]
    clips = write_video_raer(tmp_path, "c", frames, annotated=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = RaerDataset(tmp_path, clips, num_segments=6, image_size=4)
    relevant = [w for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(relevant) == 1 and "annotation says 10 frames" in str(relevant[0].message)
    grey = to_pixels(dataset[0]["face"]).mean(axis=(1, 2, 3))
    assert np.allclose(grey, [25 * k for k in range(1, 7)], atol=4)  # every one of the 6 frames, in order


def test_corrupt_video_is_reported_or_skipped(tmp_path):
    clips = write_video_raer(tmp_path, "c", [flat_frame((9, 9, 9))] * 3)
    (tmp_path / "images" / "c.avi").write_bytes(b"RIFF" + b"\0" * 200)
    with pytest.raises(DatasetError, match=r"c\.avi: cannot open video"):
        RaerDataset(tmp_path, clips)
    skipped: list[str] = []
    assert len(RaerDataset(tmp_path, clips, skipped=skipped)) == 0
    assert len(skipped) == 1 and "c.avi" in skipped[0]


def test_synthetic_raer_as_video_reads_like_its_frames(tmp_path):
    kwargs = dict(num_train=2, num_test=0, num_frames=6, seed=3)
    make_synthetic_raer(tmp_path / "jpg", **kwargs)
    make_synthetic_raer(tmp_path / "avi", video=True, **kwargs)
    assert not list((tmp_path / "avi" / "images").rglob("*.jpg"))
    items = [RaerDataset(tmp_path / k, load_raer_split(tmp_path / k, "train"), num_segments=4, image_size=32)[1]
             for k in ("jpg", "avi")]
    assert items[0]["label"] == items[1]["label"]
    assert (to_pixels(items[0]["context"]) - to_pixels(items[1]["context"])).__abs__().mean() < 3


# --- votes, label names, label sets ---------------------------------------------------------------------------------



def test_majority_tie_goes_to_the_earlier_class():
    assert majority_label([0, 3, 1, 3, 3]) == 1
    assert majority_label([4, 1, 0, 0, 5]) == 4


def test_votes_give_majority_and_soft_label(tmp_path):
    path = raer_annotation(tmp_path, "a 8 2 2 3 2 Fatigue\nb 8 1 confusion 3 1 1\n")
    a, b = read_annotation(path, load_label_set("five").classes)
    assert a.votes == (0, 3, 1, 1, 0) and a.label == 1
    assert b.votes == (3, 0, 2, 0, 0) and b.label == 0
    assert np.allclose(a.soft_label(5), [0, 0.6, 0.2, 0.2, 0])
    assert np.allclose(read_annotation(raer_annotation(tmp_path, "c 3 4\n"))[0].soft_label(5), [0, 0, 0, 1, 0])


def test_vote_line_with_other_annotator_count_names_file_and_line(tmp_path):
    path = raer_annotation(tmp_path, "a 8 1 1 2\nb 8 1 2\n")
    with pytest.raises(DatasetError, match=rf"{path}:2: 2 label\(s\)/votes on this line but line 1 has 3"):
        read_annotation(path)
    skipped: list[str] = []
    assert [c.clip_dir for c in read_annotation(path, skipped=skipped)] == ["a"]
    assert len(skipped) == 1 and f"{path}:2" in skipped[0]


def test_unknown_label_name_names_file_line_and_choices(tmp_path):
    path = raer_annotation(tmp_path, "a 8 Boredom\n")
    with pytest.raises(DatasetError, match=rf"{path}:1: unknown label name 'Boredom'; expected 1..5 or one of"):
        read_annotation(path, load_label_set("raer_five").classes)


def test_zero_frame_clip_is_an_error_or_skipped(tmp_path):
    path = raer_annotation(tmp_path, "a 0 1\nb 4 1\n")
    with pytest.raises(DatasetError, match=rf"{path}:1: num_frames is 0"):
        read_annotation(path)
    skipped: list[str] = []
    assert len(read_annotation(path, skipped=skipped)) == 1 and len(skipped) == 1


def test_fleiss_kappa_matches_the_published_example():
    # Fleiss (1971) as reproduced in most textbooks: 10 subjects, 14 raters, 5 categories, kappa = 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=1e-3)
    assert fleiss_kappa(np.array([[5, 0], [0, 5], [5, 0]])) == pytest.approx(1.0)


def test_four_class_label_set_is_data_with_its_own_annotation_files():
    four = load_label_set("four")
    assert four.name == "raer_four" and len(four.classes) == 4
    assert four.annotation_file("train") == "annotation/four/train.txt"
    assert load_label_set("five").annotation_file("test") == "annotation/test.txt"


def test_synthetic_four_class_files_follow_the_five_class_labels(tmp_path):
    make_synthetic_raer(tmp_path, num_train=10, num_test=5, num_frames=2, num_votes=5)
    for split in ("train", "test"):
        five = load_raer_split(tmp_path, split, "five")
        four = load_raer_split(tmp_path, split, "four")
        assert [c.clip_dir for c in five] == [c.clip_dir for c in four]
        assert [FOUR_OF_FIVE[c.label] for c in five] == [c.label for c in four]
        assert all(sum(c.votes) == 5 and max(c.votes) >= 3 for c in five)


# --- recording contexts ---------------------------------------------------------------------------------------------


def test_context_is_the_leading_folders_of_the_clip():
    assert RAER_CONTEXTS[clip_context("SelfStudy/Library/000012", RAER_CONTEXTS)] == "SelfStudy/Library"
    assert RAER_CONTEXTS[clip_context("Class/Classroom/a/b", RAER_CONTEXTS)] == "Class/Classroom"


def test_unknown_context_names_the_annotation_line_or_is_skipped(tmp_path):
    frames = [flat_frame((50, 50, 50))] * 2
    clips = write_raer(tmp_path, {"Class/Classroom/1": frames, "Outdoor/Park/2": frames})
    with pytest.raises(DatasetError, match=r"train.txt:2: clip 'Outdoor/Park/2' lies in no known context"):
        RaerDataset(tmp_path, clips, contexts=RAER_CONTEXTS)
    skipped: list[str] = []
    dataset = RaerDataset(tmp_path, clips, contexts=RAER_CONTEXTS, skipped=skipped, num_segments=2, image_size=4)
    assert len(dataset) == 1 and len(skipped) == 1
    assert dataset[0]["scene"] == torch.tensor(0)


# --- the preprocessed crop cache ------------------------------------------------------------------------------------


@pytest.mark.parametrize("video", [False, True])
def test_cached_crops_give_the_same_tensors(tmp_path, video):
    from affectlab.datasets import write_crop_cache

    root = make_synthetic_raer(tmp_path / "raer", num_train=3, num_test=0, num_frames=5, video=video)
    clips = load_raer_split(root, "train")
    plain = RaerDataset(root, clips, num_segments=4, image_size=24, train=True)
    write_crop_cache(plain, tmp_path / "cache")
    cached = RaerDataset(root, clips, num_segments=4, image_size=24, train=True, cache=tmp_path / "cache")
    assert cached.cache is not None
    for index in range(len(clips)):
        torch.manual_seed(index)  # the same TSN draw for both
        a = plain[index]
        torch.manual_seed(index)
        b = cached[index]
        assert torch.equal(a["face"], b["face"]) and torch.equal(a["context"], b["context"])
    with pytest.raises(DatasetError, match=r"crops.json: crops made with .*'image_size': 24"):
        RaerDataset(root, clips, num_segments=4, image_size=32, cache=tmp_path / "cache")


# --- data preparation: boxes for a user's own clips -----------------------------------------------------------------


def white_square_detector(frame):
    """A detector for the frames below: the bounding box of the bright pixels, if any."""
    ys, xs = np.nonzero(frame.min(axis=-1) > 200)
    return [(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)] if len(xs) else []


def test_prepare_writes_official_boxes_for_folders_and_videos(tmp_path):
    from affectlab.datasets.prepare import prepare_boxes

    frames = []
    for k in range(4):
        frame = np.zeros((48, 64, 3), np.uint8)
        if k != 2:  # frame 3 shows no face
            frame[4:14, 20 + 2 * k : 30 + 2 * k] = 255
        frames.append(frame)
    write_raer(tmp_path, {"Class/Classroom/a": frames})
    write_mjpeg_avi(tmp_path / "images" / "SelfStudy" / "Library" / "b.avi", frames, quality=95)
    (tmp_path / "annotation" / "train.txt").write_text("Class/Classroom/a 4 1\nSelfStudy/Library/b 4 2\n")
    found = prepare_boxes(tmp_path, white_square_detector)
    assert found == {"Class/Classroom/a": 3, "SelfStudy/Library/b": 3}
    face = json.loads((tmp_path / "bounding_box" / "face.json").read_text())
    body = json.loads((tmp_path / "bounding_box" / "body.json").read_text())
    for clip in found:
        assert sorted(face[clip]) == ["1.jpg", "2.jpg", "4.jpg"]
        assert np.allclose(face[clip]["4.jpg"], [26, 4, 36, 14], atol=1)
        x1, y1, x2, y2 = body[clip]
        assert x1 <= 10 and y1 == 0 and x2 >= 46 and y2 >= 14 + 30 - 1  # a face width aside, 3 face heights below
    dataset = RaerDataset(tmp_path, load_raer_split(tmp_path, "train"), num_segments=4, image_size=8)
    assert len(dataset) == 2 and dataset[1]["face"].shape == (4, 3, 8, 8)


def test_cache_made_for_other_boxes_is_refused(tmp_path):
    from affectlab.datasets import write_crop_cache

    root = make_synthetic_raer(tmp_path / "raer", num_train=2, num_test=0, num_frames=2)
    clips = load_raer_split(root, "train")
    write_crop_cache(RaerDataset(root, clips, num_segments=2, image_size=16), tmp_path / "cache")
    body = json.loads((root / "bounding_box" / "body.json").read_text())
    body[clips[0].clip_dir] = None
    (root / "bounding_box" / "body.json").write_text(json.dumps(body))
    with pytest.raises(DatasetError, match=r"crops made with .*'boxes'"):
        RaerDataset(root, clips, num_segments=2, image_size=16, cache=tmp_path / "cache")
