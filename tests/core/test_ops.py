"""Reciprocal rank fusion and weighted score fusion."""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import numpy as np
import pytest

from ragopt.config import from_config, param
from ragopt.data.chunking import Aggregate, Chunker
from ragopt.errors import ConfigError, StageError
from ragopt.kernels.fusion import rrf_fuse, weighted_fuse
from ragopt.ops import RRF, Cutoff, WeightedFusion
from ragopt.pipeline import Pipeline, Stage
from ragopt.pipeline_io import load_pipeline, save_pipeline
from ragopt.registry import register
from ragopt.retrievers.bm25 import BM25
from ragopt.types import Batch, Corpus

CORPUS = Corpus(["d0", "d1", "d2", "d3", "d4"], ["a", "b", "c", "d", "e"], name="five")


@register("test_fixed_lists")
class FixedLists(Stage):
    """A fake retriever: the same candidate rows for every query (row i of ``docs`` for query i)."""

    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})

    docs: list[list[int]] = param(default_factory=list)
    scores: list[list[float]] = param(default_factory=list)

    def transform(self, batch: Batch) -> Batch:
        n, width = len(batch), max(len(r) for r in self.docs)
        doc_idx = np.full((n, width), -1, np.int64)
        scores = np.full((n, width), -np.inf, np.float32)
        for i in range(n):
            d, s = self.docs[i % len(self.docs)], self.scores[i % len(self.scores)]
            doc_idx[i, : len(d)] = d
            scores[i, : len(s)] = s
        batch.stats.add("fixed_lists_calls")
        return batch.with_candidates(doc_idx, scores, self.corpus)


@register("test_other_corpus")
class OtherCorpus(FixedLists):
    """A fake retriever that indexes some other corpus than the one it is fitted on."""

    def prepare_corpus(self, corpus: Corpus) -> Corpus:
        return Corpus(["x"], ["other"], name="other")


# A: d0 3, d1 2, d2 1      B: d2 10, d3 4
A = FixedLists(docs=[[0, 1, 2]], scores=[[3, 2, 1]])
B = FixedLists(docs=[[2, 3]], scores=[[10, 4]])


def run(stage: Stage, n_queries: int = 1) -> Batch:
    stage.fit(CORPUS)
    return stage.search([f"query {i}" for i in range(n_queries)])


def ranking(batch: Batch, row: int = 0) -> tuple[list[str], list[float]]:
    pairs = batch.ranked(row)
    return [d for d, _ in pairs], [s for _, s in pairs]


def test_rrf_exact_scores_and_ranking():
    ids, scores = ranking(run(RRF(inputs=[A, B])))
    assert ids == ["d2", "d0", "d1", "d3"]  # d1 and d3 tie at 1/62: ascending row
    assert scores == pytest.approx([1 / 61 + 1 / 63, 1 / 61, 1 / 62, 1 / 62], rel=1e-6)
    ids, scores = ranking(run(RRF(inputs=[A, B], k=0, weights=[1.0, 3.0])))
    assert ids == ["d2", "d3", "d0", "d1"]
    assert scores == pytest.approx([1 / 3 + 3, 1.5, 1.0, 0.5], rel=1e-6)
    ids, _ = ranking(run(RRF(inputs=[A, B], top_k=2)))
    assert ids == ["d2", "d0"]


