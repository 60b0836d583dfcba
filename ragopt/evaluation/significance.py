"""Paired significance tests between two systems' per-query scores.

``paired_test(res_a, res_b, "ndcg@10", test="randomization")`` pairs the per-query values on the queries
both results share and tests whether the mean difference ``b - a`` is zero. ``holm_bonferroni`` adjusts a
family of p-values for multiple comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import overload

import numpy as np

from ragopt.errors import ConfigError, DataError
from ragopt.evaluation.metrics import EvalResult, parse_metric

__all__ = ["TestResult", "paired_test", "randomization_pvalue", "holm_bonferroni", "TESTS"]

TESTS = ("t", "randomization", "wilcoxon")
_ALIASES = {
    "t": "t",
    "ttest": "t",
    "t-test": "t",
    "paired-t": "t",
    "randomization": "randomization",
    "permutation": "randomization",
    "wilcoxon": "wilcoxon",
}


@dataclass
class TestResult:
    """Outcome of one paired test; ``diff = mean_b - mean_a``, ``significant = p_value < alpha``."""

    __test__ = False  # not a pytest test class

    metric: str
    mean_a: float
    mean_b: float
    diff: float
    p_value: float
    test: str
    n: int
    significant: bool
    alpha: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_test(
    a: EvalResult | Mapping[str, float],
    b: EvalResult | Mapping[str, float],
    metric: str | None = None,
    test: str = "t",
    alpha: float = 0.05,
    n_resamples: int = 10000,
    seed: int = 0,
) -> TestResult:
    """Paired test of ``b`` against ``a`` over their shared queries.

    ``a``/``b`` are EvalResults (``metric`` defaults to the first metric of the first EvalResult) or
    ``{qid: value}`` maps. ``test``: ``t`` (scipy ttest_rel), ``wilcoxon`` (signed-rank) or
    ``randomization`` (two-sided sign-flip permutation test, ``n_resamples`` draws from ``seed``).
    When every difference is zero the p-value is 1.0."""
    kind = _ALIASES.get(str(test).lower())
    if kind is None:
        raise ConfigError("test", f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError("alpha", f"must be in (0, 1), got {alpha}")
    if kind == "randomization" and n_resamples < 1:
        raise ConfigError("n_resamples", f"must be >= 1, got {n_resamples}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:  # -1: numpy's ValueError
        raise ConfigError("seed", f"must be an integer >= 0, got {seed!r}")
    metric = _metric_name(a, b, metric)
    va, vb = _values(a, metric, "a"), _values(b, metric, "b")
    qids = [q for q in va if q in vb]
    if len(qids) < 2:
        raise DataError(f"paired test on {metric}: need at least 2 shared queries, got {len(qids)}")
    xa = np.array([va[q] for q in qids], dtype=np.float64)
    xb = np.array([vb[q] for q in qids], dtype=np.float64)
    d = xb - xa
    if not np.any(d):
        p = 1.0
    elif kind == "t":
        p = _t_pvalue(xa, xb, d)
    elif kind == "wilcoxon":
        from scipy import stats

        p = float(stats.wilcoxon(xb, xa).pvalue)
    else:
        p = randomization_pvalue(d, n_resamples, seed)
    ma, mb = float(xa.mean()), float(xb.mean())
    return TestResult(metric, ma, mb, mb - ma, p, kind, len(qids), bool(p < alpha), alpha)


def randomization_pvalue(d: np.ndarray, n_resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided sign-flip test of mean(d) == 0: ``(#{|perm mean| >= |observed|} + 1) / (n_resamples + 1)``."""
    d = np.asarray(d, dtype=np.float64)
    n = d.size
    observed = abs(d.sum())
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, 4_000_000 // max(n, 1)))
    total, hits = d.sum(), 0
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        flips = rng.integers(0, 2, size=(m, n), dtype=np.int8).astype(np.float64)
        sums = total - 2.0 * (flips @ d)  # flipping the sign of d_i subtracts 2 d_i
        hits += int(np.count_nonzero(np.abs(sums) >= observed - tol))
    return (hits + 1) / (n_resamples + 1)


@overload
def holm_bonferroni(pvalues: Mapping[str, float]) -> dict[str, float]: ...
@overload
def holm_bonferroni(pvalues: Sequence[float]) -> list[float]: ...
def holm_bonferroni(pvalues):
    """Holm step-down adjusted p-values (monotone, capped at 1), in the input's order and shape."""
    keys = list(pvalues) if isinstance(pvalues, Mapping) else None
    ps = [float(pvalues[k]) for k in keys] if keys is not None else [float(p) for p in pvalues]
    m = len(ps)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: ps[i])):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return dict(zip(keys, adjusted)) if keys is not None else adjusted


def _t_pvalue(xa: np.ndarray, xb: np.ndarray, d: np.ndarray) -> float:
    if np.ptp(d) == 0.0:  # constant non-zero difference: zero variance, infinitely significant
        return 0.0
    from scipy import stats

    p = float(stats.ttest_rel(xb, xa).pvalue)
    return 1.0 if math.isnan(p) else p


def _metric_name(a: object, b: object, metric: str | None) -> str:
    if metric is not None:
        return parse_metric(metric).name if isinstance(a, EvalResult) or isinstance(b, EvalResult) else metric
    for r in (a, b):
        if isinstance(r, EvalResult):
            return next(iter(r.metrics))
    return "score"


def _values(r: EvalResult | Mapping[str, float], metric: str, which: str) -> Mapping[str, float]:
    if isinstance(r, EvalResult):
        if metric not in r.per_query:
            raise ConfigError(
                "metric", f"system {which} was not evaluated on {metric}; it has {', '.join(r.per_query)}"
            )
        return r.per_query[metric]
    return r
