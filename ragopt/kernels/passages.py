"""Passage -> document aggregation of candidate lists (chunked retrieval)."""

from __future__ import annotations

import numpy as np

from ragopt.kernels.fusion import sum_topk

__all__ = ["aggregate_candidates"]


def aggregate_candidates(
    doc_idx: np.ndarray,
    scores: np.ndarray,
    rows: np.ndarray,
    method: str = "max",
    k_passages: int = 1,
    top_k: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Passage candidate lists (rows sorted best first) -> parent document lists (sorted, padded).

    ``rows[p]`` is the parent row of passage ``p``. ``max``: best passage score; ``sum``: sum of all
    retrieved passages; ``first_k_sum``: sum of the document's best ``k_passages`` passages."""
    keep = {"max": 1, "sum": None, "first_k_sum": k_passages}
    if method not in keep:
        raise ValueError(f"unknown aggregation {method!r} (max, sum, first_k_sum)")
    valid = (doc_idx >= 0) & np.isfinite(scores)
    s = np.where(valid, scores, -np.inf)
    if s.shape[1] > 1 and np.any(s[:, 1:] > s[:, :-1]):  # rows not sorted best first: sort them
        order = np.argsort(-s, axis=1, kind="stable")
        doc_idx, s, valid = (np.take_along_axis(a, order, axis=1) for a in (doc_idx, s, valid))
    parents = np.where(valid, rows[np.where(valid, doc_idx, 0)], -1)
    return sum_topk(parents, np.where(valid, s, 0.0), top_k, keep_first=keep[method])
