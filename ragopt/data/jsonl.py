"""Streaming JSON-lines reader and atomic writer (``.jsonl`` or ``.jsonl.gz``); the atomic text-lines writer
that TREC files use too."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ragopt._io import atomic_write
from ragopt.errors import DataError

__all__ = ["read_jsonl", "write_jsonl", "write_lines"]


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_no, obj)`` for each non-blank line (numbered from 1).

    Malformed JSON, a line that is not an object, or undecodable bytes raise :class:`DataError`
    naming ``file:line``; a missing file raises :class:`DataError` naming it."""
    path = Path(path)
    loads = json.loads
    line_no = 0
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{line_no}: not valid UTF-8 ({e.reason})") from None
                if line_no == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    continue
                try:
                    obj = loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{line_no}: invalid JSON: {e.msg} (column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
                yield line_no, obj
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as e:  # e.g. a truncated or corrupt .gz
        raise DataError(f"{path}:{line_no + 1}: cannot read: {e}") from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write one JSON object a line (UTF-8; gzip-compressed for ``.gz``), atomically."""
    return write_lines(path, (json.dumps(rec, ensure_ascii=False) + "\n" for rec in records))


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write text ``lines`` (each with its own ``\\n``) as UTF-8, gzip-compressed when ``path`` ends in ``.gz``,
    atomically through :func:`ragopt._io.atomic_write`: readers see the old file or the new one."""
    path = Path(path)

    def save(f: IO[bytes]) -> None:
        out = gzip.GzipFile(filename=path.name, mode="wb", fileobj=f) if path.name.endswith(".gz") else f
        for line in lines:
            out.write(line.encode("utf-8"))
        if out is not f:
            out.close()  # writes the gzip trailer; f stays open for atomic_write to sync

    return atomic_write(path, save)
