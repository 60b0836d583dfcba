"""CUR approximation of cross-encoder scores (ANNCUR, ADACUR): pure numpy kernels.

Notation: ``R`` is the anchor matrix, ``(n_anchor_queries, n_items)``, exact cross-encoder scores of a few
anchor queries against every item. For a test query scored exactly on a set ``S`` of items (``s_S``), its
scores on every item are approximated through the CUR factorisation (Yadav et al., EMNLP 2022)::

    s_hat = s_S @ pinv(R[:, S]) @ R

i.e. the query is written as the minimum-norm combination of anchor queries that matches its scores on
``S`` (singular values below ``rcond`` times the largest are cut). ANNCUR uses one fixed item set ``S`` for
every query, so ``pinv(R[:, S]) @ R`` is computed once (:func:`cur_operator`); ADACUR (Yadav et al.,
2024) grows ``S`` per query over several rounds, each round adding the best items of the current
approximation not yet scored (:func:`adaptive_select`). Both spend what is left of a fixed budget of
cross-encoder calls on exact scores for the top of the final approximation (:func:`cur_search`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ragopt.kernels.topk import topk_rows

__all__ = [
    "cur_operator",
    "approximate",
    "select_anchor_items",
    "adaptive_select",
    "split_rounds",
    "cur_search",
    "CURResult",
    "SELECTIONS",
    "ADAPTIVE",
]

SELECTIONS = ("random", "topk_mean", "pivoted")
ADAPTIVE = ("topk", "softmax")
ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_CELLS = 1 << 24  # query chunk size: at most this many (query, item) cells held at once


# -- approximation --------------------------------------------------------------------------------
def _svd(A: np.ndarray, rcond: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``U, 1/s, Vt`` of stacked ``A`` ``(..., k_q, m)`` (float64); singular values below ``rcond`` times the
    largest one get ``1/s = 0``."""
    U, s, Vt = np.linalg.svd(np.asarray(A, np.float64), full_matrices=False)
    keep = s > rcond * s[..., :1]
    return U, np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0), Vt


def _pinv(A: np.ndarray, rcond: float) -> np.ndarray:
    """Pseudo-inverse of ``A`` ``(k_q, m)`` -> ``(m, k_q)``, float64, with the ``rcond`` cut."""
    U, s_inv, Vt = _svd(A, rcond)
    return (Vt.T * s_inv) @ U.T


def cur_operator(R: np.ndarray, items: np.ndarray, rcond: float = 1e-2) -> np.ndarray:
    """``pinv(R[:, items]) @ R``, ``(len(items), n_items)`` float32: ANNCUR's fixed-anchor operator, so that
    ``s_hat = s_items @ operator``."""
    P = _pinv(R[:, np.asarray(items, np.int64)], rcond)
    return (P @ np.asarray(R, np.float64)).astype(np.float32)


def approximate(R: np.ndarray, items: np.ndarray, values: np.ndarray, rcond: float = 1e-2) -> np.ndarray:
    """Approximate scores ``(Q, n_items)`` of ``Q`` queries, each scored exactly on its own items.

    ``items`` and ``values`` are ``(Q, m)``: the items scored for each query and their exact scores."""
    A = np.moveaxis(R[:, np.asarray(items, np.int64)], 0, -2)  # (Q, k_q, m)
    U, s_inv, Vt = _svd(A, rcond)
    coef = np.einsum("qm,qrm->qr", np.asarray(values, np.float64), Vt) * s_inv
    w = np.einsum("qr,qkr->qk", coef, U)  # values @ pinv(A): the query as a mix of anchor queries
    return (w @ np.asarray(R, np.float64)).astype(np.float32)


