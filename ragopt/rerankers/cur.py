"""CUR cross-encoder search (ANNCUR, ADACUR): k-NN search under a cross-encoder with a fixed call budget.

``fit`` builds (or finds) a ``cur-anchors`` artifact: the exact scores of ``n_anchor_queries`` anchor
queries against every item of the corpus (``anchors.npy``, float32 ``(n_anchor_queries, n_items)``),
computed through the scorer's ``score_matrix`` (so through its pair-score cache). Its key is the scorer's
identity (:meth:`scorer_spec`: model and content fingerprint, max length, title use, activation,
precision), the corpus fingerprint and the anchor query texts: another model or corpus is another
artifact, and :meth:`CURReranker.load_anchors` refuses a directory built for anything else.

Anchor queries (``anchor_queries``): ``corpus`` (default) samples ``n_anchor_queries`` documents (seeded)
and uses each one's title, or its first sentence (at most 32 words) when it has none, as a pseudo-query.
ANNCUR used held-out training queries; a path to a queries JSONL (``{"_id", "text"}``, e.g. a training
split) samples them from that file instead.

At query time every query costs exactly ``min(budget, n_items)`` cross-encoder calls (counted as
``cur_ce_calls``; the scorer counts the pairs its model actually ran, ``ce_pairs``, and its cache hits):
see :func:`ragopt.kernels.cur.cur_search` for ANNCUR and ADACUR. Returned scores are exact
cross-encoder scores for the items scored and approximate ones for the rest, ranked together
(``merge: interleave``) or with every scored item first (``scored_first``).

With a first stage before it (``bm25 >> cur``), each query's items are restricted to its candidates and
ADACUR's first round takes the first stage's top items. A query with no candidates, or an empty query,
gets an empty row and costs nothing. A query with at most ``budget`` candidates gets them all scored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt.config import canonical_json, config_hash, param
from ragopt.data.datasets import load_queries
from ragopt.errors import ArtifactError, ConfigError, StageError
from ragopt.kernels.cur import cur_operator, cur_search, select_anchor_items
from ragopt.pipeline import Fitted, Stage
from ragopt.registry import register
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Stats

__all__ = ["CURReranker", "CURSearch", "ARTIFACT_KIND", "pseudo_queries"]

ARTIFACT_KIND = "cur-anchors"
FORMAT_VERSION = 1
_MAX_WORDS = 32
#: the parameters of this stage that are :func:`~ragopt.kernels.cur.cur_search` settings of the same name
_SEARCH_PARAMS = (
    "budget",
    "n_anchor_items",
    "top_k",
    "method",
    "rounds",
    "selection",
    "adaptive",
    "temperature",
    "rcond",
    "merge",
    "seed",
)


def pseudo_queries(corpus: Corpus, n: int, seed: int) -> list[str]:
    """Titles (or first sentences) of ``n`` distinct random documents with some text, in corpus order."""
    texts = []
    for title, text in zip(corpus.titles, corpus.texts):
        t = (title or "").strip()
        if not t:
            t = re.split(r"(?<=[.!?])\s+", (text or "").strip(), maxsplit=1)[0]
        texts.append(" ".join(t.split()[:_MAX_WORDS]))
    ok = np.flatnonzero([bool(t) for t in texts])
    if n > len(ok):
        raise ConfigError(
            "n_anchor_queries",
            f"cur: asked for {n} anchor queries but corpus "
            f"{corpus.name or 'unnamed'!r} has only {len(ok)} documents with "
            "text to make them from",
        )
    rows = np.sort(np.random.default_rng(seed).choice(ok, size=n, replace=False))
    return [texts[i] for i in rows]


@dataclass(eq=False)
class _CURFit(Fitted):
    anchors: np.ndarray | None = None  # exact scores, (n_anchor_queries, n_items) float32
    anchors_key: str = ""  # key of the cur-anchors artifact


@register("cur")
class CURReranker(Stage):
    """Cross-encoder search over the whole corpus (or a first stage's candidates) with a fixed budget of
    cross-encoder calls per query, through a CUR approximation of its score matrix."""

    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    cache_depth_field: ClassVar[str | None] = "top_k"
    #: the budget spent (replayed when the stage cache serves the output; it does not depend on top_k)
    work_counters: ClassVar[tuple[str, ...]] = ("cur_queries", "cur_ce_calls")

    scorer: Stage = param(doc="the cross-encoder: a stage with score_pairs and score_matrix (cross_encoder)")
    method: Literal["anncur", "adacur"] = param(
        "adacur",
        doc="anncur: fixed anchor items for every query; adacur: anchor items chosen per query over "
        "several rounds from the current approximation",
    )
    budget: int = param(100, doc="cross-encoder calls per query at search time (anchor items included)", ge=1)
    n_anchor_items: int = param(
        50, doc="items scored to fit the approximation (the rest of the budget rescores its top)", ge=1
    )
    n_anchor_queries: int = param(100, doc="anchor queries scored offline against every item", ge=1)
    anchor_queries: str = param(
        "corpus",
        doc="corpus: pseudo-queries (titles / first sentences) of random "
        "documents; else a path to a queries JSONL to sample from",
    )
    rounds: int = param(5, doc="adacur: rounds over which the anchor items are chosen (anncur: unused)", ge=1)
    selection: Literal["random", "topk_mean", "pivoted"] = param(
        "random",
        doc="shared anchor items (anncur, and adacur's first round without a first stage): random, "
        "highest mean anchor score, or pivoted-QR columns of the anchor matrix",
    )
    adaptive: Literal["topk", "softmax"] = param(
        "topk", doc="adacur's choice in later rounds: top of the approximation, or a softmax sample of it"
    )
    temperature: float = param(1.0, doc="softmax temperature over per-query z-scored approximations", gt=0.0)
    rcond: float = param(
        0.01, doc="singular values below rcond x the largest are cut in the pseudo-inverse", gt=0.0, lt=1.0
    )
    merge: Literal["interleave", "scored_first"] = param(
        "interleave", doc="ranking: exact and approximate scores together, or every exactly scored item first"
    )
    seed: int = param(0, doc="seed of anchor query sampling, random anchor items and softmax sampling")
    top_k: int = param(100, doc="candidates returned per query", ge=1)

    # ------------------------------------------------------------------------------------------
    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._operator: tuple[np.ndarray, np.ndarray] | None = None  # anncur's (anchor items, CUR operator)

    def validate(self, path: str = "") -> None:
        p = f"{path}." if path else ""
        for name in ("score_pairs", "score_matrix"):
            if not callable(getattr(self.scorer, name, None)):
                raise ConfigError(
                    f"{p}scorer",
                    f"cur needs a scorer with {name}() (e.g. type: cross_encoder); {self.scorer.type_name!r} has none",
                )
        if self.budget < self.n_anchor_items:
            raise ConfigError(
                f"{p}budget",
                f"the budget ({self.budget} cross-encoder calls per query) is "
                f"smaller than the anchor item set (n_anchor_items="
                f"{self.n_anchor_items}); raise budget or lower n_anchor_items",
            )
        if self.method == "adacur" and self.rounds > self.n_anchor_items:
            raise ConfigError(
                f"{p}rounds",
                f"adacur: {self.rounds} rounds cannot each add an item out of n_anchor_items={self.n_anchor_items}",
            )

    def scorer_spec(self) -> dict[str, Any]:
        """The scorer's identity: what determines its scores (its ``scorer_spec()`` when it has one)."""
        fn = getattr(self.scorer, "scorer_spec", None)
        if callable(fn):
            return {"type": self.scorer.type_name, **fn()}
        drop = {*getattr(self.scorer, "cache_ignore", ()), "depth", "top_k"}
        return {k: v for k, v in self.scorer.to_config().items() if k not in drop}

    def _with_title(self) -> bool:
        return bool(getattr(self.scorer, "with_title", True))

    def anchor_texts(self, corpus: Corpus) -> list[str]:
        """The anchor queries for ``corpus`` (deterministic given the config)."""
        if self.anchor_queries == "corpus":
            return pseudo_queries(corpus, self.n_anchor_queries, self.seed)
        path = Path(self.anchor_queries)
        if not path.is_file():
            raise ConfigError(
                "anchor_queries",
                f"cur: anchor query file {str(path)!r} not found (use 'corpus' for "
                "pseudo-queries, or a queries JSONL path)",
            )
        texts = [t for t in load_queries(path).texts if t.strip()]
        if len(texts) < self.n_anchor_queries:
            raise ConfigError(
                "n_anchor_queries",
                f"cur: asked for {self.n_anchor_queries} anchor queries but "
                f"{path} has only {len(texts)} non-empty queries",
            )
        rows = np.sort(np.random.default_rng(self.seed).choice(len(texts), self.n_anchor_queries, replace=False))
        return [texts[i] for i in rows]

    def anchor_spec(self, corpus: Corpus, texts: list[str]) -> dict[str, Any]:
        """The anchor artifact key: scorer identity, corpus and the anchor query texts (nothing search-time)."""
        return {
            "scorer": self.scorer_spec(),
            "corpus": corpus.fingerprint,
            "n_items": len(corpus),
            "with_title": self._with_title(),
            "n_anchor_queries": len(texts),
            "anchor_queries_sha": config_hash(texts, length=32),
        }

    # ------------------------------------------------------------------------------------------
    def fit(
        self, corpus: Corpus, store: ArtifactStore | None = None, *, rebuild: bool = False, progress: bool | None = None
    ) -> CURReranker:
        self._check_corpus(corpus, "search")
        store = store if store is not None else ArtifactStore()
        self.scorer.fit(corpus, store, rebuild=rebuild, progress=progress)
        texts = self.anchor_texts(corpus)
        stats = Stats()
        art = store.get_or_create(
            ARTIFACT_KIND,
            self.anchor_spec(corpus, texts),
            FORMAT_VERSION,
            lambda d: self._build(corpus, texts, d, stats, progress),
            rebuild=rebuild,
        )
        self._load(art, corpus, stats)
        return self

    def _build(self, corpus: Corpus, texts: list[str], out: Path, stats: Stats, progress: Any) -> dict[str, Any]:
        passages = corpus.contents(self._with_title())
        with stats.timer("cur_anchor_matrix"):
            R = np.asarray(self.scorer.score_matrix(texts, passages, stats=stats, progress=progress), np.float32)
        if R.shape != (len(texts), len(corpus)) or not np.isfinite(R).all():
            raise StageError(
                f"cur: the scorer returned a {R.shape} anchor matrix (expected {(len(texts), len(corpus))}, finite)"
            )
        np.save(out / "anchors.npy", R, allow_pickle=False)
        (out / "anchor_queries.json").write_text(json.dumps(texts, ensure_ascii=False), "utf-8")
        return {
            "pairs": int(R.size),
            "ce_pairs": int(stats.counts.get("ce_pairs", 0)),
            "ce_cache_hits": int(stats.counts.get("ce_cache_hits", 0)),
            "scoring_seconds": round(stats.seconds.get("cur_anchor_matrix", 0.0), 3),
        }

    def _load(self, art: Any, corpus: Corpus, stats: Stats) -> None:
        """Use the anchor artifact ``art`` (the scorer's artifacts are its own: :meth:`artifacts` collects both)."""
        self._init_runtime()
        R = np.load(art.path / "anchors.npy", allow_pickle=False)
        if R.ndim != 2 or R.shape[1] != len(corpus):
            raise ArtifactError(
                f"cur anchor matrix {art.path} has shape {R.shape}, the corpus has {len(corpus)} "
                "items; it was built for another corpus"
            )
        self._fit = _CURFit(
            corpus,
            [{"kind": ARTIFACT_KIND, "path": str(art.path), "created": art.created}],
            stats,
            anchors=R,
            anchors_key=art.key,
        )

    @property
    def anchors(self) -> np.ndarray:
        """The anchor matrix fit computed or loaded: exact scores of the anchor queries against every item."""
        return self._fitted().anchors

    def load_anchors(self, path: str | Path, corpus: Corpus, store: ArtifactStore | None = None) -> CURReranker:
        """Use an existing anchor matrix directory, after checking it was built for this scorer, corpus and
        anchor queries (ArtifactError otherwise); fits the scorer."""
        store = store if store is not None else ArtifactStore()
        self.scorer.fit(corpus, store)
        art = store.open(path, ARTIFACT_KIND, self.anchor_spec(corpus, self.anchor_texts(corpus)), FORMAT_VERSION)
        self._load(art, corpus, Stats())
        return self

    def cache_spec(self) -> dict[str, Any] | None:
        cfg = {k: v for k, v in self.to_config().items() if k not in ("top_k", "scorer")}
        fit = self._fit
        return {
            "config": canonical_json(cfg),
            "scorer": self.scorer_spec(),
            "corpus": fit.corpus.fingerprint if fit is not None else None,
            "anchors": fit.anchors_key if fit is not None else None,
        }

    # ------------------------------------------------------------------------------------------
    def _anncur_operator(self, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._operator is None:
            items = select_anchor_items(R, min(self.n_anchor_items, R.shape[1]), self.selection, self.seed)
            self._operator = (items, cur_operator(R, items, self.rcond))
        return self._operator

    def transform(self, batch: Batch) -> Batch:
        fit = self._fitted()
        R, corpus = fit.anchors, fit.corpus
        n, N = len(batch), len(corpus)
        texts = batch.queries.texts
        allowed = init = None
        empty_q = np.array([not t.strip() for t in texts], bool)
        if batch.doc_idx is not None:
            if batch.corpus is not corpus and batch.corpus.fingerprint != corpus.fingerprint:
                raise StageError(
                    f"cur: the candidates index corpus {batch.corpus.name or 'unnamed'!r} "
                    f"({len(batch.corpus)} rows), not the fitted one {corpus.name or 'unnamed'!r} "
                    f"({N} rows); fit cur on the corpus the first stage returns"
                )
            allowed, init = _candidate_sets(batch.doc_idx, N)
        elif empty_q.any():
            allowed = np.ones((n, N), bool)
        if allowed is not None:
            allowed[empty_q] = False
        wt = self._with_title()

        def score_fn(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
            with batch.stats.timer("cur_scoring"):
                return self.scorer.score_pairs(
                    [texts[r] for r in rows.tolist()], [corpus.text(i, wt) for i in items.tolist()], stats=batch.stats
                )

        items = operator = None
        if self.method == "anncur" and self.budget < N:
            items, operator = self._anncur_operator(R)
        with batch.stats.timer("cur"):
            res = cur_search(
                R,
                score_fn,
                n,
                allowed=allowed,
                init_items=init if self.method == "adacur" else None,
                anchor_items=items,
                operator=operator,
                **{k: getattr(self, k) for k in _SEARCH_PARAMS},
            )
        batch.stats.add("cur_queries", n)
        batch.stats.add("cur_ce_calls", int(res.calls.sum()))
        return batch.with_candidates(res.doc_idx, res.scores, corpus)


def _candidate_sets(doc_idx: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Allowed-item masks ``(Q, N)`` and, per row, the distinct candidates in first-stage order (-1 padded)."""
    n, width = doc_idx.shape
    allowed = np.zeros((n, n_items), bool)
    init = np.full((n, max(width, 1)), -1, np.int64)
    for r in range(n):
        row = doc_idx[r]
        row = row[row >= 0]
        if row.size and row.max() >= n_items:
            raise StageError(f"cur: candidate row {r} holds item {int(row.max())}, the corpus has {n_items}")
        _, first = np.unique(row, return_index=True)
        row = row[np.sort(first)]
        allowed[r, row] = True
        init[r, : row.size] = row
    return allowed, init


CURSearch = CURReranker  # the name before stages were suffixed by role
