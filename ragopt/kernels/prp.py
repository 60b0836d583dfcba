"""Pairwise ranking prompting (PRP) kernels: rankings built from pairwise comparisons, asked in batches.

Notation (Qin et al., "Large Language Models are Effective Text Rankers with Pairwise Ranking Prompting"):

* ``n`` items ``0 .. n-1`` in their initial order (item ``i`` is the candidate at position ``i``, best first).
* A comparator gives ``p(i, j)`` in ``[0, 1]``: the probability that ``i`` should rank above ``j``; ``0.5`` is a
  tie (an inconsistent or unparseable judgement). A comparator is expected to satisfy ``p(j, i) = 1 - p(i, j)``.
* ``i`` goes before ``j`` when ``p(i, j) > 0.5``, or ``p(i, j) == 0.5`` and ``i < j``: ties keep the initial
  order, so a comparator that ties everything leaves the order unchanged in every method.

A *ranker* is a generator that yields a batch of pairs ``[(i, j), ...]`` it needs next, is sent the list of
their ``p(i, j)``, and returns the new order (a permutation of ``range(n)``). A batch holds every comparison that
does not depend on another one still unanswered, so a caller can send a whole batch to an LLM at once;
:func:`drive_many` runs many rankers (one per query) in lockstep, one comparator call per round for all of them.

Methods and their comparison counts (the numbers :func:`comparison_bounds` returns):

* :func:`allpair`: every unordered pair once, one round; score of ``i`` = wins (a tie gives each half a point),
  ties broken by the summed probabilities, then by the initial order. Exactly ``n(n-1)/2`` comparisons.
* :func:`heap_topk` (PRP-Sorting): heap sort that stops once the top ``k`` are fixed: heapify (the sift-downs of
  one tree level run side by side, one level per round batch) then ``k - 1`` extractions. At most
  ``2 * sum(node heights) <= 2(n - 1)`` comparisons to heapify plus ``2 floor(log2 s)`` per extraction from a heap
  of ``s`` items: ``O(n + k log n)``; at least ``n - 1`` plus one per extraction. The ``k`` best come first in
  heap order; the others keep their initial order.
* :func:`bubble_topk` (the sorting variant): bubble sort from the bottom for ``k`` passes, pass ``p`` stopping
  at position ``p`` (already fixed) and the sort stopping after a pass without a swap. At most
  ``sum_{p<k} (n-1-p) = k(n-1) - k(k-1)/2`` comparisons, one per round.
* :func:`sliding` (PRP-Sliding-K): ``K`` backward passes of a window of two from the bottom to the top, swapping
  when the lower item wins: exactly ``K(n-1)`` comparisons; pass ``K`` fixes the ``K``-th item, so ``K`` passes fix
  the top ``K`` of a consistent comparator. Pass ``p + 1`` trails pass ``p`` by two positions (they never touch the
  same positions, and each touches a position after the passes before it are done with it), so the comparisons
  and the result are those of the sequential passes, in ``n - 1 + 2(K - 1)`` rounds (fewer for ``n = 2``) of up
  to ``K`` comparisons.

Counts are comparisons asked, repeats included (a later pass may ask a pair an earlier one asked); a caller
that memoises answers pays only for :attr:`Ranked.distinct` pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from ragopt.errors import ConfigError

__all__ = [
    "Pair",
    "Ranker",
    "Ranked",
    "METHODS",
    "SORTS",
    "allpair",
    "heap_topk",
    "bubble_topk",
    "sliding",
    "make_ranker",
    "drive",
    "drive_many",
    "rank",
    "comparison_bounds",
    "goes_before",
]

Pair = tuple[int, int]
Ranker = Generator[list[Pair], Sequence[float], list[int]]
METHODS = ("allpair", "sorting", "sliding")
SORTS = ("heap", "bubble")


def goes_before(i: int, j: int, p: float) -> bool:
    """Whether item ``i`` ranks above item ``j`` given ``p = p(i, j)`` (ties: the initial order)."""
    return p > 0.5 or (p == 0.5 and i < j)


@dataclass(frozen=True)
class Ranked:
    """A ranker's result: the new ``order`` (items, best first), the ``comparisons`` it asked (repeats included),
    the ``distinct`` unordered pairs among them and the ``rounds`` (batches) it took."""

    order: list[int]
    comparisons: int
    distinct: int
    rounds: int


# -- rankers ---------------------------------------------------------------------------------------------
def allpair(n: int) -> Ranker:
    """Every unordered pair ``(i, j)``, ``i < j``, in one batch; order by wins (ties split), then summed
    probability, then initial position."""
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if not pairs:
        return list(range(n))
    ps = yield pairs
    wins = [0.0] * n
    soft = [0.0] * n
    for (i, j), p in zip(pairs, ps):
        p = float(p)
        if p > 0.5:
            wins[i] += 1.0
        elif p < 0.5:
            wins[j] += 1.0
        else:
            wins[i] += 0.5
            wins[j] += 0.5
        soft[i] += p
        soft[j] += 1.0 - p
    return sorted(range(n), key=lambda i: (-wins[i], -soft[i], i))


def _sift_down(heap: list[int], root: int, size: int) -> Generator[list[Pair], Sequence[float], None]:
    """Sift ``heap[root]`` down a max-heap of ``size`` items ("max" = goes before), one comparison a round."""
    while True:
        left = 2 * root + 1
        if left >= size:
            return
        child = left
        if left + 1 < size:
            a, b = heap[left + 1], heap[left]
            (p,) = yield [(a, b)]
            if goes_before(a, b, p):
                child = left + 1
        c, r = heap[child], heap[root]
        (p,) = yield [(c, r)]
        if not goes_before(c, r, p):
            return
        heap[child], heap[root] = r, c
        root = child


def _parallel(
    subs: list[Generator[list[Pair], Sequence[float], object]],
) -> Generator[list[Pair], Sequence[float], None]:
    """Run independent sub-rankers in lockstep: each round asks every pending sub-ranker's batch together."""
    pending: dict[int, list[Pair]] = {}
    for k, g in enumerate(subs):
        try:
            pending[k] = next(g)
        except StopIteration:
            pass
    while pending:
        keys = list(pending)
        answers = yield [pair for k in keys for pair in pending[k]]
        pos, nxt = 0, {}
        for k in keys:
            m = len(pending[k])
            try:
                nxt[k] = subs[k].send(answers[pos : pos + m])
            except StopIteration:
                pass
            pos += m
        pending = nxt


