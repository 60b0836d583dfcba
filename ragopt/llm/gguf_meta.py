"""The scalar metadata of a GGUF file (its key-value header), read without loading the tensors or the vocabulary.

``gguf.GGUFReader`` builds a numpy view of every element of every array (49k vocabulary strings for SmolLM2),
which takes about 3 s for a 100 MB file; this reader walks the header once and skips the arrays (tens of ms).
Layout, from the GGUF specification (ggml's ``docs/gguf.md``): the magic ``GGUF``, a uint32 version (2 or 3),
uint64 tensor and key-value counts, then each key-value pair as a string key, a uint32 value type and the value.
Strings are a uint64 byte length and UTF-8 bytes; arrays are a uint32 element type, a uint64 count and the
elements. Little-endian only (big-endian files are rare and refused by name).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from ragopt.errors import ArtifactError

__all__ = ["read_metadata"]

#: value type -> struct format of a scalar (8: string, 9: array are read apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Every scalar and string key of the file's header (arrays are skipped: their keys are absent)."""
    path = Path(path)
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _parse(m, path)
    except (OSError, ValueError) as e:  # ValueError: mmap of an empty file
        raise ArtifactError(f"cannot read GGUF metadata of {path}: {e}") from e


def _parse(m: mmap.mmap, path: Path) -> dict[str, Any]:
    def bad(why: str) -> ArtifactError:
        return ArtifactError(f"{path} is not a readable GGUF file: {why}")

    if len(m) < 24 or m[:4] != b"GGUF":
        raise bad("no GGUF magic at the start")
    version = struct.unpack_from("<I", m, 4)[0]
    if version not in (2, 3):
        raise bad(f"version {version} (big-endian, or not 2/3)")
    n_kv = struct.unpack_from("<Q", m, 16)[0]
    pos = 24

    def take(fmt: str) -> Any:
        nonlocal pos
        (v,) = struct.unpack_from("<" + fmt, m, pos)
        pos += struct.calcsize(fmt)
        return v

    def string() -> str:
        nonlocal pos
        n = take("Q")
        if pos + n > len(m):
            raise bad(f"a string runs past the end of the file at byte {pos}")
        s = m[pos : pos + n].decode("utf-8", "replace")
        pos += n
        return s

    def skip_array() -> None:
        nonlocal pos
        kind, count = take("I"), take("Q")
        if kind in _SCALARS:
            pos += count * struct.calcsize(_SCALARS[kind])
        elif kind == _STRING:
            for _ in range(count):
                pos += 8 + struct.unpack_from("<Q", m, pos)[0]
        elif kind == _ARRAY:
            for _ in range(count):
                skip_array()
        else:
            raise bad(f"unknown array element type {kind} at byte {pos}")

    out: dict[str, Any] = {}
    try:
        for _ in range(n_kv):
            key, kind = string(), take("I")
            if kind in _SCALARS:
                out[key] = take(_SCALARS[kind])
            elif kind == _STRING:
                out[key] = string()
            elif kind == _ARRAY:
                skip_array()
            else:
                raise bad(f"unknown value type {kind} for key {key!r}")
    except struct.error as e:
        raise bad(f"the header is cut short ({e})") from None
    return out
