"""CUR cross-encoder search stage: fidelity on exactly low-rank scores, budgets, first stages, anchor
artifacts (never reused for another corpus or scorer), bad input, config round trip.

A synthetic scorer stands in for the cross-encoder: every text gets a seeded latent vector from its hash,
and a pair's score is the dot product of its query and passage vectors (plus optional pair noise), so any
score matrix it produces has rank ``rank`` exactly (without noise)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import yaml

from ragopt.config import from_config, param
from ragopt.errors import ArtifactError, ConfigError, StageError
from ragopt.pipeline import Stage
from ragopt.registry import register
from ragopt.rerankers.cur import CURReranker, CURSearch, pseudo_queries
from ragopt.retrievers.bm25 import BM25
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Queries, Stats


@register("test_latent_scorer")
class LatentScorer(Stage):
    """Scores ``<q, d>`` of seeded per-text latent vectors (+ ``noise`` x pseudo-random pair noise)."""

    requires: ClassVar[frozenset[str]] = frozenset({"queries", "candidates"})
    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})

    rank: int = param(8, ge=1)
    noise: float = param(0.0, ge=0.0)
    seed: int = param(0)
    with_title: bool = param(True)

    def scorer_spec(self) -> dict:
        return {"rank": self.rank, "noise": self.noise, "seed": self.seed, "with_title": self.with_title}

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._memo: dict = {}

    def _vecs(self, texts, kind: int) -> tuple[np.ndarray, np.ndarray]:
        memo = self._memo
        out, hs = np.empty((len(texts), self.rank)), np.empty(len(texts), np.uint64)
        for i, t in enumerate(texts):
            if (kind, t) not in memo:
                h = int(hashlib.sha1(t.encode()).hexdigest()[:15], 16)
                memo[kind, t] = (np.random.default_rng([self.seed, kind, h]).standard_normal(self.rank), h)
            out[i], hs[i] = memo[kind, t]
        return out, hs

    def _noise(self, hq: np.ndarray, hd: np.ndarray) -> np.ndarray:
        x = (hq * np.uint64(0x9E3779B97F4A7C15)) ^ (hd + np.uint64(0xBF58476D1CE4E5B9))
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
        return (x >> np.uint64(11)).astype(np.float64) / 2.0**53 * 3.46 - 1.73  # uniform, unit variance

    def score_pairs(self, queries, passages, stats=None, progress=None):
        q, hq = self._vecs(queries, 0)
        d, hd = self._vecs(passages, 1)
        if stats is not None:
            stats.add("ce_pairs", len(queries))
        with np.errstate(over="ignore"):
            return (np.einsum("ij,ij->i", q, d) + self.noise * self._noise(hq, hd)).astype(np.float32)

    def score_matrix(self, queries, passages, stats=None, progress=None):
        qs = [q for q in queries for _ in passages]
        return self.score_pairs(qs, list(passages) * len(queries), stats).reshape(len(queries), len(passages))


def anchors_key(cur: CURReranker) -> str:
    """The key (folder name) of the stage's anchor artifact, the last one it reports."""
    return Path(cur.artifacts()[-1]["path"]).name


@register("test_fixed_candidates")
class FixedCandidates(Stage):
    """A first stage returning the listed candidates (``rows[q]``) for query ``q``, in order."""

    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    rows: list[list[int]] = param(default_factory=list)

    def transform(self, batch):
        width = max([len(r) for r in self.rows] + [0])
        idx = np.full((len(batch), width), -1, np.int64)
        for i, r in enumerate(self.rows[: len(batch)]):
            idx[i, : len(r)] = r
        sc = np.where(idx >= 0, -np.arange(width, dtype=np.float32), -np.inf).astype(np.float32)
        return batch.with_candidates(idx, sc, self.corpus)


def make_corpus(n: int, name: str = "synth", salt: str = "") -> Corpus:
    return Corpus(
        [f"d{i}" for i in range(n)],
        [f"text of document {i}{salt}" for i in range(n)],
        [f"title {i}{salt}" for i in range(n)],
        name=name,
    )


def queries(n: int) -> Queries:
    return Queries([f"q{i}" for i in range(n)], [f"query number {i}" for i in range(n)])


