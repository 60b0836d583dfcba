"""CUR kernels: exact recovery of low-rank score matrices, anchor selection, adaptive rounds, budgets."""

from __future__ import annotations

import numpy as np
import pytest

from ragopt.kernels.cur import adaptive_select, approximate, cur_operator, cur_search, select_anchor_items, split_rounds


def low_rank(n_anchor: int, n_test: int, n_items: int, rank: int, noise: float = 0.0, seed: int = 0):
    """Anchor and test score matrices sharing item factors: rank ``rank`` plus iid noise."""
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n_items, rank))
    R = rng.standard_normal((n_anchor, rank)) @ items.T + noise * rng.standard_normal((n_anchor, n_items))
    S = rng.standard_normal((n_test, rank)) @ items.T + noise * rng.standard_normal((n_test, n_items))
    return R.astype(np.float32), S.astype(np.float32)


def recall(doc_idx: np.ndarray, S: np.ndarray, k: int) -> np.ndarray:
    true = np.argsort(-S, axis=1)[:, :k]
    return np.array([len(set(a[:k].tolist()) & set(b.tolist())) / k for a, b in zip(doc_idx, true)])


class Counter:
    """A score function over a fixed matrix that records every pair it is asked for."""

    def __init__(self, S: np.ndarray):
        self.S, self.pairs, self.calls = S, [], 0

    def __call__(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.pairs.extend(zip(rows.tolist(), items.tolist()))
        return self.S[rows, items]


def test_approximation_is_exact_on_low_rank_matrices():
    R, S = low_rank(40, 5, 300, rank=6)
    items = np.tile(np.arange(0, 300, 15), (5, 1))  # 20 items per query
    approx = approximate(R, items, np.take_along_axis(S, items, axis=1), rcond=1e-4)
    np.testing.assert_allclose(approx, S, atol=1e-3 * np.abs(S).max())
    op = cur_operator(R, items[0], rcond=1e-4)
    assert op.shape == (20, 300) and op.dtype == np.float32
    np.testing.assert_allclose(S[:, items[0]] @ op, S, atol=1e-3 * np.abs(S).max())


@pytest.mark.parametrize("method", ["anncur", "adacur"])
@pytest.mark.parametrize("selection", ["random", "topk_mean", "pivoted"])
def test_fidelity_exact_top10_with_far_fewer_calls_than_exhaustive(method, selection):
    # rank-8 scores over 2000 items: 100 calls per query (32 anchor items) recover the exact top-10,
    # where exhaustive scoring needs 2000
    R, S = low_rank(50, 30, 2000, rank=8, seed=1)
    fn = Counter(S)
    res = cur_search(
        R,
        fn,
        30,
        budget=100,
        n_anchor_items=32,
        top_k=10,
        method=method,
        rounds=4,
        selection=selection,
        rcond=1e-4,
        seed=3,
    )
    assert (recall(res.doc_idx, S, 10) == 1.0).all()
    assert (res.calls == 100).all() and len(fn.pairs) == 30 * 100 < 30 * 2000
    assert len(set(fn.pairs)) == len(fn.pairs)  # no pair scored twice
    np.testing.assert_allclose(res.scores, np.take_along_axis(S, res.doc_idx, axis=1))  # exact scores returned
    assert (res.n_exact == 10).all()
    assert fn.calls == (2 if method == "anncur" else 5)  # one scoring call per round


def test_adacur_beats_anncur_on_noisy_low_rank_at_equal_budget():
    R, S = low_rank(100, 60, 2000, rank=16, noise=0.5, seed=0)
    out = {}
    for method in ("anncur", "adacur"):
        res = cur_search(R, Counter(S), 60, budget=100, n_anchor_items=50, top_k=50, method=method, rounds=5, seed=1)
        assert (res.calls == 100).all()
        out[method] = recall(res.doc_idx, S, 50).mean()
    assert out["adacur"] > out["anncur"] + 0.03, out
    assert out["anncur"] > 0.6


def test_restricted_items_and_exhaustive_rows():
    R, S = low_rank(30, 4, 500, rank=5, seed=2)
    allowed = np.zeros((4, 500), bool)
    allowed[0, :300] = True  # more than the budget: CUR within these items
    allowed[1, 100:140] = True  # fewer than the budget: all scored exactly
    # row 2: no candidates at all; row 3: every item
    allowed[3] = True
    init = np.tile(np.arange(500), (4, 1))
    fn = Counter(S)
    res = cur_search(
        R,
        fn,
        4,
        budget=60,
        n_anchor_items=20,
        top_k=50,
        method="adacur",
        rounds=2,
        allowed=allowed,
        init_items=init,
        rcond=1e-4,
    )
    assert res.calls.tolist() == [60, 40, 0, 60]
    assert set(res.doc_idx[0].tolist()) <= set(range(300))
    assert sorted(res.doc_idx[1][:40].tolist()) == list(range(100, 140)) and (res.doc_idx[1][40:] == -1).all()
    assert (res.doc_idx[2] == -1).all() and np.isneginf(res.scores[2]).all()
    assert res.n_exact.tolist()[1:3] == [40, 0]
    masked = np.where(allowed[0], S[0], -np.inf)
    assert res.doc_idx[0][:10].tolist() == np.argsort(-masked)[:10].tolist()
    # adacur's first round came from init_items: the first 10 allowed ones
    first_round = [i for r, i in fn.pairs if r == 0][:10]
    assert first_round == list(range(10))


def test_merge_modes_and_scored_first_shift():
    R, S = low_rank(20, 3, 400, rank=20, noise=1.0, seed=4)
    a = cur_search(R, Counter(S), 3, budget=30, n_anchor_items=30, top_k=100, method="anncur", merge="scored_first")
    b = cur_search(R, Counter(S), 3, budget=30, n_anchor_items=30, top_k=100, method="anncur")  # interleave
    assert (a.n_exact == 30).all()
    for row in range(3):  # scored first: 30 exact scores, then approximations strictly below them
        assert np.all(np.diff(a.scores[row]) <= 0)
        np.testing.assert_allclose(a.scores[row][:30], S[row, a.doc_idx[row][:30]])
        assert a.scores[row][30] < a.scores[row][29]
    assert (b.n_exact <= 30).all() and np.all(np.diff(b.scores, axis=1) <= 0)
    assert set(b.doc_idx[0].tolist()) != set(a.doc_idx[0].tolist())  # low-scored anchors make way
    exact = np.isin(b.doc_idx, a.doc_idx[:, :30])  # the scored items carry their exact scores
    np.testing.assert_allclose(b.scores[exact], np.take_along_axis(S, b.doc_idx, axis=1)[exact])


def test_budget_and_argument_errors():
    R, S = low_rank(10, 2, 100, rank=3)
    with pytest.raises(ValueError, match=r"budget \(5\) is smaller than the number of anchor items \(8\)"):
        cur_search(R, Counter(S), 2, budget=5, n_anchor_items=8, top_k=5)
    with pytest.raises(ValueError, match="unknown method"):
        cur_search(R, Counter(S), 2, budget=20, n_anchor_items=8, top_k=5, method="cur")
    with pytest.raises(ValueError, match="allowed has shape"):
        cur_search(R, Counter(S), 2, budget=20, n_anchor_items=8, top_k=5, allowed=np.ones((2, 99), bool))
    with pytest.raises(ValueError, match="expected 8 shared anchor items, got 3"):
        cur_search(R, Counter(S), 2, budget=20, n_anchor_items=8, top_k=5, anchor_items=np.arange(3))
    with pytest.raises(ValueError, match="score_fn returned"):
        cur_search(R, lambda r, i: np.full(len(r), np.nan), 2, budget=20, n_anchor_items=8, top_k=5)
    with pytest.raises(ValueError, match="unknown anchor selection"):
        select_anchor_items(R, 3, "kmeans")


def test_anchor_selection_strategies():
    R, _ = low_rank(20, 1, 200, rank=4, seed=5)
    rnd = select_anchor_items(R, 10, "random", seed=1)
    assert len(set(rnd.tolist())) == 10 and (rnd == select_anchor_items(R, 10, "random", seed=1)).all()
    assert (rnd != select_anchor_items(R, 10, "random", seed=2)).any()
    top = select_anchor_items(R, 5, "topk_mean")
    assert sorted(top.tolist()) == sorted(np.argsort(-R.mean(axis=0))[:5].tolist())
    piv = select_anchor_items(R, 10, "pivoted")  # rank 4: the first 4 span R, the rest by norm
    assert len(set(piv.tolist())) == 10
    assert np.linalg.matrix_rank(R[:, piv].astype(np.float64), tol=1e-3) == 4
    with pytest.raises(ValueError, match="cannot select 300"):
        select_anchor_items(R, 300, "random")


def test_adaptive_select_topk_and_softmax():
    s = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    avail = np.array([[False, True, True, True, True], [True] * 5])
    assert adaptive_select(s, avail, 2, "topk").tolist() == [[1, 2], [4, 3]]
    rng = np.random.default_rng(0)
    picks = adaptive_select(np.tile(s, (200, 1)), np.tile(avail, (200, 1)), 1, "softmax", 0.5, rng)
    assert 0 not in picks[::2]  # never an unavailable item
    assert np.mean(picks[1::2] == 4) > 0.5  # mostly the best, not always
    assert np.mean(picks[1::2] == 4) < 1.0
    with pytest.raises(ValueError, match="fewer than 5 available"):
        adaptive_select(s, avail, 5, "topk")


def test_split_rounds():
    assert split_rounds(10, 3) == [4, 3, 3]
    assert split_rounds(2, 5) == [1, 1]
    assert split_rounds(7, 1) == [7]
