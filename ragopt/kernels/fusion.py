"""Fusion kernels over padded candidate lists: exact per-row sums with top-k, RRF, score normalisation.

A candidate list is ``(doc_idx, scores)``: ``(n, m)`` int64 rows of corpus positions (-1 = empty slot) and
float32 scores, each row sorted best first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["sum_topk", "rrf_fuse", "weighted_fuse", "normalize_rows", "Lists"]

Lists = Sequence[tuple[np.ndarray, np.ndarray]]


def sum_topk(
    cols: np.ndarray,
    values: np.ndarray,
    top_k: int,
    row_offset: np.ndarray | None = None,
    keep_first: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
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
        kth = -np.partition(-out, k - 1, axis=1)[:, k - 1 : k]
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


def rrf_fuse(
    lists: Lists, k: float = 60, weights: Sequence[float] | None = None, top_k: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
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


def weighted_fuse(
    lists: Lists, weights: Sequence[float] | None = None, normalize: str = "minmax", top_k: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
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