# -- anchor item selection ------------------------------------------------------------------------
def select_anchor_items(R: np.ndarray, k: int, strategy: str = "random", seed: int = 0) -> np.ndarray:
    """``k`` distinct item columns of ``R`` (sorted) shared by every query.

    * ``random``: uniform without replacement (seeded);
    * ``topk_mean``: the items with the highest mean anchor score (ties by column);
    * ``pivoted``: greedy column-pivoted Gram-Schmidt, the columns that best span ``R`` (the classic CUR
      column choice); once ``R``'s rank is exhausted the rest go by largest column norm."""
    n = R.shape[1]
    if not 0 <= k <= n:
        raise ValueError(f"cannot select {k} anchor items out of {n}")
    if strategy == "random":
        return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False)).astype(np.int64)
    if strategy == "topk_mean":
        return np.sort(np.argsort(-np.asarray(R, np.float64).mean(axis=0), kind="stable")[:k]).astype(np.int64)
    if strategy == "pivoted":
        X = np.asarray(R, np.float64)
        norms = np.einsum("ij,ij->j", X, X)
        resid = norms.copy()
        basis = np.zeros((X.shape[0], 0))
        picked: list[int] = []
        tol = 1e-10 * max(float(norms.max(initial=0.0)), 1e-300)
        for _ in range(k):
            c = int(np.argmax(resid))
            if resid[c] <= tol:  # rank exhausted: fall back to column norms
                rest = np.setdiff1d(np.argsort(-norms, kind="stable"), picked, assume_unique=True)
                picked.extend(int(i) for i in rest[: k - len(picked)])
                break
            v = X[:, c] - basis @ (basis.T @ X[:, c])
            v /= np.linalg.norm(v)
            basis = np.column_stack([basis, v])
            resid = np.maximum(resid - (v @ X) ** 2, 0.0)
            resid[picked + [c]] = -np.inf
            picked.append(c)
        return np.sort(np.asarray(picked, np.int64))
    raise ValueError(f"unknown anchor selection {strategy!r} (one of {', '.join(SELECTIONS)})")