def heap_topk(n: int, k: int) -> Ranker:
    """Heap sort until the top ``k`` are fixed (PRP-Sorting); the rest keep their initial order."""
    heap = list(range(n))
    k = max(0, min(k, n))
    if n < 2 or k == 0:
        return heap
    last = n // 2 - 1  # the last internal node
    depth = (last + 1).bit_length() - 1
    for d in range(depth, -1, -1):  # deepest level first; sift-downs within a level touch disjoint subtrees
        nodes = range(2**d - 1, min(2 ** (d + 1) - 1, last + 1))
        yield from _parallel([_sift_down(heap, i, n) for i in nodes])
    top: list[int] = []
    size = n
    for t in range(k):
        top.append(heap[0])
        if t == k - 1:
            break
        size -= 1
        heap[0] = heap[size]
        yield from _sift_down(heap, 0, size)
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def bubble_topk(n: int, k: int) -> Ranker:
    """Bubble sort from the bottom for ``k`` passes, each ending at the first unfixed position; stops early after
    a pass without a swap."""
    order = list(range(n))
    for p in range(min(k, n - 1)):
        swapped = False
        for i in range(n - 1, p, -1):
            lo, up = order[i], order[i - 1]
            (q,) = yield [(lo, up)]
            if goes_before(lo, up, q):
                order[i - 1], order[i] = lo, up
                swapped = True
        if not swapped:
            break
    return order


def sliding(n: int, passes: int) -> Ranker:
    """``passes`` backward passes of a window of two over the whole list (PRP-Sliding-K), pipelined."""
    order = list(range(n))
    steps = n - 1
    if steps < 1 or passes < 1:
        return order
    # operation (pass p, step t) compares positions n-2-t (upper) and n-1-t (lower); it runs in round t + 2p
    for w in range(steps + 2 * (passes - 1)):
        ops = [w - 2 * p for p in range(passes) if 0 <= w - 2 * p < steps]
        if not ops:  # a list of two: the passes leave gaps
            continue
        pairs = [(order[n - 1 - t], order[n - 2 - t]) for t in ops]
        answers = yield pairs
        for t, (lo, up), q in zip(ops, pairs, answers):
            if goes_before(lo, up, q):
                order[n - 2 - t], order[n - 1 - t] = lo, up
    return order


