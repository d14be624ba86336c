"""Any bytes given to an annotation or table parser give a parsed result or the project's own error, never another
exception (hypothesis writes the files)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affectlab.datasets.affwild2 import read_affwild2_expression
from affectlab.datasets.cexpr import read_cexpr_annotation, read_fold_list
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.modality_tables import read_modality_table
from affectlab.datasets.raer import read_annotation

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
