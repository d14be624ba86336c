"""Every loader against every malformed input it can meet, one table per loader.

A case writes a small, otherwise valid dataset into tmp_path, breaks one thing, and names what must happen:
`Raises(pattern)`: a DatasetError whose message matches (file, line or row, the bad value, what was expected);
`Warns(category, pattern, count)`: the data loads and exactly `count` warnings of that category say what was fixed or
dropped; `Skips(count, pattern)`: with skipping configured, exactly `count` bad clips are left out and each message
names its file. The number of cases tried is printed at the end of the session (conftest.py).
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectlab.datasets import DatasetError, DatasetWarning, RaerDataset, load_raer_split, write_mjpeg_avi
from affectlab.datasets.affwild2 import read_affwild2_expression
from affectlab.datasets.cexpr import (
    HEADER,
    fold_segment,
    list_cexpr_videos,
    read_cexpr_annotation,
    read_cexpr_folds,
    read_frames as read_cexpr_frames,
    video_info,
)
from affectlab.datasets.emotion_corpus import CorpusWarning, read_corpus, read_goemotions, read_meld
from affectlab.datasets.modality_tables import align_modality_tables, read_modality_table, write_modality_table
from affectlab.datasets.raer import read_annotation
from affectlab.datasets.video import read_frames
from builders import zero_frames, MELD_HEADER, flat_frame, write_goemotions, write_raer


@dataclass(frozen=True)
class Raises:
    pattern: str


@dataclass(frozen=True)
class Warns:
    category: type[Warning]
    pattern: str
    count: int = 1


@dataclass(frozen=True)
class Skips:
    count: int
    pattern: str  # every skipped message matches it


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Callable[[], object]]  # writes the data, returns the load to try
    expect: Raises | Warns | Skips


def check(case: Case, tmp_path: Path) -> None:
    load = case.build(tmp_path)
    expect = case.expect
    if isinstance(expect, Raises):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetWarning)
            warnings.simplefilter("ignore", CorpusWarning)
            with pytest.raises(DatasetError, match=expect.pattern):
                load()
    elif isinstance(expect, Warns):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load()
        relevant = [str(w.message) for w in caught if issubclass(w.category, expect.category)]
        assert len(relevant) == expect.count, relevant
        assert all(re.search(expect.pattern, message) for message in relevant), relevant
    else:
        skipped = load()
        assert len(skipped) == expect.count, skipped
        assert all(re.search(expect.pattern, message) for message in skipped), skipped


def table(cases: list[Case]):
    return pytest.mark.parametrize("case", cases, ids=[case.name for case in cases])


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def noise_jpeg() -> bytes:
    """A 64x64 JPEG of noise: big enough that cutting it at 1,500 bytes keeps the header and loses the pixels."""
    import io

    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


NOT_UTF8 = "caf\xe9".encode("latin-1")  # Windows/Latin-1 text, as an export from a spreadsheet writes it
# An MP4 that ends after its ftyp box: what a download cut short before the moov box leaves.
MP4_WITHOUT_MOOV = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64


# --- RAER, frame folders --------------------------------------------------------------------------------------------

CLIP = "Class/Classroom/0001"


def raer(root: Path, *, frames: int = 3, face=None, body=None) -> Path:
    """One clip of `frames` 32x24 frames, label 1, no boxes unless given."""
    write_raer(root, {CLIP: [flat_frame((40 * k, 90, 90)) for k in range(frames)]}, face=face, body=body)
    return root


def load_raer(root: Path, **kwargs) -> Callable[[], object]:
    """Build the dataset and read every item (decoding happens in __getitem__)."""

    def load():
        dataset = RaerDataset(root, load_raer_split(root, "train"), num_segments=3, image_size=8, **kwargs)
        return [dataset[i] for i in range(len(dataset))]

    return load


def raer_annotation(text: str | bytes | None):
    def build(tmp: Path):
        path = raer(tmp) / "annotation" / "train.txt"
        path.unlink() if text is None else write(path, text)
        return load_raer(tmp)

    return build


def raer_frame(name: str, content: Callable[[bytes], bytes] | None):
    """Replace (or with None delete) frame `name` of the clip."""

    def build(tmp: Path):
        path = raer(tmp) / "images" / CLIP / name
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content(path.read_bytes()))
        return load_raer(tmp)

    return build


def raer_boxes(face=None, body=None):
    return lambda tmp: load_raer(raer(tmp, face=face, body=body))


def raer_box_file(name: str, content: str | bytes | None):
    def build(tmp: Path):
        path = raer(tmp) / "bounding_box" / name
        path.unlink() if content is None else write(path, content)
        return load_raer(tmp)

    return build


def raer_skips(tmp: Path):
    """Five lines, four of them bad in four ways, read with skipping on: one clip is left."""
    write_raer(
        tmp,
        {f"Class/Classroom/000{k}": [flat_frame((90, 90, 90))] * 2 for k in (1, 2, 3)},
        face={"Class/Classroom/0001": {}, "Class/Classroom/0002": {"1.jpg": [0, 0, 99, 99]}},
        body={"Class/Classroom/0001": None, "Class/Classroom/0002": None},
    )
    write(
        tmp / "annotation" / "train.txt",
        "Class/Classroom/0001 2 1\nClass/Classroom/0002 2 1\n"
        "Class/Classroom/0003 2 9\nClass/Classroom/0001 2 2\nClass/Classroom/0004 2 1\n",
    )

    def load():
        skipped: list[str] = []
        dataset = RaerDataset(
            tmp, load_raer_split(tmp, "train", skipped=skipped), num_segments=2, image_size=8, skipped=skipped
        )
        assert [clip.clip_dir for clip in dataset.clips] == ["Class/Classroom/0001"]
        return skipped

    return load


def raer_datamodule_skips(tmp: Path):
    """data.on_bad_clip=skip in the lab: the datamodule warns once with the count of clips it left out."""
    from affectlab.lab.config import load_config
    from affectlab.lab.raer.data import RaerDataModule

    clips = {f"Class/Classroom/000{k}": [flat_frame((90, 90, 90))] * 2 for k in (1, 2, 3)}
    write_raer(
        tmp, clips, split="test", face={c: ({"1.jpg": [50, 0, 60, 9]} if c.endswith("3") else {}) for c in clips}
    )
    lines = (tmp / "annotation" / "test.txt").read_text()
    write(tmp / "annotation" / "test.txt", lines + "Class/Classroom/0009 0 1\n")
    cfg = load_config("raer", [f"data.root={tmp}", "data.on_bad_clip=skip"], environ={})

    def load():
        datamodule = RaerDataModule(cfg.data, image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
        datamodule.setup("test")
        assert len(datamodule.test_set) == 2 and len(datamodule.skipped["test"]) == 2

    return load


RAER_FRAME_CASES = [
    Case("annotation missing", raer_annotation(None), Raises(r"train\.txt: annotation file not found; expected lines")),
    Case("annotation empty", raer_annotation(""), Raises(r"train\.txt: no clip lines \(empty file\)")),
    Case("annotation blank lines only", raer_annotation("\n  \n"), Raises(r"train\.txt: no clip lines")),
    Case(
        "annotation not utf-8",
        raer_annotation(f"{CLIP} 3 1 ".encode() + NOT_UTF8),
        Raises(r"train\.txt: byte 28 \(b'\\xe9'\) is not UTF-8"),
    ),
    Case("wrong columns", raer_annotation(f"{CLIP} 3\n"), Raises(rf"train\.txt:1: '{CLIP} 3' has 2 fields; expected")),
    Case(
        "frame count not a number",
        raer_annotation(f"{CLIP} three 1\n"),
        Raises(r"train\.txt:1: .* non-integer frame count or label"),
    ),
    Case(
        "frame count 0", raer_annotation(f"{CLIP} 0 1\n"), Raises(r"train\.txt:1: num_frames is 0; expected at least 1")
    ),
    Case("frame count negative", raer_annotation(f"{CLIP} -3 1\n"), Raises(r"train\.txt:1: num_frames is -3")),
    Case("label above range", raer_annotation(f"{CLIP} 3 6\n"), Raises(r"train\.txt:1: label is 6; expected 1\.\.5")),
    Case(
        "label 0 (0-based file)", raer_annotation(f"{CLIP} 3 0\n"), Raises(r"train\.txt:1: label is 0; expected 1\.\.5")
    ),
    Case(
        "label name unknown",
        raer_annotation(f"{CLIP} 3 Boredom\n"),
        Raises(r"train\.txt:1: unknown label name 'Boredom'; expected 1\.\.5 or one of \['neutrality'"),
    ),
    Case(
        "duplicated clip id",
        raer_annotation(f"{CLIP} 3 1\n{CLIP} 3 2\n"),
        Raises(rf"train\.txt:2: clip '{CLIP}' repeats line 1; expected each clip once"),
    ),
    Case(
        "clip folder missing",
        raer_annotation("Class/Classroom/0002 3 1\n"),
        Raises(r"train\.txt:1: clip folder .*0002 does not exist; expected frames 1\.jpg\.\.3\.jpg or a video"),
    ),
    Case(
        "more frames annotated than present",
        raer_annotation(f"{CLIP} 5 1\n"),
        Raises(r"train\.txt:1: annotation says 5 frames but .*0001 holds 3 frame files"),
    ),
    Case(
        "frame missing inside the clip",
        raer_frame("2.jpg", None),
        Raises(r"0001/2\.jpg: frame is missing \(.*train\.txt:1\); expected frames 1\.jpg\.\.3\.jpg without gaps"),
    ),
    Case(
        "frame not a JPEG",
        raer_frame("2.jpg", lambda _: b"<html>not found</html>"),
        Raises(r"0001/2\.jpg: unreadable frame \(.*\); expected a JPEG image"),
    ),
    Case("frame empty", raer_frame("3.jpg", lambda _: b""), Raises(r"0001/3\.jpg: unreadable frame")),
    Case(
        "frame truncated",
        raer_frame("2.jpg", lambda _: noise_jpeg()[:1500]),
        Raises(r"0001/2\.jpg: cannot decode frame \(.*\); expected a readable JPEG"),
    ),
    Case(
        "face box outside the frame",
        raer_boxes(face={CLIP: {"2.jpg": [10, 10, 60, 20]}}),
        Raises(rf"face\.json: clip '{CLIP}' frame 2\.jpg: box is \[10, 10, 60, 20\], outside the 32x24 frame"),
    ),
    Case(
        "face box left of the frame",
        raer_boxes(face={CLIP: {"1.jpg": [-20, 0, 10, 10]}}),
        Raises(r"frame 1\.jpg: box is \[-20, 0, 10, 10\], outside the 32x24 frame"),
    ),
    Case(
        "face box inverted",
        raer_boxes(face={CLIP: {"1.jpg": [20, 10, 5, 20]}}),
        Raises(r"frame 1\.jpg: box is \[20, 10, 5, 20\]; expected x2 > x1 and y2 > y1"),
    ),
    Case(
        "face box not numbers",
        raer_boxes(face={CLIP: {"1.jpg": ["a", 0, 5, 5]}}),
        Raises(r"frame 1\.jpg: box is \['a', 0, 5, 5\]; expected \[x1, y1, x2, y2\] numbers"),
    ),
    Case("face box of three numbers", raer_boxes(face={CLIP: {"1.jpg": [0, 0, 5]}}), Raises(r"box is \[0, 0, 5\]")),
    Case(
        "face box NaN",
        raer_box_file("face.json", '{"%s": {"1.jpg": [0, 0, NaN, 5]}}' % CLIP),
        Raises(r"box is \[0, 0, nan, 5\]; expected \[x1, y1, x2, y2\] numbers"),
    ),
    Case(
        "body box outside the frame",
        raer_boxes(body={CLIP: [0, 0, 32, 90]}),
        Raises(rf"body\.json: clip '{CLIP}': box is \[0, 0, 32, 90\], outside the 32x24 frame"),
    ),
    Case("face.json missing", raer_box_file("face.json", None), Raises(r"face\.json: box file not found")),
    Case("face.json empty", raer_box_file("face.json", ""), Raises(r"face\.json:1: not valid JSON")),
    Case(
        "face.json broken JSON", raer_box_file("face.json", '{"a": [1, 2,\n'), Raises(r"face\.json:2: not valid JSON")
    ),
    Case(
        "face.json not utf-8",
        raer_box_file("face.json", b'{"' + NOT_UTF8 + b'": {}}'),
        Raises(r"face\.json: byte 5 \(b'\\xe9'\) is not UTF-8"),
    ),
    Case("face.json a list", raer_box_file("face.json", "[]"), Raises(r"face\.json: top level is a list; expected")),
    Case("body.json missing", raer_box_file("body.json", None), Raises(r"body\.json: box file not found")),
    Case(
        "clip missing from face.json",
        raer_boxes(face={"Class/Classroom/0002": {}}),
        Raises(rf"face\.json: no entry for clip '{CLIP}' \(.*train\.txt:1\)"),
    ),
    Case(
        "clip's face entry a list",
        raer_boxes(face={CLIP: [0, 0, 4, 4]}),
        Raises(rf"face\.json: clip '{CLIP}' holds a list; expected \{{frame_file"),
    ),
    Case("clip missing from body.json", raer_boxes(body={}), Raises(rf"body\.json: no entry for clip '{CLIP}'")),
    Case("skipping: four bad lines and clips", raer_skips, Skips(4, r"train\.txt:[2-5]|face\.json")),
    Case(
        "data.on_bad_clip=skip warns with the count",
        raer_datamodule_skips,
        Warns(UserWarning, r"data\.on_bad_clip=skip: left out 2 bad clip\(s\) of the test split"),
    ),
]


@table(RAER_FRAME_CASES)
def test_raer_frames_bad_input(case, tmp_path):
    check(case, tmp_path)


# --- RAER, video files ------------------------------------------------------------------------------------------------


def video_raer(
    tmp: Path,
    content: Callable[[bytes], bytes] | None = None,
    *,
    suffix: str = ".avi",
    face=None,
    frames: int = 8,
    annotated: int | None = None,
) -> Path:
    """One clip "c" as a 32x24 Motion-JPEG video of `frames` frames (its bytes passed through `content`), annotated
    with `annotated` frames (default: as many as it has)."""
    path = write_mjpeg_avi(tmp / "images" / f"c{suffix}", [flat_frame((30 * k, 60, 90)) for k in range(frames)])
    if content is not None:
        path.write_bytes(content(path.read_bytes()))
    write(tmp / "annotation" / "train.txt", f"c {annotated or frames} 1\n")
    write(tmp / "bounding_box" / "face.json", json.dumps({"c": face or {}}))
    write(tmp / "bounding_box" / "body.json", json.dumps({"c": None}))
    return tmp


def raer_video(content=None, **kwargs):
    return lambda tmp: load_raer(video_raer(tmp, content, **kwargs))


def video_read_past_end(tmp: Path):
    path = video_raer(tmp, frames=4) / "images" / "c.avi"
    return lambda: read_frames(path, [0, 3, 9])


def video_skips(tmp: Path):
    video_raer(tmp, lambda data: b"\0" * 100)
    write_mjpeg_avi(tmp / "images" / "d.avi", [flat_frame((9, 9, 9))] * 2)
    write(tmp / "annotation" / "train.txt", "c 8 1\nd 2 1\n")
    write(tmp / "bounding_box" / "face.json", json.dumps({"c": {}, "d": {}}))
    write(tmp / "bounding_box" / "body.json", json.dumps({"c": None, "d": None}))

    def load():
        skipped: list[str] = []
        dataset = RaerDataset(tmp, load_raer_split(tmp, "train"), num_segments=2, image_size=8, skipped=skipped)
        assert len(dataset) == 1 and dataset[0]["face"].shape == (2, 3, 8, 8)
        return skipped

    return load


RAER_VIDEO_CASES = [
    Case(
        "video garbage",
        raer_video(lambda d: bytes(range(256)) * 8),
        Raises(r"images/c\.avi: cannot open video \(.*\); expected a video FFmpeg reads"),
    ),
    Case("video empty file", raer_video(lambda d: b""), Raises(r"images/c\.avi: cannot open video")),
    Case("video header cut", raer_video(lambda d: d[:100]), Raises(r"images/c\.avi: cannot open video")),
    Case(
        "mp4 without its moov box",
        raer_video(lambda d: MP4_WITHOUT_MOOV, suffix=".mp4"),
        Raises(r"images/c\.mp4: cannot open video"),
    ),
    Case(
        "video with 0 frames",
        raer_video(zero_frames, frames=1),
        Raises(r"images/c\.avi: (cannot open video|video has 0 frames)"),
    ),
    Case(
        "video truncated mid-stream",
        raer_video(lambda d: d[: len(d) // 2]),
        Raises(r"images/c\.avi: cannot decode its [1-7] frames \(.*\); expected a readable video, not a truncated"),
    ),
    Case(
        "video shorter than annotated",
        lambda tmp: load_raer(video_raer(tmp, frames=6, annotated=8)),
        Warns(DatasetWarning, r"train\.txt:1: annotation says 8 frames but .*c\.avi has 6; using the first 6"),
    ),
    Case(
        "video face box outside the frame",
        raer_video(face={"3": [0, 0, 32, 40]}),
        Raises(r"face\.json: clip 'c' frame 3\.jpg: box is \[0, 0, 32, 40\], outside the 32x24 frame"),
    ),
    Case(
        "video frames asked past its end",
        video_read_past_end,
        Raises(r"c\.avi: frames \[9\] asked for, but the video has 4 frames"),
    ),
    Case("skipping a corrupt video", video_skips, Skips(1, r"images/c\.avi: cannot open video")),
]


@table(RAER_VIDEO_CASES)
def test_raer_video_bad_input(case, tmp_path):
    check(case, tmp_path)


# --- RAER annotator vote files ----------------------------------------------------------------------------------------


def votes(text: str | bytes, skip: bool = False):
    def build(tmp: Path):
        path = write(tmp / "annotation" / "train.txt", text)
        if not skip:
            return lambda: load_raer_split(tmp, "train")

        def load():
            skipped: list[str] = []
            clips = read_annotation(path, 5, skipped=skipped)
            assert [c.votes for c in clips] == [(0, 2, 1, 0, 0), (3, 0, 0, 0, 0)]
            return skipped

        return load

    return build


VOTE_CASES = [
    Case(
        "annotator count changes",
        votes("a 3 1 2 2\nb 3 1 1\n"),
        Raises(r"train\.txt:2: 2 label\(s\)/votes on this line but line 1 has 3; expected the same number"),
    ),
    Case("vote above range", votes("a 3 1 2 6\n"), Raises(r"train\.txt:1: label is 6; expected 1\.\.5")),
    Case("vote 0", votes("a 3 0 2 2\n"), Raises(r"train\.txt:1: label is 0; expected 1\.\.5")),
    Case("vote not a number or name", votes("a 3 1 2 2.5\n"), Raises(r"train\.txt:1: unknown label name '2\.5'")),
    Case("vote name unknown", votes("a 3 Enjoyment Boredom\n"), Raises(r"train\.txt:1: unknown label name 'Boredom'")),
    Case(
        "duplicated clip id",
        votes("a 3 1 2 2\nb 3 1 1 1\na 3 2 2 2\n"),
        Raises(r"train\.txt:3: clip 'a' repeats line 1"),
    ),
    Case("frame count 0", votes("a 0 1 2 2\n"), Raises(r"train\.txt:1: num_frames is 0")),
    Case("vote file empty", votes(""), Raises(r"train\.txt: no clip lines")),
    Case(
        "vote file not utf-8", votes(b"a 3 1 2 " + NOT_UTF8), Raises(r"train\.txt: byte 11 \(b'\\xe9'\) is not UTF-8")
    ),
    Case(
        "skipping bad vote lines",
        votes("a 3 2 2 3\nb 3 1 1\nc 3 1 1 9\nd 3 1 1 1\n", skip=True),
        Skips(2, r"train\.txt:[23]: "),
    ),
]


@table(VOTE_CASES)
def test_vote_file_bad_input(case, tmp_path):
    check(case, tmp_path)


# --- C-EXPR-DB --------------------------------------------------------------------------------------------------------

CSV_HEADER = ",".join(f'"{name}"' for name in HEADER)


def segment(begin: str, end: str, marks: dict[int, str]) -> str:
    return ",".join([begin, end, *(marks.get(c, "") for c in range(8))])


GOOD_ROWS = [segment("00:00:00.000", "00:00:01.000", {5: "1"}), segment("00:00:01.000", "00:00:01.010", {7: "1 "})]


def cexpr_csv(text: str | bytes | None, duration_s: float | None = None):
    def build(tmp: Path):
        path = tmp / "07.csv"
        if text is not None:
            write(path, text)
        return lambda: read_cexpr_annotation(path, duration_s=duration_s)

    return build


def rows(*extra: str) -> str:
    return "\n".join([CSV_HEADER, *GOOD_ROWS, *extra]) + "\n"


def folds(train: str, test: str = "Sadly-Fearful/07_Sadly-Fearful_0,5\n", class_ids: str | bytes | None = None):
    """folds/split-0 with the real class_id.yaml (or `class_ids`), and the 07.csv above as the annotation."""

    def build(tmp: Path):
        folder = tmp / "folds" / "split-0"
        ids = {name: i for i, name in enumerate(HEADER[2:9])}
        write(folder / "class_id.yaml", class_ids if class_ids is not None else json.dumps(ids))
        write(folder / "train.txt", train)
        write(folder / "val.txt", test)
        write(folder / "test.txt", test)
        write(tmp / "07.csv", rows())

        def load():
            segments = read_cexpr_annotation(tmp / "07.csv")
            for clips in read_cexpr_folds(tmp / "folds", 0).values():
                for clip in clips:
                    fold_segment(clip, segments)

        return load

    return build


def cexpr_videos(make: Callable[[Path], None]):
    """cexpr/annotation/07.csv and whatever `make` puts in cexpr/videos/, loaded as the experiment does."""

    def build(tmp: Path):
        write(tmp / "annotation" / "07.csv", rows())
        (tmp / "videos").mkdir()
        make(tmp / "videos")

        def load():
            for video in list_cexpr_videos(tmp):
                read_cexpr_annotation(video.annotation, duration_s=video.duration_s)
                read_cexpr_frames(video.path, np.arange(video.num_frames))

        return load

    return build


def avi(path: Path, frames: int = 30, content: Callable[[bytes], bytes] | None = None) -> None:
    # 32x24: decord returns frames of width 16 with 6 channels
    write_mjpeg_avi(path, [flat_frame((4 * k % 256, 50, 50), (32, 24)) for k in range(frames)], fps=25)
    if content is not None:
        path.write_bytes(content(path.read_bytes()))


def frame_folder(
    path: Path, frames: int = 3, fps: str | bytes | None = "25", broken: dict[int, bytes] | None = None
) -> None:
    path.mkdir(parents=True)
    for k in range(1, frames + 1):
        Image.fromarray(flat_frame((60 * k, 0, 0), (16, 12))).save(path / f"{k:05d}.jpg")
    for k, content in (broken or {}).items():
        (path / f"{k:05d}.jpg").write_bytes(content)
    if fps is not None:
        write(path / "fps.txt", fps)


def frame_folder_probe(fps: str | None = "25", frames: int = 3, broken=None, indices=(0,)):
    def build(tmp: Path):
        frame_folder(tmp / "07", frames, fps, broken)

        def load():
            video_info(tmp / "07")
            read_cexpr_frames(tmp / "07", np.array(indices))

        return load

    return build


CEXPR_CASES = [
    Case(
        "annotation missing", cexpr_csv(None), Raises(r"07\.csv: annotation file not found; expected a C-EXPR-DB CSV")
    ),
    Case("annotation empty", cexpr_csv(""), Raises(r"07\.csv: empty file; expected the header row")),
    Case(
        "annotation not utf-8",
        cexpr_csv(CSV_HEADER.encode() + b"\n" + NOT_UTF8),
        Raises(r"07\.csv: byte \d+ .* not UTF-8"),
    ),
    Case(
        "wrong columns (no Other)",
        cexpr_csv(CSV_HEADER.rsplit(",", 1)[0] + "\n"),
        Raises(r"07\.csv:1: header is \[.*\]; expected the columns \['Begin Time - hh:mm:ss\.ms'"),
    ),
    Case(
        "a row of 9 cells",
        cexpr_csv(rows("00:00:02.000,00:00:03.000,1,,,,,,")),
        Raises(r"07\.csv:4: 9 cells .*; expected 10"),
    ),
    Case(
        "time not hh:mm:ss.ms",
        cexpr_csv(rows(segment("0:02", "00:00:03.000", {0: "1"}))),
        Raises(r"07\.csv:4 begin: time '0:02'; expected hh:mm:ss\.ms"),
    ),
    Case(
        "label cell 2",
        cexpr_csv(rows(segment("00:00:02.000", "00:00:03.000", {1: "2"}))),
        Raises(r"07\.csv:4: column 'Happily Surprised' holds '2'; expected '1' or empty"),
    ),
    Case(
        "no class marked",
        cexpr_csv(rows(segment("00:00:02.000", "00:00:03.000", {}))),
        Raises(r"07\.csv:4: marks no class; expected exactly one class column"),
    ),
    Case(
        "two classes marked",
        cexpr_csv(rows(segment("00:00:02.000", "00:00:03.000", {0: "1", 7: "1"}))),
        Raises(r"07\.csv:4: marks \['Fearfully Surprised', 'Other'\]"),
    ),
    Case(
        "segment ends before it begins",
        cexpr_csv(rows(segment("00:00:03.000", "00:00:02.000", {0: "1"}))),
        Raises(r"07\.csv:4: ends at 00:00:02\.000, not after its begin 00:00:03\.000"),
    ),
    Case(
        "duplicated segment",
        cexpr_csv(rows(GOOD_ROWS[1])),
        Raises(r"07\.csv:4: begins at 00:00:01\.000, before the previous row's end \(1010 ms\)"),
    ),
    Case(
        "segment past the video's end",
        cexpr_csv(rows(segment("00:00:02.000", "00:00:09.000", {0: "1"})), 5.0),
        Raises(r"07\.csv:4: ends at 00:00:09\.000, past the video's end \(5\.000 s\)"),
    ),
    Case("fold line malformed", folds("Sadly Fearful 07 0\n"), Raises(r"train\.txt:1: 'Sadly Fearful 07 0'; expected")),
    Case(
        "fold class id wrong",
        folds("Sadly-Fearful/07_Sadly-Fearful_0,3\n", test=""),
        Raises(r"train\.txt:1: class 'Sadly Fearful' with id 3; expected id 5"),
    ),
    Case(
        "fold class unknown",
        folds("Oddly-Calm/07_Oddly-Calm_0,2\n", test=""),
        Raises(r"train\.txt:1: class 'Oddly Calm' with id 2; expected id \?"),
    ),
    Case(
        "fold clip listed twice",
        folds("Other/07_Other_0,7\nOther/07_Other_0,7\n", test=""),
        Raises(r"train\.txt:2: clip 'Other/07_Other_0' repeats line 1"),
    ),
    Case(
        "fold clip in train and test",
        folds("Sadly-Fearful/07_Sadly-Fearful_0,5\n"),
        Raises(r"val\.txt:1: clip 'Sadly-Fearful/07_Sadly-Fearful_0' is also a training clip \(.*train\.txt:1\)"),
    ),
    Case(
        "fold clip beyond the annotation",
        folds("Sadly-Fearful/07_Sadly-Fearful_2,5\n", test=""),
        Raises(
            r"train\.txt:1: 'Sadly-Fearful/07_Sadly-Fearful_2' is occurrence 2 of 'Sadly Fearful'; the annotation "
            r"of video 07 has 1"
        ),
    ),
    Case("fold list not utf-8", folds(b"Other/07_Other_0,7\n" + NOT_UTF8), Raises(r"train\.txt: byte 22 .* not UTF-8")),
    Case(
        "class_id.yaml not YAML", folds("", class_ids="Sadly Fearful: [5\n"), Raises(r"class_id\.yaml: not valid YAML")
    ),
    Case("class_id.yaml not utf-8", folds("", class_ids=NOT_UTF8), Raises(r"class_id\.yaml: byte 3 .* not UTF-8")),
    Case(
        "class_id.yaml ids out of order",
        folds("", class_ids="Sadly Fearful: 2\n"),
        Raises(r"class_id\.yaml: 'Sadly Fearful': 2; expected 5"),
    ),
    Case(
        "class_id.yaml a list",
        folds("", class_ids="- Other\n"),
        Raises(r"class_id\.yaml: holds a list; expected a mapping"),
    ),
    Case(
        "no annotation files",
        lambda tmp: lambda: list_cexpr_videos(tmp),
        Raises(r"annotation: no annotation CSVs; expected C-EXPR-DB's annotation/<video>\.csv"),
    ),
    Case(
        "video missing",
        cexpr_videos(lambda videos: None),
        Raises(r"07\.csv: no video for it; expected .*videos/07\.mp4"),
    ),
    Case(
        "video twice (file and frame folder)",
        cexpr_videos(lambda v: (avi(v / "07.avi"), frame_folder(v / "07"))),
        Raises(r"07\.csv: several videos for it \[.*07', .*07\.avi'\]; expected exactly one"),
    ),
    Case(
        "video garbage",
        cexpr_videos(lambda v: write(v / "07.mp4", bytes(range(256)) * 4)),
        Raises(r"videos/07\.mp4: cannot open video"),
    ),
    Case(
        "video empty file",
        cexpr_videos(lambda v: write(v / "07.avi", b"")),
        Raises(r"videos/07\.avi: cannot open video"),
    ),
    Case(
        "video shorter than its annotation",
        cexpr_videos(lambda v: avi(v / "07.avi", frames=20)),
        Raises(r"07\.csv:2: ends at 00:00:01\.000, past the video's end \(0\.800 s\)"),
    ),
    Case(
        "video truncated mid-stream",
        cexpr_videos(lambda v: avi(v / "07.avi", 60, lambda d: d[: len(d) // 3])),
        Raises(r"videos/07\.avi: cannot decode its \d+ frames \(.*\); expected a readable video, not a truncated"),
    ),
    Case(
        "frame folder without fps.txt",
        frame_folder_probe(fps=None),
        Raises(r"07/fps\.txt: missing or not a number \(''\); expected the frame rate"),
    ),
    Case("fps.txt not a number", frame_folder_probe(fps="twenty-five"), Raises(r"fps\.txt: missing or not a number")),
    Case("fps.txt NaN", frame_folder_probe(fps="nan"), Raises(r"07: 3 frames at nan fps; expected")),
    Case("fps.txt 0", frame_folder_probe(fps="0"), Raises(r"07: 3 frames at 0\.0 fps")),
    Case("fps.txt not utf-8", frame_folder_probe(fps=NOT_UTF8), Raises(r"fps\.txt: byte 3 .* not UTF-8")),
    Case("frame folder with 0 frames", frame_folder_probe(frames=0), Raises(r"07: 0 frames at 25\.0 fps")),
    Case(
        "frame folder: a frame corrupt",
        frame_folder_probe(broken={2: b"\xff\xd8junk"}, indices=(0, 1)),
        Raises(r"07/00002\.jpg: cannot read frame 1 \(.*\); expected a readable JPEG"),
    ),
    Case(
        "frame folder: a frame missing",
        frame_folder_probe(indices=(0, 5)),
        Raises(r"07/00006\.jpg: cannot read frame 5"),
    ),
]


@table(CEXPR_CASES)
def test_cexpr_bad_input(case, tmp_path):
    check(case, tmp_path)


# --- AffWild2 expression labels -------------------------------------------------------------------------------------

AFFWILD2_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"


def affwild2(text: str | bytes | None):
    def build(tmp: Path):
        if text is not None:
            write(tmp / "v1.txt", text)
        return lambda: read_affwild2_expression(tmp / "v1.txt")

    return build


AFFWILD2_CASES = [
    Case("file missing", affwild2(None), Raises(r"v1\.txt: expression label file not found; expected the header")),
    Case("file empty", affwild2(""), Raises(r"v1\.txt:1: header ''; expected 'Neutral,Anger,")),
    Case("wrong columns", affwild2("Neutral,Anger\n0\n"), Raises(r"v1\.txt:1: header 'Neutral,Anger'")),
    Case(
        "header in another order",
        affwild2("Anger,Neutral,Disgust,Fear,Happiness,Sadness,Surprise,Other\n0\n"),
        Raises(r"v1\.txt:1: header 'Anger,Neutral"),
    ),
    Case(
        "not utf-8",
        affwild2(AFFWILD2_HEADER.encode() + b"\n0\n" + NOT_UTF8),
        Raises(r"v1\.txt: byte 65 \(b'\\xe9'\) is not UTF-8"),
    ),
    Case(
        "label above range",
        affwild2(f"{AFFWILD2_HEADER}\n0\n8\n"),
        Raises(r"v1\.txt:3: label '8'; expected an integer -1\.\.7"),
    ),
    Case("label below -1", affwild2(f"{AFFWILD2_HEADER}\n-2\n"), Raises(r"v1\.txt:2: label '-2'")),
    Case("label a name", affwild2(f"{AFFWILD2_HEADER}\n0\nHappiness\n"), Raises(r"v1\.txt:3: label 'Happiness'")),
    Case("label a fraction", affwild2(f"{AFFWILD2_HEADER}\n0.5\n"), Raises(r"v1\.txt:2: label '0\.5'")),
    Case("two labels on a line", affwild2(f"{AFFWILD2_HEADER}\n0,1\n"), Raises(r"v1\.txt:2: label '0,1'")),
    Case(
        "frame count 0 (header only)",
        affwild2(f"{AFFWILD2_HEADER}\n"),
        Raises(r"v1\.txt: no frame labels after the header; expected one label per frame"),
    ),
]


@table(AFFWILD2_CASES)
def test_affwild2_bad_input(case, tmp_path):
    check(case, tmp_path)


# --- AFEW -------------------------------------------------------------------------------------------------------------


def afew(make: Callable[[Path], None] | None):
    """afew/videos/<Class>/... as `make` writes it (None: no videos folder), loaded the way the cexpr experiment
    loads AFEW."""

    def build(tmp: Path):
        from affectlab.lab.cexpr.data import afew_videos

        videos = tmp / "afew" / "videos"
        if make is not None:
            videos.mkdir(parents=True)
            make(videos)
        return lambda: afew_videos(tmp, None, need_frames=True)

    return build


AFEW_CASES = [
    Case("videos folder missing", afew(None), Raises(r"afew/videos: not a folder; expected AFEW's class folders")),
    Case(
        "unknown class folder",
        afew(lambda v: (avi(v / "Happy" / "001.avi", 5), (v / "Contempt").mkdir())),
        Raises(r"videos: unknown class folder\(s\) \['Contempt'\]; expected only \['Angry'"),
    ),
    Case(
        "an Other folder (AFEW has none)",
        afew(lambda v: (v / "Other").mkdir()),
        Raises(r"unknown class folder\(s\) \['Other'\]"),
    ),
    Case(
        "no clips",
        afew(lambda v: [(v / name).mkdir() for name in ("Happy", "Sad")]),
        Raises(r"videos: no clips in the class folders"),
    ),
    Case(
        "clip garbage",
        afew(lambda v: write(v / "Sad" / "004.avi", bytes(range(256)) * 4)),
        Raises(r"Sad/004\.avi: cannot open video"),
    ),
    Case(
        "clip empty file", afew(lambda v: write(v / "Sad" / "004.avi", b"")), Raises(r"Sad/004\.avi: cannot open video")
    ),
    Case(
        "clip header cut",
        afew(lambda v: avi(v / "Fear" / "002.avi", 5, lambda d: d[:120])),
        Raises(r"Fear/002\.avi: cannot open video"),
    ),
    Case(
        "mp4 without its moov box",
        afew(lambda v: write(v / "Fear" / "002.mp4", MP4_WITHOUT_MOOV)),
        Raises(r"Fear/002\.mp4: cannot open video"),
    ),
    Case(
        "a stray text file",
        afew(lambda v: (avi(v / "Happy" / "001.avi", 5), write(v / "Happy" / "notes.txt", "x"))),
        Raises(r"Happy/notes\.txt: neither a video \(\.mp4, .*\) nor a frame folder"),
    ),
    Case(
        "duplicated clip id",
        afew(lambda v: (avi(v / "Happy" / "001.avi", 5), avi(v / "Happy" / "001.mp4", 5))),
        Raises(r"Happy/001\.mp4: same clip id 'Happy/001' as .*Happy/001\.avi; expected one file or frame folder"),
    ),
    Case(
        "frame-folder clip without fps.txt",
        afew(lambda v: frame_folder(v / "Happy" / "001", fps=None)),
        Raises(r"Happy/001/fps\.txt: missing or not a number"),
    ),
    Case(
        "frame-folder clip with 0 frames",
        afew(lambda v: frame_folder(v / "Happy" / "001", frames=0)),
        Raises(r"Happy/001: 0 frames at 25\.0 fps"),
    ),
]


@table(AFEW_CASES)
def test_afew_bad_input(case, tmp_path):
    check(case, tmp_path)


# --- MELD -------------------------------------------------------------------------------------------------------------


def meld_row(number: int, utterance: str, emotion: str, dialogue: int = 0, utterance_id: int | None = None) -> str:
    cells = [
        str(number),
        utterance,
        "Ross",
        emotion,
        "neutral",
        str(dialogue),
        str(number if utterance_id is None else utterance_id),
        "1",
        "1",
        "00:00:01,000",
        "00:00:02,000",
    ]
    return ",".join(f'"{c}"' if "," in c else c for c in cells) + "\n"


MELD_OK = meld_row(1, "Hi, Rachel.", "joy") + meld_row(2, "Oh no", "sadness")


def meld(text: str | bytes | None, name: str = "train_sent_emo.csv", unknown: str = "error"):
    def build(tmp: Path):
        if text is not None:
            write(tmp / name, text)
        return lambda: read_meld(tmp / name, unknown=unknown)

    return build


MELD_CASES = [
    Case("file missing", meld(None), Raises(r"train_sent_emo\.csv: no such file; expected MELD's")),
    Case("file empty", meld(""), Raises(r"train_sent_emo: no usable example in 0 rows")),
    Case("header only", meld(MELD_HEADER), Raises(r"no usable example in 0 rows")),
    Case(
        "wrong columns (no Emotion)",
        meld(MELD_HEADER.replace("Emotion", "Feeling") + MELD_OK),
        Raises(r"train_sent_emo\.csv: no column \['Emotion'\]; has \[.*'Feeling'"),
    ),
    Case(
        "not utf-8",
        meld(MELD_HEADER.encode() + b'1,"It' + b"\x92" + b's fine",Ross,joy,positive,0,0,1,1,a,b\n'),
        Raises(r"train_sent_emo\.csv: byte \d+ \(b'\\x92'\) is not UTF-8"),
    ),
    Case(
        "emotion unknown",
        meld(MELD_HEADER + MELD_OK + meld_row(3, "Meh.", "boredom")),
        Raises(r"train_sent_emo\.csv:4: emotion 'boredom' is not one of \['anger'"),
    ),
    Case(
        "a short row",
        meld(MELD_HEADER + MELD_OK + "3,Meh.,Ross\n"),
        Raises(r"train_sent_emo\.csv:4: 3 cells; expected 11 \(Sr No\.,Utterance,"),
    ),
    Case(
        "a row with an unquoted comma",
        meld(MELD_HEADER + MELD_OK + meld_row(3, "Well", "joy").replace("Well", "Well, no")),
        Raises(r"train_sent_emo\.csv:4: 12 cells; expected 11"),
    ),
    Case(
        "emotion unknown, dropped and counted",
        meld(MELD_HEADER + MELD_OK + meld_row(3, "Meh.", "boredom"), unknown="drop"),
        Warns(CorpusWarning, r"2 of 3 rows kept; \{'dropped_unknown_label:boredom': 1\}"),
    ),
    Case(
        "duplicated utterance id",
        meld(MELD_HEADER + MELD_OK + meld_row(3, "Again", "joy", utterance_id=1)),
        Raises(r"train_sent_emo\.csv:4: Dialogue_ID '0', Utterance_ID '1' repeats .*train_sent_emo\.csv:2"),
    ),
    Case(
        "repeated utterance text, dropped and counted",
        meld(MELD_HEADER + MELD_OK + meld_row(3, "Oh no", "fear")),
        Warns(CorpusWarning, r"'dropped_duplicate': 1, 'duplicate_with_other_emotion': 1"),
    ),
    Case(
        "not a .csv",
        meld(MELD_HEADER + MELD_OK, name="train_sent_emo.xlsx"),
        Raises(r"train_sent_emo\.xlsx: MELD annotations are \.csv files; got '\.xlsx'"),
    ),
]


@table(MELD_CASES)
def test_meld_bad_input(case, tmp_path):
    check(case, tmp_path)


# --- the emotion corpus (JSONL, JSON, CSV, Parquet) -------------------------------------------------------------------


def corpus(name: str, content: str | bytes | Callable[[Path], None] | None, unknown: str = "error"):
    def build(tmp: Path):
        path = tmp / name
        if callable(content):
            content(path)
        elif content is not None:
            write(path, content)
        return lambda: read_corpus(path, unknown=unknown)

    return build


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def csv_text(*records: dict) -> str:
    keys = list(records[0])
    return ",".join(keys) + "\n" + "".join(",".join(str(r[k]) for k in keys) + "\n" for r in records)


def parquet(records: list[dict], cut: bool = False):
    def make(path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
        if cut:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return make


JOY, SAD = {"text": "what a day", "emotion": "joy"}, {"text": "so tired of this", "emotion": "sadness"}

CORPUS_CASES = [
    Case("file missing", corpus("c.jsonl", None), Raises(r"c\.jsonl: no such file")),
    Case("jsonl empty", corpus("c.jsonl", ""), Raises(r"c\.jsonl: no usable example in 0 rows")),
    Case("csv empty", corpus("c.csv", ""), Raises(r"c\.csv: no usable example in 0 rows")),
    Case(
        "jsonl wrong columns",
        corpus("c.jsonl", jsonl({"utterance": "hi", "emotion": "joy"})),
        Raises(r"c\.jsonl: no column \['text'\]; has \['emotion', 'utterance'\]"),
    ),
    Case(
        "jsonl later line lacks a column",
        corpus("c.jsonl", jsonl(JOY, {"text": "hm"})),
        Raises(r"c\.jsonl:2: no column \['emotion'\]"),
    ),
    Case(
        "csv wrong columns",
        corpus("c.csv", "sentence,label\nhi,joy\n"),
        Raises(r"c\.csv: no column \['text', 'emotion'\]"),
    ),
    Case(
        "csv row with an extra cell",
        corpus("c.csv", csv_text(JOY, SAD) + "well, no,joy\n"),
        Raises(r"c\.csv:4: 3 cells; expected 2 \(text,emotion\)"),
    ),
    Case(
        "csv row with a cell missing",
        corpus("c.csv", csv_text(JOY, SAD) + "alone\n"),
        Raises(r"c\.csv:4: 1 cells; expected 2"),
    ),
    Case(
        "jsonl not utf-8",
        corpus("c.jsonl", jsonl(JOY).encode() + b'{"text": "' + NOT_UTF8 + b'"}\n'),
        Raises(r"c\.jsonl: byte \d+ .* not UTF-8"),
    ),
    Case(
        "csv not utf-8",
        corpus("c.csv", b"text,emotion\n" + NOT_UTF8 + b",joy\n"),
        Raises(r"c\.csv: byte 16 .* not UTF-8"),
    ),
    Case(
        "jsonl line not JSON",
        corpus("c.jsonl", jsonl(JOY) + "{'text': 'hi'}\n"),
        Raises(r"c\.jsonl:2: not a JSON object"),
    ),
    Case(
        "jsonl line a list", corpus("c.jsonl", '["hi", "joy"]\n'), Raises(r"c\.jsonl:1: a list; expected a JSON object")
    ),
    Case(
        "json list with a number",
        corpus("c.json", json.dumps([JOY, 3])),
        Raises(r"c\.json item 2: a int; expected a JSON"),
    ),
    Case("json broken", corpus("c.json", '[{"text": "hi",'), Raises(r"c\.json: not a JSON list of objects")),
    Case(
        "emotion unknown",
        corpus("c.jsonl", jsonl(JOY, {"text": "meh", "emotion": "boredom"})),
        Raises(r"c\.jsonl:2: emotion 'boredom' is not one of"),
    ),
    Case(
        "emotion a number",
        corpus("c.csv", csv_text(JOY, {"text": "x", "emotion": 9})),
        Raises(r"c\.csv:3: emotion '9'"),
    ),
    Case(
        "source unknown",
        corpus("c.jsonl", jsonl({**JOY, "source": "scraped"})),
        Raises(r"c\.jsonl:1: source 'scraped' is not one of \['raw', 'rewritten', 'synthetic'\]"),
    ),
    Case(
        "emotion unknown, dropped and counted",
        corpus("c.jsonl", jsonl(JOY, {"text": "meh", "emotion": "?"}), "drop"),
        Warns(CorpusWarning, r"1 of 2 rows kept; \{'dropped_unknown_label:\?': 1\}"),
    ),
    Case(
        "duplicated texts, dropped and counted",
        corpus("c.jsonl", jsonl(JOY, SAD, JOY, {**JOY, "emotion": "anger"})),
        Warns(CorpusWarning, r"'dropped_duplicate': 2, 'duplicate_with_other_emotion': 1"),
    ),
    Case(
        "empty text, dropped and counted",
        corpus("c.csv", csv_text(JOY, {"text": " ", "emotion": "joy"})),
        Warns(CorpusWarning, r"'dropped_empty': 1"),
    ),
    Case(
        "every text empty",
        corpus("c.jsonl", jsonl({"text": "", "emotion": "joy"})),
        Raises(r"c\.jsonl: no usable example in 1 rows \(report: \{'dropped_empty': 1\}\)"),
    ),
    Case(
        "parquet garbage",
        corpus("c.parquet", b"PAR1 this is not parquet"),
        Raises(r"c\.parquet: cannot read as Parquet"),
    ),
    Case(
        "parquet truncated",
        corpus("c.parquet", parquet([JOY, SAD] * 50, cut=True)),
        Raises(r"c\.parquet: cannot read as Parquet"),
    ),
    Case(
        "parquet wrong columns",
        corpus("c.parquet", parquet([{"sentence": "hi", "emotion": "joy"}])),
        Raises(r"c\.parquet: no column \['text'\]"),
    ),
    Case("unknown format", corpus("c.xml", "<corpus/>"), Raises(r"c\.xml: unknown corpus format '\.xml'")),
    Case("a folder", corpus("c.jsonl", lambda path: path.mkdir()), Raises(r"c\.jsonl: a folder; expected")),
]


@table(CORPUS_CASES)
def test_emotion_corpus_bad_input(case, tmp_path):
    check(case, tmp_path)


# --- GoEmotions -------------------------------------------------------------------------------------------------------


def goemotions(edit: Callable[[str], str | bytes] | None, ratings=None):
    def build(tmp: Path):
        path = tmp / "goemotions_1.csv"
        if edit is not None:
            write_goemotions(path, ratings or [("a", "lol", ["joy"], False), ("b", "ugh", ["anger"], False)])
            write(path, edit(path.read_text(encoding="utf-8")))
        return lambda: read_goemotions(path)

    return build


def set_cell(row: int, column: str, value: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        records = list(csv.reader(text.splitlines()))
        records[row][records[0].index(column)] = value
        return "\n".join(",".join(record) for record in records) + "\n"

    return edit


GOEMOTIONS_CASES = [
    Case("file missing", goemotions(None), Raises(r"goemotions_1\.csv: no such file")),
    Case("file empty", goemotions(lambda text: ""), Raises(r"goemotions_1: no usable example in 0 rows")),
    Case(
        "wrong columns (no neutral)",
        goemotions(lambda text: text.replace(",neutral", ",calm")),
        Raises(r"goemotions_1\.csv:2: GoEmotions column\(s\) \['neutral'\] missing"),
    ),
    Case(
        "not utf-8",
        goemotions(lambda text: text.encode() + NOT_UTF8),
        Raises(r"goemotions_1\.csv: byte \d+ .* not UTF-8"),
    ),
    Case(
        "emotion mark 2",
        goemotions(set_cell(2, "anger", "2")),
        Raises(r"goemotions_1\.csv:3: emotion mark\(s\) \{'anger': '2'\}; expected 0 or 1"),
    ),
    Case(
        "emotion mark empty",
        goemotions(set_cell(1, "fear", "")),
        Raises(r"goemotions_1\.csv:2: emotion mark\(s\) \{'fear': ''\}"),
    ),
    Case("empty id", goemotions(set_cell(1, "id", "")), Raises(r"goemotions_1\.csv:2: empty id")),
    Case(
        "one id, two texts",
        goemotions(set_cell(2, "id", "a")),
        Raises(r"goemotions_1\.csv:3: id 'a' has text 'ugh' but .*goemotions_1\.csv:2 gave it 'lol'"),
    ),
    Case(
        "no majority, dropped and counted",
        goemotions(
            lambda t: t, [("a", "lol", ["joy"], False), ("b", "hm", ["anger"], False), ("b", "hm", ["fear"], False)]
        ),
        Warns(CorpusWarning, r"1 of 1 rows kept; \{'dropped_no_majority': 1\}"),
    ),
    Case(
        "no item has a majority",
        goemotions(lambda t: t, [("b", "hm", ["anger"], False), ("b", "hm", ["fear"], False)]),
        Raises(r"goemotions_1: no usable example in 0 rows \(report: \{'dropped_no_majority': 1\}\)"),
    ),
]


@table(GOEMOTIONS_CASES)
def test_goemotions_bad_input(case, tmp_path):
    check(case, tmp_path)


# --- modality tables --------------------------------------------------------------------------------------------------

TABLE_HEADER = "segment_id," + AFFWILD2_HEADER
UNIFORM = ",".join(["0.125"] * 8)


def modality(text: str | bytes | None):
    def build(tmp: Path):
        if text is not None:
            write(tmp / "audio.csv", text)
        return lambda: read_modality_table(tmp / "audio.csv")

    return build


def misaligned(tmp: Path):
    write_modality_table(tmp / "audio.csv", ["01/0000", "01/0001"], np.full((2, 8), 0.125))
    write_modality_table(tmp / "text.csv", ["01/0000", "01/0002"], np.full((2, 8), 0.125))
    return lambda: align_modality_tables(
        [read_modality_table(tmp / "audio.csv"), read_modality_table(tmp / "text.csv")]
    )


MODALITY_CASES = [
    Case(
        "file missing",
        modality(None),
        Raises(r"audio\.csv: modality table not found; expected a CSV segment_id,Neutral"),
    ),
    Case("file empty", modality(""), Raises(r"audio\.csv:1: header ''; expected segment_id,Neutral,Anger")),
    Case(
        "wrong columns (no Other)", modality(TABLE_HEADER.rsplit(",", 1)[0] + "\n"), Raises(r"audio\.csv:1: header \[")
    ),
    Case(
        "not utf-8",
        modality(TABLE_HEADER.encode() + b"\n" + NOT_UTF8),
        Raises(r"audio\.csv: byte 74 \(b'\\xe9'\) is not UTF-8"),
    ),
    Case(
        "a row of 3 cells",
        modality(f"{TABLE_HEADER}\n01/0000,{UNIFORM}\n01/0001,0.5,0.5\n"),
        Raises(r"audio\.csv:3: 3 cells; expected 9"),
    ),
    Case(
        "a probability not a number",
        modality(f"{TABLE_HEADER}\n01/0000,{UNIFORM.replace('0.125', 'high', 1)}\n"),
        Raises(r"audio\.csv:2: \['high', '0\.125'.*\]; expected numbers or empty cells"),
    ),
    Case(
        "a negative probability",
        modality(f"{TABLE_HEADER}\n01/0000,-0.125,0.25{',0.125' * 6}\n"),
        Raises(r"audio\.csv:2: segment '01/0000' has a negative or infinite probability.*Neutral=-0\.125"),
    ),
    Case(
        "an infinite probability",
        modality(f"{TABLE_HEADER}\n01/0000,inf{',0' * 7}\n"),
        Raises(r"audio\.csv:2: segment '01/0000' has a negative or infinite probability"),
    ),
    Case(
        "probabilities summing to 0.9",
        modality(f"{TABLE_HEADER}\n01/0000,0.2,0.7{',0' * 6}\n"),
        Raises(r"audio\.csv:2: segment '01/0000' sums to 0\.900000; expected 1 within 0\.001"),
    ),
    Case(
        "probabilities partly missing",
        modality(f"{TABLE_HEADER}\n01/0000,0.5,0.5,,,,,,\n"),
        Raises(r"audio\.csv:2: segment '01/0000' has some probabilities missing; expected all 8 or none"),
    ),
    Case(
        "duplicated segment id",
        modality(f"{TABLE_HEADER}\n01/0000,{UNIFORM}\n01/0001,,,,,,,,\n01/0000,{UNIFORM}\n"),
        Raises(r"audio\.csv:4: segment id '01/0000' repeats row 2; expected each segment once"),
    ),
    Case(
        "empty segment id", modality(f"{TABLE_HEADER}\n ,{UNIFORM}\n"), Raises(r"audio\.csv:2: segment id '' is empty")
    ),
    Case(
        "tables list other segments",
        misaligned,
        Raises(r"text\.csv: segment ids disagree with .*audio\.csv: extra \['01/0002'\] lacks \['01/0001'\]"),
    ),
]


@table(MODALITY_CASES)
def test_modality_table_bad_input(case, tmp_path):
    check(case, tmp_path)
