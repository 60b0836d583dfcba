"""Query files a user hands in: JSONL (BEIR queries.jsonl) or id<TAB>text."""

from __future__ import annotations

import gzip

import pytest

from ragopt.data import read_queries_file
from ragopt.errors import DataError


def test_tsv(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("q1\twhat is bm25\n\n  \nq2\ttabs\tinside text\nq3\t\n", encoding="utf-8")
    q = read_queries_file(p)
    assert q.ids == ["q1", "q2", "q3"]
    assert q.texts == ["what is bm25", "tabs\tinside text", ""]


def test_any_suffix_but_jsonl_and_gz_is_tsv(tmp_path):
    p = tmp_path / "queries.txt"
    p.write_text("7\tsept\n", encoding="utf-8")
    assert (read_queries_file(str(p)).ids, read_queries_file(p).texts) == (["7"], ["sept"])


def test_jsonl_and_gz(tmp_path):
    lines = '{"_id": 1, "text": "one"}\n{"_id": "b", "text": "two", "metadata": {}}\n'
    (tmp_path / "q.jsonl").write_text(lines, encoding="utf-8")
    with gzip.open(tmp_path / "q.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(lines)
    for name in ("q.jsonl", "q.jsonl.gz"):
        q = read_queries_file(tmp_path / name)
        assert (q.ids, q.texts) == (["1", "b"], ["one", "two"])


def test_errors_name_file_and_line(tmp_path):
    with pytest.raises(DataError, match="queries file not found"):
        read_queries_file(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="a folder, not a queries file$"):  # was "queries file not found"
        read_queries_file(tmp_path)
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\tok\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv:2: expected 'id<TAB>text'"):
        read_queries_file(bad)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("q1\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.tsv: not valid UTF-8"):
        read_queries_file(latin)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dup\.jsonl:2: duplicate _id 'a'"):
        read_queries_file(dup)
