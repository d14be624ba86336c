"""The rules the GoEmotions and text-table readers follow, as their docstrings state them, on data built here."""

from __future__ import annotations

from collections import Counter

from affectlab.datasets.goemotions import GOEMOTIONS, RatedItem, agreed_labels


def agreed(*ratings: set[str], min_agreement: float = 0.5) -> list[str] | None:
    item = RatedItem("text", "here", [frozenset(r) for r in ratings])
    rows = list(agreed_labels({"a": item}, min_agreement, Counter()))
    return [GOEMOTIONS.classes[k] for k in rows[0][1]] if rows else None


def test_each_fine_emotion_needs_at_least_min_agreement_of_the_raters_before_any_ekman_mapping():
    assert agreed({"joy"}, {"amusement"}, {"neutral"}) is None  # joy's group has 2/3, but each fine label 1/3
    assert agreed({"anger"}, {"joy"}) == ["anger", "joy"]  # a tie keeps both
    assert agreed({"joy"}, {"joy"}, {"anger"}, {"neutral"}) == ["joy"]  # exactly half is enough


def test_read_texts_decodes_a_text_file_once(tmp_path, monkeypatch):
    from affectlab.datasets import text_tables

    path = tmp_path / "texts.txt"
    path.write_text("i am glad\n\n  so tired  \n", encoding="utf-8")
    decoded = []  # each time the file is read and decoded
    real = text_tables.read_text
    monkeypatch.setattr(text_tables, "read_text", lambda *args: decoded.append(args[0]) or real(*args))
    assert text_tables.read_texts(path) == ["i am glad", "so tired"]
    assert decoded == [path]


def test_a_text_file_with_tabs_is_one_text_per_line(tmp_path):
    from affectlab.datasets import text_tables

    path = tmp_path / "texts.txt"
    path.write_text("hello\tworld, I am happy\nsecond line\n", encoding="utf-8")
    assert text_tables.read_texts(path) == ["hello\tworld, I am happy", "second line"]