def adaptive_select(
    s_hat: np.ndarray,
    available: np.ndarray,
    n: int,
    strategy: str = "topk",
    temperature: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``n`` items per row among ``available`` (bool ``(Q, N)``): the top of ``s_hat`` (``topk``), or a sample
    without replacement from ``softmax(z / temperature)`` of the per-row z-scored ``s_hat`` (``softmax``,
    Gumbel top-k). Every row must have at least ``n`` available items."""
    if n <= 0:
        return np.zeros((s_hat.shape[0], 0), np.int64)
    keys = np.asarray(s_hat, np.float64)
    if strategy == "softmax":
        cnt = np.maximum(available.sum(axis=1, keepdims=True), 1)
        mean = np.where(available, keys, 0.0).sum(axis=1, keepdims=True) / cnt
        std = np.sqrt(np.where(available, (keys - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / cnt)
        rng = rng if rng is not None else np.random.default_rng(0)
        keys = (keys - mean) / np.where(std > 0, std, 1.0) / temperature + rng.gumbel(size=keys.shape)
    elif strategy != "topk":
        raise ValueError(f"unknown adaptive strategy {strategy!r} (one of {', '.join(ADAPTIVE)})")
    keys = np.where(available, keys, -np.inf)
    idx, sc = topk_rows(keys, n)
    if not np.isfinite(sc).all():
        raise ValueError(f"adaptive_select: a row has fewer than {n} available items")
    return idx


def split_rounds(n: int, rounds: int) -> list[int]:
    """``n`` items over ``rounds`` rounds, as evenly as possible (earlier rounds get the remainder)."""
    rounds = max(1, min(rounds, n)) if n > 0 else 1
    base, extra = divmod(n, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


# -- search ---------------------------------------------------------------------------------------
@dataclass
class CURResult:
    """Ranked items per query (``-1`` / ``-inf`` padded), cross-encoder calls per query, and how many of the
    returned items carry exact scores (the rest carry approximate ones)."""

    doc_idx: np.ndarray
    scores: np.ndarray
    calls: np.ndarray
    n_exact: np.ndarray


def cur_search(
    R: np.ndarray,
    score_fn: ScoreFn,
    n_queries: int,
    *,
    budget: int,
    n_anchor_items: int,
    top_k: int,
    method: str = "anncur",
    rounds: int = 1,
    selection: str = "random",
    adaptive: str = "topk",
    temperature: float = 1.0,
    rcond: float = 1e-2,
    allowed: np.ndarray | None = None,
    init_items: np.ndarray | None = None,
    anchor_items: np.ndarray | None = None,
    operator: np.ndarray | None = None,
    merge: str = "interleave",
    seed: int = 0,
) -> CURResult:
    """Search ``n_queries`` queries with at most ``budget`` cross-encoder calls each.

    ``score_fn(rows, items)`` returns exact scores of flat (query row, item) pairs; it is called once per
    round (per chunk of queries) and every pair it is given counts as one call. ``allowed`` (bool
    ``(Q, N)``) restricts each query to some items (a first stage's candidates); a query with no allowed
    item gets an empty row and no calls; a query with at most ``budget`` allowed items gets all of them
    scored exactly. Otherwise (calls per query == ``budget``):

    * ``anncur``: score the ``n_anchor_items`` shared anchor items (``anchor_items``, or chosen by
      ``selection``), approximate every score, score the ``budget - n_anchor_items`` best unscored;
    * ``adacur``: the ``n_anchor_items`` are chosen over ``rounds`` rounds: the first round takes
      ``init_items`` (``(Q, >= first round)``, e.g. a first stage's top, allowed items) or the shared
      selection (``anchor_items``, when given, are that first round's), each later round the best unscored
      items of the approximation so far (``adaptive``); then the rest of the budget rescores the top of
      the final approximation.

    Ranking (``merge``): ``interleave`` ranks every item by its exact score when it has one, else by its
    approximate score; ``scored_first`` puts every exactly scored item first (by exact score), then the
    others by approximate score, shifted below them.
    """
    R = np.asarray(R)
    N = R.shape[1]
    if budget < n_anchor_items:
        raise ValueError(f"budget ({budget}) is smaller than the number of anchor items ({n_anchor_items})")
    if method not in ("anncur", "adacur"):
        raise ValueError(f"unknown method {method!r} (anncur or adacur)")
    if merge not in ("scored_first", "interleave"):
        raise ValueError(f"unknown merge {merge!r} (scored_first or interleave)")
    if allowed is not None and allowed.shape != (n_queries, N):
        raise ValueError(f"allowed has shape {allowed.shape}, expected {(n_queries, N)}")
    sizes = split_rounds(n_anchor_items, rounds if method == "adacur" else 1)
    shared = None
    n_alw = np.full(n_queries, N) if allowed is None else np.asarray(allowed, bool).sum(axis=1)
    if (n_alw > budget).any() and (method == "anncur" or init_items is None):
        shared = (
            np.asarray(anchor_items, np.int64)
            if anchor_items is not None
            else select_anchor_items(R, n_anchor_items if method == "anncur" else sizes[0], selection, seed)
        )
        want = n_anchor_items if method == "anncur" else sizes[0]
        if len(shared) != want:
            raise ValueError(f"{method}: expected {want} shared anchor items, got {len(shared)}")
        if method == "anncur" and operator is None and n_anchor_items > 0:
            operator = cur_operator(R, shared, rcond)
    k = min(top_k, N)
    rng = np.random.default_rng(seed)
    plan = _Plan(shared, operator, budget, n_anchor_items, sizes, method, adaptive, temperature, rcond, merge, k, rng)
    out_idx = np.full((n_queries, k), -1, np.int64)
    out_sc = np.full((n_queries, k), -np.inf, np.float32)
    calls = np.zeros(n_queries, np.int64)
    n_exact = np.zeros(n_queries, np.int64)
    step = max(1, _CELLS // max(N, 1))
    for lo in range(0, n_queries, step):
        rows = np.arange(lo, min(lo + step, n_queries))
        alw = np.ones((len(rows), N), bool) if allowed is None else np.asarray(allowed[rows], bool)
        init = None if init_items is None else np.asarray(init_items[rows], np.int64)
        res = _search_chunk(R, score_fn, rows, alw, init, plan)
        out_idx[rows], out_sc[rows], calls[rows], n_exact[rows] = res
    return CURResult(out_idx, out_sc, calls, n_exact)


@dataclass(frozen=True)
class _Plan:
    """What every query chunk of one :func:`cur_search` shares: the shared anchors and operator (ANNCUR),
    the settings, and the random generator (drawn from chunk after chunk)."""

    shared: np.ndarray | None
    operator: np.ndarray | None
    budget: int
    n_anchor: int
    sizes: list[int]
    method: str
    adaptive: str
    temperature: float
    rcond: float
    merge: str
    k: int
    rng: np.random.Generator


def _search_chunk(
    R: np.ndarray,
    score_fn: ScoreFn,
    rows: np.ndarray,
    alw: np.ndarray,
    init: np.ndarray | None,
    plan: _Plan,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    Q, N = alw.shape
    n_alw = alw.sum(axis=1)
    exact = np.full((Q, N), np.nan, np.float32)
    scored = np.zeros((Q, N), bool)
    calls = np.zeros(Q, np.int64)

    def score_flat(local: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Exact scores of flat pairs (chunk row, item), recorded; one ``score_fn`` call."""
        if items.size == 0:
            return np.zeros(0, np.float32)
        vals = np.asarray(score_fn(rows[local], items), np.float32).reshape(-1)
        if vals.shape != items.shape or not np.isfinite(vals).all():
            raise ValueError(
                f"score_fn returned {vals.shape[0]} scores for {items.shape[0]} pairs, or non-finite scores"
            )
        exact[local, items] = vals
        scored[local, items] = True
        np.add.at(calls, local, 1)
        return vals

    def score(local: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of items ``(len(local), m)`` for the chunk rows ``local``."""
        return score_flat(np.repeat(local, items.shape[1]), items.ravel()).reshape(items.shape)

    full = (n_alw > 0) & (n_alw <= plan.budget)  # exhaustive rows: every allowed item scored
    cur = np.nonzero(n_alw > plan.budget)[0]
    s_hat = np.full((Q, N), -np.inf, np.float32)
    if full.any():
        score_flat(*np.nonzero(alw & full[:, None]))
    if len(cur):
        if plan.method == "anncur":
            if plan.n_anchor:
                vals = score(cur, np.broadcast_to(plan.shared, (len(cur), len(plan.shared))))
                s_hat[cur] = vals @ plan.operator
            else:
                s_hat[cur] = 0.0
        else:
            first = plan.shared if init is None else init[cur][:, : plan.sizes[0]]
            if init is not None and (first.shape[1] < plan.sizes[0] or (first < 0).any()):
                raise ValueError(f"init_items must give at least {plan.sizes[0]} items per query")
            sel = np.broadcast_to(first, (len(cur), plan.sizes[0])).copy()
            vals = score(cur, sel)
            for n in plan.sizes[1:]:
                s_hat[cur] = approximate(R, sel, vals, plan.rcond)
                nxt = adaptive_select(s_hat[cur], alw[cur] & ~scored[cur], n, plan.adaptive, plan.temperature, plan.rng)
                sel = np.concatenate([sel, nxt], axis=1)
                vals = np.concatenate([vals, score(cur, nxt)], axis=1)
            s_hat[cur] = approximate(R, sel, vals, plan.rcond) if sel.shape[1] else 0.0
        rest = plan.budget - plan.n_anchor
        if rest > 0:
            score(cur, adaptive_select(s_hat[cur], alw[cur] & ~scored[cur], rest, "topk"))
    known = scored & alw
    final = np.where(known, exact, np.where(alw, s_hat, -np.inf)).astype(np.float64)
    if plan.merge == "scored_first":
        lo_exact = np.where(known, exact, np.inf).min(axis=1)
        unk = alw & ~known
        hi_approx = np.where(unk, s_hat, -np.inf).max(axis=1)
        shift = np.where(
            np.isfinite(lo_exact) & np.isfinite(hi_approx) & (hi_approx >= lo_exact), hi_approx - lo_exact + 1.0, 0.0
        )
        final = np.where(unk, final - shift[:, None], final)
    idx, sc = topk_rows(final, plan.k)
    n_exact = np.where(idx >= 0, np.take_along_axis(known, np.maximum(idx, 0), axis=1), False).sum(axis=1)
    return idx, sc, calls, n_exact
