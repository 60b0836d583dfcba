"""PRP ranking kernels: exactness with an oracle comparator, comparison counts against the theory, equivalence of
the batched schedules with the sequential algorithms (noisy comparators too), ties, lockstep driving."""

from __future__ import annotations

import random

import pytest

from ragopt.errors import ConfigError
from ragopt.kernels.prp import (
    allpair,
    comparison_bounds,
    drive,
    drive_many,
    goes_before,
    heap_topk,
    make_ranker,
    rank,
    sliding,
)

SIZES = (10, 20, 50)


def oracle(n: int, seed: int) -> tuple[list[int], callable]:
    """A consistent total order over ``n`` items (``true[i]``: the true rank of item i) and its comparator."""
    true = list(range(n))
    if seed >= 0:
        random.Random(seed).shuffle(true)
    else:  # seed -1: the initial order is the worst one
        true = true[::-1]
    ideal = sorted(range(n), key=lambda i: true[i])
    return ideal, lambda i, j: 1.0 if true[i] < true[j] else 0.0


def noisy(n: int, seed: int) -> callable:
    """An intransitive comparator: a fixed random probability per unordered pair, p(j, i) = 1 - p(i, j)."""
    rng = random.Random(seed)
    table = {(i, j): rng.choice([0.0, 0.2, 0.5, 0.7, 1.0]) for i in range(n) for j in range(i + 1, n)}
    return lambda i, j: table[(i, j)] if i < j else 1.0 - table[(j, i)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [-1, 0, 1, 2])
def test_oracle_orders_and_counts(n, seed):
    ideal, cmp = oracle(n, seed)
    r = rank(n, cmp, "allpair")
    assert r.order == ideal and r.comparisons == n * (n - 1) // 2 == r.distinct and r.rounds == 1
    full = rank(n, cmp, "sorting", n, "heap")
    assert full.order == ideal
    for k in (1, 5, 10):
        for sort in ("heap", "bubble"):
            r = rank(n, cmp, "sorting", k, sort)
            low, high = comparison_bounds("sorting", n, k, sort)
            assert r.order[:k] == ideal[:k], (sort, k)
            assert sorted(r.order) == list(range(n))
            assert low <= r.comparisons <= high, (sort, k, low, r.comparisons, high)
        assert rank(n, cmp, "sorting", k, "heap").order[k:] == sorted(set(range(n)) - set(ideal[:k]))
        r = rank(n, cmp, "sliding", k)
        assert r.order[:k] == ideal[:k]
        assert r.comparisons == k * (n - 1) == comparison_bounds("sliding", n, k)[0]
        assert r.rounds == n - 1 + 2 * (k - 1)


