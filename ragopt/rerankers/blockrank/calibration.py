"""Layer selection for the ``blockrank`` stage: every layer's attention signal scored on labelled queries, the
best layer (and head set) with its per-layer curve, and checks that the chosen signal reads the documents, not
their labels or positions."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ragopt.errors import ConfigError, StageError
from ragopt.kernels.blockrank import ndcg_at_k, precision_at_1
from ragopt.rerankers.blockrank.stage import BlockRankReranker, mean_heads
from ragopt.types import Batch


@dataclass
class LayerCalibration:
    """Per-layer quality of the attention signal on labelled queries, the best layer and (optionally) head set."""

    metric: str
    best_layer: int
    best_heads: list[int] | None
    curve: list[dict[str, float]]  # one row per layer: layer, p@1, ndcg@10
    head_curve: list[dict[str, float]]  # at the best layer: heads kept (best single heads first), p@1, ndcg@10
    n_queries: int
    #: at the best layer and heads: for each input position (label ``[i + 1]``), how many queries' top-scored
    #: candidate sat there, and how many queries' first relevant candidate did. Tops that pile up on one position
    #: whatever the relevance read the labels, not the documents
    top_from_position: list[int] = field(default_factory=list)
    gold_at_position: list[int] = field(default_factory=list)
    top_relevant_from_position: list[int] = field(default_factory=list)  # of top_from_position, the relevant ones
    #: set when the tops look label-driven (see :func:`label_bias`); also issued as a warning
    label_bias: str | None = None
    #: one order only (``permutations`` 1): the best layer and heads scored again with every query's candidates
    #: reversed. ``reversed_order``: its p@1 and nDCG@10; ``order_agreement``: the share of queries whose top
    #: candidate is the same document in both orders (a layer that reads the documents keeps it)
    reversed_order: dict[str, float] | None = None
    order_agreement: float | None = None
    #: set when the top candidate changes with the order for most queries (see :func:`order_bias`); also a warning
    order_bias: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "best_layer": self.best_layer,
            "best_heads": self.best_heads,
            "n_queries": self.n_queries,
            "curve": self.curve,
            "head_curve": self.head_curve,
            "top_from_position": self.top_from_position,
            "gold_at_position": self.gold_at_position,
            "top_relevant_from_position": self.top_relevant_from_position,
            "label_bias": self.label_bias,
            "reversed_order": self.reversed_order,
            "order_agreement": self.order_agreement,
            "order_bias": self.order_bias,
        }


def position_counts(per_query: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[list[int], list[int], list[int]]:
    """Over queries given as (scores, relevance) in input order: how many tops came from each position, how many
    of those tops were relevant, and at which position each query's first relevant candidate sat."""
    n = max((len(s) for s, _ in per_query), default=0)
    top, hit, gold = np.zeros(n, int), np.zeros(n, int), np.zeros(n, int)
    for s, rel in per_query:
        t = int(np.argmax(s))
        top[t] += 1
        hit[t] += int(rel[t] > 0)
        if np.any(rel > 0):
            gold[int(np.argmax(rel > 0))] += 1
    return top.tolist(), hit.tolist(), gold.tolist()


def label_bias(top: Sequence[int], hit: Sequence[int], min_queries: int = 6) -> str | None:
    """A description of the likely label bias in ``top``/``hit`` (from :func:`position_counts`), or None: one input
    position gives the top candidate for at least half of the queries, and for fewer than half of those it is
    relevant. A layer that reads the documents puts its tops where the relevant candidates are; one that reads the
    labels puts them on one label (SmolLM2's layer 20: ``[1]`` or ``[10]`` for every query, whatever the order).
    In the first stage's order a bias to ``[1]`` that agrees with a strong first stage passes this check: only
    ``permutations`` (every candidate at every label) or ``labels: false`` rule a bias out."""
    n = sum(top)
    if n < min_queries:
        return None
    p = int(np.argmax(top))
    if 2 * top[p] < n or 2 * hit[p] >= top[p]:
        return None
    return (
        f"the top candidate sat at input position {p + 1} (label [{p + 1}]) for {top[p]} of {n} queries and was "
        f"relevant for {hit[p]} of them: the signal may follow the labels, not the documents; calibrate with "
        "permutations equal to depth (every candidate under every label) or labels: false"
    )


def order_bias(same: int, n: int, min_queries: int = 6) -> str | None:
    """A description of the likely order bias when the top candidate stayed the same document for only ``same`` of
    ``n`` queries once their candidates were reversed, or None. Relevance belongs to a document, not to where it
    sits: a layer that reads the documents keeps its top whatever the order, one that reads the positions or the
    labels moves it with them. Fires when the top changed for more than half of the queries. Unlike
    :func:`label_bias`, it also sees a pull to ``[1]`` that agrees with a strong first stage (SmolLM2's layer 20 on
    nq: ``[1]`` first for 20 of 20 queries, relevant for 16)."""
    if n < min_queries or 2 * same >= n:
        return None
    return (
        f"the top candidate changed for {n - same} of {n} queries when their candidates were reversed: the signal "
        "follows where the documents sit more than what they say; calibrate with permutations equal to depth "
        "(every candidate at every position)"
    )