@pytest.mark.parametrize(
    "normalize, weights, expected",
    [
        # min-max: A -> d0 1, d1 .5, d2 0; B -> d2 1, d3 0; missing documents get 0
        ("minmax", None, [("d0", 1.0), ("d2", 1.0), ("d1", 0.5), ("d3", 0.0)]),
        ("minmax", [1.0, 2.0], [("d2", 2.0), ("d0", 1.0), ("d1", 0.5), ("d3", 0.0)]),
        # z-score: A -> +-1.2247, 0 (min -1.2247); B -> d2 1, d3 -1 (min -1); missing get the list's min
        ("zscore", None, [("d0", 1.5**0.5 - 1), ("d2", 1 - 1.5**0.5), ("d1", -1.0), ("d3", -1 - 1.5**0.5)]),
        # raw scores, missing documents get the list's lowest score (A: 1, B: 4)
        ("none", None, [("d2", 11.0), ("d0", 7.0), ("d1", 6.0), ("d3", 5.0)]),
    ],
)
def test_weighted_fusion_exact(normalize, weights, expected):
    out = run(WeightedFusion(inputs=[A, B], normalize=normalize, weights=weights))
    ids, scores = ranking(out)
    assert ids == [d for d, _ in expected]
    assert scores == pytest.approx([s for _, s in expected], abs=1e-6)


def test_constant_and_empty_rows():
    const = FixedLists(docs=[[4, 1]], scores=[[2, 2]])
    empty = FixedLists(docs=[[]], scores=[[]])
    ids, scores = ranking(run(WeightedFusion(inputs=[const, B])))
    assert ids == ["d2", "d1", "d3", "d4"] and scores == pytest.approx([2.0, 1.0, 1.0, 1.0])
    ids, scores = ranking(run(WeightedFusion(inputs=[const, B], normalize="zscore")))
    assert scores == pytest.approx([1.0, -1.0, -1.0, -1.0]) and ids[0] == "d2"
    ids, scores = ranking(run(RRF(inputs=[empty, B])))
    assert ids == ["d2", "d3"] and scores == pytest.approx([1 / 61, 1 / 62])
    ids, scores = ranking(run(WeightedFusion(inputs=[empty, B])))
    assert ids == ["d2", "d3"] and scores == pytest.approx([1.0, 0.0])
    both_empty = run(RRF(inputs=[empty, empty.clone()]), n_queries=2)
    assert both_empty.doc_idx.shape == (2, 0) and both_empty.to_run() == {"0": {}, "1": {}}


def test_inputs_share_stats_and_many_queries():
    out = run(RRF(inputs=[A, B]), n_queries=3)
    assert out.stats.counts["fixed_lists_calls"] == 2
    assert any(k.startswith("rrf.inputs[1]") for k in out.stats.seconds)
    assert out.doc_idx.shape == (3, 4) and out.to_run()["2"] == out.to_run()["0"]


def test_plus_builds_flat_rrf():
    c = FixedLists(docs=[[4]], scores=[[1]])
    d = FixedLists(docs=[[3]], scores=[[1]])
    fused = A + B + c
    assert isinstance(fused, RRF) and fused.inputs == [A, B, c]
    assert (A + B) + (c + d) == RRF(inputs=[A, B, c, d])
    assert ranking(run(A + B))[0] == ranking(run(RRF(inputs=[A, B])))[0]
    chained = (A + B) % 2
    assert isinstance(chained, Pipeline) and isinstance(chained.stages[0], RRF)
    assert run(chained).depth == 2


def test_config_and_yaml_round_trip(tmp_path):
    rrf = RRF(inputs=[BM25(k1=1.2), Chunker(size=50, overlap=10) >> BM25() >> Aggregate()], k=10, weights=[1.0, 0.5])
    cfg = rrf.to_config()
    assert cfg["type"] == "rrf" and cfg["inputs"][1]["type"] == "pipeline"
    assert from_config(cfg) == rrf
    weighted = WeightedFusion(inputs=[A, B], normalize="zscore", weights=[2.0, 1.0], top_k=5)
    assert from_config(weighted.to_config()) == weighted
    for i, stage in enumerate((rrf, weighted, BM25() >> (A + B) >> Cutoff(k=3))):
        path = save_pipeline(stage, tmp_path / f"p{i}.yaml", name=f"p{i}")
        assert load_pipeline(path) == stage
    assert rrf.get_params()["inputs.0.k1"] == 1.2
    assert rrf.clone(**{"inputs.0.k1": 2.0}).inputs[0].k1 == 2.0
    yaml_text = (tmp_path / "p0.yaml").read_text()
    assert "type: rrf" in yaml_text and "k: 10" in yaml_text