def test_theory_counts():
    for n in (10, 20, 50, 100):
        assert comparison_bounds("allpair", n) == (n * (n - 1) // 2,) * 2
        assert comparison_bounds("sliding", n, 10) == (10 * (n - 1),) * 2
        assert comparison_bounds("sorting", n, 10, "bubble")[1] == 10 * (n - 1) - 45
        # heapify at most 2 * (sum of node heights) = 2 (n - popcount(n)); each extraction at most 2 floor(log2 size)
        low, high = comparison_bounds("sorting", n, 10, "heap")
        assert high == 2 * (n - bin(n).count("1")) + sum(2 * ((n - t).bit_length() - 1) for t in range(1, 10))
        assert low == n - 1 + sum(1 for t in range(1, 10) if n - t >= 2)
    assert comparison_bounds("allpair", 1) == (0, 0) and comparison_bounds("sliding", 2, 5) == (2, 2)


def _heap_sequential(n, k, cmp):
    """Textbook heap sort (heapify node by node, then extract), counting comparisons: the reference."""
    heap, count, k = list(range(n)), 0, min(k, n)

    def before(a, b):
        nonlocal count
        count += 1
        return goes_before(a, b, cmp(a, b))

    def sift(root, size):
        while 2 * root + 1 < size:
            child = 2 * root + 1
            if child + 1 < size and before(heap[child + 1], heap[child]):
                child += 1
            if not before(heap[child], heap[root]):
                return
            heap[child], heap[root] = heap[root], heap[child]
            root = child

    for i in range(n // 2 - 1, -1, -1):
        sift(i, n)
    top, size = [], n
    for t in range(k):
        top.append(heap[0])
        if t == k - 1:
            break
        size -= 1
        heap[0] = heap[size]
        sift(0, size)
    return top + [i for i in range(n) if i not in top], count


def _sliding_sequential(n, passes, cmp):
    order, count = list(range(n)), 0
    for _ in range(passes):
        for i in range(n - 1, 0, -1):
            count += 1
            if goes_before(order[i], order[i - 1], cmp(order[i], order[i - 1])):
                order[i - 1], order[i] = order[i], order[i - 1]
    return order, count


@pytest.mark.parametrize("seed", range(6))
def test_batched_schedules_equal_the_sequential_algorithms(seed):
    """Level-parallel heapify and pipelined sliding passes ask the same comparisons and give the same order as
    the sequential algorithms, even with an intransitive comparator."""
    for n in (2, 3, 7, 20, 33):
        cmp = noisy(n, seed)
        for k in (1, 3, n):
            order, count = _heap_sequential(n, k, cmp)
            r = rank(n, cmp, "sorting", k, "heap")
            assert (r.order, r.comparisons) == (order, count), (n, k)
            order, count = _sliding_sequential(n, min(k, n), cmp)
            r = rank(n, cmp, "sliding", k)
            assert (r.order, r.comparisons) == (order, count), (n, k)


def test_heapify_runs_a_level_per_batch():
    n = 31  # a full tree: levels of 8, 4, 2, 1 internal nodes
    _, cmp = oracle(n, -1)  # worst initial order: every sift-down goes to the bottom
    sizes = []
    r = drive(heap_topk(n, 1), lambda pairs: (sizes.append(len(pairs)), [cmp(i, j) for i, j in pairs])[1])
    assert sizes[:2] == [8, 8] and max(sizes) == 8 and r.rounds == len(sizes)
    assert r.comparisons == comparison_bounds("sorting", n, 1, "heap")[1]  # worst case reaches the bound


@pytest.mark.parametrize(
    "method,sort", [("allpair", "heap"), ("sorting", "heap"), ("sorting", "bubble"), ("sliding", "heap")]
)
def test_ties_keep_the_initial_order(method, sort):
    for n in (1, 2, 5, 20):
        r = rank(n, lambda i, j: 0.5, method, 3, sort)
        assert r.order == list(range(n))


def test_sliding_repeats_pairs_and_reports_distinct():
    # the initial order is the true one: every pass asks the same 9 pairs again
    r = rank(10, lambda i, j: 1.0 if i < j else 0.0, "sliding", 4)
    assert r.order == list(range(10)) and r.comparisons == 36 and r.distinct == 9


def test_drive_many_is_lockstep_and_equal_to_one_by_one():
    n_items = [6, 1, 9, 4]
    cmps = [oracle(n, s)[1] for s, n in enumerate(n_items)]
    calls = []

    def compare(flat):
        calls.append(len(flat))
        return [cmps[r](i, j) for r, i, j in flat]

    many = drive_many([sliding(n, 3) for n in n_items], compare)
    one = [rank(n, cmps[r], "sliding", 3) for r, n in enumerate(n_items)]
    assert [m.order for m in many] == [o.order for o in one]
    assert [m.comparisons for m in many] == [o.comparisons for o in one]
    assert len(calls) == max(o.rounds for o in one)  # one comparator call per round for all rankers
    assert many[1].comparisons == 0 and many[1].order == [0]


def test_allpair_ties_split_and_soft_tiebreak():
    # 0 beats 1, 1 beats 2, 2 beats 0 (a cycle: one win each): the summed probabilities decide
    table = {(0, 1): 1.0, (1, 2): 0.6, (0, 2): 0.4}
    r = drive(allpair(3), lambda pairs: [table[p] for p in pairs])
    assert r.order == [0, 2, 1]  # summed probabilities 1.4, 0.6, 1.0
    table = {(0, 1): 0.0, (1, 2): 0.5, (0, 2): 0.5}  # wins 0.5, 1.5, 1.0
    assert drive(allpair(3), lambda pairs: [table[p] for p in pairs]).order == [1, 2, 0]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown PRP method 'pointwise'"):
        make_ranker("pointwise", 5)
    with pytest.raises(ConfigError, match="unknown sort 'quick'"):
        make_ranker("sorting", 5, 2, "quick")
    with pytest.raises(ConfigError, match="top_k: must be >= 1"):
        make_ranker("sliding", 5, 0)
    with pytest.raises(RuntimeError, match="2 answers for 1 comparisons"):
        drive(sliding(2, 1), lambda pairs: [1.0, 1.0])
