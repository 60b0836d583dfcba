"""BlockRank kernels: the block layout of an in-context ranking prompt, its attention pattern and position ids,
and relevance read from query-to-block attention (Gupta et al., "Scalable In-context Ranking with Generative
Models", 2025). numpy only.

Notation:

* A prompt is ``B = n + 2`` blocks of token lengths ``L_0`` (instruction), ``L_1 .. L_n`` (one per candidate
  document) and ``L_q`` (the query block, last); ``T = L_0 + sum_d L_d + L_q`` tokens; block ``b`` spans
  ``[s_b, s_b + L_b)`` of the flattened sequence.
* ``allowed[i, j]`` (``T x T`` booleans) says whether token ``i`` may attend to token ``j``. Full (causal)
  attention: ``j <= i``. Block-sparse: instruction tokens attend causally within the instruction; a document
  token attends to the whole instruction and causally within its own block; query tokens attend to everything
  before them and causally within the query block.
* Position ids ``p``: full attention numbers tokens ``0 .. T-1``. Block-sparse: the instruction takes ``0 .. L_0-1``,
  every document ``L_0 .. L_0 + L_d - 1`` (independent of the other documents, so a block's keys and values
  depend only on the instruction and itself), and the query starts at ``L_0 + max_d L_d`` (``after_longest``: the
  same for every order and subset of the same documents) or at ``L_0 + sum_d L_d`` (``after_all``: as in a
  sequential prompt).
* Relevance: ``A[h, r, j]``, the attention of head ``h`` from query row ``r`` (a token of the query block) to key
  ``j`` at one layer. With ``normalize="docs"`` it is renormalised over the document keys only (the paper's
  softmax over document tokens); ``"all"`` keeps the model's probabilities. The score of document ``d`` for head
  ``h`` is ``mean_r agg_{j in block d} A[h, r, j]`` with ``agg`` one of sum (the paper's), mean, max.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragopt.errors import ConfigError

__all__ = [
    "AGGREGATIONS",
    "QUERY_POSITIONS",
    "block_starts",
    "block_ids",
    "allowed_mask",
    "tile_pattern",
    "position_ids",
    "max_position",
    "candidates_that_fit",
    "block_scores",
    "precision_at_1",
    "ndcg_at_k",
]

AGGREGATIONS = ("sum", "mean", "max")
QUERY_POSITIONS = ("after_longest", "after_all")


def block_starts(lengths: Sequence[int]) -> np.ndarray:
    """Start offset of every block in the flattened sequence (``len(lengths) + 1`` values, the last is ``T``)."""
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))])


def _check(lengths: Sequence[int]) -> None:
    if len(lengths) < 2:
        raise ConfigError("lengths", f"need an instruction and a query block at least, got {len(lengths)} blocks")
    if any(int(n) < 1 for n in lengths):
        raise ConfigError("lengths", f"every block needs at least one token, got lengths {list(lengths)}")


def block_ids(lengths: Sequence[int], pad: int = 0) -> np.ndarray:
    """The block of every token: 0 the instruction, 1..n the documents, n + 1 the query, then ``pad`` tokens of
    block n + 2 (padding, for kernels that need a length multiple of a tile)."""
    return np.repeat(np.arange(len(lengths) + 1), [*(int(n) for n in lengths), int(pad)])


def allowed_mask(lengths: Sequence[int], sparse: bool) -> np.ndarray:
    """``allowed[i, j]`` for blocks of ``lengths`` (instruction, documents..., query); see the module notation."""
    _check(lengths)
    starts = block_starts(lengths)
    t = int(starts[-1])
    causal = np.tril(np.ones((t, t), dtype=bool))
    if not sparse:
        return causal
    block = block_ids(lengths)
    last = len(lengths) - 1
    same = block[:, None] == block[None, :]
    to_instruction = block[None, :] == 0
    from_query = block[:, None] == last
    return causal & (same | to_instruction | from_query)


def tile_pattern(lengths: Sequence[int], pad: int, sparse: bool, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """The pattern at the granularity of ``tile x tile`` (query, key) tiles, for a kernel that skips tiles
    (FlexAttention's block mask): ``(some, every)``, booleans of ``(T_p / tile, T_p / tile)`` where ``T_p = T + pad``
    (a multiple of ``tile``). ``some[i, j]``: tile ``(i, j)`` holds an allowed pair (exact); ``every[i, j]``: every
    pair of the tile is allowed (where that follows from block ids alone; a tile marked ``some`` and not ``every``
    is computed with the token mask, so this side may only err towards False). The ``pad`` tokens after the query
    form one more block that attends causally to itself and to the instruction; no real token attends to them.
    Costs ``O((T_p / tile)^2)``, not ``O(T^2)``: a block id is non-decreasing along the sequence and no block is
    empty, so a tile holds every block id between its first and its last token's."""
    _check(lengths)
    t = int(sum(lengths)) + int(pad)
    if pad < 0 or t % tile:
        raise ConfigError("pad", f"T + pad must be a multiple of the tile {tile}, got T = {t - pad}, pad = {pad}")
    nt = t // tile
    lower = np.tri(nt, k=-1, dtype=bool)  # key tile wholly before the query tile: causality holds for every pair
    some, every = lower | np.eye(nt, dtype=bool), lower.copy()  # a diagonal tile holds its own diagonal
    if not sparse:
        return some, every
    block = block_ids(lengths, pad)
    first, last = block[::tile], block[tile - 1 :: tile]
    q_first, q_last, k_first, k_last = first[:, None], last[:, None], first[None, :], last[None, :]
    query = len(lengths) - 1
    sees_all = (q_first <= query) & (query <= q_last)  # the tile holds query tokens
    overlap = np.maximum(q_first, k_first) <= np.minimum(q_last, k_last)  # a block on both sides
    some &= (k_first == 0) | sees_all | overlap | np.eye(nt, dtype=bool)
    one_block = (q_first == q_last) & (k_first == k_last) & (q_first == k_first)
    every &= (k_last == 0) | ((q_first == query) & (q_last == query)) | one_block
    return some, every


def position_ids(lengths: Sequence[int], sparse: bool, query_position: str = "after_longest") -> np.ndarray:
    """Position id of every token (see the module notation)."""
    _check(lengths)
    if query_position not in QUERY_POSITIONS:
        raise ConfigError("query_position", f"must be one of {list(QUERY_POSITIONS)}, got {query_position!r}")
    t = int(sum(lengths))
    if not sparse:
        return np.arange(t, dtype=np.int64)
    l0, docs, lq = int(lengths[0]), [int(n) for n in lengths[1:-1]], int(lengths[-1])
    parts = [np.arange(l0)] + [l0 + np.arange(n) for n in docs]
    q0 = l0 + (max(docs, default=0) if query_position == "after_longest" else sum(docs))
    parts.append(q0 + np.arange(lq))
    return np.concatenate(parts).astype(np.int64)


def max_position(lengths: Sequence[int], sparse: bool, query_position: str = "after_longest") -> int:
    """The largest position id the prompt uses (it must stay below the model's context)."""
    l0, docs, lq = int(lengths[0]), [int(n) for n in lengths[1:-1]], int(lengths[-1])
    if not sparse or query_position == "after_all":
        return l0 + sum(docs) + lq - 1
    return l0 + max(docs, default=0) + lq - 1


def candidates_that_fit(lengths: Sequence[int], limit: int, sparse: bool, query_position: str = "after_longest") -> int:
    """How many of the leading documents fit with positions below ``limit`` (0 if not even none do)."""
    docs = list(lengths[1:-1])
    best = -1
    for k in range(len(docs) + 1):  # max_position grows with k
        if max_position([lengths[0], *docs[:k], lengths[-1]], sparse, query_position) < limit:
            best = k
        else:
            break
    return max(best, 0)


def block_scores(
    attn: np.ndarray, lengths: Sequence[int], aggregation: str = "sum", normalize: str = "docs"
) -> np.ndarray:
    """Per-head document scores ``(H, n)`` from attention ``attn`` of shape ``(H, R, K)``: rows are query tokens,
    keys the ``K`` tokens before and in the query block (``K >= sum(lengths) - L_q``; keys past the documents are
    ignored except by ``normalize="all"``, which keeps the model's probabilities)."""
    if aggregation not in AGGREGATIONS:
        raise ConfigError("aggregation", f"must be one of {list(AGGREGATIONS)}, got {aggregation!r}")
    if normalize not in ("docs", "all"):
        raise ConfigError("normalize", f"must be 'docs' or 'all', got {normalize!r}")
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim != 3:
        raise ConfigError("attn", f"expected (heads, rows, keys), got shape {a.shape}")
    starts = block_starts(lengths)
    lo, hi = int(starts[1]), int(starts[-2])  # the document keys
    if a.shape[2] < hi:
        raise ConfigError("attn", f"{a.shape[2]} keys, fewer than the {hi} the blocks before the query span")
    docs = a[:, :, lo:hi]
    if normalize == "docs":
        docs = docs / np.maximum(docs.sum(axis=2, keepdims=True), np.finfo(np.float64).tiny)
    n = len(lengths) - 2
    out = np.empty((a.shape[0], a.shape[1], n), dtype=np.float64)
    for d in range(n):
        seg = docs[:, :, int(starts[d + 1]) - lo : int(starts[d + 2]) - lo]
        out[:, :, d] = (
            seg.sum(axis=2) if aggregation == "sum" else seg.mean(axis=2) if aggregation == "mean" else seg.max(axis=2)
        )
    return out.mean(axis=1)


def precision_at_1(scores: np.ndarray, relevance: np.ndarray) -> float:
    """1.0 when the top-scored candidate (ties: the earlier one) has relevance > 0."""
    if len(scores) == 0:
        return 0.0
    return float(np.asarray(relevance)[int(np.argmax(scores))] > 0)


def ndcg_at_k(
    scores: np.ndarray, relevance: np.ndarray, k: int = 10, n_relevant: Sequence[float] | None = None
) -> float:
    """nDCG@k of the candidates ordered by ``scores`` (stable: ties keep the input order), with the ideal ranking
    built from ``n_relevant`` (all judged gains of the query, retrieved or not) when given, else from ``relevance``."""
    rel = np.asarray(relevance, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((rel[order] * disc[: len(order)]).sum())
    ideal_gains = np.sort(np.asarray(n_relevant if n_relevant is not None else rel, dtype=np.float64))[::-1][:k]
    idcg = float((ideal_gains * disc[: len(ideal_gains)]).sum())
    return dcg / idcg if idcg > 0 else 0.0
