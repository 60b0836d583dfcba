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

import hashlib
import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragopt._io import atomic_write_text
from ragopt.config import canonical_json, config_hash
from ragopt.errors import ArtifactError

__all__ = ["PairScoreCache", "text_hash", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_CHUNK = 500  # pairs per lookup statement


def text_hash(text: str) -> str:
    """sha1 of the UTF-8 text: the key of one query or passage."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


class PairScoreCache:
    """Scores by ``(qhash, dhash)`` in a SQLite file (``path=None``: in memory, for this object only)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def __repr__(self) -> str:
        return f"PairScoreCache({str(self.path) if self.path else ':memory:'!r})"

    @classmethod
    def for_spec(cls, root: str | os.PathLike, spec: dict[str, Any]) -> PairScoreCache:
        """The cache file of a scorer ``spec`` under ``root`` (``<root>/ce-scores/<key>.sqlite``)."""
        key = config_hash({"format": FORMAT_VERSION, "spec": spec}, length=24)
        folder = Path(root) / "ce-scores"
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / f"{key}.json"
        if not meta.is_file():
            atomic_write_text(meta, json.dumps({"format": FORMAT_VERSION, "spec": spec}, indent=1, sort_keys=True))
        elif json.loads(meta.read_text("utf-8")).get("spec") != json.loads(canonical_json(spec)):
            raise ArtifactError(f"score cache {meta} holds another scorer's spec; delete it")
        return cls(folder / f"{key}.sqlite")

    @property
    def exists(self) -> bool:
        return self.path is not None and self.path.is_file()

    # ------------------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked worker opens its own connection
            target = str(self.path) if self.path is not None else ":memory:"
            conn = sqlite3.connect(target, timeout=60.0, isolation_level=None, check_same_thread=False)
            if self.path is not None:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS scores (qhash TEXT NOT NULL, dhash TEXT NOT NULL, "
                "score REAL NOT NULL, truncated INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (qhash, dhash))"
                " WITHOUT ROWID"
            )
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get(self, qhashes: Sequence[str], dhashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, truncated)`` of each pair: float32 (NaN where absent) and bool."""
        n = len(qhashes)
        scores = np.full(n, np.nan, np.float32)
        trunc = np.zeros(n, bool)
        if n == 0 or (self.path is not None and not self.path.exists()):
            return scores, trunc
        db = self._db()
        by_query: dict[str, list[int]] = {}
        for i, q in enumerate(qhashes):
            by_query.setdefault(q, []).append(i)
        for q, rows in by_query.items():
            for start in range(0, len(rows), _CHUNK):
                part = rows[start : start + _CHUNK]
                where: dict[str, list[int]] = {}
                for i in part:
                    where.setdefault(dhashes[i], []).append(i)
                marks = ",".join("?" * len(where))
                for d, s, t in db.execute(
                    f"SELECT dhash, score, truncated FROM scores WHERE qhash = ? AND dhash IN ({marks})", (q, *where)
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
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        if self.path is not None and not self.path.exists():
            return 0
        return int(self._db().execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
