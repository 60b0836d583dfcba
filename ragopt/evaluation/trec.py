"""TREC run and qrels files.

Run lines are ``qid Q0 docid rank score tag``, qrels lines ``qid 0 docid relevance``. Rows are written best
first in trec_eval's order (score descending, ties by document id descending), atomically
(:func:`ragopt.data.jsonl.write_lines`). Paths ending in ``.gz`` are gzip-compressed.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TypeVar

from ragopt._io import not_a_file
from ragopt.data.jsonl import write_lines
from ragopt.errors import ConfigError, DataError
from ragopt.types import MAX_GRADE, MIN_GRADE, Qrels, Run

__all__ = ["write_run", "read_run", "write_qrels", "read_qrels_trec", "ranked"]

PathLike = str | os.PathLike
V = TypeVar("V")


def ranked(row: dict[str, float]) -> list[tuple[str, float]]:
    """``[(docid, score), ...]`` in trec_eval's order: score descending, ties by docid descending."""
    return sorted(row.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def write_run(run: Run, path: PathLike, tag: str = "ragopt", max_rank: int | None = None) -> None:
    """Write ``run`` as a TREC run file, at most ``max_rank`` rows per query."""
    _check_id(tag, "tag", ConfigError)
    if max_rank is not None and max_rank < 1:
        raise ConfigError("max_rank", f"must be >= 1, got {max_rank}")

    def line(qid: str, rank: int, doc: str, score: float) -> str:
        score = float(score)
        if not math.isfinite(score):
            raise DataError(f"run: query {qid!r}, document {doc!r} has a non-finite score {score}")
        return f"{qid} Q0 {doc} {rank} {score!r} {tag}\n"

    _write_table(path, run, lambda row: ranked(row)[:max_rank], line)


def read_run(path: PathLike) -> Run:
    """Read a TREC run file; DataError naming file and line on a malformed line or a repeated (qid, docid)."""

    def score(fields: list[str], line: str, seen: float | None) -> float:
        qid, _, doc, rank, value, _ = fields
        try:
            int(rank)
            out = float(value)
        except ValueError:
            raise ValueError(f"rank must be an integer and score a number, got {line!r}") from None
        if out != out:
            raise ValueError(f"document {doc!r} of query {qid!r} has the score NaN, which cannot be ranked")
        if seen is not None:
            raise ValueError(f"document {doc!r} appears twice for query {qid!r}")
        return out

    return _read_table(path, "qid Q0 docid rank score tag", score)


def write_qrels(qrels: Qrels, path: PathLike) -> None:
    """Write ``qrels`` as a TREC qrels file (``qid 0 docid relevance``)."""
    _write_table(path, qrels, lambda rels: rels.items(), lambda qid, _, doc, rel: f"{qid} 0 {doc} {int(rel)}\n")


def read_qrels_trec(path: PathLike) -> Qrels:
    """Read a TREC qrels file; DataError naming file and line on a malformed line or a conflicting repeat."""

    def grade(fields: list[str], line: str, seen: int | None) -> int:
        qid, _, doc, rel = fields
        try:
            out = int(rel)
        except ValueError:
            raise ValueError(f"relevance must be an integer, got {rel!r}") from None
        if not MIN_GRADE <= out <= MAX_GRADE:  # the evaluator's memory grows with the largest grade (types.py)
            raise ValueError(f"relevance {rel!r} is outside the grades {MIN_GRADE}..{MAX_GRADE}")
        if seen not in (None, out):
            raise ValueError(f"query {qid!r}, document {doc!r} judged {seen} and {out}")
        return out

    return _read_table(path, "qid 0 docid relevance", grade)


def _write_table(
    path: PathLike,
    table: Mapping[str, Mapping[str, V]],
    rows: Callable[[Mapping[str, V]], Iterable[tuple[str, V]]],
    line: Callable[[str, int, str, V], str],
) -> None:
    """Write ``line(qid, rank, docid, value)`` for each query of ``table`` and each of its ``rows(row)``
    (ranks from 1), checking the ids."""

    def lines() -> Iterator[str]:
        for qid, row in table.items():
            _check_id(qid, "query id")
            for rank, (doc, value) in enumerate(rows(row), start=1):
                _check_id(doc, f"document id (query {qid!r})")
                yield line(qid, rank, doc, value)

    write_lines(path, lines())


def _read_table(path: PathLike, layout: str, value: Callable[[list[str], str, V | None], V]) -> dict[str, dict[str, V]]:
    """``{qid: {docid: value}}`` of a file whose lines are the fields ``layout`` (query id first, document id
    third). ``value(fields, line, seen)`` is a line's value, ``seen`` the value of the same (qid, docid) on an
    earlier line (None: none); it raises a ValueError saying what is wrong, which becomes a DataError naming
    file and line."""
    n = len(layout.split())
    table: dict[str, dict[str, V]] = {}
    for lineno, fields, line in _records(path):
        if len(fields) != n:
            raise DataError(f"{path}:{lineno}: expected {layout!r} ({n} fields), got {line!r}")
        row = table.setdefault(fields[0], {})
        try:
            row[fields[2]] = value(fields, line, row.get(fields[2]))
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: {e}") from None
    return table


def _check_id(value: object, what: str, error: type[Exception] = DataError) -> None:
    text = str(value)
    if not text or len(text.split()) != 1 or text != text.strip():
        if error is ConfigError:
            raise ConfigError(what, f"must be non-empty without whitespace, got {text!r}")
        raise DataError(f"{what} {text!r} is empty or contains whitespace: TREC files are whitespace-separated")


def _open(path: PathLike, mode: str, gz: bool) -> IO[str]:
    if gz:
        return gzip.open(path, mode + "t", encoding="utf-8", newline="\n")
    return open(path, mode, encoding="utf-8", newline="\n")


def _records(path: PathLike) -> Iterator[tuple[int, list[str], str]]:
    """(line number, fields, line) of every non-blank line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {not_a_file(p, 'file')}")
    lineno = 0
    try:
        with _open(p, "r", p.suffix == ".gz") as f:
            for lineno, line in enumerate(f, start=1):
                parts = line.split()
                if parts:
                    yield lineno, parts, line.rstrip("\n")
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise DataError(f"{p}:{lineno + 1}: cannot decode ({e})") from None
