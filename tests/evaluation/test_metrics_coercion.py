"""Metrics on runs and qrels whose values are not plain Python numbers (numpy scalars, numeric score strings, as
from pandas or a hand-written file): the same figures as plain numbers; a value that is not a number is a DataError
naming the query. Added for surviving mutants of ``_pytrec_evaluate``'s fallback path (benchmarks/MUTATION.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragopt.errors import DataError
from ragopt.evaluation import evaluate

QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"e1": 1, "e2": 0}}
RUN = {"q1": {"d3": 0.9, "d1": 0.8, "d2": 0.6}, "q2": {"e2": 0.5, "e1": 0.3}}
METRICS = ["ndcg@3", "map", "recall@2", "mrr"]


def test_numpy_and_string_values_give_the_plain_figures():
    want = evaluate(RUN, QRELS, METRICS).per_query
    assert want["mrr"] == {"q1": 0.5, "q2": 0.5} and want["recall@2"]["q1"] == 0.5  # not trivially equal
    np_qrels = {q: {d: np.int64(g) for d, g in row.items()} for q, row in QRELS.items()}
    np_run = {q: {d: np.float32(s) for d, s in row.items()} for q, row in RUN.items()}
    str_run = {q: {d: str(s) for d, s in row.items()} for q, row in RUN.items()}
    for run, qrels in ((np_run, np_qrels), (str_run, np_qrels), (np_run, QRELS), (RUN, np_qrels)):
        got = evaluate(run, qrels, METRICS).per_query
        for m in METRICS:
            assert got[m] == pytest.approx(want[m], abs=1e-6), (m, run, qrels)


def test_a_score_that_is_not_a_number_names_the_query():
    run = {q: dict(row) for q, row in RUN.items()}
    run["q2"]["e1"] = "high"
    with pytest.raises(DataError, match=r"^run: query 'q2' has a value that is not a number"):
        evaluate(run, QRELS, METRICS)


def test_a_nan_score_is_named_and_infinities_rank_at_the_ends():
    # before: trec_eval sorted a NaN anywhere (every comparison with it is false): here d1 came out second
    for nan in (float("nan"), np.float32("nan"), "nan", np.str_("NaN")):
        with pytest.raises(DataError, match=r"^run: query 'q1', document 'd1' has the score NaN"):
            evaluate({"q1": {"d1": nan, "d2": 2.0}}, {"q1": {"d1": 1}}, ["ndcg@10"])
    top = evaluate({"q1": {"d1": math.inf, "d2": 2.0}}, {"q1": {"d1": 1}}, ["ndcg@10"])
    last = evaluate({"q1": {"d1": -math.inf, "d2": 2.0}}, {"q1": {"d1": 1}}, ["ndcg@10"])
    assert top.metrics["ndcg@10"] == 1.0 and last.metrics["ndcg@10"] == pytest.approx(1 / math.log2(3))


def test_a_grade_that_is_not_an_integer_is_named():
    from ragopt.errors import DataError

    for bad in ("1", 1.5, None, True):
        qrels = {"q1": {"d1": 1, "d2": bad}}
        with pytest.raises(DataError, match=r"qrels\['q1'\]\['d2'\]: a relevance grade must be an integer"):
            evaluate({"q1": {"d1": 1.0}}, qrels, ["ndcg@10"])


def test_a_grade_beyond_the_bounds_is_named():
    # trec_eval allocates 8 bytes per level up to the largest grade: 2**31 - 1 took 16 GB and 28 s, 2**32 was read
    # as 0 (not relevant), 2**63 raised a SystemError
    from ragopt.errors import DataError
    from ragopt.types import MAX_GRADE, MIN_GRADE

    for bad in (MAX_GRADE + 1, 2**32, 2**63, MIN_GRADE - 1):
        with pytest.raises(DataError, match=r"qrels\['q1'\]\['d2'\]: relevance grade -?\d+ is outside -2147483648"):
            evaluate({"q1": {"d1": 1.0}}, {"q1": {"d1": 1, "d2": bad}}, ["ndcg@10"])
    # the largest grade is read as given: d1 (graded MAX_GRADE) ranked second, d2 (graded 1) first; linear gains
    got = evaluate({"q1": {"d1": 1.0, "d2": 2.0}}, {"q1": {"d1": MAX_GRADE, "d2": 1}}, ["ndcg@10"])
    ideal = MAX_GRADE + 1 / math.log2(3)
    assert got.metrics["ndcg@10"] == pytest.approx((1 + MAX_GRADE / math.log2(3)) / ideal, rel=1e-9)
    low = evaluate({"q1": {"d1": 1.0, "d2": 2.0}}, {"q1": {"d1": MIN_GRADE, "d2": 1}}, ["ndcg@10"])
    assert low.metrics["ndcg@10"] == 1.0  # a negative grade is a gain of 0: d2 first is the ideal order


def test_pytrec_eval_is_never_handed_qrels_it_would_reject(monkeypatch):
    """pytrec-eval-terrier < 0.5.8 corrupts memory when its constructor rejects a grade (numpy int64): the process
    segfaulted later, in this file's first test, with 0.5.6 (the declared lower bound) and 0.5.7. So the qrels it gets
    are always plain ``str -> int``, whatever the caller passed (numpy grades, numpy-string ids)."""
    import ragopt.evaluation.metrics as metrics_mod

    seen = []
    real = metrics_mod.pytrec_eval.RelevanceEvaluator

    def checked(qrels, *args, **kwargs):
        seen.append(qrels)
        for q, row in qrels.items():
            assert type(q) is str, q
            assert all(type(d) is str and type(g) is int for d, g in row.items()), row
        return real(qrels, *args, **kwargs)

    monkeypatch.setattr(metrics_mod.pytrec_eval, "RelevanceEvaluator", checked)
    np_qrels = {np.str_(q): {np.str_(d): np.int64(g) for d, g in row.items()} for q, row in QRELS.items()}
    got = evaluate(RUN, np_qrels, METRICS)
    assert len(seen) == 1
    assert got.per_query == evaluate(RUN, QRELS, METRICS).per_query
    assert got.per_query["mrr"] == {"q1": 0.5, "q2": 0.5}