def _metrics(per_query: list[tuple[np.ndarray, np.ndarray, list[float]]]) -> dict[str, float]:
    p1 = [precision_at_1(s, rel) for s, rel, _ in per_query]
    nd = [ndcg_at_k(s, rel, 10, gains) for s, rel, gains in per_query]
    return {"p@1": float(np.mean(p1)), "ndcg@10": float(np.mean(nd))}


def calibrate_layers(
    stage: BlockRankReranker,
    batch: Batch,
    qrels: dict[str, dict[str, int]],
    metric: Literal["p@1", "ndcg@10"] = "ndcg@10",
    layers: Sequence[int] | None = None,
    select_heads: bool = False,
    order_check: bool = True,
) -> LayerCalibration:
    """Score every layer's attention signal (the stage's prompt, aggregation, normalisation) on ``batch``'s
    judged queries (first-stage candidates; queries without a judgment are skipped); pick the layer with the best
    mean ``metric`` (ties: the earlier layer). With ``select_heads``, rank the best layer's heads by their own
    metric and keep the best prefix of that ranking.

    With one order (``permutations`` 1) and ``order_check``, the chosen layer and heads are scored once more with
    each query's candidates reversed (one more prefill a query, to that layer only): a layer picked for agreeing
    with the first stage's order, not for reading the documents, shows there (:func:`order_bias`)."""
    if metric not in ("p@1", "ndcg@10"):
        raise ConfigError("metric", f"must be 'p@1' or 'ndcg@10', got {metric!r}")
    model, _ = stage.model()
    n_layers = stage.n_layers(model)
    layers = list(range(n_layers)) if layers is None else sorted(set(layers))
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise ConfigError("layers", f"layers {bad} out of range: the model has {n_layers} (0..{n_layers - 1})")
    cand, sets = stage.prompt_sets(batch)  # in as many orders as the stage scores (permutations)
    doc_ids = batch.corpus.doc_ids
    per_layer: dict[int, list[tuple[np.ndarray, np.ndarray, list[float]]]] = {x: [] for x in layers}
    judged_rows: list[int] = []
    for r, (qid, h, ps) in enumerate(zip(batch.queries.ids, cand, sets)):
        judged = qrels.get(qid)
        if not judged or not h:
            continue
        judged_rows.append(r)
        rel = np.array([judged.get(doc_ids[i], 0) for i in h], dtype=np.float64)
        gains = [float(g) for g in judged.values() if g > 0]
        for layer, hs in stage.set_head_scores(ps, layers, batch.stats).items():
            per_layer[layer].append((hs, rel, gains))
    n_q = len(judged_rows)
    if n_q == 0:
        raise StageError("calibrate_layers: none of the batch's queries has a judgment in qrels")

    def summary(layer: int, heads: list[int] | None) -> dict[str, float]:
        rows = [(mean_heads(hs, heads), rel, g) for hs, rel, g in per_layer[layer]]
        return _metrics(rows)

    curve = [{"layer": x, **summary(x, None)} for x in layers]
    best = max(curve, key=lambda row: (row[metric], -row["layer"]))
    best_layer = int(best["layer"])
    head_curve: list[dict[str, Any]] = []
    best_heads = None
    if select_heads:
        n_heads = per_layer[best_layer][0][0].shape[0]
        single = sorted(range(n_heads), key=lambda k: -summary(best_layer, [k])[metric])
        for m in range(1, n_heads + 1):
            head_curve.append({"heads": single[:m], **summary(best_layer, single[:m])})
        top = max(head_curve, key=lambda row: (row[metric], -len(row["heads"])))
        best_heads = sorted(top["heads"]) if len(top["heads"]) < n_heads else None
    at_best = [(mean_heads(hs, best_heads), rel) for hs, rel, _ in per_layer[best_layer]]
    tops, hits, golds = position_counts(at_best)
    bias = label_bias(tops, hits) if stage.labels and stage.permutations == 1 else None
    if bias:
        warnings.warn(f"calibrate_layers: layer {best_layer}: {bias}", UserWarning, stacklevel=2)
    reversed_order = agreement = moved = None
    if order_check and stage.permutations == 1:
        _, back = stage.prompt_sets(batch, orders=lambda n: [np.arange(n)[::-1]])
        rows, same = [], 0
        for r, (s_given, rel), (_, _, gains) in zip(judged_rows, at_best, per_layer[best_layer]):
            s_back = mean_heads(stage.set_head_scores(back[r], [best_layer], batch.stats)[best_layer], best_heads)
            same += int(np.argmax(s_back) == np.argmax(s_given))  # both in the given order of candidates
            rows.append((s_back, rel, gains))
        reversed_order, agreement, moved = _metrics(rows), same / n_q, order_bias(same, n_q)
        if moved:
            warnings.warn(f"calibrate_layers: layer {best_layer}: {moved}", UserWarning, stacklevel=2)
    return LayerCalibration(
        metric,
        best_layer,
        best_heads,
        curve,
        head_curve,
        n_q,
        top_from_position=tops,
        gold_at_position=golds,
        top_relevant_from_position=hits,
        label_bias=bias,
        reversed_order=reversed_order,
        order_agreement=agreement,
        order_bias=moved,
    )