def test_fusion_errors():
    with pytest.raises(ConfigError, match="inputs: rrf fuses at least two inputs, got 1"):
        RRF(inputs=[A])
    with pytest.raises(ConfigError, match="inputs: weighted fuses at least two"):
        from_config({"type": "weighted", "inputs": [{"type": "bm25"}]})
    with pytest.raises(ConfigError, match=r"inputs\[1\]: .*does not produce candidates"):
        RRF(inputs=[A, Chunker()])
    with pytest.raises(ConfigError, match=r"inputs\[0\]: a fusion input must start from queries"):
        RRF(inputs=[Cutoff(k=3), A])
    with pytest.raises(ConfigError, match=r"inputs\[1\]\.k1: expected a number"):
        load_yaml_text = {"pipeline": {"type": "rrf", "inputs": [{"type": "bm25"}, {"type": "bm25", "k1": "x"}]}}
        from ragopt.pipeline_io import pipeline_from_dict

        pipeline_from_dict(load_yaml_text)
    with pytest.raises(ConfigError, match="weights: expected 2 weights"):
        RRF(inputs=[A, B], weights=[1.0])
    with pytest.raises(ConfigError, match="weights: weights must be finite"):
        WeightedFusion(inputs=[A, B], weights=[0.0, 0.0])
    with pytest.raises(ConfigError, match="normalize"):
        WeightedFusion(inputs=[A, B], normalize="l2")
    with pytest.raises(StageError, match="the inputs must end on the same corpus"):
        RRF(inputs=[A, OtherCorpus(docs=[[0]], scores=[[1]])]).fit(CORPUS)
    with pytest.raises(StageError, match="not fitted"):
        RRF(inputs=[A.clone(), B.clone()]).search("q")


def test_chunked_and_unchunked_inputs_fuse_over_documents(tmp_path):
    from ragopt.store import ArtifactStore

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    texts = [" ".join(words[(i + j) % 6] + f"{j % 7}" for j in range(60)) + f" marker{i}" for i in range(6)]
    corpus = Corpus([f"doc{i}" for i in range(6)], texts, name="six")
    chunked = Chunker(method="tokens", size=16, overlap=4) >> BM25()
    fused = chunked + BM25()
    fused.fit(corpus, ArtifactStore(tmp_path))
    assert fused.corpus is corpus and fused.prepare_corpus(corpus) is corpus
    out = fused.search(["marker3", "marker5 alpha0"])
    assert out.corpus is corpus
    assert out.ranked(0)[0][0] == "doc3"
    assert out.ranked(0)[0][1] == pytest.approx(2 / 61)  # first in both lists
    assert len({d for d, _ in out.ranked(1)}) == len(out.ranked(1))  # passages were merged per document
    # two chunked inputs with the same chunker stay on passages
    both = (Chunker(method="tokens", size=16, overlap=4) >> BM25()) + (
        Chunker(method="tokens", size=16, overlap=4) >> BM25(k1=1.5)
    )
    both.fit(corpus, ArtifactStore(tmp_path))
    assert both.corpus.parent is corpus
    assert both.search("marker2").to_run()["0"].keys() >= {"doc2"}


