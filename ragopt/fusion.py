"""Fusion of several retrievers' candidate lists.

* :class:`RRF` (``a + b``): reciprocal rank fusion, ``score(d) = sum_i w_i / (k + rank_i(d))`` with ranks
  from 1; a document absent from a list gets nothing from it.
* :class:`WeightedFusion`: ``score(d) = sum_i w_i * norm_i(d)`` after per-query normalisation of each list
  (``minmax``, ``zscore`` or ``none``). A document absent from list ``i`` gets that list's lowest
  normalised score for the query (0 with min-max; with z-scores 0 would rank it above documents the list
  did retrieve). A list with no candidates for a query adds 0.

Weights default to 1 per input. Every input runs on the same queries, shares the batch's
:class:`~ragopt.types.Stats`, and must end on the same corpus; inputs that end on passages of that corpus
(a chunker without an ``aggregate`` stage) are aggregated to it by their best passage first. The fusion
kernels (:func:`sum_topk`, :func:`rrf_fuse`, :func:`weighted_fuse`) are vectorised numpy.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from ragopt.config import param
from ragopt.errors import ConfigError, StageError
from ragopt.pipeline import Stage, run_stage
from ragopt.registry import register
from ragopt.types import Batch, Corpus

__all__ = ["RRF", "WeightedFusion", "sum_topk", "rrf_fuse", "weighted_fuse", "normalize_rows"]

Lists = Sequence[tuple[np.ndarray, np.ndarray]]


# -- kernels --------------------------------------------------------------------------------------
def sum_topk(cols: np.ndarray, values: np.ndarray, top_k: int, row_offset: np.ndarray | None = None,
             keep_first: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``values`` per distinct col of each row and keep the ``top_k`` cols per row (sorted, padded).

    ``cols`` and ``values`` are ``(n, m)``; col ``-1`` marks an empty slot. With ``keep_first`` only the
    first ``keep_first`` occurrences of a col in a row (left to right) are summed. ``row_offset[r]`` is
    added to every score of row ``r``. Ties rank by ascending col; sums are exact (no running totals)."""
    n, m = cols.shape
    if n == 0 or m == 0:
        return np.full((n, 0), -1, np.int64), np.full((n, 0), -np.inf, np.float32)
    order = np.argsort(cols, axis=1, kind="stable")
    c = np.take_along_axis(cols, order, axis=1)
    v = np.take_along_axis(np.asarray(values, np.float64), order, axis=1)
    start = np.ones((n, m), bool)
    start[:, 1:] = c[:, 1:] != c[:, :-1]
    if keep_first is not None:
        pos = np.broadcast_to(np.arange(m), (n, m))
        rank = pos - np.maximum.accumulate(np.where(start, pos, 0), axis=1)
        v = np.where(rank < keep_first, v, 0.0)
    starts = np.flatnonzero(start)
    out = np.full(n * m, -np.inf)
    out[starts] = np.add.reduceat(v.ravel(), starts)
    out = out.reshape(n, m)
    out[c < 0] = -np.inf
    if row_offset is not None:
        out += np.asarray(row_offset, np.float64)[:, None]
    k = min(top_k, int((start.sum(axis=1) - (c[:, 0] < 0)).max()))  # the most distinct cols of a row
    if k == 0:
        return np.full((n, 0), -1, np.int64), np.full((n, 0), -np.inf, np.float32)
    if k < m:  # the k best positions, ties at the k-th score taken by ascending position (= col)
        kth = -np.partition(-out, k - 1, axis=1)[:, k - 1:k]
        above, tied = out > kth, out == kth
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= k - above.sum(axis=1, keepdims=True)))
        part = np.nonzero(chosen)[1].reshape(n, k)
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    top = np.take_along_axis(out, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    scores = np.take_along_axis(top, order, axis=1).astype(np.float32)
    idx = np.take_along_axis(c, np.take_along_axis(part, order, axis=1), axis=1)
    idx[~np.isfinite(scores)] = -1
    return idx, scores


def _valid(doc_idx: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return (doc_idx >= 0) & np.isfinite(scores)


def rrf_fuse(lists: Lists, k: float = 60, weights: Sequence[float] | None = None,
             top_k: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion of ``[(doc_idx, scores), ...]`` (rows sorted, rank = column + 1)."""
    weights = [1.0] * len(lists) if weights is None else weights
    cols, vals = [], []
    for w, (d, s) in zip(weights, lists):
        valid = _valid(d, s)
        cols.append(np.where(valid, d, -1))
        vals.append(np.where(valid, w / (k + np.arange(d.shape[1]) + 1.0), 0.0))
    return sum_topk(np.hstack(cols), np.hstack(vals), top_k)


def normalize_rows(doc_idx: np.ndarray, scores: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-row normalised scores (float64, NaN in empty slots) and each row's minimum (0 for empty rows)."""
    valid = _valid(doc_idx, scores)
    s = np.where(valid, scores, 0.0).astype(np.float64)
    count = valid.sum(axis=1)
    if method == "minmax":
        lo = np.where(valid, s, np.inf).min(axis=1, initial=np.inf)
        hi = np.where(valid, s, -np.inf).max(axis=1, initial=-np.inf)
        rng = hi - lo
        safe = np.where(rng > 0, rng, 1.0)
        norm = np.where((rng > 0)[:, None], (s - lo[:, None]) / safe[:, None], 1.0)
    elif method == "zscore":
        mean = s.sum(axis=1) / np.maximum(count, 1)
        std = np.sqrt((np.where(valid, s - mean[:, None], 0.0) ** 2).sum(axis=1) / np.maximum(count, 1))
        safe = np.where(std > 0, std, 1.0)
        norm = np.where((std > 0)[:, None], (s - mean[:, None]) / safe[:, None], 0.0)
    elif method == "none":
        norm = s
    else:
        raise ValueError(f"unknown normalisation {method!r} (minmax, zscore, none)")
    norm = np.where(valid, norm, np.nan)
    row_min = np.where(count > 0, np.where(valid, norm, np.inf).min(axis=1, initial=np.inf), 0.0)
    return norm, row_min


def weighted_fuse(lists: Lists, weights: Sequence[float] | None = None,
                  normalize: str = "minmax", top_k: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of normalised scores; a document missing from a list gets the list's row minimum."""
    weights = [1.0] * len(lists) if weights is None else weights
    base = np.zeros(lists[0][0].shape[0])
    cols, vals = [], []
    for w, (d, s) in zip(weights, lists):
        norm, row_min = normalize_rows(d, s, normalize)
        base += w * row_min  # everyone gets the minimum; retrieved documents get their excess over it
        valid = ~np.isnan(norm)
        cols.append(np.where(valid, d, -1))
        vals.append(np.where(valid, w * (norm - row_min[:, None]), 0.0))
    return sum_topk(np.hstack(cols), np.hstack(vals), top_k, row_offset=base)


# -- stages ---------------------------------------------------------------------------------------
def _root(corpus: Corpus) -> Corpus:
    while corpus.parent is not None:
        corpus = corpus.parent
    return corpus


def _describe(corpus: Corpus) -> str:
    name = corpus.name or "unnamed"
    if corpus.parent is not None:
        return f"{len(corpus)} passages {name!r} of corpus {_root(corpus).name or 'unnamed'!r}"
    return f"corpus {name!r} ({len(corpus)} rows, fingerprint {corpus.fingerprint[:12]})"


class _Fusion(Stage):
    """Shared parts of fusion stages: inputs, weights, fitting, running the inputs."""

    requires: ClassVar[frozenset[str]] = frozenset({"queries"})
    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    cache_depth_field: ClassVar[str | None] = "top_k"

    inputs: list[Stage] = param(doc="the retrievers (or pipelines ending in candidates) to fuse; at least two")
    weights: list[float] | None = param(None, doc="one non-negative weight per input (null: 1 each)")
    top_k: int = param(1000, doc="fused candidates kept per query", ge=1)

    def validate(self, path: str = "") -> None:
        p = f"{path}." if path else ""
        if len(self.inputs) < 2:
            raise ConfigError(f"{p}inputs", f"{self.type_name} fuses at least two inputs, got {len(self.inputs)}")
        for i, stage in enumerate(self.inputs):
            where = f"{p}inputs[{i}]"
            try:
                fields = stage.check(frozenset({"queries"}), where)
            except StageError as e:
                raise ConfigError(where, f"a fusion input must start from queries: {e}") from None
            if "candidates" not in fields:
                raise ConfigError(where, f"stage {stage.type_name!r} does not produce candidates; fusion "
                                         "inputs must be retrievers or pipelines that end in candidates")
        if self.weights is not None:
            if len(self.weights) != len(self.inputs):
                raise ConfigError(f"{p}weights", f"expected {len(self.inputs)} weights (one per input), "
                                                 f"got {len(self.weights)}")
            if any(not np.isfinite(w) or w < 0 for w in self.weights) or not any(w > 0 for w in self.weights):
                raise ConfigError(f"{p}weights", f"weights must be finite, >= 0 and not all 0, got {self.weights}")

    def fit(self, corpus: Corpus, store: Any = None, *, rebuild: bool = False,
            progress: bool | None = None) -> "_Fusion":
        for stage in self.inputs:
            stage.fit(corpus, store, rebuild=rebuild, progress=progress)
        self._state["corpus"] = self.prepare_corpus(corpus)
        self._state["artifacts"] = []  # the inputs report their own
        return self

    def prepare_corpus(self, corpus: Corpus) -> Corpus:
        outs = [stage.prepare_corpus(corpus) for stage in self.inputs]
        if len({c.fingerprint for c in outs}) == 1:
            return outs[0]
        roots = [_root(c) for c in outs]
        if len({r.fingerprint for r in roots}) == 1:
            return roots[0]
        lines = "; ".join(f"inputs[{i}] ends on {_describe(c)}" for i, c in enumerate(outs))
        raise StageError(f"{self.type_name}: the inputs must end on the same corpus to be fused ({lines})")

    def _weights(self) -> list[float]:
        return list(self.weights) if self.weights is not None else [1.0] * len(self.inputs)

    def _input_lists(self, batch: Batch) -> list[tuple[np.ndarray, np.ndarray]]:
        target = self.corpus
        lists = []
        for i, stage in enumerate(self.inputs):
            with batch.stats.timer(f"{self.type_name}.inputs[{i}]:{stage.type_name}"):
                out = run_stage(stage, Batch(batch.queries, stats=batch.stats))
            if out.doc_idx is None:
                raise StageError(f"{self.type_name}: inputs[{i}] ({stage.type_name}) returned no candidates")
            lists.append(self._on_target(out, target, i))
        return lists

    def _on_target(self, out: Batch, target: Corpus, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The input's candidates as rows of ``target``: passages are aggregated (max) to their documents."""
        from ragopt.chunking import aggregate_candidates, parent_rows

        corpus, doc_idx, scores = out.corpus, out.doc_idx, out.scores
        while corpus is not target and corpus.fingerprint != target.fingerprint:
            if corpus.parent is None:
                raise StageError(f"{self.type_name}: inputs[{i}] returned candidates over {_describe(corpus)}, "
                                 f"not over the fitted {_describe(target)}; refit the fusion stage")
            cache = self._state.setdefault("parent_rows", {})
            rows = cache.get(corpus.fingerprint)
            if rows is None:
                rows = cache[corpus.fingerprint] = parent_rows(corpus)
            doc_idx, scores = aggregate_candidates(doc_idx, scores, rows, "max", top_k=max(doc_idx.shape[1], 1))
            corpus = corpus.parent
        return doc_idx, scores


@register("rrf")
class RRF(_Fusion):
    """Reciprocal rank fusion: ``sum_i w_i / (k + rank_i(d))``, ranks from 1 (``a + b`` builds one)."""

    k: int = param(60, doc="rank offset: larger k flattens the weight of the first ranks", ge=0)

    def transform(self, batch: Batch) -> Batch:
        lists = self._input_lists(batch)
        doc_idx, scores = rrf_fuse(lists, k=self.k, weights=self._weights(), top_k=self.top_k)
        return batch.with_candidates(doc_idx, scores, self.corpus)


@register("weighted")
class WeightedFusion(_Fusion):
    """Weighted sum of per-query normalised scores; a missing document gets the list's minimum."""

    normalize: Literal["minmax", "zscore", "none"] = param(
        "minmax", doc="per-query normalisation of each list: min-max to [0, 1], z-score, or raw scores")

    def transform(self, batch: Batch) -> Batch:
        lists = self._input_lists(batch)
        doc_idx, scores = weighted_fuse(lists, weights=self._weights(), normalize=self.normalize, top_k=self.top_k)
        return batch.with_candidates(doc_idx, scores, self.corpus)
