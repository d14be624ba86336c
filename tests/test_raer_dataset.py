"""affectlab.datasets for RAER: the release layout, TSN sampling, the two crops, validation errors, label sets and the
synthetic RAER. Every test builds its own tiny layout in tmp_path."""

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from affectlab.datasets import (
    RAER_CLASSES,
    DatasetError,
    RaerClip,
    RaerDataset,
    ensure_synthetic_raer,
    load_label_set,
    load_raer_split,
    read_annotation,
    stratified_split,
    tsn_indices,
)
from affectlab.datasets import synthetic_raer
from builders import BLUE, GREEN, GREY, RED, WHITE, flat_frame, raer_annotation, to_pixels, write_raer


# --- frames and crops ---------------------------------------------------------------------------------------------


def test_frames_sort_numerically(tmp_path):
    frames = [flat_frame((20 * k,) * 3, (16, 16)) for k in range(1, 13)]  # frame k is grey level 20k
    clips = write_raer(tmp_path, {"Class/Classroom/0001": frames})
    item = RaerDataset(tmp_path, clips, num_segments=12, image_size=8)[0]
    levels = to_pixels(item["face"]).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(levels, [20 * k for k in range(1, 13)], atol=3)


def test_face_crop_follows_box_with_margin(tmp_path):
    frame = flat_frame(BLUE, (80, 80))
    frame[22:58, 22:58] = GREEN  # the 8 px margin ring around the box
    frame[30:50, 30:50] = RED  # the face box itself
    clips = write_raer(tmp_path, {"c": [frame]}, face={"c": {"1.jpg": [30, 30, 50, 50]}})
    crop = to_pixels(RaerDataset(tmp_path, clips, num_segments=1, image_size=36, face_margin=8)[0]["face"])[0]
    # Box + margin is 36 px, so the crop is the region 1:1: ring of 8 px green around 20 px red, no blue.
    np.testing.assert_allclose(crop[18, 18], RED, atol=25)
    np.testing.assert_allclose(crop[3, 3], GREEN, atol=25)
    np.testing.assert_allclose(crop[18, 33], GREEN, atol=25)
    assert crop[1:-1, 1:-1, 2].max() < 100


def test_face_margin_is_clamped_to_frame(tmp_path):
    frame = flat_frame(BLUE, (64, 64))
    frame[:28, :28] = RED
    clips = write_raer(tmp_path, {"c": [frame]}, face={"c": {"1.jpg": [2, 2, 20, 20]}})
    crop = to_pixels(RaerDataset(tmp_path, clips, num_segments=1, image_size=14, face_margin=8)[0]["face"])[0]
    # The widened box [-6, -6, 28, 28] clamps to [0, 0, 28, 28]: all red, none of the blue beyond it.
    np.testing.assert_allclose(crop[1:-1, 1:-1].mean(axis=(0, 1)), RED, atol=20)


def test_context_letterboxed_keeps_aspect(tmp_path):
    wide = flat_frame(GREY, (80, 60))
    wide[20:50, 10:70] = WHITE  # body box 60 x 30
    tall = flat_frame(GREY, (80, 60))
    tall[0:40, 30:50] = WHITE  # body box 20 x 40
    clips = write_raer(
        tmp_path,
        {"wide": [wide], "tall": [tall]},
        body={"wide": [10, 20, 70, 50], "tall": [30, 0, 50, 40]},
    )
    dataset = RaerDataset(tmp_path, clips, num_segments=1, image_size=32)
    letterbox = to_pixels(dataset[0]["context"])[0].mean(axis=2)  # 32 x 16 in the middle rows
    assert letterbox[:6].max() < 10 and letterbox[26:].max() < 10
    assert letterbox[10:22].min() > 235
    pillarbox = to_pixels(dataset[1]["context"])[0].mean(axis=2)  # 16 x 32 in the middle columns
    assert pillarbox[:, :6].max() < 10 and pillarbox[:, 26:].max() < 10
    assert pillarbox[:, 10:22].min() > 235


