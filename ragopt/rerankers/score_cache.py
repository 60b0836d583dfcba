"""Persistent cache of (query, passage) scores of one scoring model, so tuning never pays twice for a pair.

One SQLite file per *scorer key* (model identity and content fingerprint, max length, title use, activation,
precision: everything that changes a score), at ``<store.root>/ce-scores/<key>.sqlite``, with the key's
spec beside it in ``<key>.json``. Rows are ``(qhash, dhash, score, truncated)``: sha1 of the exact query and
passage texts fed to the model, the score, and whether the tokenised pair exceeded the model's max length.
WAL mode, so several processes (tuning workers) read and write one file; rows are committed after every
scoring batch, so an interrupted run keeps what it scored. Scores of one key are deterministic, so a pair
written twice by two workers is the same row (``INSERT OR IGNORE``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragopt.sqlite_cache import SQLiteCache, keyed_file, text_hash

__all__ = ["PairScoreCache", "text_hash", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_CHUNK = 500  # pairs per lookup statement


class PairScoreCache(SQLiteCache):
    """Scores by ``(qhash, dhash)`` in a SQLite file (``path=None``: in memory, for this object only)."""

    TABLE = "scores"
    COLUMNS = "qhash TEXT NOT NULL, dhash TEXT NOT NULL, score REAL NOT NULL, truncated INTEGER NOT NULL DEFAULT 0"
    KEY = "qhash, dhash"

    @classmethod
    def for_spec(cls, root: str | os.PathLike, spec: dict[str, Any]) -> PairScoreCache:
        """The cache file of a scorer ``spec`` under ``root`` (``<root>/ce-scores/<key>.sqlite``)."""
        doc = {"format": FORMAT_VERSION, "spec": spec}
        return cls(keyed_file(root, "ce-scores", doc, "score cache {meta} holds another scorer's spec; delete it"))

    # ------------------------------------------------------------------------------------------
    def get(self, qhashes: Sequence[str], dhashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, truncated)`` of each pair: float32 (NaN where absent) and bool."""
        n = len(qhashes)
        scores = np.full(n, np.nan, np.float32)
        trunc = np.zeros(n, bool)
        if n == 0 or self._absent():
            return scores, trunc
        by_query: dict[str, list[int]] = {}
        for i, q in enumerate(qhashes):
            by_query.setdefault(q, []).append(i)
        with self._lock:
            db = self._db()
            for q, rows in by_query.items():
                for start in range(0, len(rows), _CHUNK):
                    part = rows[start : start + _CHUNK]
                    where: dict[str, list[int]] = {}
                    for i in part:
                        where.setdefault(dhashes[i], []).append(i)
                    marks = ",".join("?" * len(where))
                    for d, s, t in db.execute(
                        f"SELECT dhash, score, truncated FROM scores WHERE qhash = ? AND dhash IN ({marks})",
                        (q, *where),
                    ):
                        for i in where[d]:
                            scores[i] = s
                            trunc[i] = bool(t)
        return scores, trunc

    def put(
        self,
        qhashes: Sequence[str],
        dhashes: Sequence[str],
        scores: Sequence[float],
        truncated: Sequence[bool] | None = None,
    ) -> None:
        """Store scores (one transaction)."""
        if len(qhashes) == 0:
            return
        truncated = truncated if truncated is not None else [False] * len(qhashes)
        rows = [(q, d, float(s), int(bool(t))) for q, d, s, t in zip(qhashes, dhashes, scores, truncated)]
        self._write(lambda db: db.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?)", rows))
