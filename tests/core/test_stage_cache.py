"""The stage-output cache writes an output to the store only when that pays (``persist="auto"``)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from ragopt.cache import StageCache
from ragopt.config import param
from ragopt.kernels.topk import topk_rows
from ragopt.pipeline import Stage
from ragopt.registry import register
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Queries

CORPUS = Corpus(["a", "b", "c"], ["red apple", "green apple", "red car"], name="toy-cache")
QUERIES = Queries(["q1", "q2"], ["red", "apple"])


@register("test_slow_lookup")
class SlowLookup(Stage):
    """Word-overlap retrieval that takes ``delay`` seconds: a stand-in for an expensive or a cheap stage."""

    provides = frozenset({"candidates"})
    delay: float = param(0.0)

    def transform(self, batch):
        time.sleep(self.delay)
        s = np.array([[sum(w in t.split() for w in q.split()) for t in self.corpus.texts] for q in batch.queries.texts])
        idx, sc = topk_rows(s.astype(np.float32), 3)
        batch.stats.add("lookups", len(batch))
        return batch.with_candidates(idx, sc, self.corpus)


def _run(stage, cache):
    with cache.active():
        return cache.run(stage, Batch(QUERIES))


def _on_disk(store: ArtifactStore) -> int:
    root = store.root / "stage-output"
    return sum(1 for p in root.glob("*/manifest.json")) if root.exists() else 0


@pytest.mark.parametrize(
    ("policy", "delay", "written"),
    [("auto", 0.0, 0), ("auto", 0.6, 1), ("always", 0.0, 1), ("never", 0.6, 0)],
)
def test_outputs_are_written_only_when_it_pays(tmp_path, policy, delay, written):
    store = ArtifactStore(tmp_path)
    stage = SlowLookup(delay=delay).fit(CORPUS)
    cache = StageCache(store, persist=policy)
    cache._write_scale = 100.0  # writing estimated at 0.4 s: above the instant stage, below the slow one, on any load
    first = _run(stage, cache)
    assert _on_disk(store) == written
    assert cache.persisted == written and cache.kept_in_memory == (1 - written if policy == "auto" else 0)
    # the same process serves it from memory either way
    again = _run(stage, cache)
    assert cache.hits == 1 and again.stats.counts.get("lookups", 0) == 0
    # a new process (empty memory) finds it on disk only if it was written
    other = StageCache(store, persist=policy)
    other._write_scale = 100.0
    third = _run(stage, other)
    assert other.hits == written and (third.stats.counts.get("lookups", 0) == 0) == bool(written)
    np.testing.assert_array_equal(third.doc_idx, first.doc_idx)


def test_write_estimate_follows_measured_writes(tmp_path):
    cache = StageCache(ArtifactStore(tmp_path), persist="always")
    before = cache.write_estimate(10_000)
    assert before > 0
    _run(SlowLookup().fit(CORPUS), cache)
    assert cache.persisted == 1 and cache.counters()["cache_write_s"] > 0
    # the estimate moved towards what the write took (bounded both ways)
    assert cache.write_estimate(10_000) != before
    assert 0.1 * before <= cache.write_estimate(10_000) <= 100 * before


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="persist must be one of auto, always, never"):
        StageCache(None, persist="sometimes")


@register("test_counted_lookup")
class CountedLookup(SlowLookup):
    """``lookups_asked`` measures what the configuration asks for; ``lookups`` (the parent's) the work paid."""

    work_counters = ("lookups_asked",)

    def transform(self, batch):
        batch.stats.add("lookups_asked", 10 * len(batch))
        return super().transform(batch)


def test_work_counters_are_replayed_on_hits_paid_counters_are_not(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    stage = CountedLookup().fit(CORPUS)
    first = _run(stage, StageCache(store, persist="always")).stats.counts
    assert first["lookups_asked"] == 20 and first["lookups"] == 2
    cache = StageCache(store, persist="always")
    for source in ("disk", "memory"):  # a new cache reads the stored entry, then serves it from memory
        c = _run(stage, cache).stats.counts
        assert c["cache_hits:test_counted_lookup"] == 1, source
        assert c["lookups_asked"] == 20 and c.get("lookups", 0) == 0, source
    assert cache.hits == 2 and cache.misses == 0


def test_an_entry_stored_without_the_work_counters_is_recomputed(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    stage = CountedLookup().fit(CORPUS)
    with monkeypatch.context() as m:  # as an older version stored it: no counters kept
        m.setattr(CountedLookup, "work_counters", ())
        _run(stage, StageCache(store, persist="always"))
    assert _on_disk(store) == 1
    cache = StageCache(store, persist="always")
    c = _run(stage, cache).stats.counts
    assert cache.misses == 1 and c["lookups"] == 2 and c["lookups_asked"] == 20


def test_a_hit_replays_the_seconds_the_output_took(tmp_path):
    store = ArtifactStore(tmp_path)
    stage = SlowLookup(delay=0.05).fit(CORPUS)
    first = _run(stage, StageCache(store, persist="always")).stats
    assert first.cached_seconds == 0
    cache = StageCache(store, persist="always")
    for source in ("disk", "memory"):
        t0 = time.perf_counter()
        s = _run(stage, cache).stats
        took = time.perf_counter() - t0
        assert s.counts["cache_hits:test_slow_lookup"] == 1 and s.counts.get("lookups", 0) == 0, source
        # what a study reports as its latency: what the output took when computed, not the hit's own time
        assert s.cached_seconds >= 0.05 > took, source
    # an entry stored without the time it took (an older version) is recomputed
    manifest = next((store.root / "stage-output").glob("*/manifest.json"))
    doc = json.loads(manifest.read_text())
    doc.pop("seconds")
    manifest.write_text(json.dumps(doc))
    other = StageCache(store, persist="always")
    s = _run(stage, other).stats
    assert other.misses == 1 and s.counts["lookups"] == 2 and s.cached_seconds == 0