def exhaustive(scorer: LatentScorer, corpus: Corpus, qs: Queries) -> np.ndarray:
    return scorer.score_matrix(qs.texts, corpus.contents(scorer.with_title))


def recall(doc_idx: np.ndarray, S: np.ndarray, k: int) -> np.ndarray:
    true = np.argsort(-S, axis=1)[:, :k]
    return np.array([len(set(a[:k].tolist()) & set(b.tolist())) / k for a, b in zip(doc_idx, true)])


@pytest.fixture(scope="module")
def big() -> Corpus:
    return make_corpus(2000, "big")


@pytest.fixture()
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


# ------------------------------------------------------------------------------------------ fidelity
@pytest.mark.parametrize("method", ["anncur", "adacur"])
def test_fidelity_recovers_exact_top10_with_budget_100_of_2000(big, store, method):
    scorer = LatentScorer(rank=8)
    cur = CURSearch(
        scorer=scorer, method=method, budget=100, n_anchor_items=32, n_anchor_queries=40, rounds=4, rcond=1e-4, top_k=10
    ).fit(big, store)
    qs = queries(20)
    out = cur.transform(Batch(qs))
    S = exhaustive(scorer, big, qs)
    assert (recall(out.doc_idx, S, 10) == 1.0).all()  # the exact top-10 of every query ...
    assert out.stats.counts["cur_ce_calls"] == 20 * 100  # ... for 100 calls each, where exhaustive needs 2000
    assert out.stats.counts["ce_pairs"] == 20 * 100
    np.testing.assert_allclose(out.scores, np.take_along_axis(S, out.doc_idx, axis=1), rtol=1e-5)
    assert out.corpus is big and out.doc_idx.shape == (20, 10)


def test_anchor_matrix_artifact_is_built_once_and_holds_exact_scores(big, store):
    scorer = LatentScorer(rank=8)
    cur = CURSearch(scorer=scorer, n_anchor_queries=30, budget=60, n_anchor_items=20, rounds=2).fit(big, store)
    art = cur.artifacts()[-1]
    assert art["kind"] == "cur-anchors" and art["created"] is True
    assert cur.fit_stats.counts["ce_pairs"] == 30 * 2000
    manifest = json.loads((store.root / "cur-anchors").joinpath(anchors_key(cur), "manifest.json").read_text())
    assert manifest["pairs"] == 60000 and manifest["spec"]["scorer"]["rank"] == 8
    texts = json.loads((store.root / "cur-anchors" / anchors_key(cur) / "anchor_queries.json").read_text())
    assert texts == pseudo_queries(big, 30, 0) and all(t.startswith("title ") for t in texts)
    R = np.load(store.root / "cur-anchors" / anchors_key(cur) / "anchors.npy")
    np.testing.assert_allclose(R, scorer.score_matrix(texts, big.contents()), rtol=1e-6)
    again = CURSearch(
        scorer=LatentScorer(rank=8), n_anchor_queries=30, budget=80, n_anchor_items=20, method="anncur"
    ).fit(big, store)  # search-time params do not change the artifact
    assert again.artifacts()[-1] == {**art, "created": False}
    assert again.fit_stats.counts.get("ce_pairs", 0) == 0


@pytest.mark.parametrize("method", ["anncur", "adacur"])
def test_restore_on_a_clone_searches_without_fitting(store, monkeypatch, method):
    corpus = make_corpus(300)
    cur = CURReranker(
        scorer=LatentScorer(rank=4),
        method=method,
        budget=40,
        n_anchor_items=12,
        rounds=2,
        n_anchor_queries=16,
        top_k=20,
    ).fit(corpus, store)
    want = cur.transform(Batch(queries(5)))
    snapshot = cur.fitted_state()
    monkeypatch.setattr(LatentScorer, "score_matrix", lambda *a, **k: pytest.fail("restore scored anchors"))
    monkeypatch.setattr(ArtifactStore, "get_or_create", lambda *a, **k: pytest.fail("restore touched the store"))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("restore read the anchor matrix"))
    clone = cur.clone().restore(snapshot)
    assert clone.is_fitted and clone.scorer.is_fitted and clone.corpus is corpus  # the nested scorer too
    got = clone.transform(Batch(queries(5)))
    np.testing.assert_array_equal(got.doc_idx, want.doc_idx)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert got.stats.counts["cur_ce_calls"] == want.stats.counts["cur_ce_calls"]
    assert clone.anchors is cur.anchors and clone.cache_spec() == cur.cache_spec()
    assert clone.artifacts() == [dict(a, created=False) for a in cur.artifacts()]