def test_missing_box_uses_whole_frame(tmp_path):
    frame = flat_frame(BLUE, (64, 32))
    frame[:, :32] = RED  # left half red, right half blue
    clips = write_raer(
        tmp_path, {"c": [frame, frame]}, face={"c": {"1.jpg": [0, 0, 16, 16]}}, body={"c": None}
    )
    item = RaerDataset(tmp_path, clips, num_segments=2, image_size=16, face_margin=0)[0]
    faces, contexts = to_pixels(item["face"]), to_pixels(item["context"])
    np.testing.assert_allclose(faces[0].mean(axis=(0, 1)), RED, atol=20)  # frame 1 has a box on the red half
    np.testing.assert_allclose(faces[1][:, :6].mean(axis=(0, 1)), RED, atol=20)  # frame 2: the whole frame
    np.testing.assert_allclose(faces[1][:, 10:].mean(axis=(0, 1)), BLUE, atol=20)
    # No body box: the whole 64 x 32 frame letterboxed to 16 x 8, rows 4..11.
    context = contexts[0]
    assert context[:3].max() < 10 and context[13:].max() < 10
    np.testing.assert_allclose(context[5:11, :6].mean(axis=(0, 1)), RED, atol=25)
    np.testing.assert_allclose(context[5:11, 10:].mean(axis=(0, 1)), BLUE, atol=25)


def test_large_frame_decoded_at_reduced_scale_keeps_boxes(tmp_path):
    frame = flat_frame(BLUE, (400, 300))
    frame[100:260, 200:360] = RED
    clips = write_raer(
        tmp_path, {"c": [frame]}, face={"c": {"1.jpg": [200, 100, 360, 260]}}, body={"c": [0, 0, 400, 300]}
    )
    # A 160 px face box for a 16 px crop lets JPEG decode at 1/8 scale; the box must be scaled with the frame.
    item = RaerDataset(tmp_path, clips, num_segments=1, image_size=16, face_margin=0)[0]
    np.testing.assert_allclose(to_pixels(item["face"])[0][2:-2, 2:-2].mean(axis=(0, 1)), RED, atol=25)
    context = to_pixels(item["context"])[0]  # 400 x 300 -> 16 x 12, rows 2..13
    np.testing.assert_allclose(context[7, 11], RED, atol=40)
    np.testing.assert_allclose(context[7, 2], BLUE, atol=40)
    assert context[0].max() < 10 and context[15].max() < 10


