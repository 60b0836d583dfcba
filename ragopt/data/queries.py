"""Query files a user hands in (``ragopt search --queries FILE``): JSON lines or ``id<TAB>text`` lines."""

from __future__ import annotations

import os
from pathlib import Path

from ragopt._io import not_a_file
from ragopt.data.datasets import load_queries
from ragopt.errors import DataError
from ragopt.types import Queries

__all__ = ["read_queries_file"]


def read_queries_file(path: str | os.PathLike) -> Queries:
    """The queries of ``path``, in file order.

    A ``.jsonl`` or ``.gz`` file holds one ``{"_id": ..., "text": ...}`` object a line (the BEIR
    ``queries.jsonl``, read by :func:`~ragopt.data.datasets.load_queries`); any other file holds
    ``id<TAB>text`` lines (blank lines skipped; the text may itself contain tabs). Raises
    :class:`DataError` naming the file, and the line of a malformed one."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {not_a_file(p, 'queries file')}")
    if p.suffix in (".jsonl", ".gz"):
        return load_queries(p)
    ids, texts = [], []
    try:
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                qid, sep, text = line.partition("\t")
                if not sep:
                    raise DataError(f"{p}:{n}: expected 'id<TAB>text'")
                ids.append(qid)
                texts.append(text)
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not valid UTF-8 ({e.reason})") from None
    return Queries(ids, texts)