# ------------------------------------------------------------------------------------------ first stage
def test_first_stage_candidates_restrict_items_and_budget(store):
    corpus = make_corpus(600)
    rows = [list(range(100, 500)), list(range(30)), [], list(range(599, -1, -1))]
    first = FixedCandidates(rows=rows)
    cur = CURSearch(
        scorer=LatentScorer(rank=6), budget=50, n_anchor_items=20, rounds=2, n_anchor_queries=20, rcond=1e-4, top_k=40
    )
    pipe = (first >> cur).fit(corpus, store)
    qs = queries(4)
    out = pipe.transform(Batch(qs))
    assert out.stats.counts["cur_ce_calls"] == 50 + 30 + 0 + 50
    assert set(out.doc_idx[0].tolist()) <= set(range(100, 500))
    assert sorted(out.doc_idx[1][:30].tolist()) == list(range(30)) and (out.doc_idx[1][30:] == -1).all()
    assert (out.doc_idx[2] == -1).all()  # an empty candidate list stays empty, and costs nothing
    S = exhaustive(cur.scorer, corpus, qs)
    for r, cand in enumerate(rows):
        if len(cand) > 0:
            best = sorted(cand, key=lambda i: -S[r, i])[:10]
            assert out.doc_idx[r][:10].tolist() == best


def test_empty_candidate_lists_and_empty_queries(store):
    corpus = make_corpus(300)
    cur = CURSearch(scorer=LatentScorer(), budget=40, n_anchor_items=10, rounds=2, n_anchor_queries=10, top_k=5).fit(
        corpus, store
    )
    qs = Queries(["a", "b"], ["query", "  "])
    empty = Batch(qs, corpus, np.full((2, 3), -1, np.int64), np.full((2, 3), -np.inf, np.float32))
    out = cur.transform(empty)
    assert out.doc_idx.shape == (2, 5) and (out.doc_idx == -1).all() and out.stats.counts["cur_ce_calls"] == 0
    zero = Batch(qs, corpus, np.zeros((2, 0), np.int64), np.zeros((2, 0), np.float32))
    assert (cur.transform(zero).doc_idx == -1).all()
    out = cur.transform(Batch(qs))  # no first stage: the empty query gets an empty row
    assert (out.doc_idx[1] == -1).all() and (out.doc_idx[0] >= 0).all()
    assert out.stats.counts["cur_ce_calls"] == 40


def test_small_corpus_is_scored_exhaustively(store):
    corpus = make_corpus(30)
    cur = CURSearch(
        scorer=LatentScorer(noise=1.0), budget=50, n_anchor_items=10, n_anchor_queries=5, method="anncur", top_k=100
    ).fit(corpus, store)
    out = cur.transform(Batch(queries(3)))
    S = exhaustive(cur.scorer, corpus, queries(3))
    assert out.doc_idx.shape == (3, 30) and out.stats.counts["cur_ce_calls"] == 90
    assert out.doc_idx.tolist() == np.argsort(-S, axis=1).tolist()


# ------------------------------------------------------------------------------------------ bad input
def test_budget_smaller_than_anchor_items_is_a_config_error():
    with pytest.raises(
        ConfigError,
        match=r"budget: the budget \(20 .*smaller than the anchor item set "
        r"\(n_anchor_items=30\)",
    ) as e:
        CURSearch(scorer=LatentScorer(), budget=20, n_anchor_items=30)
    assert e.value.path == "budget"
    with pytest.raises(ConfigError, match=r"stages\[0\]\.budget"):
        from_config(
            {
                "type": "pipeline",
                "stages": [
                    {"type": "cur", "scorer": {"type": "test_latent_scorer"}, "budget": 10, "n_anchor_items": 11}
                ],
            }
        )
    cur = CURSearch(scorer=LatentScorer(), budget=50, n_anchor_items=30)
    with pytest.raises(ConfigError, match="smaller than the anchor item set"):
        cur.set_params(budget=29)
    with pytest.raises(ConfigError, match="rounds"):
        CURSearch(scorer=LatentScorer(), budget=50, n_anchor_items=3, rounds=4)
    CURSearch(scorer=LatentScorer(), budget=50, n_anchor_items=3, rounds=4, method="anncur")  # unused there


