"""Any bytes given to an annotation, table or corpus parser give a parsed result or the project's own error, never
another exception (hypothesis writes the files)."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affectlab.datasets.affwild2 import read_affwild2_expression
from affectlab.datasets.cexpr import read_cexpr_annotation, read_fold_list
from affectlab.datasets.emotion_corpus import EMOTIONS, GOEMOTIONS_TO_EKMAN, read_corpus, read_goemotions, read_meld
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.modality_tables import read_modality_table
from affectlab.datasets.raer import RAER_CLASSES, read_annotation

# Text built from the pieces these formats are made of, so that hypothesis reaches past the first check.
PIECES = st.sampled_from(
    ["1", "2", "5", "0", "-1", "7", "10", "1 ", '"1 "', "0.5", "nan", "-0.2", "1e9", ",", " ", "\t", "\n", "\r\n",
     "Class/Classroom/0001", "00:00:01.000", "00:00:00.010", "99:99:99.999", "Fearfully Surprised", "Other",
     "Neutrality", "segment_id", "Begin Time - hh:mm:ss.ms", "End Time - hh:mm:ss.ms", "Neutral,Anger,Disgust",
     "Fearfully_Surprised/01_Fearfully_Surprised_0", "\ufeff", "é", "\x00", "x"]
)
CONTENT = st.one_of(st.lists(PIECES, max_size=40).map("".join), st.binary(max_size=200))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_bytes(parser, content: str | bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            parser(path)
        except DatasetError:
            pass  # the project's own error is an allowed answer; anything else fails the test


@FUZZ
@given(CONTENT)
def test_raer_annotation_parser_only_raises_its_own_error(content):
    parse_bytes(read_annotation, content, ".txt")


@FUZZ
@given(CONTENT)
def test_cexpr_annotation_parser_only_raises_its_own_error(content):
    parse_bytes(lambda p: read_cexpr_annotation(p, duration_s=60.0), content, ".csv")


@FUZZ
@given(CONTENT)
def test_fold_list_parser_only_raises_its_own_error(content):
    parse_bytes(lambda p: read_fold_list(p, {"Fearfully_Surprised": 0, "Other": 7}), content, ".txt")


@FUZZ
@given(CONTENT)
def test_modality_table_parser_only_raises_its_own_error(content):
    parse_bytes(read_modality_table, content, ".csv")


@FUZZ
@given(CONTENT)
def test_affwild2_label_parser_only_raises_its_own_error(content):
    parse_bytes(read_affwild2_expression, content, ".txt")


# --- corpora and vote files: mostly well-formed rows with odd values, broken rows, or anything at all --------------

TEXT = st.one_of(
    st.sampled_from(["Oh, no", "it\x92s", "itâ€™s", "\xa0", " ", "", '"quoted"', "a\nb", "\x00", "é"]),
    st.text(max_size=12),
)
EMOTION = st.sampled_from(list(EMOTIONS) + ["Joy ", "boredom", "", "None", "7"])
SOURCE = st.sampled_from(["raw", "rewritten", "synthetic", "", "scraped"])
GOEMOTIONS_FINE = sorted(fine for fines in GOEMOTIONS_TO_EKMAN.values() for fine in fines)
MARK = st.sampled_from(["0"] * 250 + ["1"] * 30 + ["2", "", "yes"])  # 28 marks a row: mostly valid rows


def csv_file(header: list[str], row: st.SearchStrategy[list]) -> st.SearchStrategy[str]:
    """The header and rows as the csv module writes them; sometimes a row is cut, lengthened or the header altered."""
    def write(parts) -> str:
        header_cells, rows, cut = parts
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header_cells)
        for cells in rows:
            writer.writerow(cells[:cut] if cut is not None else cells)
        return buffer.getvalue()

    headers = st.one_of(st.just(header), st.just(header[:-1]), st.just([h.lower() for h in header]))
    cut = st.one_of(st.none(), st.none(), st.integers(0, len(header) + 1))
    return st.tuples(headers, st.lists(row, max_size=6), cut).map(write)


MELD_CSV = csv_file(
    ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season", "Episode",
     "StartTime", "EndTime"],
    st.tuples(st.integers(1, 9), TEXT, st.just("Ross"), EMOTION, st.just("neutral"), st.integers(0, 1),
              st.integers(0, 2), st.just(1), st.just(1), st.just("00:16:16,059"), st.just("00:16:17,500")).map(list),
)
CORPUS_CSV = csv_file(["text", "emotion", "source"], st.tuples(TEXT, EMOTION, SOURCE).map(list))
GOEMOTIONS_CSV = csv_file(
    ["text", "id", "rater_id", "example_very_unclear", *GOEMOTIONS_FINE],
    # the text is mostly a function of the id, as in the real files, sometimes anything
    st.tuples(st.one_of(st.none(), st.none(), TEXT), st.sampled_from(["a", "b", "c"] * 3 + [""]), st.integers(0, 9),
              st.sampled_from(["False", "True", ""]),
              st.lists(MARK, min_size=len(GOEMOTIONS_FINE), max_size=len(GOEMOTIONS_FINE))).map(
        lambda t: [f"text of {t[1]}" if t[0] is None else t[0], *t[1:4], *t[4]]),
)
JSON_VALUE = st.one_of(TEXT, st.integers(-3, 9), st.none(), st.booleans(), st.floats(), st.lists(TEXT, max_size=2))
WELL_FORMED = st.fixed_dictionaries({"text": TEXT, "emotion": EMOTION}, optional={"source": SOURCE, "x": JSON_VALUE})
JSON_RECORD = st.one_of(
    WELL_FORMED, WELL_FORMED, WELL_FORMED,
    st.dictionaries(st.sampled_from(["text", "emotion", "source"]), JSON_VALUE, max_size=3),
    JSON_VALUE,
)
JSONL = st.lists(
    st.one_of(JSON_RECORD.map(json.dumps), st.lists(PIECES, max_size=6).map("".join)),
    max_size=8,
).map("\n".join)
JSON_LIST = st.lists(JSON_RECORD, max_size=6).map(json.dumps)
VOTE = st.sampled_from(["1", "2", "3", "4", "5", "0", "6", "-1", "2.5", "Enjoyment", "neutrality", "Boredom"])
VOTES = st.lists(
    st.tuples(st.sampled_from(["a", "b", "Class/Classroom/0001"]), st.sampled_from(["8", "8", "8", "0", "x"]),
              st.one_of(st.lists(VOTE, min_size=3, max_size=3), st.lists(VOTE, min_size=1, max_size=4))).map(
        lambda t: " ".join([t[0], t[1], *t[2]])),
    max_size=6,
).map("\n".join)


def parse_corpus(parser, content, suffix: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CorpusWarning counts fixes and drops; only the exceptions matter here
        parse_bytes(parser, content, suffix)


@FUZZ
@given(st.one_of(MELD_CSV, CONTENT))
def test_meld_parser_only_raises_its_own_error(content):
    parse_corpus(read_meld, content, ".csv")


@FUZZ
@given(st.one_of(JSONL, CONTENT))
def test_jsonl_corpus_reader_only_raises_its_own_error(content):
    parse_corpus(read_corpus, content, ".jsonl")


@FUZZ
@given(st.one_of(JSON_LIST, CONTENT))
def test_json_list_corpus_reader_only_raises_its_own_error(content):
    parse_corpus(read_corpus, content, ".json")


@FUZZ
@given(st.one_of(CORPUS_CSV, CONTENT))
def test_csv_corpus_reader_only_raises_its_own_error(content):
    parse_corpus(read_corpus, content, ".csv")


@FUZZ
@given(st.one_of(GOEMOTIONS_CSV, CONTENT))
def test_goemotions_parser_only_raises_its_own_error(content):
    parse_corpus(read_goemotions, content, ".csv")


@FUZZ
@given(st.one_of(VOTES, CONTENT))
def test_vote_file_parser_only_raises_its_own_error(content):
    parse_bytes(lambda path: read_annotation(path, RAER_CLASSES), content, ".txt")