def make_ranker(method: str, n: int, k: int | None = None, sort: str = "heap") -> Ranker:
    """The ranker of ``method`` (``allpair``, ``sorting`` with ``sort`` heap|bubble, ``sliding``) over ``n``
    items; ``k``: the top to fix (sorting) or the passes (sliding), default ``n``."""
    k = n if k is None else int(k)
    if k < 1:
        raise ConfigError("top_k", f"must be >= 1, got {k}")
    if method == "allpair":
        return allpair(n)
    if method == "sorting":
        if sort == "heap":
            return heap_topk(n, k)
        if sort == "bubble":
            return bubble_topk(n, k)
        raise ConfigError("sort", f"unknown sort {sort!r}; one of {list(SORTS)}")
    if method == "sliding":
        return sliding(n, min(k, n))
    raise ConfigError("method", f"unknown PRP method {method!r}; one of {list(METHODS)}")


# -- drivers ---------------------------------------------------------------------------------------------
def drive_many(
    rankers: Sequence[Ranker], compare: Callable[[list[tuple[int, int, int]]], Sequence[float]]
) -> list[Ranked]:
    """Run ``rankers`` in lockstep: each round, ``compare`` gets every pending comparison as ``(ranker, i, j)``
    and returns their ``p(i, j)``; one call per round for all rankers."""
    results: list[Ranked | None] = [None] * len(rankers)
    asked = [0] * len(rankers)
    rounds = [0] * len(rankers)
    seen: list[set[Pair]] = [set() for _ in rankers]
    pending: dict[int, list[Pair]] = {}

    def finish(r: int, order: list[int]) -> None:
        results[r] = Ranked(list(order), asked[r], len(seen[r]), rounds[r])

    def step(r: int, send: Sequence[float] | None) -> None:
        try:
            batch = next(rankers[r]) if send is None else rankers[r].send(send)
        except StopIteration as stop:
            finish(r, stop.value)
            return
        if not batch:
            raise RuntimeError("a PRP ranker asked for an empty batch")
        pending[r] = batch
        asked[r] += len(batch)
        rounds[r] += 1
        seen[r].update((min(i, j), max(i, j)) for i, j in batch)

    for r in range(len(rankers)):
        step(r, None)
    while pending:
        keys = list(pending)
        flat = [(r, i, j) for r in keys for i, j in pending[r]]
        answers = [float(a) for a in compare(flat)]
        if len(answers) != len(flat):
            raise RuntimeError(f"comparator returned {len(answers)} answers for {len(flat)} comparisons")
        batches = {r: pending.pop(r) for r in keys}
        pos = 0
        for r in keys:
            m = len(batches[r])
            step(r, answers[pos : pos + m])
            pos += m
    return results  # type: ignore[return-value]


def drive(ranker: Ranker, compare: Callable[[list[Pair]], Sequence[float]]) -> Ranked:
    """Run one ranker with a batch comparator ``compare([(i, j), ...]) -> [p(i, j), ...]``."""
    return drive_many([ranker], lambda flat: compare([(i, j) for _, i, j in flat]))[0]


def rank(
    n: int, compare: Callable[[int, int], float], method: str = "allpair", k: int | None = None, sort: str = "heap"
) -> Ranked:
    """Rank ``n`` items with a scalar comparator ``compare(i, j) -> p(i, j)`` (see :func:`make_ranker`)."""
    return drive(make_ranker(method, n, k, sort), lambda pairs: [compare(i, j) for i, j in pairs])


def comparison_bounds(method: str, n: int, k: int | None = None, sort: str = "heap") -> tuple[int, int]:
    """``(fewest, most)`` comparisons ``method`` asks for ``n`` items (equal for allpair and sliding)."""
    k = n if k is None else max(1, int(k))
    if n < 2:
        return 0, 0
    if method == "allpair":
        c = n * (n - 1) // 2
        return c, c
    if method == "sliding":
        c = min(k, n) * (n - 1)
        return c, c
    if method == "sorting" and sort == "bubble":
        passes = min(k, n - 1)
        return n - 1, sum(n - 1 - p for p in range(passes))
    if method == "sorting" and sort == "heap":
        k = min(k, n)
        heights = sum((n // (i + 1)).bit_length() - 1 for i in range(n))  # node i: floor(log2(n / (i + 1)))
        extractions = range(1, k)  # heap sizes n - t after the t-th extraction
        low = (n - 1) + sum(1 for t in extractions if n - t >= 2)
        high = 2 * heights + sum(2 * ((n - t).bit_length() - 1) for t in extractions if n - t >= 2)
        return low, high
    raise ConfigError("method", f"unknown PRP method {method!r} / sort {sort!r}")