def test_fusion_in_a_pipeline_reports_nested_artifacts_and_restores(tmp_path, monkeypatch):
    from ragopt.retrievers.bm25 import BM25Retriever
    from ragopt.store import ArtifactStore

    texts = [f"alpha{i} beta{i % 2} gamma " * 20 + f"marker{i}" for i in range(6)]
    corpus = Corpus([f"doc{i}" for i in range(6)], texts, name="six")
    pipe = ((Chunker(method="tokens", size=16, overlap=4) >> BM25()) + BM25(k1=1.5)) % 3
    assert isinstance(pipe, Pipeline) and isinstance(pipe.stages[0], RRF)
    pipe.fit(corpus, ArtifactStore(tmp_path))
    arts = pipe.artifacts()  # the fusion's inputs, two levels down, are found
    assert [a["kind"] for a in arts] == ["bm25-bm25s", "bm25-bm25s"] and all(a["created"] for a in arts)
    assert len({a["path"] for a in arts}) == 2 and pipe.stages[0].artifacts() == arts
    queries = ["marker3", "marker5 alpha1", "beta0"]
    want = pipe.search(queries)
    snapshot = pipe.fitted_state()
    monkeypatch.setattr(ArtifactStore, "get_or_create", lambda *a, **k: pytest.fail("restore touched the store"))
    monkeypatch.setattr(BM25Retriever, "_load", lambda *a, **k: pytest.fail("restore loaded an index"))
    monkeypatch.setattr(Chunker, "_spans", lambda *a, **k: pytest.fail("restore chunked again"))
    clone = pipe.clone()
    assert not clone.is_fitted
    clone.restore(snapshot)
    assert clone.is_fitted and clone.corpus is corpus and clone.stages[0].inputs[0].stages[1].is_fitted
    got = clone.search(queries)
    np.testing.assert_array_equal(got.doc_idx, want.doc_idx)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert clone.artifacts() == [dict(a, created=False) for a in arts]


def test_fusion_kernels_on_a_large_batch():
    """1000 queries x 2 lists x 1000 candidates over 200k documents (speed is benchmarks/ business, not a
    timed test: wall-clock bounds fail on loaded machines)."""
    rng = np.random.default_rng(0)
    n, m, n_docs = 1000, 1000, 200_000
    lists = []
    for _ in range(2):
        d = rng.integers(0, n_docs, (n, m))
        s = -np.sort(-rng.random((n, m)).astype(np.float32), axis=1)
        lists.append((d, s))
    doc_idx, scores = rrf_fuse(lists, k=60, top_k=1000)
    w_idx, _ = weighted_fuse(lists, normalize="zscore", top_k=1000)
    assert w_idx.shape == (n, 1000)
    assert doc_idx.shape == (n, 1000)
    # spot check row 0 against a plain dict implementation
    ref: dict[int, float] = {}
    for d, _ in lists:
        for r, doc in enumerate(d[0].tolist()):
            ref[doc] = ref.get(doc, 0.0) + 1 / (61 + r)
    best = sorted(ref.items(), key=lambda kv: (-kv[1], kv[0]))[:1000]
    assert doc_idx[0].tolist() == [d for d, _ in best]
    assert scores[0] == pytest.approx(np.array([s for _, s in best], np.float32))


# -- the named hybrid pipeline ---------------------------------------------------------------------
def _dense_available() -> bool:
    return importlib.util.find_spec("ragopt.retrievers.dense") is not None


def test_named_pipeline_hybrid():
    if not _dense_available():
        pytest.skip("ragopt.retrievers.dense is not available")
    pipe = load_pipeline("hybrid")
    assert isinstance(pipe, RRF) and pipe.k == 60
    bm25, dense = pipe.inputs
    assert bm25 == load_pipeline("bm25").stages[0]
    assert dense.type_name == "dense"
    cfg: dict[str, Any] = dense.to_config()
    assert cfg["encoder"]["model"] == "all-MiniLM-L6-v2" and cfg["index"]["type"] == "faiss_flat"


@pytest.mark.slow
def test_hybrid_cranfield(data_dir, session_store):
    if not _dense_available():
        pytest.skip("ragopt.retrievers.dense is not available")
    from ragopt.evaluation.run import evaluate_pipeline

    report = evaluate_pipeline(
        load_pipeline("hybrid"), str(data_dir / "cranfield"), metrics=["ndcg@10"], store=session_store, progress=False
    )
    print("cranfield RRF(bm25, dense) nDCG@10:", report.metrics["ndcg@10"])
    assert report.metrics["ndcg@10"] >= 0.40
    assert report.stats["counts"]["bm25_queries"] == 225
