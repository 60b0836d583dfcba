"""Streaming JSON-lines reader and atomic writer (``.jsonl`` or ``.jsonl.gz``)."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from ragopt.errors import DataError

__all__ = ["read_jsonl", "write_jsonl"]


def _open_text(path: Path, mode: str, gz: bool) -> IO[str]:
    if gz:
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_no, obj)`` for each non-blank line (numbered from 1).

    Malformed JSON, a line that is not an object, or undecodable bytes raise :class:`DataError`
    naming ``file:line``; a missing file raises :class:`DataError` naming it."""
    path = Path(path)
    loads = json.loads
    line_no = 0
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
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
    """Write one JSON object a line, atomically (a temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _open_text(tmp_path, "w", path.name.endswith(".gz")) as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False))
                f.write("\n")
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path
