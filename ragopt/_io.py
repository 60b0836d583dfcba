"""Atomic file writes: a uniquely named temporary sibling, fsync, then rename over the target.

Readers see the old file or the new one, never a partial one; two processes writing the same path at once
each write their own temporary file (``mkstemp``), so neither can rename the other's half-written bytes.
Every file ragopt writes (artifacts, shards, manifests, runs, configs, reports) goes through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text", "atomic_save_npy"]


def atomic_write(
    path: str | os.PathLike, save: Callable[[IO[Any]], Any], mode: str = "wb", encoding: str | None = None
) -> Path:
    """Write ``path`` through ``save(file_object)`` (binary unless ``mode="w"``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text), mode="w", encoding=encoding)


def atomic_save_npy(path: str | os.PathLike, arr: Any) -> Path:
    """``np.save`` (no pickle) to ``path`` atomically."""
    import numpy as np

    return atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))
