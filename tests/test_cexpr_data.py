"""C-EXPR-DB annotations (every real file), windows, folds; AffWild2/AFEW readers; modality tables; synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affectlab.datasets.affwild2 import AFFWILD2_EXPRESSIONS, read_afew, read_affwild2_expression
from affectlab.datasets.cexpr import (
    CEXPR_CLASSES,
    HEADER,
    OTHER,
    fold_segment,
    frame_labels,
    list_cexpr_videos,
    read_cexpr_annotation,
    read_cexpr_folds,
    read_frames,
    sample_frames,
    segment_windows,
    video_info,
)
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.modality_tables import (
    CEXPR_COMPOUNDS,
    align_modality_tables,
    ensure_modality_table,
    read_modality_table,
    write_modality_table,
)
from affectlab.datasets.synthetic_cexpr import ensure_synthetic_cexpr

CSV_HEADER = ",".join(f'"{name}"' for name in HEADER)


def _write_csv(folder: Path, rows: list[str], name: str = "07.csv") -> Path:
    path = folder / name
    path.write_text("\n".join([CSV_HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _row(begin: str, end: str, *marks: tuple[int, str]) -> str:
    cells = [""] * len(CEXPR_CLASSES)
    for column, value in marks:
        cells[column] = f'"{value}"'
    return ",".join([begin, end, *cells])


# --- the real annotation files ----------------------------------------------------------------------------------------


def test_every_real_annotation_file_parses(shared_data):
    files = sorted((shared_data / "cexpr" / "annotation").glob("*.csv"))
    assert len(files) == 56
    segments = {path.stem: read_cexpr_annotation(path) for path in files}
    assert sum(len(s) for s in segments.values()) == 125
    assert all(s for s in segments.values())
    # 14.csv starts with a 10 ms segment and marks later rows "1 " and "1  "
    first = segments["14"][0]
    assert (first.begin_ms, first.end_ms, first.label) == (0, 10, CEXPR_CLASSES.index("Sadly Surprised"))
    assert segments["14"][6].label == CEXPR_CLASSES.index("Sadly Surprised")  # the row marked "1 "
    labels = np.array([s.label for v in segments.values() for s in v])
    assert set(labels.tolist()) == set(range(len(CEXPR_CLASSES)))


def test_real_annotation_gives_frame_labels_at_the_video_rate(shared_data):
    segments = read_cexpr_annotation(shared_data / "cexpr" / "annotation" / "01.csv")
    # 01.csv: 00:00:00.070-00:00:02.970 Other, 00:00:08.556-00:00:21.974 Disgustedly Surprised
    labels = frame_labels(segments, num_frames=30 * 25, fps=30.0)
    # frame 2 is at 66.7 ms, before 70 ms; frame 3 at 100 ms; frame 89 at 2966.7 ms; frame 90 at 3000 ms
    assert labels[2] == -1 and labels[3] == OTHER and labels[89] == OTHER and labels[90] == -1
    assert labels[int(8.556 * 30) + 1] == CEXPR_CLASSES.index("Disgustedly Surprised")
    assert labels[int(21.974 * 30) + 1] == -1


def test_real_folds_point_at_annotated_segments(shared_data):
    root = shared_data / "cexpr"
    annotations = {p.stem: read_cexpr_annotation(p) for p in (root / "annotation").glob("*.csv")}
    for split in range(5):
        folds = read_cexpr_folds(root / "folds", split)
        assert all(folds[part] for part in ("train", "val", "test"))
        train_test = {c.clip for c in folds["train"]} | {c.clip for c in folds["test"]}
        assert len(train_test) == len(folds["train"]) + len(folds["test"])  # disjoint
        for clip in folds["train"] + folds["test"]:
            assert fold_segment(clip, annotations[clip.video]).label == clip.label
    first = read_cexpr_folds(root / "folds", 0)["test"][0]
    assert (first.video, first.label, first.occurrence) == ("24", CEXPR_CLASSES.index("Sadly Fearful"), 0)


# --- bad annotation input ---------------------------------------------------------------------------------------------


def test_a_row_without_a_class_names_file_and_row(tmp_path):
    path = _write_csv(tmp_path, [_row("00:00:00.000", "00:00:01.000", (0, "1")), _row("00:00:01.000", "00:00:02.000")])
    with pytest.raises(DatasetError, match=r"07\.csv:3: marks no class; expected exactly one"):
        read_cexpr_annotation(path)


def test_a_row_with_two_classes_names_them(tmp_path):
    path = _write_csv(tmp_path, [_row("00:00:00.000", "00:00:01.000", (0, "1"), (6, "1 "))])
    with pytest.raises(DatasetError, match=r"07\.csv:2: marks \['Fearfully Surprised', 'Sadly Angry'\]"):
        read_cexpr_annotation(path)


def test_a_mark_other_than_one_is_refused(tmp_path):
    path = _write_csv(tmp_path, [_row("00:00:00.000", "00:00:01.000", (2, "x"))])
    with pytest.raises(DatasetError, match=r"07\.csv:2: column 'Sadly Surprised' holds 'x'"):
        read_cexpr_annotation(path)


def test_padded_marks_and_ten_millisecond_segments_are_read(tmp_path):
    rows = [_row("00:00:00.000", "00:00:00.010", (4, " 1")), _row("00:00:00.010", "00:01:00.5", (7, "1  "))]
    path = _write_csv(tmp_path, rows)
    segments = read_cexpr_annotation(path)
    assert [(s.begin_ms, s.end_ms, s.label) for s in segments] == [(0, 10, 4), (10, 60500, 7)]


def test_times_running_backwards_are_refused(tmp_path):
    path = _write_csv(tmp_path, [_row("00:00:02.000", "00:00:01.500", (0, "1"))])
    with pytest.raises(DatasetError, match=r"07\.csv:2: ends at 00:00:01.500, not after its begin 00:00:02.000"):
        read_cexpr_annotation(path)
    rows = [_row("00:00:00.000", "00:00:03.000", (0, "1")), _row("00:00:02.000", "00:00:04.000", (1, "1"))]
    path = _write_csv(tmp_path, rows)
    with pytest.raises(DatasetError, match=r"07\.csv:3: begins at 00:00:02.000, before the previous row's end"):
        read_cexpr_annotation(path)


def test_times_past_the_video_end_are_refused(tmp_path):
    path = _write_csv(tmp_path, [_row("00:00:00.000", "00:00:10.040", (0, "1"))])
    read_cexpr_annotation(path, duration_s=10.04)
    with pytest.raises(DatasetError, match=r"07\.csv:2: ends at 00:00:10.040, past the video's end \(10.000 s\)"):
        read_cexpr_annotation(path, duration_s=10.0)


def test_a_malformed_time_or_header_is_named(tmp_path):
    path = _write_csv(tmp_path, [_row("00:00:1.5", "00:00:02.000", (0, "1"))])
    with pytest.raises(DatasetError, match=r"07\.csv:2 begin: time '00:00:1.5'; expected hh:mm:ss.ms"):
        read_cexpr_annotation(path)
    path.write_text('"Begin","End"\n')
    with pytest.raises(DatasetError, match=r"07\.csv:1: header"):
        read_cexpr_annotation(path)


# --- windows and frames -----------------------------------------------------------------------------------------------


def test_windows_are_four_seconds_every_two_and_the_last_is_at_least_one_second():
    # 9.5 s at 10 fps: starts 0, 2, 4, 6, 8 s; [8 s, 9.5 s) is 1.5 s, kept
    np.testing.assert_array_equal(segment_windows(95, 10.0), [[0, 40], [20, 60], [40, 80], [60, 95], [80, 95]])
    # 8.5 s: the window at 8 s would be 0.5 s long, so it is dropped; [6 s, 8.5 s) still covers the end
    np.testing.assert_array_equal(segment_windows(85, 10.0), [[0, 40], [20, 60], [40, 80], [60, 85]])
    np.testing.assert_array_equal(segment_windows(5, 10.0), [[0, 5]])  # shorter than 1 s: one window


def test_frames_are_sampled_uniformly_inside_the_window():
    np.testing.assert_array_equal(sample_frames(40, 80, num=4), [45, 55, 65, 75])
    assert len(sample_frames(0, 120)) == 20
    np.testing.assert_array_equal(sample_frames(0, 2, num=4), [0, 0, 1, 1])  # fewer frames than samples: repeats


def test_frame_labels_leave_gaps_unannotated(tmp_path):
    rows = [_row("00:00:00.100", "00:00:00.300", (1, "1")), _row("00:00:00.300", "00:00:00.400", (5, "1"))]
    path = _write_csv(tmp_path, rows)
    labels = frame_labels(read_cexpr_annotation(path), num_frames=6, fps=10.0)
    np.testing.assert_array_equal(labels, [-1, 1, 1, 5, -1, -1])


def test_a_fold_line_with_a_wrong_class_id_is_named(tmp_path):
    folder = tmp_path / "split-0"
    folder.mkdir()
    (folder / "class_id.yaml").write_text("Fearfully Surprised: 0\nHappily Surprised: 1\n")
    (folder / "train.txt").write_text("Happily-Surprised/03_Happily-Surprised_0,1\nOther/05_Other_1,7\n")
    (folder / "val.txt").write_text("Fearfully-Surprised/01_Fearfully-Surprised_2,1\n")
    (folder / "test.txt").write_text("")
    with pytest.raises(DatasetError, match=r"val\.txt:1: class 'Fearfully Surprised' with id 1; expected id 0"):
        read_cexpr_folds(tmp_path, 0)


# --- AffWild2 and AFEW ------------------------------------------------------------------------------------------------


AFFWILD2_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"


def test_affwild2_labels_are_read_per_frame_with_unannotated_frames(tmp_path):
    path = tmp_path / "video1.txt"
    path.write_text(AFFWILD2_HEADER + "\n0\n4\n-1\n7\n")
    np.testing.assert_array_equal(read_affwild2_expression(path), [0, 4, -1, 7])
    assert AFFWILD2_EXPRESSIONS[4] == "Happiness"


def test_affwild2_bad_label_names_the_line(tmp_path):
    path = tmp_path / "video1.txt"
    path.write_text(AFFWILD2_HEADER + "\n0\n8\n")
    with pytest.raises(DatasetError, match=r"video1\.txt:3: label '8'; expected an integer -1\.\.7"):
        read_affwild2_expression(path)
    path.write_text("Neutral,Anger\n0\n")
    with pytest.raises(DatasetError, match=r"video1\.txt:1: header"):
        read_affwild2_expression(path)


def test_afew_class_folders_map_to_affwild2_labels(tmp_path):
    for folder, clip in (("Happy", "001.avi"), ("Angry", "002.avi"), ("Neutral", "003")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / clip).touch()
    clips = read_afew(tmp_path)
    assert [(c.path.name, AFFWILD2_EXPRESSIONS[c.label]) for c in clips] == [
        ("002.avi", "Anger"), ("001.avi", "Happiness"), ("003", "Neutral")
    ]
    (tmp_path / "Contempt").mkdir()
    with pytest.raises(DatasetError, match=r"unknown class folder\(s\) \['Contempt'\]"):
        read_afew(tmp_path)


# --- modality tables --------------------------------------------------------------------------------------------------

UNIFORM = np.full(8, 1 / 8)


def test_modality_table_round_trips_with_missing_rows(tmp_path):
    probs = np.stack([UNIFORM, np.full(8, np.nan), np.eye(8)[4]])
    path = write_modality_table(tmp_path / "audio.csv", ["a/0", "a/1", "b/0"], probs)
    assert path.read_text().splitlines()[2] == "a/1,,,,,,,,"
    table = read_modality_table(path)
    assert table.name == "audio" and table.segment_ids == ("a/0", "a/1", "b/0")
    np.testing.assert_array_equal(table.present, [True, False, True])
    np.testing.assert_allclose(table.probs[2], np.eye(8)[4])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a/1,-0.1,0.3,0.1,0.1,0.2,0.2,0.1,0.1", r"audio\.csv:3: segment 'a/1' has a negative .*Neutral=-0\.1"),
        ("a/1,nan,0.3,0.1,0.1,0.2,0.2,0.1,0.1", r"audio\.csv:3: segment 'a/1' has some probabilities missing"),
        ("a/1,0.5,0.3,0.1,0.1,0.2,0.2,0.1,0.1", r"audio\.csv:3: segment 'a/1' sums to 1\.600000; expected 1"),
        ("a/0,0.125,0.125,0.125,0.125,0.125,0.125,0.125,0.125", r"audio\.csv:3: segment id 'a/0' repeats row 2"),
    ],
)
def test_bad_probabilities_name_file_row_and_value(tmp_path, row, message):
    path = tmp_path / "audio.csv"
    path.write_text("segment_id," + AFFWILD2_HEADER + "\na/0," + ",".join(["0.125"] * 8) + "\n" + row + "\n")
    with pytest.raises(DatasetError, match=message):
        read_modality_table(path)


def test_tables_align_by_segment_id_and_refuse_disagreeing_ids(tmp_path):
    first = read_modality_table(write_modality_table(tmp_path / "audio.csv", ["x", "y"], [UNIFORM, np.eye(8)[1]]))
    missing = np.full(8, np.nan)
    second = read_modality_table(write_modality_table(tmp_path / "text.csv", ["y", "x"], [np.eye(8)[2], missing]))
    ids, probs, present = align_modality_tables([first, second])
    assert ids == ("x", "y")
    np.testing.assert_array_equal(present, [[True, False], [True, True]])
    np.testing.assert_allclose(probs[1, 1], np.eye(8)[2])
    other = read_modality_table(write_modality_table(tmp_path / "scene.csv", ["x", "z"], np.stack([UNIFORM, UNIFORM])))
    disagree = r"scene\.csv: segment ids disagree with .*audio\.csv: extra \['z'\] lacks \['y'\]"
    with pytest.raises(DatasetError, match=disagree):
        align_modality_tables([first, other])


def test_modality_tables_are_computed_once_and_cached(tmp_path):
    calls = []

    def predict():
        calls.append(1)
        return np.stack([UNIFORM, UNIFORM])

    ensure_modality_table(tmp_path / "face.csv", ["a", "b"], predict)
    table = ensure_modality_table(tmp_path / "face.csv", ["a", "b"], predict)
    assert len(calls) == 1 and table.segment_ids == ("a", "b")
    ensure_modality_table(tmp_path / "face.csv", ["a", "b", "c"], lambda: np.stack([UNIFORM] * 3))
    assert read_modality_table(tmp_path / "face.csv").segment_ids == ("a", "b", "c")  # other segments: recomputed


# --- the embedded synthetic data --------------------------------------------------------------------------------------


def test_synthetic_cexpr_reads_back_through_the_real_readers():
    params = dict(num_videos=2, num_basic_videos=2, afew_clips_per_class=1, seconds=(8.0, 10.0), frame_size=32)
    root = ensure_synthetic_cexpr(**params)
    assert ensure_synthetic_cexpr(**params) == root
    videos = list_cexpr_videos(root / "cexpr")
    assert [v.name for v in videos] == ["01", "02"]
    for video in videos:
        segments = read_cexpr_annotation(video.annotation, duration_s=video.duration_s)
        assert segments and 80 <= video.num_frames <= 100 and video.fps == 10.0
    assert read_cexpr_annotation(videos[0].annotation)[0].end_ms == 10  # a 10 ms segment, like the real 14.csv
    assert videos[0].path.suffix == ".avi"  # a real video file, read through decord
    assert read_frames(videos[0].path, np.array([5, 0, 5])).shape == (3, 32, 32, 3)
    tables = [read_modality_table(p) for p in sorted((root / "cexpr" / "tables").glob("*.csv"))]
    ids, probs, present = align_modality_tables(tables)
    windows = sum(len(segment_windows(v.num_frames, v.fps)) for v in videos)
    assert len(ids) == windows and probs.shape == (windows, 3, 8)
    labels = read_affwild2_expression(next((root / "affwild2" / "EXPR").glob("*.txt")))
    assert labels.min() >= -1 and labels.max() <= 6
    afew = read_afew(root / "afew" / "videos")
    assert sorted(AFFWILD2_EXPRESSIONS[c.label] for c in afew) == sorted(set(AFFWILD2_EXPRESSIONS) - {"Other"})
    assert read_modality_table(root / "afew" / "tables" / "audio.csv").segment_ids[0] == "Angry/001/0000"


def test_a_compound_table_has_the_seven_compound_columns(tmp_path):
    path = write_modality_table(tmp_path / "clip.csv", ["a"], np.full((1, 7), 1 / 7), classes=CEXPR_COMPOUNDS)
    assert path.read_text().splitlines()[0] == "segment_id," + ",".join(CEXPR_COMPOUNDS)
    assert read_modality_table(path, classes=CEXPR_COMPOUNDS).probs.shape == (1, 7)
    with pytest.raises(DatasetError, match=r"clip\.csv:1: header"):
        read_modality_table(path)  # read as a basic-emotion table


def test_a_frame_folder_is_a_video_with_its_rate_in_fps_txt(tmp_path):
    from PIL import Image

    folder = tmp_path / "07"
    folder.mkdir()
    for k in range(1, 4):
        Image.new("RGB", (8, 6), (k * 60, 0, 0)).save(folder / f"{k:05d}.jpg")
    with pytest.raises(DatasetError, match=r"fps\.txt: missing or not a number"):
        video_info(folder)
    (folder / "fps.txt").write_text("25\n")
    assert video_info(folder) == (3, 25.0)
    frames = read_frames(folder, np.array([2, 0]))
    assert frames.shape == (2, 6, 8, 3) and frames[0, 0, 0, 0] > frames[1, 0, 0, 0]
