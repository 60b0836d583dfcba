"""Stage protocol, operators and the batch data shape."""

from __future__ import annotations

import numpy as np
import pytest

from ragopt.config import from_config
from ragopt.errors import ConfigError, StageError
from ragopt.kernels.topk import topk_rows
from ragopt.ops import Cutoff
from ragopt.pipeline import Pipeline, Stage, run_batched
from ragopt.registry import register
from ragopt.types import Batch, Corpus, Queries


@register("test_lookup")
class Lookup(Stage):
    """Scores = number of query words in the document (a tiny exact retriever for tests)."""

    provides = frozenset({"candidates"})

    def transform(self, batch):
        texts = self.corpus.texts
        scores = np.array(
            [[sum(w in t.split() for w in q.split()) for t in texts] for q in batch.queries.texts], dtype=np.float32
        )
        scores[scores == 0] = -np.inf
        idx, sc = topk_rows(scores, 10)
        batch.stats.add("lookups", len(batch))
        return batch.with_candidates(idx, sc, self.corpus)


CORPUS = Corpus(["a", "b", "c", "d"], ["red apple", "green apple pie", "red car", "blue sky"], name="toy")


def test_topk_rows_sorted_with_padding_and_stable_ties():
    s = np.array([[1.0, 3.0, 3.0, -np.inf], [0.5, -np.inf, -np.inf, -np.inf]], np.float32)
    idx, sc = topk_rows(s, 3)
    assert idx.tolist() == [[1, 2, 0], [0, -1, -1]]
    assert sc[0].tolist() == [3.0, 3.0, 1.0]
    assert np.isneginf(sc[1, 1:]).all()


def test_chain_cut_and_stats():
    p = Lookup() >> Cutoff(k=2)
    assert isinstance(p, Pipeline) and len(p.stages) == 2
    p.fit(CORPUS)
    out = p.search(["red apple", "sky"])
    assert out.depth == 2
    assert out.ranked(0) == [("a", 2.0), ("b", 1.0)]
    assert out.ranked(1) == [("d", 1.0)]
    assert out.stats.counts["lookups"] == 2
    assert set(out.stats.seconds) == {"0:test_lookup", "1:cutoff"}
    assert out.to_run() == {"0": {"a": 2.0, "b": 1.0}, "1": {"d": 1.0}}


def test_mod_operator_and_flattening():
    p = (Lookup() >> Cutoff(k=3)) % 1
    assert [s.type_name for s in p.stages] == ["test_lookup", "cutoff", "cutoff"]
    p.fit(CORPUS)
    assert p.search("red apple").ranked(0) == [("a", 2.0)]


@register("test_needs_answers")
class NeedsAnswers(Stage):
    requires = frozenset({"queries", "answers"})


def test_pipeline_checks_requirements_before_running():
    # checked at construction: the second stage needs answers nobody provides
    with pytest.raises(ConfigError, match=r"stages\[1\]: stage 'test_needs_answers' needs \['answers'\]"):
        Lookup() >> NeedsAnswers()
    # a cutoff-led pipeline is legal on its own (it may follow a retriever), but not on bare queries
    tail = Pipeline(stages=[Cutoff(k=1)])
    with pytest.raises(StageError, match="needs \\['candidates'\\].*put a retriever"):
        tail.transform(Batch(Queries.from_texts("x")))
    with pytest.raises(ConfigError, match="at least one stage"):
        Pipeline(stages=[])


def test_not_fitted_error():
    with pytest.raises(StageError, match="not fitted"):
        Lookup().search("red")


def test_run_batched_matches_single_batch():
    stage = Lookup().fit(CORPUS)
    qs = Queries.from_texts(["red", "apple", "blue sky", "car", "pie"])
    one = run_batched(stage, Batch(qs))
    parts = run_batched(stage, Batch(qs), batch_size=2, progress=False)
    assert np.array_equal(one.doc_idx, parts.doc_idx) and np.array_equal(one.scores, parts.scores)
    assert parts.queries.ids == qs.ids
    assert parts.stats.counts["lookups"] == 5
    assert np.array_equal(run_batched(stage, Batch(qs), batch_size=np.int64(3)).doc_idx, one.doc_idx)


@pytest.mark.parametrize("k", [-1, 1.5, None, True])
def test_a_cut_that_is_not_a_count_is_refused(k):
    # -1 kept all but the last candidate (a slice), 1.5 raised numpy's TypeError
    batch = Lookup().fit(CORPUS).search(["red", "car"])
    with pytest.raises(ConfigError, match=r"^k: a cutoff must be an integer >= 0, got "):
        batch.cut(k)
    assert batch.cut(np.int64(1)).doc_idx.shape == (2, 1) and batch.cut(0).doc_idx.shape == (2, 0)


@pytest.mark.parametrize("size", [-5, 1.5, "2", None, True])
def test_run_batched_refuses_a_batch_size_that_is_not_a_count(size):
    # -5 ran everything at once; 1.5 and "2" raised TypeErrors from range() and the comparison
    stage = Lookup().fit(CORPUS)
    with pytest.raises(ConfigError, match=r"^batch_size: must be an integer >= 0 \(0: all queries at once\), got "):
        stage.search(["red", "car"], batch_size=size)


def test_batch_shape_validation():
    q = Queries.from_texts(["a", "b"])
    with pytest.raises(StageError, match="together"):
        Batch(q, CORPUS, doc_idx=np.zeros((2, 1), np.int64))
    with pytest.raises(StageError, match="3 candidate rows for 2 queries"):
        Batch(q, CORPUS, np.zeros((3, 1), np.int64), np.zeros((3, 1), np.float32))


def test_to_run_aggregates_passages_to_documents():
    passages = Corpus(["d1#0", "d1#1", "d2#0"], ["x", "y", "z"], parent_ids=["d1", "d1", "d2"])
    b = Batch(Queries(["q"], ["x"]), passages, np.array([[1, 2, 0]]), np.array([[3.0, 2.0, 1.0]], np.float32))
    assert b.to_run("max") == {"q": {"d1": 3.0, "d2": 2.0}}
    assert b.to_run("sum") == {"q": {"d1": 4.0, "d2": 2.0}}


def test_corpus_fingerprint_is_content_based():
    a = Corpus(["1", "2"], ["x", "y"])
    b = Corpus(["1", "2"], ["x", "y"])
    c = Corpus(["1", "2"], ["x", "y!"])
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert Corpus(["1"], ["ab"], ["t"]).fingerprint != Corpus(["1"], ["b"], ["ta"]).fingerprint


def test_pipeline_config_round_trip():
    p = Lookup() >> Cutoff(k=4)
    assert from_config(p.to_config()) == p


def test_topk_rows_breaks_ties_at_the_cut_by_lowest_column():
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = rng.integers(0, 4, size=(3, 50)).astype(np.float32)
        k = int(rng.integers(1, 10))
        idx, sc = topk_rows(s, k)
        ref = np.array([np.lexsort((np.arange(50), -row))[:k] for row in s])
        assert np.array_equal(idx, ref)


def test_progress_env_variable_overrides_terminal_detection(monkeypatch):
    from ragopt._progress import progress_enabled

    monkeypatch.setenv("RAGOPT_PROGRESS", "1")
    assert progress_enabled(None) is True and progress_enabled(False) is False
    monkeypatch.setenv("RAGOPT_PROGRESS", "off")
    assert progress_enabled(None) is False and progress_enabled(True) is True
