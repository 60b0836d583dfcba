"""The stages that the composition operators build: :class:`Cutoff` (``a % k``) and the fusion of several
retrievers' candidate lists (``a + b``).

* :class:`RRFFusion` (``a + b``): reciprocal rank fusion, ``score(d) = sum_i w_i / (k + rank_i(d))`` with ranks
  from 1; a document absent from a list gets nothing from it.
* :class:`WeightedFusion`: ``score(d) = sum_i w_i * norm_i(d)`` after per-query normalisation of each list
  (``minmax``, ``zscore`` or ``none``). A document absent from list ``i`` gets that list's lowest
  normalised score for the query (0 with min-max; with z-scores 0 would rank it above documents the list
  did retrieve). A list with no candidates for a query adds 0.

Weights default to 1 per input. Every input runs on the same queries, shares the batch's
:class:`~ragopt.types.Stats`, and must end on the same corpus; inputs that end on passages of that corpus
(a chunker without an ``aggregate`` stage) are aggregated to it by their best passage first. The fusion
kernels are vectorised numpy, in :mod:`ragopt.kernels.fusion`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from ragopt.config import param
from ragopt.errors import ConfigError, StageError
from ragopt.kernels.fusion import rrf_fuse, weighted_fuse
from ragopt.kernels.passages import aggregate_candidates
from ragopt.pipeline import Fitted, Stage, run_stage
from ragopt.registry import register
from ragopt.types import Batch, Corpus

__all__ = ["Cutoff", "RRFFusion", "WeightedFusion", "RRF"]


@register("cutoff")
class Cutoff(Stage):
    """Keep the top ``k`` candidates of every query (``stage % k``)."""

    requires: ClassVar[frozenset[str]] = frozenset({"queries", "candidates"})
    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})

    cache_outputs: ClassVar[bool] = False

    k: int = param(10, doc="number of candidates to keep per query", ge=1)

    def transform(self, batch: Batch) -> Batch:
        return batch.cut(self.k)


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

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._parent_rows: dict[str, np.ndarray] = {}  # passage corpus fingerprint -> parent rows

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
                raise ConfigError(
                    where,
                    f"stage {stage.type_name!r} does not produce candidates; fusion "
                    "inputs must be retrievers or pipelines that end in candidates",
                )
        if self.weights is not None:
            if len(self.weights) != len(self.inputs):
                raise ConfigError(
                    f"{p}weights", f"expected {len(self.inputs)} weights (one per input), got {len(self.weights)}"
                )
            if any(not np.isfinite(w) or w < 0 for w in self.weights) or not any(w > 0 for w in self.weights):
                raise ConfigError(f"{p}weights", f"weights must be finite, >= 0 and not all 0, got {self.weights}")

    def fit(self, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None) -> _Fusion:
        for stage in self.inputs:
            stage.fit(corpus, store, rebuild=rebuild, progress=progress)
        self._fit = Fitted(self.prepare_corpus(corpus))  # the inputs report their own artifacts
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

        corpus, doc_idx, scores = out.corpus, out.doc_idx, out.scores
        while corpus is not target and corpus.fingerprint != target.fingerprint:
            if corpus.parent is None:
                raise StageError(
                    f"{self.type_name}: inputs[{i}] returned candidates over {_describe(corpus)}, "
                    f"not over the fitted {_describe(target)}; refit the fusion stage"
                )
            rows = self._parent_rows.get(corpus.fingerprint)
            if rows is None:
                rows = self._parent_rows[corpus.fingerprint] = corpus.parent_rows()
            doc_idx, scores = aggregate_candidates(doc_idx, scores, rows, "max", top_k=max(doc_idx.shape[1], 1))
            corpus = corpus.parent
        return doc_idx, scores


@register("rrf")
class RRFFusion(_Fusion):
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
        "minmax", doc="per-query normalisation of each list: min-max to [0, 1], z-score, or raw scores"
    )

    def transform(self, batch: Batch) -> Batch:
        lists = self._input_lists(batch)
        doc_idx, scores = weighted_fuse(lists, weights=self._weights(), normalize=self.normalize, top_k=self.top_k)
        return batch.with_candidates(doc_idx, scores, self.corpus)


RRF = RRFFusion  # the name before stages were suffixed by role
