"""Top-k selection over score matrices: rows sorted best first, ties by ascending column, padded."""

from __future__ import annotations

import numpy as np

__all__ = ["topk_rows", "splice_head"]


def topk_rows(scores: np.ndarray, k: int, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of each row of ``scores`` (2-D), sorted descending, ties by ascending column.

    Returns ``(doc_idx, scores)`` padded with -1 / -inf when a row has fewer than ``k`` finite entries.
    ``idx``, if given, maps columns to document rows (same shape as ``scores``)."""
    n, m = scores.shape
    k = min(k, m)
    if k <= 0:
        return np.full((n, 0), -1, np.int64), np.full((n, 0), -np.inf, np.float32)
    if k < m:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition breaks ties at the k-th score arbitrarily: rows whose k-th score is shared with
        # entries left outside are redone with a full stable sort, so ties go to the lowest column
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        straddle = np.nonzero(((scores >= kth[:, None]).sum(axis=1) > k) & np.isfinite(kth))[0]
        for r in straddle:
            part[r] = np.lexsort((np.arange(m), -scores[r]))[:k]
    else:
        part = np.broadcast_to(np.arange(m), (n, m)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    # lexsort: primary key descending score, secondary ascending column
    order = np.lexsort((part, -part_scores), axis=1)
    cols = np.take_along_axis(part, order, axis=1)
    out_scores = np.take_along_axis(part_scores, order, axis=1).astype(np.float32, copy=False)
    out_idx = np.take_along_axis(idx, cols, axis=1) if idx is not None else cols
    out_idx = out_idx.astype(np.int64, copy=True)
    out_idx[~np.isfinite(out_scores)] = -1
    return out_idx, out_scores


def splice_head(
    head_idx: np.ndarray, head_scores: np.ndarray, tail_idx: np.ndarray, tail_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A reranked head followed by the untouched tail of each row: the tail keeps its order and gaps, shifted so
    that its best score sits 1 below the head's lowest finite score (rows without either are left as they are)."""
    tail = tail_scores.astype(np.float64)
    finite = np.isfinite(head_scores)
    low = np.where(finite, head_scores, np.inf).min(axis=1)
    ok = finite.any(axis=1) & np.isfinite(tail[:, 0])
    shift = np.where(ok, low - 1.0 - np.where(ok, tail[:, 0], 0.0), 0.0)
    tail = (tail + shift[:, None]).astype(np.float32)
    return np.concatenate([head_idx, tail_idx], axis=1), np.concatenate([head_scores, tail], axis=1)
