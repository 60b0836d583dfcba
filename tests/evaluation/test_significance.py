"""Paired significance tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ragopt.errors import ConfigError, DataError
from ragopt.evaluation import evaluate, holm_bonferroni, paired_test

TESTS = ("t", "wilcoxon", "randomization")


def scores(values) -> dict[str, float]:
    return {f"q{i}": float(v) for i, v in enumerate(values)}


@pytest.mark.parametrize("test", TESTS)
def test_identical_runs_give_p_one(test):
    a = scores(np.random.default_rng(0).random(30))
    res = paired_test(a, dict(a), test=test)
    assert res.p_value == 1.0 and res.diff == 0.0 and not res.significant
    assert res.n == 30 and res.test == test


@pytest.mark.parametrize("test", TESTS)
def test_clearly_better_run_is_significant(test):
    rng = np.random.default_rng(1)
    base = rng.random(50) * 0.5
    a, b = scores(base), scores(base + 0.2 + rng.normal(0, 0.05, 50))
    res = paired_test(a, b, test=test)
    assert res.p_value < 0.01 and res.significant
    assert res.diff == pytest.approx(res.mean_b - res.mean_a) and res.diff > 0.15


def test_randomization_is_seeded_and_close_to_t():
    rng = np.random.default_rng(2)
    base = rng.random(200)
    a, b = scores(base), scores(base + rng.normal(0.03, 0.25, 200))
    t = paired_test(a, b, test="t")
    r1 = paired_test(a, b, test="randomization", n_resamples=20000, seed=7)
    r2 = paired_test(a, b, test="randomization", n_resamples=20000, seed=7)
    assert r1.p_value == r2.p_value
    assert 0.02 < t.p_value < 0.8  # a non-trivial p, so the comparison means something
    assert abs(r1.p_value - t.p_value) < 0.02
    assert paired_test(a, b, test="randomization", n_resamples=20000, seed=8).p_value != r1.p_value


def test_randomization_p_floor():
    a, b = scores(np.zeros(40)), scores(np.ones(40))
    assert paired_test(a, b, test="randomization", n_resamples=99).p_value == pytest.approx(1 / 100)


def test_matches_scipy_directly():
    rng = np.random.default_rng(3)
    xa, xb = rng.random(25), rng.random(25)
    assert paired_test(scores(xa), scores(xb)).p_value == pytest.approx(stats.ttest_rel(xb, xa).pvalue)
    assert paired_test(scores(xa), scores(xb), test="wilcoxon").p_value == pytest.approx(stats.wilcoxon(xb, xa).pvalue)


def test_eval_results_pair_on_shared_queries():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    run_a = {"q1": {"x": 2.0, "a": 1.0}, "q2": {"x": 2.0, "b": 1.0}, "q3": {"c": 1.0}}
    run_b = {"q1": {"a": 1.0}, "q2": {"b": 1.0}, "q3": {"c": 1.0}}
    ra = evaluate(run_a, qrels, ["mrr@10", "ndcg@10"])
    rb = evaluate(run_b, {"q1": qrels["q1"], "q2": qrels["q2"]}, ["mrr@10", "ndcg@10"])
    res = paired_test(ra, rb)  # metric defaults to the first one
    assert res.metric == "mrr@10" and res.n == 2
    assert (res.mean_a, res.mean_b, res.diff) == pytest.approx((0.5, 1.0, 0.5))
    assert paired_test(ra, rb, metric="NDCG@10").metric == "ndcg@10"
    with pytest.raises(ConfigError, match="map"):
        paired_test(ra, rb, metric="map")


def test_errors():
    with pytest.raises(DataError, match="at least 2"):
        paired_test({"q1": 0.1, "q2": 0.3}, {"q1": 0.2, "q9": 0.3})
    with pytest.raises(ConfigError, match="unknown test"):
        paired_test(scores([0, 1]), scores([1, 1]), test="anova")
    for seed in (-1, 1.5, True):  # -1 was numpy's ValueError (`ragopt compare --seed -1` printed a traceback)
        with pytest.raises(ConfigError, match=r"^seed: must be an integer >= 0"):
            paired_test(scores([0, 1]), scores([1, 1]), test="randomization", seed=seed)


def test_holm_bonferroni():
    assert holm_bonferroni([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_bonferroni({"x": 0.5, "y": 0.001}) == pytest.approx({"x": 0.5, "y": 0.002})
    assert holm_bonferroni([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm_bonferroni([]) == []
