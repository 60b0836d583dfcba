"""Stage-output cache: trials that share upstream configuration reuse what was computed before.

While a :class:`StageCache` is active (``with cache.active(): ...``), every stage run through
:func:`ragopt.pipeline.run_stage` (pipelines and fusion do) is looked up by a key chained from its input
(the queries, or the key of the stage before) and its own cache spec (config + corpus fingerprint).
Retrievers are cached *by depth*: their ``top_k`` is left out of the key, results are stored at the depth
computed, and a request for fewer candidates is served by cutting; so a trial that changes only ``top_k``,
a cutoff or fusion weights neither re-encodes nor re-searches. Entries live in memory (LRU) and, with a
store, on disk as ``stage-output`` artifacts shared by every process that uses the same store (distributed
tuning workers, resumed studies).

Writing an output costs time too (two arrays, a manifest, fsync). With ``persist="auto"`` (the default) an
output goes to disk only when computing it took longer than writing it is expected to take, an estimate
that starts from a fixed guess and follows the writes actually measured; cheaper outputs stay in memory
and another process recomputes them. ``"always"`` and ``"never"`` force either way.

A hit replays what the output cost when it was computed: the stage's ``work_counters`` (what the configuration
asks for: PRP comparisons, prompt tokens) and its seconds (``Stats.cached_seconds``: the transform's time plus
the time of the LLM calls the LLM cache served inside it), so that a trial's costs and ``latency_ms`` are its
configuration's, whoever computed them first. Paid counters (``llm_calls``, ``bm25_queries``) stay zero.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from ragopt.config import canonical_json, config_hash
from ragopt.errors import ArtifactError
from ragopt.types import Batch, Corpus

__all__ = ["StageCache", "active_cache", "batch_key"]

FORMAT_VERSION = 1
PERSIST_POLICIES = ("auto", "always", "never")
#: first guess of the cost of writing an output: fixed part (files, manifest, fsync) and bytes per second
_WRITE_OVERHEAD_S = 0.004
_WRITE_BYTES_PER_S = 300e6
#: a cached output: its depth, the batch, the stage's work counters and the seconds it took when it was computed
_Entry = tuple[int, Any, dict[str, int], float]
_ACTIVE: contextvars.ContextVar[StageCache | None] = contextvars.ContextVar("ragopt_stage_cache", default=None)


def active_cache() -> StageCache | None:
    return _ACTIVE.get()


def batch_key(batch: Any) -> str:
    """Content key of a batch's state: set by the cache on its outputs, else from the queries."""
    return batch.key or f"queries:{batch.queries.fingerprint}"


