"""Atomic file writes: a uniquely named temporary sibling, fsync, then rename over the target.

Readers see the old file or the new one, never a partial one; two processes writing the same path at once
each write their own temporary file (``mkstemp``), so neither can rename the other's half-written bytes.
Every file ragopt writes (artifacts, shards, manifests, runs, configs, reports) goes through here.

:func:`write_error` turns the ``OSError`` of a write that the storage refused (disk full, quota, file size
limit, read-only or not writable) into an :class:`~ragopt.errors.ArtifactError` that names what was being
written and where, and says what to do.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ragopt.errors import ArtifactError

__all__ = ["atomic_write", "atomic_write_text", "atomic_save_npy", "not_a_file", "write_error"]

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def atomic_write(
    path: str | os.PathLike, save: Callable[[IO[Any]], Any], mode: str = "wb", encoding: str | None = None
) -> Path:
    """Write ``path`` through ``save(file_object)`` (binary unless ``mode="w"``), atomically. Its folder is made if
    missing; a path that is a folder, or whose folder is a file, is an ArtifactError naming it."""
    path = Path(path)
    if path.is_dir():  # os.replace would refuse it only after the whole file was written
        raise ArtifactError(f"cannot write {path}: it is a folder; name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        in_the_way = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise ArtifactError(f"cannot write {path}: {in_the_way} is a file, not a folder") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, mode, encoding=encoding, **({"newline": ""} if "b" not in mode else {})) as f:
            save(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def not_a_file(path: str | os.PathLike, what: str) -> str:
    """Why ``path`` cannot be read as a ``what`` ("pipeline file", "queries file"...): "a folder, not a pipeline
    file" or "pipeline file not found"."""
    return f"a folder, not a {what}" if Path(path).is_dir() else f"{what} not found"


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text), mode="w", encoding=encoding)


def atomic_save_npy(path: str | os.PathLike, arr: Any) -> Path:
    """``np.save`` (no pickle) to ``path`` atomically."""
    import numpy as np

    return atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))


def write_error(e: BaseException, what: str, where: str | os.PathLike) -> ArtifactError | None:
    """The ArtifactError for an ``OSError`` ``e`` raised while writing ``what`` (e.g. ``"embeddings artifact
    /store/embeddings/ab12"``) into ``where`` (the store or cache folder), when the storage refused the write:
    disk full, quota or file size limit (ENOSPC, EDQUOT, EFBIG, or numpy's errno-less short write), read-only or
    not writable (EROFS, EACCES, EPERM). None for any other error, which the caller re-raises as it is."""
    if not isinstance(e, OSError):
        return None
    # numpy's tofile (np.save) reports a short write without an errno: "<n> requested and <m> written"
    short = e.errno is None and re.fullmatch(r"\d+ requested and \d+ written", str(e)) is not None
    if not short and e.errno not in _FULL | _NOT_WRITABLE:
        return None
    reason = f"short write, {e}: the disk is full or a file size limit was hit" if short else e.strerror
    reason = reason or os.strerror(e.errno)
    if e.filename is not None:
        reason += f": {e.filename}"
    if short or e.errno in _FULL:
        hint = "free some space (or raise the limit) or point --index-dir / RAGOPT_INDEX_DIR at another disk"
    else:
        hint = "point --index-dir / RAGOPT_INDEX_DIR at a writable folder"
    return ArtifactError(f"cannot write {what} in {where} ({reason}); nothing was kept: {hint}, then run again")
