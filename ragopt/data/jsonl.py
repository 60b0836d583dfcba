"""Streaming JSON-lines reader and atomic writer (``.jsonl`` or ``.jsonl.gz``); the atomic text-lines writer
that TREC files use too; the checks of a record's id and text fields that every loader applies."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ragopt._io import atomic_write
from ragopt.errors import DataError

__all__ = ["read_jsonl", "write_jsonl", "write_lines", "record_id", "record_text", "as_text"]


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


_MISSING: Any = object()


def record_id(obj: dict[str, Any], key: str, where: str, what: str, default: Any = _MISSING) -> str:
    """``obj[key]`` as an id: a non-blank string, or an integer (written as its digits). Anything else (null, a
    float, a boolean, a list or object) would become an id that no qrels line or request can name, so it is a
    :class:`DataError` naming ``where`` (``file:line``) and ``what`` the record is; a missing key too, unless a
    ``default`` is given."""
    v = obj.get(key, default)
    if v is _MISSING:
        raise DataError(f'{where}: {what} record has no "{key}"')
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise DataError(f'{where}: {what} "{key}" must be a string or an integer, got {_kind(v)}')
    out = str(v)
    if not out.strip():
        raise DataError(f'{where}: {what} "{key}" is empty')
    return out


def record_text(obj: dict[str, Any], key: str, where: str, what: str) -> str:
    """``obj[key]`` as text (:func:`as_text`; missing is "")."""
    return as_text(obj.get(key), where, f'{what} "{key}"')


def as_text(v: Any, where: str, what: str) -> str:
    """A JSON value as text: a string; a number is written out; null is ""; a boolean, list or object is a
    :class:`DataError` naming ``where`` and ``what`` (it would be indexed or compared as its Python repr)."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise DataError(f"{where}: {what} must be a string, got {_kind(v)}")


def _kind(v: Any) -> str:
    names = {type(None): "null", bool: "a boolean", float: "a float", list: "a list", dict: "an object"}
    return names.get(type(v), type(v).__name__)


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
