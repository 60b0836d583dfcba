"""Resumable encoding in shards: the loop behind dense embeddings and SPLADE document vectors.

Texts are encoded ``shard_size`` at a time; each finished shard is written atomically (temporary file,
fsync, rename) into a ``partial`` folder next to the artifact being built, so an interrupted build resumes
from the shards already on disk. ``shards.json`` records the shard size and text count: a folder left by
another layout is cleared rather than mixed in. The caller assembles the finished shards into the artifact
and removes the folder.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ragopt._io import atomic_write, atomic_write_text
from ragopt._progress import progress_enabled
from ragopt.config import canonical_json
from ragopt.errors import ArtifactError

__all__ = ["encode_in_shards"]


def encode_in_shards(
    texts: Sequence[str],
    partial: Path,
    shard_size: int,
    *,
    suffix: str,
    probe: Callable[[Path, int], int | None],
    encode: Callable[[Sequence[str], Any], Any],
    save: Callable[[Any, Any], None],
    width: Callable[[Any], int],
    desc: str,
    unit: str,
    what: str,
    progress: bool | None,
) -> tuple[list[Path], list[int], int]:
    """Encode ``texts`` into the shard files of ``partial``; return ``(paths, starts, width)``.

    ``probe(path, rows)``: the width of a complete shard of ``rows`` texts at ``path``, or None (absent,
    short or unreadable: it is encoded again). ``encode(texts, bar)``: one shard's output (it may advance the
    progress bar, None when there is none, by the texts it encodes; otherwise the bar moves when the shard is
    done). ``save(file_object, output)`` writes it; ``width(output)`` is its second dimension. Shards of
    different widths (left by another model) are an ``ArtifactError`` and the folder is cleared."""
    partial.mkdir(parents=True, exist_ok=True)
    meta = partial / "shards.json"
    want = canonical_json({"shard_size": shard_size, "n": len(texts)})
    if meta.is_file() and meta.read_text("utf-8") != want:  # left by another shard size: start over
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    if not meta.is_file():
        atomic_write_text(meta, want)
    starts = list(range(0, len(texts), shard_size))
    paths = [partial / f"shard-{i:06d}{suffix}" for i in range(len(starts))]
    rows = [min(shard_size, len(texts) - s) for s in starts]
    widths: set[int] = set()
    todo = []
    for i, (p, n) in enumerate(zip(paths, rows)):
        w = probe(p, n)
        if w is None:
            todo.append(i)
        else:
            widths.add(w)
    bar = None
    if progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(texts), initial=len(texts) - sum(rows[i] for i in todo), desc=desc, unit=unit, file=sys.stderr
        )
    try:
        for i in todo:
            before = bar.n if bar is not None else 0
            out = encode(texts[starts[i] : starts[i] + rows[i]], bar)
            atomic_write(paths[i], lambda fh, out=out: save(fh, out))
            widths.add(width(out))
            if bar is not None and bar.n == before:
                bar.update(rows[i])
    finally:
        if bar is not None:
            bar.close()
    if len(widths) != 1:
        shutil.rmtree(partial, ignore_errors=True)
        raise ArtifactError(
            f"partial {what} in {partial} have mixed widths {sorted(widths)}; they were removed, run again"
        )
    return paths, starts, widths.pop()
