"""TREC run and qrels files.

Run lines are ``qid Q0 docid rank score tag``, qrels lines ``qid 0 docid relevance``. Rows are written best
first in trec_eval's order (score descending, ties by document id descending), atomically
(:func:`ragopt.data.jsonl.write_lines`). Paths ending in ``.gz`` are gzip-compressed.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ragopt.data.jsonl import write_lines
from ragopt.errors import ConfigError, DataError
from ragopt.types import Qrels, Run

__all__ = ["write_run", "read_run", "write_qrels", "read_qrels_trec", "ranked"]

PathLike = str | os.PathLike


def ranked(row: dict[str, float]) -> list[tuple[str, float]]:
    """``[(docid, score), ...]`` in trec_eval's order: score descending, ties by docid descending."""
    return sorted(row.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def write_run(run: Run, path: PathLike, tag: str = "ragopt", max_rank: int | None = None) -> None:
    """Write ``run`` as a TREC run file, at most ``max_rank`` rows per query."""
    _check_id(tag, "tag", ConfigError)
    if max_rank is not None and max_rank < 1:
        raise ConfigError("max_rank", f"must be >= 1, got {max_rank}")

    def lines() -> Iterator[str]:
        for qid, row in run.items():
            _check_id(qid, "query id")
            for rank, (doc, score) in enumerate(ranked(row)[:max_rank], start=1):
                _check_id(doc, f"document id (query {qid!r})")
                score = float(score)
                if not math.isfinite(score):
                    raise DataError(f"run: query {qid!r}, document {doc!r} has a non-finite score {score}")
                yield f"{qid} Q0 {doc} {rank} {score!r} {tag}\n"

    write_lines(path, lines())


def read_run(path: PathLike) -> Run:
    """Read a TREC run file; DataError naming file and line on a malformed line or a repeated (qid, docid)."""
    run: Run = {}
    for lineno, parts, line in _records(path):
        if len(parts) != 6:
            raise DataError(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag' (6 fields), got {line!r}")
        qid, _, doc, rank, score, _ = parts
        try:
            int(rank)
            value = float(score)
        except ValueError:
            raise DataError(f"{path}:{lineno}: rank must be an integer and score a number, got {line!r}") from None
        row = run.setdefault(qid, {})
        if doc in row:
            raise DataError(f"{path}:{lineno}: document {doc!r} appears twice for query {qid!r}")
        row[doc] = value
    return run


def write_qrels(qrels: Qrels, path: PathLike) -> None:
    """Write ``qrels`` as a TREC qrels file (``qid 0 docid relevance``)."""

    def lines() -> Iterator[str]:
        for qid, rels in qrels.items():
            _check_id(qid, "query id")
            for doc, rel in rels.items():
                _check_id(doc, f"document id (query {qid!r})")
                yield f"{qid} 0 {doc} {int(rel)}\n"

    write_lines(path, lines())


def read_qrels_trec(path: PathLike) -> Qrels:
    """Read a TREC qrels file; DataError naming file and line on a malformed line or a conflicting repeat."""
    qrels: Qrels = {}
    for lineno, parts, line in _records(path):
        if len(parts) != 4:
            raise DataError(f"{path}:{lineno}: expected 'qid 0 docid relevance' (4 fields), got {line!r}")
        qid, _, doc, rel = parts
        try:
            grade = int(rel)
        except ValueError:
            raise DataError(f"{path}:{lineno}: relevance must be an integer, got {rel!r}") from None
        rels = qrels.setdefault(qid, {})
        if rels.get(doc, grade) != grade:
            raise DataError(f"{path}:{lineno}: query {qid!r}, document {doc!r} judged {rels[doc]} and {grade}")
        rels[doc] = grade
    return qrels


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
        raise DataError(f"{p}: no such file")
    lineno = 0
    try:
        with _open(p, "r", p.suffix == ".gz") as f:
            for lineno, line in enumerate(f, start=1):
                parts = line.split()
                if parts:
                    yield lineno, parts, line.rstrip("\n")
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise DataError(f"{p}:{lineno + 1}: cannot decode ({e})") from None
