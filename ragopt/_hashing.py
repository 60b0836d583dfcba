"""Content hashes of files and of model folders: what artifact manifests and model fingerprints are made of."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["sha256_file", "model_files", "update_sampled"]

_MIB = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a whole file, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_MIB), b""):
            h.update(chunk)
    return h.hexdigest()


def model_files(folder: Path) -> Iterator[tuple[Path, str, int]]:
    """``(file, relative POSIX path, size)`` of every file below ``folder``, sorted, skipping hidden names."""
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder)
        if not any(part.startswith(".") for part in rel.parts):
            yield f, rel.as_posix(), f.stat().st_size


def update_sampled(h: Any, path: Path, size: int) -> None:
    """Feed ``h`` the first, middle and last MiB of a file of ``size`` bytes (how fingerprints read weights:
    reading GBs on every start would cost seconds)."""
    with open(path, "rb") as fh:
        for off in (0, max(0, size // 2 - _MIB // 2), max(0, size - _MIB)):
            fh.seek(off)
            h.update(fh.read(_MIB))
