"""Resumable encoding in shards: the loop behind dense embeddings and SPLADE document vectors.

Texts are encoded ``shard_size`` at a time; each finished shard is written atomically (temporary file,
fsync, rename) into a ``partial`` folder next to the artifact being built, so an interrupted build resumes
from the shards already on disk. ``shards.json`` records the shard size and text count: a folder left by
another layout is cleared rather than mixed in. The caller assembles the finished shards into the artifact
and removes the folder.

Where the shards are encoded is the *shard runner's* business: by default this process encodes them one after
another; inside ``with use_shard_runner(runner):`` a caller that describes its work as a picklable
:class:`RemoteShardJob` (dense embeddings do) has its missing shards encoded by ``runner`` instead, e.g. on a Ray
cluster (:mod:`ragopt.distributed`). Each finished shard is still written here, by this process, in the same
files and order, so a distributed build leaves the same shards, the same artifact and the same resume points as
a single-machine one.
"""

from __future__ import annotations

import contextlib
import contextvars
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ragopt._io import atomic_write, atomic_write_text
from ragopt._progress import progress_enabled
from ragopt.config import canonical_json
from ragopt.errors import ArtifactError

__all__ = ["encode_in_shards", "RemoteShardJob", "ShardRunner", "use_shard_runner", "current_shard_runner"]


@dataclass(frozen=True)
class RemoteShardJob:
    """What a worker elsewhere needs to encode shards exactly as this process would: the encoder's config
    (``to_config()``, rebuilt with ``from_config`` there), the kind of texts (``"doc"``) and the encoder's
    :meth:`~ragopt.encoders.Encoder.spec` here, which the worker's own must equal (same model files, precision,
    prefix) or the build stops. ``on_stats(counts, seconds)`` receives each shard's call counts."""

    encoder_config: dict[str, Any]
    kind: str
    spec: dict[str, Any]
    on_stats: Callable[[dict[str, int], dict[str, float]], None] | None = field(default=None, compare=False)


class ShardRunner(Protocol):
    """Encodes the shards ``todo`` (``(index, texts)`` pairs) of ``job`` somewhere, yielding ``(index, output)``
    as each finishes (any order). The caller writes each output to its shard file as it arrives."""

    def run(self, job: RemoteShardJob, todo: Sequence[tuple[int, Sequence[str]]]) -> Iterator[tuple[int, Any]]: ...


_RUNNER: contextvars.ContextVar[ShardRunner | None] = contextvars.ContextVar("ragopt_shard_runner", default=None)


@contextlib.contextmanager
def use_shard_runner(runner: ShardRunner | None) -> Iterator[ShardRunner | None]:
    """Within the block, shard loops that describe their work as a :class:`RemoteShardJob` encode on ``runner``."""
    token = _RUNNER.set(runner)
    try:
        yield runner
    finally:
        _RUNNER.reset(token)


def current_shard_runner() -> ShardRunner | None:
    """The runner of the innermost :func:`use_shard_runner` block, or None (encode here)."""
    return _RUNNER.get()


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
    remote: RemoteShardJob | None = None,
) -> tuple[list[Path], list[int], int]:
    """Encode ``texts`` into the shard files of ``partial``; return ``(paths, starts, width)``.

    ``probe(path, rows)``: the width of a complete shard of ``rows`` texts at ``path``, or None (absent,
    short or unreadable: it is encoded again). ``encode(texts, bar)``: one shard's output (it may advance the
    progress bar, None when there is none, by the texts it encodes; otherwise the bar moves when the shard is
    done). ``save(file_object, output)`` writes it; ``width(output)`` is its second dimension. Shards of
    different widths (left by another model) are an ``ArtifactError`` and the folder is cleared.

    ``remote``: this work described for a :class:`ShardRunner`; when a runner is in use (:func:`use_shard_runner`)
    the missing shards are encoded by it, and written here as they arrive."""
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
    runner = current_shard_runner() if remote is not None else None
    try:
        if runner is None or not todo:
            for i in todo:
                before = bar.n if bar is not None else 0
                out = encode(texts[starts[i] : starts[i] + rows[i]], bar)
                atomic_write(paths[i], lambda fh, out=out: save(fh, out))
                widths.add(width(out))
                if bar is not None and bar.n == before:
                    bar.update(rows[i])
        else:
            want = {i: rows[i] for i in todo}
            for i, out in runner.run(remote, [(i, texts[starts[i] : starts[i] + rows[i]]) for i in todo]):
                n_out = int(out.shape[0]) if hasattr(out, "shape") else -1
                if want.pop(i, None) != n_out:
                    raise ArtifactError(
                        f"shard runner {type(runner).__name__} returned {n_out} rows for {what} shard {i} of {partial}, "
                        f"expected {rows[i] if 0 <= i < len(rows) else 'no such shard'}"
                    )
                atomic_write(paths[i], lambda fh, out=out: save(fh, out))
                widths.add(width(out))
                if bar is not None:
                    bar.update(rows[i])
            if want:
                raise ArtifactError(
                    f"shard runner {type(runner).__name__} finished without {what} shards {sorted(want)[:10]} of "
                    f"{partial}; the shards written so far are kept, run again to resume"
                )
    finally:
        if bar is not None:
            bar.close()
    if len(widths) != 1:
        shutil.rmtree(partial, ignore_errors=True)
        raise ArtifactError(
            f"partial {what} in {partial} have mixed widths {sorted(widths)}; they were removed, run again"
        )
    return paths, starts, widths.pop()
