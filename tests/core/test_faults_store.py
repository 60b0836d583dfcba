"""Faults of the storage under the artifact store and the SQLite caches: a full disk and a read-only store give a
one-line ragopt error naming the store and what was being written, and corrupt nothing (earlier artifacts still
load and verify, no half-built folder or temporary file is left, the caches keep every committed row and pass
SQLite's integrity check).

How each fault is made (no root privileges, no special file system):
- disk full, simulated: the build raises the ``OSError(ENOSPC)`` the kernel would;
- disk full, real: a child process lowers its file size limit (``RLIMIT_FSIZE``, which binds root too) with
  SIGXFSZ ignored, so writes past the limit fail in the kernel with EFBIG, through numpy and SQLite's own I/O;
- read-only store: ``chmod a-w`` when not root; as root (where permissions do not stop writes) the calls that
  create or replace files under the store (``os.mkdir``, ``os.open`` for writing, ``os.rename``, ``os.replace``)
  are patched to fail with EROFS, as a read-only mount would. SQLite opens files in C, beyond such patches:
  the read-only SQLite case runs only where chmod works (not root).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ragopt.errors import ArtifactError
from ragopt.rerankers.score_cache import PairScoreCache, text_hash
from ragopt.store import ArtifactStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file system semantics")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(root: Path) -> list[str]:
    """Temporary folders and files of unfinished writes."""
    return [p.name for p in root.rglob("*") if p.name.startswith((".tmp-", ".old-")) or p.name.endswith(".tmp")]


def _old_artifact(store: ArtifactStore):
    return store.get_or_create("thing", {"v": 1}, 1, lambda d: np.save(d / "a.npy", np.arange(5)))


def test_disk_full_during_a_build_is_a_clear_error_and_corrupts_nothing(tmp_path):
    store = ArtifactStore(tmp_path)
    old = _old_artifact(store)
    before = _tree(tmp_path)

    def build(d: Path):
        (d / "part.bin").write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(d / "more.bin"))

    with pytest.raises(ArtifactError) as err:
        store.get_or_create("thing", {"v": 2}, 1, build)
    msg = str(err.value)
    key = store.key("thing", {"v": 2}, 1)
    assert f"cannot write thing artifact {key} in {tmp_path}" in msg and "No space left on device" in msg
    assert "\n" not in msg and isinstance(err.value.__cause__, OSError)
    assert _tree(tmp_path) == before and not _leftovers(tmp_path)  # the half-built folder is gone
    again = store.find("thing", {"v": 1}, 1)  # checks sizes and checksums
    assert again.path == old.path and np.load(again.file("a.npy")).tolist() == [0, 1, 2, 3, 4]
    # an error that is not about the storage is passed on as it is
    with pytest.raises(OSError) as other:
        store.get_or_create("thing", {"v": 3}, 1, lambda d: open(d / "missing" / "x"))
    assert other.value.errno == errno.ENOENT and not _leftovers(tmp_path)


CHILD = """
import resource, signal, sys
import numpy as np
from ragopt.errors import RagoptError
from ragopt.rerankers.score_cache import PairScoreCache, text_hash
from ragopt.store import ArtifactStore

store = ArtifactStore(sys.argv[1])
store.get_or_create("thing", {"v": 1}, 1, lambda d: np.save(d / "a.npy", np.arange(5)))
cache = PairScoreCache.for_spec(store.root, {"model": "m"})
cache.put([text_hash("q")] * 10, [text_hash(f"d{i}") for i in range(10)], [float(i) for i in range(10)])

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
for what, write in (
    ("store", lambda: store.get_or_create("thing", {"v": 2}, 1, lambda d: np.save(d / "big.npy", np.zeros(10**6)))),
    ("cache", lambda: cache.put(
        [text_hash(f"q{i}") for i in range(20000)], [text_hash(f"p{i}") for i in range(20000)], [1.0] * 20000
    )),
):
    try:
        write()
        print(what, "no error")
    except RagoptError as e:
        print(what, type(e).__name__, e)
    except BaseException as e:
        print(what, "NOT A RAGOPT ERROR", type(e).__name__, e)
