"""read_jsonl / write_jsonl: streaming, error locations, gzip, atomic writes."""

from __future__ import annotations

import gzip

import pytest

from ragopt.data import read_jsonl, write_jsonl
from ragopt.errors import DataError


def test_roundtrip_and_line_numbers(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n   \n{"a": "é"}\n', encoding="utf-8")
    assert list(read_jsonl(p)) == [(1, {"a": 1}), (4, {"a": "é"})]


def test_gzip_roundtrip(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    write_jsonl(p, [{"_id": "1", "text": "ü"}, {"_id": 2}])
    with gzip.open(p, "rt", encoding="utf-8") as f:  # really gzip
        assert f.readline().startswith('{"_id": "1"')
    assert [o for _, o in read_jsonl(p)] == [{"_id": "1", "text": "ü"}, {"_id": 2}]


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n')
    it = read_jsonl(p)
    assert next(it) == (1, {"a": 1})
    with pytest.raises(DataError) as e:
        list(it)
    assert "bad.jsonl:3:" in str(e.value)


def test_non_object_line(tmp_path):
    p = tmp_path / "arr.jsonl"
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"arr\.jsonl:2: expected a JSON object, got list"):
        list(read_jsonl(p))


def test_invalid_utf8_and_missing_file(tmp_path):
    p = tmp_path / "bin.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"bin\.jsonl:2"):
        list(read_jsonl(p))
    with pytest.raises(DataError, match="nope.jsonl"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


def test_write_is_atomic(tmp_path):
    p = tmp_path / "out.jsonl"
    write_jsonl(p, [{"a": 1}])

    def boom():
        yield {"a": 2}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(p, boom())
    assert [o for _, o in read_jsonl(p)] == [{"a": 1}]  # the old file is intact
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.jsonl"]  # no temp file left