def test_truncated_frame_fails_naming_the_frame(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    clips = write_raer(tmp_path, {"c": [noise]})
    path = tmp_path / "images" / "c" / "1.jpg"
    path.write_bytes(path.read_bytes()[:1500])  # the header survives, so only decoding can tell
    dataset = RaerDataset(tmp_path, clips, num_segments=1, image_size=8)
    with pytest.raises(DatasetError, match=r"1\.jpg: cannot decode frame"):
        dataset[0]


def test_item_holds_two_normalised_streams_and_label(tmp_path):
    clips = write_raer(tmp_path, {"c": [flat_frame(GREY)] * 5}, labels={"c": 4})
    item = RaerDataset(tmp_path, clips, num_segments=3, image_size=20)[0]
    assert item["face"].shape == item["context"].shape == (3, 3, 20, 20)
    assert item["face"].dtype == torch.float32
    assert item["label"].dtype == torch.long and item["label"].item() == 3
    assert item["index"] == 0


def test_more_frames_than_annotated_are_all_used(tmp_path):
    frames = [flat_frame((30 * k,) * 3, (16, 16)) for k in range(1, 7)]
    clips = write_raer(tmp_path, {"c": frames}, num_frames={"c": 4})
    item = RaerDataset(tmp_path, clips, num_segments=6, image_size=8)[0]
    np.testing.assert_allclose(to_pixels(item["face"]).mean(axis=(1, 2, 3)), [30 * k for k in range(1, 7)], atol=3)


def test_train_mode_samples_follow_torch_seed(tmp_path):
    frames = [flat_frame((10 * k,) * 3, (16, 16)) for k in range(1, 21)]
    clips = write_raer(tmp_path, {"c": frames})
    dataset = RaerDataset(tmp_path, clips, num_segments=4, image_size=8, train=True)
    torch.manual_seed(3)
    first = dataset[0]["face"]
    torch.manual_seed(3)
    assert torch.equal(dataset[0]["face"], first)


# --- TSN sampling -------------------------------------------------------------------------------------------------


def test_tsn_train_random_within_segments():
    generator = torch.Generator().manual_seed(0)
    draws = np.array([tsn_indices(20, 4, train=True, generator=generator) for _ in range(300)])
    for segment in range(4):
        assert set(draws[:, segment]) == set(range(5 * segment, 5 * segment + 5))


def test_tsn_eval_centres():
    assert tsn_indices(12, 4, train=False) == [1, 4, 7, 10]
    assert tsn_indices(16, 16, train=False) == list(range(16))
    assert tsn_indices(10, 3, train=False) == [1, 4, 8]


def test_tsn_short_clip_repeats_last():
    assert tsn_indices(3, 5, train=False) == [0, 1, 2, 2, 2]
    assert tsn_indices(3, 5, train=True) == [0, 1, 2, 2, 2]


# --- annotation errors --------------------------------------------------------------------------------------------



def test_annotation_reads_zero_based_labels_and_sources(tmp_path):
    clips = read_annotation(raer_annotation(tmp_path, "SelfStudy/Library/0001 16 5\n\nClass/Classroom/0002 8 1\n"))
    assert clips == [
        RaerClip("SelfStudy/Library/0001", 16, 4, f"{tmp_path / 'train.txt'}:1"),
        RaerClip("Class/Classroom/0002", 8, 0, f"{tmp_path / 'train.txt'}:3"),
    ]


def test_annotation_wrong_field_count_names_file_and_line(tmp_path):
    path = raer_annotation(tmp_path, "a 3 1\n\nb 3\n")
    with pytest.raises(DatasetError, match=rf"{path}:3: 'b 3' has 2 fields"):
        read_annotation(path)


@pytest.mark.parametrize("label", ["0", "6"])
def test_annotation_label_outside_range(tmp_path, label):
    path = raer_annotation(tmp_path, f"a 3 {label}\n")
    with pytest.raises(DatasetError, match=rf"{path}:1: label is {label}; expected 1..5"):
        read_annotation(path)


def test_annotation_non_integer_and_duplicate(tmp_path):
    with pytest.raises(DatasetError, match=r"train.txt:1: .*non-integer"):
        read_annotation(raer_annotation(tmp_path, "a three 1\n"))
    with pytest.raises(DatasetError, match=r"train.txt:2: clip 'a' repeats line 1"):
        read_annotation(raer_annotation(tmp_path, "a 3 1\na 3 2\n"))


def test_annotation_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"test.txt: annotation file not found"):
        load_raer_split(tmp_path, "test")


# --- frame and box errors, raised when the dataset is built ---------------------------------------------------------


def test_missing_frame_is_reported(tmp_path):
    clips = write_raer(tmp_path, {"c": [flat_frame(GREY)] * 4})
    (tmp_path / "images" / "c" / "3.jpg").unlink()
    with pytest.raises(DatasetError, match=r"3\.jpg: frame is missing"):
        RaerDataset(tmp_path, clips)


def test_fewer_frames_than_annotated_is_reported(tmp_path):
    clips = write_raer(tmp_path, {"c": [flat_frame(GREY)] * 3}, num_frames={"c": 5})
    with pytest.raises(DatasetError, match=r"train.txt:1: annotation says 5 frames but .* holds 3"):
        RaerDataset(tmp_path, clips)