def test_scorer_without_scoring_api_is_refused():
    with pytest.raises(ConfigError, match="scorer: cur needs a scorer with score_pairs"):
        CURSearch(scorer=BM25())
    with pytest.raises(ConfigError, match="missing required key"):
        from_config({"type": "cur"})


def test_anchor_matrix_of_another_corpus_or_scorer_is_never_reused(store):
    a, b = make_corpus(200, "a"), make_corpus(200, "b", salt=" (edited)")
    cur_a = CURSearch(scorer=LatentScorer(), budget=30, n_anchor_items=10, n_anchor_queries=10).fit(a, store)
    path_a = cur_a.artifacts()[-1]["path"]
    with pytest.raises(ArtifactError, match="another configuration or corpus.*corpus: built with"):
        CURSearch(scorer=LatentScorer(), budget=30, n_anchor_items=10, n_anchor_queries=10).load_anchors(
            path_a, b, store
        )
    with pytest.raises(ArtifactError, match="scorer.rank: built with 8, wanted 4"):
        CURSearch(scorer=LatentScorer(rank=4), budget=30, n_anchor_items=10, n_anchor_queries=10).load_anchors(
            path_a, a, store
        )
    ok = CURSearch(scorer=LatentScorer(), budget=30, n_anchor_items=10, n_anchor_queries=10).load_anchors(
        path_a, a, store
    )
    assert ok.anchors.shape == (10, 200)
    # fitting on another corpus or with another scorer builds its own matrix
    cur_b = CURSearch(scorer=LatentScorer(), budget=30, n_anchor_items=10, n_anchor_queries=10).fit(b, store)
    cur_r = CURSearch(scorer=LatentScorer(rank=4), budget=30, n_anchor_items=10, n_anchor_queries=10).fit(a, store)
    paths = {path_a, cur_b.artifacts()[-1]["path"], cur_r.artifacts()[-1]["path"]}
    assert len(paths) == 3 and cur_b.artifacts()[-1]["created"] and cur_r.artifacts()[-1]["created"]
    # a search over candidates of another corpus is refused
    batch = Batch(queries(1), b, np.array([[0, 1]]), np.array([[2.0, 1.0]], np.float32))
    with pytest.raises(StageError, match="not the fitted one 'a'"):
        cur_a.transform(batch)


def test_other_errors(store, tmp_path):
    with pytest.raises(StageError, match="cur: not fitted"):
        CURSearch(scorer=LatentScorer()).transform(Batch(queries(1)))
    with pytest.raises(ConfigError, match="empty corpus"):
        CURSearch(scorer=LatentScorer()).fit(Corpus([], []), store)
    with pytest.raises(
        ConfigError, match="n_anchor_queries: cur: asked for 100 anchor queries but corpus 'tiny' has only 20"
    ):
        CURSearch(scorer=LatentScorer(), budget=10, n_anchor_items=5).fit(make_corpus(20, "tiny"), store)
    with pytest.raises(ConfigError, match="anchor query file .*nope.jsonl' not found"):
        CURSearch(scorer=LatentScorer(), anchor_queries=str(tmp_path / "nope.jsonl")).fit(make_corpus(20), store)


def test_anchor_queries_from_a_file(store, tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps({"_id": f"t{i}", "text": f"training query {i}"}) + "\n" for i in range(12)))
    corpus = make_corpus(150)
    cur = CURSearch(scorer=LatentScorer(), anchor_queries=str(f), n_anchor_queries=8, budget=30, n_anchor_items=10).fit(
        corpus, store
    )
    texts = cur.anchor_texts(corpus)
    assert len(texts) == 8 and all(t.startswith("training query") for t in texts)
    assert cur.anchors.shape == (8, 150)
    with pytest.raises(ConfigError, match="has only 12 non-empty queries"):
        CURSearch(scorer=LatentScorer(), anchor_queries=str(f), n_anchor_queries=13).fit(corpus, store)


