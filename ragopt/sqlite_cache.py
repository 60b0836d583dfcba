"""What the persistent SQLite caches share (LLM calls, :mod:`ragopt.llm.cache`; pair scores,
:mod:`ragopt.rerankers.score_cache`): one file per key under ``<store.root>/<kind>/``, and its connection.

:func:`keyed_file` names the file of a key document (``<root>/<kind>/<hash>.sqlite``) and keeps the document
beside it (``<hash>.json``), refusing a file whose document says it belongs to something else.
:class:`SQLiteCache` opens the file (``path=None``: in memory, for this object only) in WAL mode, so several
processes (tuning workers) read and write one file; a forked worker opens its own connection; writes are
one transaction each (:meth:`SQLiteCache._write`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragopt._io import atomic_write_text, write_error
from ragopt.config import canonical_json, config_hash
from ragopt.errors import ArtifactError

__all__ = ["SQLiteCache", "keyed_file", "text_hash"]


def keyed_file(root: str | os.PathLike, kind: str, doc: dict[str, Any], mismatch: str) -> Path:
    """``<root>/<kind>/<key>.sqlite``, ``key`` a hash of ``doc``, which is written beside it as ``<key>.json``.

    An existing ``<key>.json`` that is not ``doc`` raises ArtifactError: ``mismatch`` with ``{meta}`` (its
    path) filled in."""
    key = config_hash(doc, length=24)
    folder = Path(root) / kind
    meta = folder / f"{key}.json"
    if not meta.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(meta, json.dumps(doc, indent=1, sort_keys=True))
        except OSError as e:
            err = write_error(e, f"the {kind} cache {key}", root)
            if err is None:
                raise
            raise err from e
    elif json.loads(meta.read_text("utf-8")) != json.loads(canonical_json(doc)):
        raise ArtifactError(mismatch.format(meta=meta))
    return folder / f"{key}.sqlite"


def text_hash(text: str) -> str:
    """sha1 of the UTF-8 text: the key of one text (a query, a passage, a prompt) in a cache row."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


class SQLiteCache:
    """A SQLite cache file. Subclasses name the table of cached rows (``TABLE``; what :func:`len` counts), its
    ``COLUMNS`` and primary ``KEY`` (comma-separated), and the statements that create any further table
    (``EXTRA_SCHEMA``)."""

    TABLE = ""
    COLUMNS = ""
    KEY = ""
    EXTRA_SCHEMA: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path) if self.path else ':memory:'!r})"

    @property
    def exists(self) -> bool:
        return self.path is not None and self.path.is_file()

    def _absent(self) -> bool:
        """Whether the file is not there (yet): nothing to read, and no reason to create it."""
        return self.path is not None and not self.path.exists()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked worker opens its own connection
            target = str(self.path) if self.path is not None else ":memory:"
            conn = sqlite3.connect(target, timeout=60.0, isolation_level=None, check_same_thread=False)
            if self.path is not None:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.TABLE} ({self.COLUMNS}, PRIMARY KEY ({self.KEY})) WITHOUT ROWID"
            )
            for statement in self.EXTRA_SCHEMA:
                conn.execute(statement)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _write(self, fill: Callable[[sqlite3.Connection], Any]) -> None:
        """Run ``fill(connection)`` in one transaction (rolled back if it raises). A write the storage refuses
        (disk full, read-only, I/O error) is an ArtifactError naming the file; the rows committed before stay."""
        with self._lock:
            try:
                db = self._db()
                db.execute("BEGIN IMMEDIATE")
                try:
                    fill(db)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:  # a failed COMMIT (disk full) may have rolled back already
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as e:
                if "locked" in str(e) or "busy" in str(e):  # another writer held the file past the timeout
                    raise
                raise ArtifactError(
                    f"cannot write the cache {self.path or ':memory:'} ({e}); the rows written before are kept: "
                    "free some space, or point --index-dir / RAGOPT_INDEX_DIR at a writable folder, then run again"
                ) from e

    def __len__(self) -> int:
        if self._absent():
            return 0
        with self._lock:
            return int(self._db().execute(f"SELECT COUNT(*) FROM {self.TABLE}").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