class StageCache:
    """Memory LRU of stage outputs, optionally backed by an :class:`~ragopt.store.ArtifactStore`."""

    def __init__(self, store: Any = None, max_items: int = 256, persist: bool | str = "auto"):
        if persist is True:
            persist = "auto"
        elif persist is False:
            persist = "never"
        if persist not in PERSIST_POLICIES:
            raise ValueError(f"persist must be one of {', '.join(PERSIST_POLICIES)}, got {persist!r}")
        self.store = store
        self.policy = persist if store is not None else "never"
        self.persist = self.policy != "never"  # disk lookups
        self.max_items = max_items
        self._mem: OrderedDict[str, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.seconds_computing = 0.0
        self.persisted = 0
        self.kept_in_memory = 0  # outputs cheaper to recompute than to write
        self.seconds_writing = 0.0
        self._write_scale = 1.0  # measured / modelled write time, followed as writes are made

    def __repr__(self) -> str:
        return f"StageCache(hits={self.hits}, misses={self.misses}, store={self.store!r})"

    @contextlib.contextmanager
    def active(self) -> Iterator[StageCache]:
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def counters(self) -> dict[str, float]:
        return {
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "cache_compute_s": round(self.seconds_computing, 4),
            "cache_persisted": self.persisted,
            "cache_kept_in_memory": self.kept_in_memory,
            "cache_write_s": round(self.seconds_writing, 4),
        }

    def write_estimate(self, nbytes: int) -> float:
        """Expected seconds to persist an output of ``nbytes`` bytes (follows the writes measured so far)."""
        return self._write_scale * (_WRITE_OVERHEAD_S + nbytes / _WRITE_BYTES_PER_S)

    # ------------------------------------------------------------------------------------------
    def run(self, stage: Any, batch: Any) -> Any:
        """``stage.transform(batch)``, or its cached result."""
        if getattr(stage, "cache_transparent", False):  # containers: their children are cached
            return stage.transform(batch)
        spec = stage.cache_spec()
        if spec is None:  # not deterministic / not cacheable: breaks the key chain
            out = stage.transform(batch)
            out.key = None
            return out
        depth_field = getattr(stage, "cache_depth_field", None)
        want = int(getattr(stage, depth_field)) if depth_field else None
        key = config_hash({"in": batch_key(batch), "stage": spec}, length=32)
        if not getattr(stage, "cache_outputs", True):  # cheap stages: chain the key, store nothing
            out = stage.transform(batch)
            out.key = key
            return out
        work = tuple(getattr(stage, "work_counters", ()))
        entry = self._lookup(key, stage, batch, work)
        if entry is not None and (want is None or entry[0] >= want):
            self.hits += 1
            batch.stats.add(f"cache_hits:{stage.type_name}")
            for name, n in entry[2].items():  # what the configuration asks for, as when it was computed
                batch.stats.add(name, n)
            batch.stats.cached_seconds += entry[3]  # and what it took: latency without the cache
            out = entry[1]
            out = type(out)(batch.queries, out.corpus, out.doc_idx, out.scores, out.answers, batch.stats)
            if want is not None and out.depth > want:
                out = out.cut(want)
        else:
            self.misses += 1
            before = {name: batch.stats.counts.get(name, 0) for name in work}
            replayed = batch.stats.cached_seconds
            t0 = time.perf_counter()
            out = stage.transform(batch)
            dt = time.perf_counter() - t0
            self.seconds_computing += dt
            counters = {name: int(out.stats.counts.get(name, 0) - before[name]) for name in work}
            # its time without caches: what it took, plus what the LLM calls a cache served had taken
            seconds = dt + out.stats.cached_seconds - replayed
            self._save(key, want if want is not None else out.depth, out, stage, counters, dt, seconds)
        out.key = f"{key}@{want}" if want is not None else key
        return out

    # ------------------------------------------------------------------------------------------
    def _lookup(self, key: str, stage: Any, batch: Any, work: tuple[str, ...] = ()) -> _Entry | None:
        if key in self._mem:
            self._mem.move_to_end(key)
            return self._mem[key]
        if not self.persist:
            return None
        spec = {"key": key}
        path = self.store.path("stage-output", spec, FORMAT_VERSION)
        if not (path / "manifest.json").is_file():
            return None
        try:
            art = self.store.open(path, "stage-output", spec, FORMAT_VERSION)
        except ArtifactError:
            return None  # a damaged entry is recomputed (and replaced) rather than trusted
        depth = art.manifest.get("depth")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
            return None  # a damaged manifest: recompute
        fp = art.manifest.get("corpus")
        corpus = _find_corpus(fp, stage, batch)
        if corpus is None:
            return None
        doc_idx = np.load(path / "doc_idx.npy", allow_pickle=False)
        scores = np.load(path / "scores.npy", allow_pickle=False)
        if doc_idx.ndim != 2 or doc_idx.shape != scores.shape or doc_idx.shape[0] != len(batch.queries):
            return None
        counters = art.manifest.get("counters", {})
        if not isinstance(counters, dict) or any(not isinstance(counters.get(name), int) for name in work):
            return None  # written without the stage's work counters (an older entry): recompute
        seconds = art.manifest.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
            return None  # written without the time it took (an older entry): recompute
        batch_out = Batch(batch.queries, corpus, doc_idx, scores, None)
        entry = (depth, batch_out, {n: counters[n] for n in work}, float(seconds))
        self._remember(key, entry)
        return entry

    def _save(
        self,
        key: str,
        depth: int,
        out: Any,
        stage: Any,
        counters: dict[str, int],
        compute_s: float,
        seconds: float,
    ) -> None:
        """Keep an output; ``compute_s``: what recomputing it would cost now (the write decision), ``seconds``:
        what it costs without any cache (replayed on hits)."""
        snapshot = Batch(out.queries, out.corpus, out.doc_idx, out.scores, out.answers)
        self._remember(key, (depth, snapshot, counters, seconds))
        if self.policy == "never" or out.doc_idx is None or out.answers is not None:
            return
        nbytes = int(out.doc_idx.nbytes) + int(np.asarray(out.scores).nbytes)
        modelled = _WRITE_OVERHEAD_S + nbytes / _WRITE_BYTES_PER_S
        if self.policy == "auto" and compute_s < self._write_scale * modelled:
            self.kept_in_memory += 1
            return

        def build(d):
            np.save(d / "doc_idx.npy", out.doc_idx, allow_pickle=False)
            np.save(d / "scores.npy", out.scores, allow_pickle=False)
            return {
                "depth": depth,
                "corpus": out.corpus.fingerprint,
                "stage": stage.type_name,
                "counters": counters,
                "seconds": seconds,
            }

        t0 = time.perf_counter()
        self.store.get_or_create("stage-output", {"key": key}, FORMAT_VERSION, build, rebuild=True)
        took = time.perf_counter() - t0
        self.seconds_writing += took
        self.persisted += 1
        # follow the measured cost: a moving average of measured / modelled, kept within a sane range
        self._write_scale = min(max(0.7 * self._write_scale + 0.3 * took / modelled, 0.1), 100.0)

    def _remember(self, key: str, entry: _Entry) -> None:
        self._mem[key] = entry
        self._mem.move_to_end(key)
        while len(self._mem) > self.max_items:
            self._mem.popitem(last=False)


def _fitted_corpus(stage: Any) -> Corpus | None:
    return stage.corpus if stage.is_fitted else None


def _find_corpus(fingerprint: str | None, stage: Any, batch: Any) -> Any:
    fitted = _fitted_corpus(stage)
    cands = [fitted, getattr(fitted, "parent", None), batch.corpus, getattr(batch.corpus, "parent", None)]
    for c in cands:
        if c is not None and c.fingerprint == fingerprint:
            return c
    return None


def spec_for(stage: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Default cache spec: the stage's config (minus ``exclude``) and its fitted corpus fingerprint."""
    corpus = _fitted_corpus(stage)
    cfg = {k: v for k, v in stage.to_config().items() if k not in exclude}
    return {"config": canonical_json(cfg), "corpus": corpus.fingerprint if corpus is not None else None}