def test_pseudo_queries_use_titles_or_first_sentences():
    c = Corpus(["a", "b", "c"], ["First sentence here. Second one.", "body", ""], ["", "A title", ""])
    assert pseudo_queries(c, 2, seed=0) == ["First sentence here.", "A title"]


# ------------------------------------------------------------------------------------------ config
def test_config_round_trip_and_nested_params(store):
    cur = CURSearch(
        scorer=LatentScorer(rank=5),
        method="anncur",
        budget=80,
        n_anchor_items=40,
        selection="pivoted",
        merge="interleave",
        seed=3,
        top_k=20,
    )
    cfg = cur.to_config()
    assert cfg["type"] == "cur" and cfg["scorer"]["type"] == "test_latent_scorer"
    again = from_config(yaml.safe_load(yaml.safe_dump(cfg)))
    assert again == cur and again.to_config() == cfg
    clone = cur.clone(**{"scorer.rank": 6, "budget": 90})
    assert clone.scorer.rank == 6 and clone.budget == 90 and cur.scorer.rank == 5
    assert cur.get_params()["scorer.rank"] == 5
    with pytest.raises(ConfigError, match="selection: must be one of"):
        CURSearch(scorer=LatentScorer(), selection="kmeans")
    # the stage-output cache key ignores top_k (cached by depth) and follows the anchors artifact
    corpus = make_corpus(100)
    a = CURSearch(scorer=LatentScorer(), budget=30, n_anchor_items=10, n_anchor_queries=5, top_k=10).fit(corpus, store)
    b = CURSearch(scorer=LatentScorer(), budget=30, n_anchor_items=10, n_anchor_queries=5, top_k=50).fit(corpus, store)
    assert a.cache_spec() == b.cache_spec() and a.cache_spec()["anchors"] == anchors_key(a)
    assert a.cache_spec() != a.clone(budget=31).fit(corpus, store).cache_spec()


def test_shipped_pipeline_loads():
    pytest.importorskip("yaml")
    from ragopt.pipeline_io import load_pipeline

    p = load_pipeline("cur")
    stage = p.stages[-1] if hasattr(p, "stages") else p
    assert isinstance(stage, CURSearch) and stage.scorer.type_name == "cross_encoder"
    assert stage.budget >= stage.n_anchor_items


# ------------------------------------------------------------------------------------------ real scorer
def test_with_a_real_cross_encoder(tmp_path):
    """Wiring with CrossEncoderReranker (a tiny randomly initialised BERT classifier built here)."""
    pytest.importorskip("sentence_transformers")
    from ragopt.rerankers.cross_encoder import CrossEncoderReranker
    from ragopt.testing.models import tiny_bert

    words = [
        "the",
        "a",
        "of",
        "cat",
        "dog",
        "river",
        "city",
        "music",
        "science",
        "title",
        "text",
        "document",
        "query",
        "number",
    ]
    numbers = [str(i) for i in range(40)]
    d = tiny_bert(tmp_path / "tiny-ce", [*words, *numbers], max_positions=64, initializer_range=1.0)
    corpus = make_corpus(40)
    store = ArtifactStore(tmp_path / "store")
    ce = CrossEncoderReranker(model=str(d), max_length=32, device="cpu")
    cur = CURSearch(
        scorer=ce, budget=15, n_anchor_items=6, rounds=2, n_anchor_queries=8, top_k=40, merge="scored_first"
    ).fit(corpus, store)
    assert cur.fit_stats.counts["ce_pairs"] == 8 * 40
    qs = queries(3)
    out = cur.transform(Batch(qs))
    assert out.stats.counts["cur_ce_calls"] == 45 and out.stats.counts["ce_pairs"] == 45
    exact = ce.score_matrix(qs.texts, corpus.contents(), Stats())
    for r in range(3):
        scored = out.doc_idx[r][:15]
        np.testing.assert_allclose(out.scores[r][:15], exact[r, scored], rtol=1e-4, atol=1e-5)
    kinds = [a["kind"] for a in cur.artifacts()]
    assert kinds == ["ce-scores", "cur-anchors"]
    # another model at the same path is another anchor matrix
    assert cur.scorer_spec()["model_fingerprint"]