"""


def test_a_real_write_limit_gives_clear_errors_and_corrupts_nothing(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    store = ArtifactStore(tmp_path)
    key = store.key("thing", {"v": 2}, 1)
    assert lines["store"].startswith(f"ArtifactError cannot write thing artifact {key} in {tmp_path}"), lines
    assert "short write" in lines["store"]  # numpy reports no errno for it
    cache = PairScoreCache.for_spec(tmp_path, {"model": "m"})
    assert lines["cache"].startswith(f"ArtifactError cannot write the cache {cache.path}"), lines
    assert "disk I/O error" in lines["cache"] and "rollback" not in lines["cache"]  # SQLite's own error, not masked
    assert not _leftovers(tmp_path)
    assert [a.manifest["spec"] for a in store.list("thing")] == [{"v": 1}]
    assert np.load(store.find("thing", {"v": 1}, 1).file("a.npy")).tolist() == [0, 1, 2, 3, 4]
    # the cache file is sound and holds exactly the rows committed before the failed transaction
    assert sqlite3.connect(cache.path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(cache) == 10
    scores, _ = cache.get([text_hash("q")] * 10, [text_hash(f"d{i}") for i in range(10)])
    assert scores.tolist() == [float(i) for i in range(10)]
    cache.put([text_hash("q")], [text_hash("new")], [0.5])  # and takes writes again once there is room
    assert len(cache) == 11


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(root)``: make the store under ``root`` refuse writes (see the module docstring)."""
    undo: list[Path] = []

    def make(root: Path) -> None:
        root = Path(root).resolve()
        if os.geteuid() != 0:
            for p in [root, *root.rglob("*")]:
                if p.is_dir():
                    p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
                    undo.append(p)
            return

        def inside(path) -> bool:
            try:
                return Path(os.fsdecode(path)).resolve().is_relative_to(root)
            except (TypeError, ValueError):
                return False

        def refuse(path) -> None:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

        real = {name: getattr(os, name) for name in ("mkdir", "open", "rename", "replace")}
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

        def mkdir(path, *a, **k):
            return refuse(path) if inside(path) and not os.path.isdir(path) else real["mkdir"](path, *a, **k)

        def open_(path, flags, *a, **k):
            return refuse(path) if flags & writes and inside(path) else real["open"](path, flags, *a, **k)

        def move(name):
            return lambda src, dst, *a, **k: (
                refuse(dst) if inside(src) or inside(dst) else real[name](src, dst, *a, **k)
            )

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "rename", move("rename"))
        monkeypatch.setattr(os, "replace", move("replace"))

    yield make
    for p in undo:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_store_serves_what_it_has_and_refuses_new_artifacts_clearly(tmp_path, read_only):
    store = ArtifactStore(tmp_path)
    old = _old_artifact(store)
    cache = PairScoreCache.for_spec(tmp_path, {"model": "m"})
    cache.put([text_hash("q")], [text_hash("d")], [2.0])
    cache.close()  # checkpoints and removes the WAL files now, not whenever the object is collected
    before = _tree(tmp_path)
    read_only(tmp_path)

    again = _old_artifact(store)  # what is there is read, nothing is written
    assert not again.created and again.path == old.path
    calls = []
    with pytest.raises(ArtifactError) as err:
        store.get_or_create("thing", {"v": 2}, 1, lambda d: calls.append(d))
    key = store.key("thing", {"v": 2}, 1)
    msg = str(err.value)
    assert f"cannot write thing artifact {key} in {tmp_path}" in msg and "writable folder" in msg
    assert calls == []  # refused before any work was done
    with pytest.raises(ArtifactError, match=r"cannot write the ce-scores cache \w+ in .*writable folder"):
        PairScoreCache.for_spec(tmp_path, {"model": "another"})
    assert _tree(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; SQLite's own file I/O cannot be patched")
def test_a_read_only_sqlite_cache_is_read_and_refuses_writes_clearly(tmp_path, read_only):
    cache = PairScoreCache.for_spec(tmp_path, {"model": "m"})
    cache.put([text_hash("q")], [text_hash("d")], [2.0])
    cache.close()
    for p in tmp_path.rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    read_only(tmp_path)
    cache = PairScoreCache.for_spec(tmp_path, {"model": "m"})
    with pytest.raises(ArtifactError, match=rf"cannot write the cache {cache.path}"):
        cache.put([text_hash("q")], [text_hash("e")], [1.0])
