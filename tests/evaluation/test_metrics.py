"""Metrics against values computed by hand from the trec_eval formulas."""

from __future__ import annotations

import heapq
import json
import math

import numpy as np
import pytest
import pytrec_eval

from ragopt.errors import ConfigError, DataError
from ragopt.evaluation import EvalResult, Metric, evaluate, evaluate_answers, parse_metric


def dcg(gains: list[float]) -> float:
    """Linear gain, log2(rank + 1) discount (trec_eval ndcg / ndcg_cut)."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1},
    "q2": {"e1": 1, "e2": 0},
}
RUN = {
    "q1": {"d3": 0.9, "d1": 0.8, "d5": 0.7, "d2": 0.6},  # gains 0, 2, -, 1; d4 not retrieved
    "q2": {"e2": 0.5, "x": 0.4, "e1": 0.3},  # gains 0, -, 1
}
ALL = ["ndcg@3", "ndcg", "recall@2", "mrr@1", "mrr@2", "mrr@10", "mrr", "map", "p@2", "map@2"]


def expected_per_query() -> dict[str, dict[str, float]]:
    idcg1 = dcg([2, 1, 1])
    return {
        "ndcg@3": {"q1": dcg([0, 2, 0]) / idcg1, "q2": dcg([0, 0, 1]) / 1.0},
        "ndcg": {"q1": dcg([0, 2, 0, 1]) / idcg1, "q2": dcg([0, 0, 1]) / 1.0},
        "recall@2": {"q1": 1 / 3, "q2": 0.0},
        "mrr@1": {"q1": 0.0, "q2": 0.0},
        "mrr@2": {"q1": 0.5, "q2": 0.0},
        "mrr@10": {"q1": 0.5, "q2": 1 / 3},
        "mrr": {"q1": 0.5, "q2": 1 / 3},
        "map": {"q1": (1 / 2 + 2 / 4) / 3, "q2": (1 / 3) / 1},
        "p@2": {"q1": 0.5, "q2": 0.0},
        "map@2": {"q1": (1 / 2) / 3, "q2": 0.0},
    }


def test_hand_computed_values():
    res = evaluate(RUN, QRELS, ALL)
    want = expected_per_query()
    assert list(res.metrics) == ALL
    assert res.n_queries == 2 and res.missing_queries == [] and res.extra_queries == 0
    for name in ALL:
        assert res.per_query[name] == pytest.approx(want[name], abs=1e-6), name
        assert res.metrics[name] == pytest.approx(sum(want[name].values()) / 2, abs=1e-6), name
    assert res.metrics["ndcg@3"] == pytest.approx((1.2618595 / 3.1309298 + 0.5) / 2, abs=1e-6)


def test_default_metrics_and_getitem_aliases():
    res = evaluate(RUN, QRELS)
    assert list(res.metrics) == ["ndcg@10", "recall@100", "mrr@10", "map"]
    assert res["nDCG@10"] == res.metrics["ndcg@10"]
    assert res["R@100"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["MRR@10"] == pytest.approx((0.5 + 1 / 3) / 2)


def test_missing_query_scores_zero_and_extra_query_ignored():
    qrels = {**QRELS, "q3": {"f1": 1}}
    run = {**RUN, "q3": {}, "zz": {"f1": 5.0}}
    base = evaluate(RUN, QRELS, ["mrr@10", "recall@2"])
    res = evaluate(run, qrels, ["mrr@10", "recall@2"])
    assert res.n_queries == 3
    assert res.missing_queries == ["q3"]
    assert res.extra_queries == 1
    assert res.per_query["mrr@10"]["q3"] == 0.0
    assert res.metrics["mrr@10"] == pytest.approx(base.metrics["mrr@10"] * 2 / 3)
    assert res.metrics["mrr@10"] < base.metrics["mrr@10"]
    # absent entirely (not just empty) behaves the same
    res2 = evaluate(RUN, qrels, ["mrr@10"])
    assert res2.missing_queries == ["q3"] and res2.metrics["mrr@10"] == res.metrics["mrr@10"]


def test_queries_without_relevant_documents():
    qrels = {**QRELS, "q4": {"g1": 0}}
    run = {**RUN, "q4": {"g1": 1.0}}
    assert evaluate(run, qrels, ["map"]).n_queries == 2
    res = evaluate(run, qrels, ["map"], judged_only_queries=False)
    assert res.n_queries == 3 and res.per_query["map"]["q4"] == 0.0
    with pytest.raises(DataError, match="relevance >= 1"):
        evaluate(run, {"q4": {"g1": 0}}, ["map"])


def test_relevance_level_two():
    res = evaluate(RUN, QRELS, ["recall@2", "map", "mrr@10", "ndcg@3"], relevance_level=2)
    # only d1 (grade 2) is relevant; q2 has no grade-2 document and is not evaluated
    assert res.n_queries == 1 and set(res.per_query["map"]) == {"q1"}
    assert res.metrics["recall@2"] == pytest.approx(1.0)
    assert res.metrics["map"] == pytest.approx(0.5)
    assert res.metrics["mrr@10"] == pytest.approx(0.5)
    # nDCG keeps the graded gains
    assert res.metrics["ndcg@3"] == pytest.approx(dcg([0, 2, 0]) / dcg([2, 1, 1]))
    assert res.relevance_level == 2


@pytest.mark.parametrize("level", [0, -5, 1.5, "2", True, 2**31])
def test_a_relevance_level_that_is_not_a_grade_is_refused(level):
    # before: 0 raised pytrec_eval's TypeError (a rejection in its constructor, the path that corrupts memory before
    # pytrec-eval-terrier 0.5.8), -5 counted nothing relevant (map 0), 1.5 was cut to 1
    with pytest.raises(ConfigError, match=r"^relevance_level: must be an integer in 1\.\.1000000"):
        evaluate(RUN, QRELS, ["map"], relevance_level=level)
    with pytest.raises(ConfigError, match=r"^relevance_level: must be an integer"):
        evaluate_answers({"q1": "x"}, {"q1": ["x"]}, ["em"], relevance_level=level)


@pytest.mark.parametrize(
    ("run", "qrels", "message"),
    [
        # each raised an AttributeError ("'list' object has no attribute 'get'") from inside evaluate
        ([("q1", "d1", 1.0)], {"q1": {"d1": 1}}, r"^run: expected a mapping query -> \{document -> score\}, got list$"),
        (
            {"q1": {"d1": 1.0}},
            [("q1", "d1", 1)],
            r"^qrels: expected a mapping query -> \{document -> grade\}, got list$",
        ),
        ({"q1": ["d1"]}, {"q1": {"d1": 1}}, r"^run\['q1'\]: expected a mapping document -> score, got list$"),
        (
            {"q1": {"d1": 1.0}},
            {"q1": {"d1": 1}, "q2": 5},
            r"^qrels\['q2'\]: expected a mapping document -> grade, got int$",
        ),
    ],
)
def test_a_run_or_qrels_of_the_wrong_shape_is_named(run, qrels, message):
    with pytest.raises(DataError, match=message):
        evaluate(run, qrels, ["ndcg@10"])


def test_negative_grades_count_as_zero_gain():
    res = evaluate({"q": {"a": 2.0, "b": 1.0}}, {"q": {"a": -1, "b": 1}}, ["ndcg", "map"])
    assert res.metrics["ndcg"] == pytest.approx(dcg([0, 1]) / dcg([1]))
    assert res.metrics["map"] == pytest.approx(0.5)


def test_mrr_at_k_tie_order_follows_trec_eval():
    # equal scores: trec_eval ranks by docid descending, so "b" comes before "a"
    res = evaluate({"q": {"a": 1.0, "b": 1.0}}, {"q": {"a": 1}}, ["mrr@1", "mrr@2"])
    assert res.metrics == {"mrr@1": 0.0, "mrr@2": 0.5}
    res = evaluate({"q": {"a": 1.0, "b": 1.0}}, {"q": {"b": 1}}, ["mrr@1"])
    assert res.metrics["mrr@1"] == 1.0


def test_mrr_at_k_matches_recip_rank_on_truncated_run():
    rng = np.random.default_rng(1)
    docs = [f"d{i}" for i in range(30)]
    qrels = {f"q{i}": {d: 1 for d in rng.choice(docs, 2, replace=False)} for i in range(200)}
    run = {q: {d: float(s) for d, s in zip(docs, rng.integers(0, 5, len(docs)))} for q in qrels}  # many ties
    for k in (1, 3, 10):
        cut = {q: dict(heapq.nlargest(k, row.items(), key=lambda kv: (kv[1], kv[0]))) for q, row in run.items()}
        ref = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
        got = evaluate(run, qrels, [f"mrr@{k}"]).per_query[f"mrr@{k}"]
        assert got == pytest.approx({q: v["recip_rank"] for q, v in ref.items()}, abs=1e-12)


def test_numpy_scores_are_accepted():
    run = {q: {d: np.float32(s) for d, s in row.items()} for q, row in RUN.items()}
    assert evaluate(run, QRELS, ALL).metrics == pytest.approx(evaluate(RUN, QRELS, ALL).metrics)


@pytest.mark.parametrize(
    "text, name, trec",
    [
        ("ndcg@10", "ndcg@10", "ndcg_cut_10"),
        ("NDCG", "ndcg", "ndcg"),
        ("nDCG_cut_10", "ndcg@10", "ndcg_cut_10"),
        ("recall@100", "recall@100", "recall_100"),
        ("R@10", "recall@10", "recall_10"),
        ("mrr@10", "mrr@10", "recip_rank"),
        ("MRR", "mrr", "recip_rank"),
        ("recip_rank", "mrr", "recip_rank"),
        ("map", "map", "map"),
        ("MAP@100", "map@100", "map_cut_100"),
        ("p@5", "p@5", "P_5"),
        ("P@5", "p@5", "P_5"),
        ("precision@5", "p@5", "P_5"),
        ("P_5", "p@5", "P_5"),
        ("hit@3", "success@3", "success_3"),
    ],
)
def test_parse_metric(text, name, trec):
    m = parse_metric(text)
    assert (m.name, m.trec_name) == (name, trec)
    assert isinstance(m, Metric) and parse_metric(m) is m


@pytest.mark.parametrize("text", ["foo@10", "bleu", "ndcg@x", "", "ndcg@\u0661\u0660", "ndcg@10\n5"])
def test_unknown_metric_names_it(text):
    with pytest.raises(ConfigError) as err:
        parse_metric(text)
    assert repr(text) in str(err.value) and "ndcg@k" in str(err.value)


@pytest.mark.parametrize("text", ["ndcg@0", "recall@-1", "recall@2147483648", "mrr@99999999999999999999"])
def test_cutoff_out_of_range_rejected(text):
    # beyond 2**31 - 1 trec_eval's C long overflowed: recall@1e20 came back under another name (a KeyError)
    with pytest.raises(ConfigError, match=r"cutoff k must be in 1\.\.2147483647"):
        evaluate(RUN, QRELS, [text])


def test_the_largest_cutoff_is_read_as_given():
    # recall over the whole ranking (trec_eval's "recall" measure: recall at 1000) equals it on this short run
    assert (
        evaluate(RUN, QRELS, ["recall@2147483647"])["recall@2147483647"] == evaluate(RUN, QRELS, ["recall"])["recall"]
    )


def test_empty_qrels_and_empty_run():
    with pytest.raises(DataError, match="qrels are empty"):
        evaluate(RUN, {})
    res = evaluate({}, QRELS, ["ndcg@10"])
    assert res.metrics == {"ndcg@10": 0.0} and res.missing_queries == ["q1", "q2"]


def test_to_dict_is_json_ready():
    res = evaluate({**RUN, "zz": {"a": 1.0}}, {**QRELS, "q3": {"f": 1}}, ["ndcg@3", "mrr@10"])
    d = json.loads(json.dumps(res.to_dict(per_query=True)))
    assert d["metrics"] == pytest.approx(res.metrics)
    assert d["n_queries"] == 3 and d["n_missing_queries"] == 1 and d["extra_queries"] == 1
    assert d["per_query"]["mrr@10"]["q3"] == 0.0
    assert isinstance(res, EvalResult)


def test_large_evaluation_is_fast():
    rng = np.random.default_rng(0)
    n, depth = 21_000, 100
    doc_ids = [f"d{i}" for i in range(20_000)]
    docs = rng.integers(0, len(doc_ids), size=(n, depth))
    scores = rng.random((n, depth)).tolist()
    run = {f"q{i}": dict(zip([doc_ids[j] for j in row], sc)) for i, (row, sc) in enumerate(zip(docs.tolist(), scores))}
    qrels = {f"q{i}": {doc_ids[j]: 1 for j in row[:3]} for i, row in enumerate(docs.tolist())}
    res = evaluate(run, qrels)  # 21k queries: its speed is benchmarked, not timed here
    assert res.n_queries == n and res.metrics["recall@100"] == pytest.approx(1.0)