def test_missing_clip_folder_is_reported(tmp_path):
    clips = write_raer(tmp_path, {"Class/Classroom/0001": [flat_frame(GREY)]})
    (tmp_path / "images" / "Class" / "Classroom" / "0001" / "1.jpg").unlink()
    (tmp_path / "images" / "Class" / "Classroom" / "0001").rmdir()
    with pytest.raises(DatasetError, match=r"train.txt:1: clip folder .*0001 does not exist"):
        RaerDataset(tmp_path, clips)


def test_corrupt_frame_is_reported(tmp_path):
    clips = write_raer(tmp_path, {"c": [flat_frame(GREY)] * 3})
    (tmp_path / "images" / "c" / "2.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=r"2\.jpg: unreadable frame"):
        RaerDataset(tmp_path, clips)


def test_clip_missing_from_face_json(tmp_path):
    clips = write_raer(tmp_path, {"a": [flat_frame(GREY)], "b": [flat_frame(GREY)]}, face={"a": {}})
    with pytest.raises(DatasetError, match=r"face.json: no entry for clip 'b' \(.*train.txt:2\)"):
        RaerDataset(tmp_path, clips)


def test_clip_missing_from_body_json(tmp_path):
    clips = write_raer(tmp_path, {"a": [flat_frame(GREY)], "b": [flat_frame(GREY)]}, body={"b": [0, 0, 8, 8]})
    with pytest.raises(DatasetError, match=r"body.json: no entry for clip 'a' \(.*train.txt:1\)"):
        RaerDataset(tmp_path, clips)


def test_box_outside_frame_is_reported(tmp_path):
    frames = {"c": [flat_frame(GREY, (32, 24))] * 2}
    clips = write_raer(tmp_path, frames, face={"c": {"2.jpg": [10, 10, 60, 20]}})
    with pytest.raises(DatasetError, match=r"face.json: clip 'c' frame 2.jpg: box is \[10, 10, 60, 20\], outside"):
        RaerDataset(tmp_path, clips)
    clips = write_raer(tmp_path, frames, body={"c": [-30, 0, 10, 10]})
    with pytest.raises(DatasetError, match=r"body.json: clip 'c': box is \[-30, 0, 10, 10\], outside"):
        RaerDataset(tmp_path, clips)


def test_inverted_box_is_reported(tmp_path):
    clips = write_raer(tmp_path, {"c": [flat_frame(GREY)]}, face={"c": {"1.jpg": [20, 5, 10, 15]}})
    with pytest.raises(DatasetError, match=r"frame 1.jpg: box is \[20, 5, 10, 15\]; expected x2 > x1"):
        RaerDataset(tmp_path, clips)


def test_box_touching_border_is_accepted(tmp_path):
    frame = flat_frame(RED, (32, 24))
    clips = write_raer(tmp_path, {"c": [frame]}, face={"c": {"1.jpg": [-2, 0, 33.5, 24]}}, body={"c": [0, 0, 32, 24]})
    face = to_pixels(RaerDataset(tmp_path, clips, num_segments=1, image_size=8)[0]["face"])[0]
    np.testing.assert_allclose(face.mean(axis=(0, 1)), RED, atol=20)


# --- stratified split ---------------------------------------------------------------------------------------------


def clips_per_class(counts: list[int]) -> list[RaerClip]:
    return [
        RaerClip(f"Class/Classroom/{label}{i:04d}", 16, label, f"train.txt:{label * 100 + i}")
        for label, count in enumerate(counts)
        for i in range(count)
    ]


def test_stratified_split_is_deterministic():
    clips = clips_per_class([20, 20, 20, 20, 20])
    assert stratified_split(clips, 0.2, seed=1) == stratified_split(clips, 0.2, seed=1)
    assert stratified_split(clips, 0.2, seed=1)[1] != stratified_split(clips, 0.2, seed=2)[1]
    # The clips chosen depend on the clips, not on the order they were listed in.
    _, val = stratified_split(clips, 0.2, seed=1)
    _, val_reversed = stratified_split(clips[::-1], 0.2, seed=1)
    assert sorted(c.clip_dir for c in val) == sorted(c.clip_dir for c in val_reversed)


def test_stratified_split_keeps_every_class_on_both_sides():
    clips = clips_per_class([2, 3, 10, 20, 1])
    train, val = stratified_split(clips, 0.2, seed=0)
    assert Counter(c.label for c in val) == {0: 1, 1: 1, 2: 2, 3: 4}
    assert Counter(c.label for c in train) == {0: 1, 1: 2, 2: 8, 3: 16, 4: 1}
    assert sorted(train + val, key=clips.index) == clips


def test_stratified_split_zero_fraction_gives_empty_val():
    clips = clips_per_class([3, 3, 3, 3, 3])
    assert stratified_split(clips, 0.0, seed=0) == (clips, [])


# --- label sets ---------------------------------------------------------------------------------------------------


def test_bundled_raer_five_label_set():
    labels = load_label_set("raer_five")
    assert labels.classes == RAER_CLASSES == ("Neutrality", "Enjoyment", "Confusion", "Fatigue", "Distraction")
    assert len(labels.descriptors) == 5
    assert "phone" in labels.descriptors[labels.classes.index("Distraction")]


def test_a_folder_named_like_a_bundled_set_does_not_shadow_it(tmp_path, monkeypatch):
    (tmp_path / "goemotions").mkdir()  # the natural name of the data set's folder
    monkeypatch.chdir(tmp_path)
    assert len(load_label_set("goemotions").classes) == 28


def test_user_label_set_with_mapping_or_list(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nclasses: [Calm, Busy]\ndescriptors:\n  Busy: typing fast\n  Calm: eyes closed\n")
    assert load_label_set(str(path)).descriptors == ("eyes closed", "typing fast")
    path.write_text("name: mine\nclasses: [Calm, Busy]\ndescriptors: [eyes closed, typing fast]\n")
    assert load_label_set(str(path)).classes == ("Calm", "Busy")


def test_label_set_bad_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nclasses: [Calm, Busy]\ndescriptors:\n  Calm: eyes closed\n")
    with pytest.raises(DatasetError, match=rf"{path}: key 'descriptors' lacks \['Busy'\]"):
        load_label_set(str(path))
    with pytest.raises(DatasetError, match=r"'raer_six' is neither a file nor a bundled label set.*raer_five"):
        load_label_set("raer_six")


# --- synthetic RAER -----------------------------------------------------------------------------------------------

SMALL = {"num_train": 10, "num_test": 5, "num_frames": 4, "frame_size": (128, 96)}


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_raer_is_deterministic(tmp_path):
    first = ensure_synthetic_raer(tmp_path / "one", **SMALL, seed=5)
    second = ensure_synthetic_raer(tmp_path / "two", **SMALL, seed=5)
    other = ensure_synthetic_raer(tmp_path / "three", **SMALL, seed=6)
    assert file_bytes(first) == file_bytes(second)
    assert file_bytes(first) != file_bytes(other)


def test_synthetic_raer_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTLAB_CACHE", str(tmp_path))
    path = ensure_synthetic_raer(**SMALL)
    start = time.perf_counter()
    assert ensure_synthetic_raer(**SMALL) == path
    assert time.perf_counter() - start < 0.5
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no leftover temporary folder
    assert ensure_synthetic_raer(**SMALL, seed=1) != path
    with pytest.raises(DatasetError, match=r"synthetic_raer: unknown parameter\(s\) \['num_clips'\]"):
        ensure_synthetic_raer(num_clips=3)


def test_interrupted_synthetic_generation_is_never_used(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_raer, "_draw_clip", fail)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_raer(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    path = ensure_synthetic_raer(tmp_path, **SMALL)
    assert len(read_annotation(path / "annotation" / "train.txt")) == 10


def test_synthetic_raer_reads_as_balanced_raer(tmp_path):
    root = ensure_synthetic_raer(tmp_path, **SMALL)
    train = RaerDataset(root, load_raer_split(root, "train"), num_segments=4, image_size=48)
    test = RaerDataset(root, load_raer_split(root, "test"), num_segments=4, image_size=48)
    assert Counter(train.labels) == {label: 2 for label in range(5)}
    assert Counter(test.labels) == {label: 1 for label in range(5)}
    assert all(c.clip_dir.split("/")[0] in ("Class", "SelfStudy") for c in train.clips + test.clips)
    item = train[0]
    assert item["face"].shape == item["context"].shape == (4, 3, 48, 48)
    assert torch.isfinite(item["face"]).all()


def cue_statistics(root: Path) -> dict[int, dict[str, float]]:
    """Per class, the mean fraction of cue-coloured pixels in the face box and in the body box below the face box."""
    face_json = json.loads((root / "bounding_box" / "face.json").read_text())
    body_json = json.loads((root / "bounding_box" / "body.json").read_text())
    per_class: dict[int, list[dict[str, float]]] = {}
    for clip in load_raer_split(root, "train"):
        if not face_json[clip.clip_dir]:
            continue  # both frames drew the 5% chance of having no face box
        frame_file = next(iter(face_json[clip.clip_dir]))
        pixels = np.asarray(Image.open(root / "images" / clip.clip_dir / frame_file).convert("RGB")).astype(int)
        fx1, fy1, fx2, fy2 = (max(0, v) for v in face_json[clip.clip_dir][frame_file])
        bx1, _, bx2, by2 = body_json[clip.clip_dir]
        face, desk = pixels[fy1:fy2, fx1:fx2], pixels[fy2 + 4 : by2, bx1:bx2]
        r, g, b = np.moveaxis(face, -1, 0)
        dr, dg, db = np.moveaxis(desk, -1, 0)
        fy_brow = slice(int(0.12 * (fy2 - fy1)), int(0.33 * (fy2 - fy1)))
        per_class.setdefault(clip.label, []).append(
            {  # fractions of pixels with each cue's colour
                "face_red": ((r > 150) & (g < 90) & (b < 90)).mean(),
                "face_brow_dark": (face[fy_brow].max(axis=-1) < 80).mean(),
                "face_cyan": ((r < 100) & (g > 175) & (b > 205)).mean(),
                "desk_cyan": ((dr < 100) & (dg > 175) & (db > 205)).mean(),
                "desk_white": (desk.min(axis=-1) > 215).mean(),
            }
        )
    return {
        label: {key: float(np.mean([row[key] for row in rows])) for key in rows[0]} for label, rows in per_class.items()
    }


def test_synthetic_face_cue_in_face_box_and_context_cue_below_it(tmp_path):
    root = ensure_synthetic_raer(tmp_path, num_train=50, num_test=0, num_frames=2, seed=3)
    neutrality, enjoyment, confusion, fatigue, distraction = (cue_statistics(root)[label] for label in range(5))
    # Classes sharing a face look alike inside the face box and differ below it.
    for same_face in ((neutrality, distraction), (confusion, fatigue)):
        a, b = same_face
        assert abs(a["face_red"] - b["face_red"]) < 0.02 and abs(a["face_brow_dark"] - b["face_brow_dark"]) < 0.05
        assert abs(a["desk_cyan"] - b["desk_cyan"]) > 0.02 and abs(a["desk_white"] - b["desk_white"]) > 0.05
    # Classes sharing a desk object look alike below the face box and differ inside it.
    assert abs(neutrality["desk_white"] - enjoyment["desk_white"]) < 0.03
    assert enjoyment["face_red"] > 0.04 > neutrality["face_red"] + 0.03
    assert confusion["face_brow_dark"] > neutrality["face_brow_dark"] + 0.1
    # The phone never shows inside the face box.
    assert max(stats["face_cyan"] for stats in (fatigue, distraction)) < 0.002
