"""RAG answer / context metrics against independent references.

- EM / F1: values worked out by hand, and a transcription of the official SQuAD v1.1 evaluate script
  (``normalize_answer``, ``f1_score``, ``exact_match_score``, ``metric_max_over_ground_truths``) as an oracle;
- containment: hand cases, and a transcription of FlashRAG's ``Sub_ExactMatch.calculate_sub_em`` ("acc");
- ROUGE-L: the ``rouge-score`` package (``RougeScorer(["rougeL"])``, ``score`` / ``score_multi``);
- context recall / precision / answer presence: a hand-built qrels example;
- bootstrap: properties, a normal approximation, and ``scipy.stats.bootstrap(method="percentile")``;
- hypothesis property tests (bounds, identities, agreement with the oracles on generated strings).
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from ragopt.errors import ConfigError, DataError
from ragopt.evaluation import (
    ANSWER_METRICS,
    AnswerEvalResult,
    answer_in_context,
    answer_metric,
    bootstrap_ci,
    contains,
    context_precision,
    context_recall,
    evaluate_answers,
    exact_match,
    is_answer_metric,
    mean_value,
    normalize_answer,
    rouge_l,
    token_f1,
)
from tests.fuzzing import fuzz_settings


# --- oracle 1: the official SQuAD v1.1 evaluate script (evaluate-v1.1.py), transcribed -----------------------
def squad_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def squad_f1_score(prediction, ground_truth):
    prediction_tokens = squad_normalize_answer(prediction).split()
    ground_truth_tokens = squad_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def squad_exact_match_score(prediction, ground_truth):
    return squad_normalize_answer(prediction) == squad_normalize_answer(ground_truth)


def squad_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


# --- oracle 2: FlashRAG Sub_ExactMatch.calculate_sub_em (metric_name "acc"), transcribed ----------------------
def flashrag_sub_em(prediction, golden_answers):
    if isinstance(golden_answers, str):
        golden_answers = [golden_answers]
    normalized_prediction = squad_normalize_answer(prediction)
    score = 0.0
    for golden_answer in golden_answers:
        golden_answer = squad_normalize_answer(golden_answer)
        if golden_answer in normalized_prediction:
            score = 1.0
            break
    return score


# --- oracle 3: rouge-score ----------------------------------------------------------------------------------
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def ref_rouge_l(prediction, golds):
    if isinstance(golds, str):
        return SCORER.score(golds, prediction)["rougeL"].fmeasure
    return SCORER.score_multi(golds, prediction)["rougeL"].fmeasure


# ============================================================================================================
# SQuAD normalisation, EM, F1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Beatles", "beatles"),
        ("an apple a day", "apple day"),
        ("THE END.", "end"),
        ("theater Athena another", "theater athena another"),  # articles only as whole words
        ("U.S.A.", "usa"),
        ("don't", "dont"),
        ("the-end", "theend"),  # punctuation goes before articles: 'the-end' -> 'theend', no article left
        ("a.b  c\t\nd", "ab c d"),
        ("a.  b", "b"),  # 'a.' -> 'a', an article
        ("1939–1945", "1939–1945"),  # the en dash is not ASCII punctuation: kept
        ("*", ""),
        ("", ""),
        ("  A  ", ""),
    ],
)
def test_normalize_answer_hand_cases(text, expected):
    assert normalize_answer(text) == expected
    assert squad_normalize_answer(text) == expected  # the hand values are the official script's


@pytest.mark.parametrize(
    "pred, golds, em, f1",
    [
        # hand-computed: 'cat sat on mat' vs 'cat on mat': 3 shared, P 3/4, R 1 -> 6/7
        ("the cat sat on the mat", ["a cat on a mat"], 0.0, 6 / 7),
        # best gold: 'obama' gives P 1/2 R 1 -> 2/3; 'president barack obama' gives P 1 R 2/3 -> 4/5
        ("Barack Obama", ["Obama", "President Barack Obama"], 0.0, 0.8),
        ("The Eiffel Tower!", ["eiffel tower", "Paris"], 1.0, 1.0),
        ("U.S.A.", ["USA"], 1.0, 1.0),
        ("paris paris paris", ["Paris"], 0.0, 0.5),  # clipped counts: 1 shared, P 1/3, R 1
        ("", ["1945"], 0.0, 0.0),  # empty prediction
        ("the", ["a"], 1.0, 0.0),  # both normalise to '': EM 1, F1 0 -- exactly SQuAD v1.1
        ("1939–1945", ["1939 1945"], 0.0, 0.0),
        ("1945", "1945", 1.0, 1.0),  # a bare string is one gold answer
    ],
)
def test_em_f1_hand_cases(pred, golds, em, f1):
    assert exact_match(pred, golds) == em
    assert token_f1(pred, golds) == pytest.approx(f1, abs=1e-12)
    gl = [golds] if isinstance(golds, str) else golds
    assert em == float(squad_metric_max_over_ground_truths(squad_exact_match_score, pred, gl))
    assert f1 == pytest.approx(squad_metric_max_over_ground_truths(squad_f1_score, pred, gl), abs=1e-12)


def test_empty_gold_list_is_an_error():
    for fn in (exact_match, token_f1, contains, rouge_l):
        with pytest.raises(DataError, match="no gold answers"):
            fn("x", [])


# ============================================================================================================
# containment


@pytest.mark.parametrize(
    "pred, golds, expected",
    [
        ("It was in 1945, after the war.", ["1945"], 1.0),
        ("The answer is Paris", ["Paris, France", "paris"], 1.0),
        ("The answer is Paris", ["Paris, France"], 0.0),
        ("it is usually so", ["US"], 1.0),  # plain substring, as FlashRAG
        ("Lon don", ["London"], 0.0),
        ("The Eiffel-Tower", ["Eiffel Tower"], 0.0),  # 'eiffeltower' does not contain 'eiffel tower'
        ("", ["x"], 0.0),
    ],
)
def test_contains_hand_cases(pred, golds, expected):
    assert contains(pred, golds) == expected
    assert flashrag_sub_em(pred, golds) == expected


def test_contains_ignores_golds_that_normalise_to_nothing():
    # FlashRAG would give 1.0 here ('' is a substring of everything); a gold like '*' (nq-open has one) must not
    # make every prediction correct
    assert flashrag_sub_em("anything", ["*"]) == 1.0
    assert contains("anything", ["*"]) == 0.0
    assert contains("the symbol ×", ["*", "symbol ×"]) == 1.0


# ============================================================================================================
# ROUGE-L against rouge-score

ROUGE_CASES = [
    ("the cat sat on the mat", "the cat on the mat"),
    ("The quick brown fox jumps over the lazy dog.", "A quick brown dog jumps over the lazy fox!"),
    ("Barack Obama was the 44th president", "Obama, 44th President of the U.S."),
    ("1939-1945", "1939 to 1945"),
    ("naïve café résumé", "naive cafe resume"),  # non-ASCII letters are separators in rouge-score
    ("ÉCOLE Normale", "école normale supérieure"),
    ("a a a b b", "b a b a"),
    ("", "something"),
    ("something", ""),
    ("!!!", "???"),
    ("x" * 3 + " y z", "xxx z y"),
    ("Don't stop believing", "dont stop believin'"),
    ("İstanbul is in Turkey", "istanbul turkey"),
    ("tokens\twith\nnewlines", "tokens with newlines"),
]


@pytest.mark.parametrize("pred, gold", ROUGE_CASES)
def test_rouge_l_equals_rouge_score(pred, gold):
    assert rouge_l(pred, [gold]) == pytest.approx(ref_rouge_l(pred, gold), abs=1e-12)


def test_rouge_l_hand_case_and_multi_gold():
    # 6 vs 5 tokens, LCS 5: P 5/6, R 1 -> 10/11
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)
    golds = [g for _, g in ROUGE_CASES]
    for pred, _ in ROUGE_CASES:
        assert rouge_l(pred, golds) == pytest.approx(ref_rouge_l(pred, golds), abs=1e-12)


# ============================================================================================================
# context metrics on a hand-built example

QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"e1": 0}, "q3": {"f1": 1}, "q4": {"g1": 1}}
CONTEXTS = {
    "q1": [
        ("d3", "The tower was built in 1889."),
        ("d1", "It is the Eiffel Tower, in Paris."),
        ("x9", "Unrelated."),
        ("d1", "It is the Eiffel Tower, in Paris."),
    ],
    "q2": [("e1", "nothing relevant")],
    # q3 has no context entry: closed book
    "q4": [("g1", "He lived in New"), ("g2", "York city for years")],
}
GOLDS = {"q1": ["Eiffel Tower"], "q2": ["foo"], "q3": ["bar"], "q4": ["New York"], "q5": []}
PREDS = {"q1": "the Eiffel Tower", "q2": "Foo!", "q3": "no idea", "q4": "New York City", "q5": "x"}


def test_context_recall_precision_hand_cases():
    # q1: relevant {d1, d2}; packed distinct {d3, d1, x9} -> recall 1/2, precision 1/3
    assert context_recall(CONTEXTS["q1"], QRELS["q1"]) == pytest.approx(0.5)
    assert context_precision(CONTEXTS["q1"], QRELS["q1"]) == pytest.approx(1 / 3)
    # grade >= 2 only: relevant {d1} -> recall 1, precision still 1/3
    assert context_recall(CONTEXTS["q1"], QRELS["q1"], relevance_level=2) == 1.0
    assert context_precision(CONTEXTS["q1"], QRELS["q1"], relevance_level=2) == pytest.approx(1 / 3)
    assert context_recall([], QRELS["q3"]) == 0.0
    assert context_precision([], QRELS["q3"]) == 0.0
    with pytest.raises(DataError, match="no document with relevance"):
        context_recall(CONTEXTS["q2"], QRELS["q2"])
    with pytest.raises(DataError, match=r"\(doc_id, text\) pairs"):
        context_recall(["d1"], QRELS["q1"])


def test_answer_in_context_hand_cases():
    assert answer_in_context(CONTEXTS["q1"], GOLDS["q1"]) == 1.0
    assert answer_in_context(CONTEXTS["q4"], GOLDS["q4"]) == 0.0  # never across two passages
    assert answer_in_context([("d", "the eiffel-tower")], ["Eiffel Tower"]) == 0.0
    assert answer_in_context([], ["x"]) == 0.0
    with pytest.raises(DataError, match="has no text"):
        answer_in_context([("d1", None)], ["x"])


def test_evaluate_answers_hand_example():
    metrics = ["em", "f1", "contains", "ctx_recall", "ctx_precision", "answer_in_ctx"]
    res = evaluate_answers(PREDS, GOLDS, metrics, contexts=CONTEXTS, qrels=QRELS)
    assert isinstance(res, AnswerEvalResult)
    means, per_query = res  # unpacks as (means, per_query)
    # answer metrics: q5 has no gold answers -> skipped and counted
    assert per_query["em"] == {"q1": 1.0, "q2": 1.0, "q3": 0.0, "q4": 0.0}
    assert means["em"] == pytest.approx(0.5)
    # q4 F1: 'new york city' vs 'new york': P 2/3 R 1 -> 0.8
    assert per_query["f1"]["q4"] == pytest.approx(0.8)
    assert means["f1"] == pytest.approx((1 + 1 + 0 + 0.8) / 4)
    assert means["contains"] == pytest.approx(0.75)
    assert res.skipped["em"] == ["q5"] and res.n_scored["em"] == 4 and res.n_queries == 5
    # context metrics: q2 (no relevant doc) and q5 (no qrels) skipped; q3 closed book scores 0
    assert per_query["ctx_recall"] == pytest.approx({"q1": 0.5, "q3": 0.0, "q4": 1.0})
    assert per_query["ctx_precision"] == pytest.approx({"q1": 1 / 3, "q3": 0.0, "q4": 0.5})
    assert sorted(res.skipped["ctx_recall"]) == ["q2", "q5"]
    assert per_query["answer_in_ctx"] == {"q1": 1.0, "q2": 0.0, "q3": 0.0, "q4": 0.0}
    assert res["answer_in_context"] == pytest.approx(0.25)
    d = res.to_dict(per_query=True)
    assert d["n_skipped"]["em"] == 1 and json.dumps(d)
    mean, lo, hi = res.ci("f1", n_resamples=200)
    assert mean == means["f1"] and lo <= mean <= hi


# ============================================================================================================
# registry and errors


def test_registry():
    assert set(ANSWER_METRICS) == {"em", "f1", "contains", "rouge_l", "ctx_recall", "ctx_precision", "answer_in_ctx"}
    assert all(m.direction == "maximize" for m in ANSWER_METRICS.values())
    needs = {name: set(m.needs) for name, m in ANSWER_METRICS.items()}
    assert needs["em"] == needs["f1"] == needs["contains"] == needs["rouge_l"] == {"answers"}
    assert needs["ctx_recall"] == needs["ctx_precision"] == {"qrels", "context"}
    assert needs["answer_in_ctx"] == {"answers", "context"}
    for alias, canon in [
        ("EM", "em"),
        ("exact_match", "em"),
        ("acc", "contains"),
        ("ROUGE-L", "rouge_l"),
        ("rougeL", "rouge_l"),
        ("context_recall", "ctx_recall"),
        ("token_f1", "f1"),
        ("answer_in_context", "answer_in_ctx"),
    ]:
        assert is_answer_metric(alias)
        assert answer_metric(alias).name == canon
    for retrieval in ("ndcg@10", "recall@100", "map", "mrr@10", "p@5"):
        assert not is_answer_metric(retrieval)


def test_answer_names_are_not_retrieval_names():
    """`ragopt eval --metrics` can route each name: no answer alias parses as a retrieval metric."""
    from ragopt.evaluation import parse_metric
    from ragopt.evaluation.answers import _ALIASES

    for alias in _ALIASES:
        with pytest.raises(ConfigError):
            parse_metric(alias)


def test_unknown_metric_has_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown answer metric 'rogue_l'; did you mean 'rouge_l'\?") as e:
        evaluate_answers(PREDS, GOLDS, ["rogue_l"])
    assert e.value.path == "metrics"
    with pytest.raises(ConfigError, match="did you mean 'ctx_recall'"):
        answer_metric("ctx_recal")


def test_missing_needs_name_metric_and_input():
    with pytest.raises(DataError, match=r"metric 'em' needs gold answers"):
        evaluate_answers(PREDS, None, ["em"])
    with pytest.raises(DataError, match=r"metric 'ctx_recall' needs the packed contexts"):
        evaluate_answers(PREDS, GOLDS, ["ctx_recall"], qrels=QRELS)
    with pytest.raises(DataError, match=r"metric 'ctx_precision' needs qrels"):
        evaluate_answers(PREDS, GOLDS, ["ctx_precision"], contexts=CONTEXTS)
    with pytest.raises(DataError, match=r"metric 'answer_in_ctx' needs gold answers \(answers.jsonl\) and"):
        evaluate_answers(PREDS, {}, ["answer_in_ctx"])
    with pytest.raises(DataError, match=r"metric 'f1': none of the 1 predicted queries has gold answers"):
        evaluate_answers({"q5": "x"}, GOLDS, ["f1"])
    with pytest.raises(DataError, match="no predictions"):
        evaluate_answers({}, GOLDS, ["f1"])


def test_inputs_of_the_wrong_shape_are_named():
    # a list of answers was read as query ids ("none of the 1 predicted queries has gold answers")
    with pytest.raises(DataError, match=r"^predictions: expected a mapping keyed by query id, got list$"):
        evaluate_answers(["Paris"], GOLDS, ["em"])
    with pytest.raises(DataError, match=r"^golds: expected a mapping keyed by query id, got list$"):
        evaluate_answers(PREDS, [["Paris"]], ["em"])
    # a None gold answer was compared as the text "None": the prediction "none" matched it
    with pytest.raises(
        DataError, match=r"^golds\['q1'\]: a gold answer must be a string \(or a number\), got NoneType"
    ):
        evaluate_answers({"q1": "none"}, {"q1": ["x", None]}, ["em"])
    assert evaluate_answers({"q1": "1990"}, {"q1": ["x", 1990]}, ["em"]).metrics["em"] == 1.0  # numbers are text
    for gold, got in ((5, "int"), ({"Paris": 1}, "dict")):  # 5: "'int' object is not iterable"; a dict: its keys
        with pytest.raises(
            DataError, match=rf"^golds\['q1'\]: gold answers must be a string or a list of strings, got {got}$"
        ):
            evaluate_answers({"q1": "Paris"}, {"q1": gold}, ["em"])


# ============================================================================================================
# bootstrap


def test_bootstrap_ci_properties():
    rng = np.random.default_rng(123)
    small = (rng.random(50) < 0.4).astype(float)
    large = (rng.random(5000) < 0.4).astype(float)
    m, lo, hi = bootstrap_ci(small, seed=7)
    assert m == pytest.approx(small.mean()) and lo <= m <= hi
    assert bootstrap_ci(small, seed=7) == (m, lo, hi)  # deterministic under a seed
    cont = rng.random(50)  # continuous values: another seed gives another interval
    assert bootstrap_ci(list(cont), seed=8) == bootstrap_ci(cont, seed=8)
    assert bootstrap_ci(cont, seed=8)[1:] != bootstrap_ci(cont, seed=9)[1:]
    m2, lo2, hi2 = bootstrap_ci(large, seed=7)
    assert lo2 <= m2 <= hi2
    assert hi2 - lo2 < (hi - lo) / 4  # ~sqrt(100) = 10x narrower in expectation
    assert bootstrap_ci([0.3] * 20) == (pytest.approx(0.3), pytest.approx(0.3), pytest.approx(0.3))
    assert bootstrap_ci({"a": 1.0}) == (1.0, 1.0, 1.0)
    # 90% is narrower than 95%
    _, lo90, hi90 = bootstrap_ci(small, alpha=0.10, seed=7)
    assert lo <= lo90 and hi90 <= hi
    # the global numpy state is left alone
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    bootstrap_ci(small)
    assert np.random.random() == before


def test_bootstrap_ci_matches_normal_approximation_and_scipy():
    from scipy import stats

    rng = np.random.default_rng(5)
    values = rng.random(1000) ** 2  # continuous per-query values (like F1), so the resampled means are too
    se = values.std() / math.sqrt(len(values))  # the bootstrap's own standard error (ddof 0)
    half = 1.959964 * se  # ~0.0185; a 90% interval would be ~0.0155
    m, lo, hi = bootstrap_ci(values, n_resamples=10000, seed=1)
    assert m == pytest.approx(values.mean())
    assert (hi - lo) / (2 * half) == pytest.approx(1.0, abs=0.06)
    assert lo == pytest.approx(m - half, abs=0.1 * half) and hi == pytest.approx(m + half, abs=0.1 * half)
    ref = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=10000,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(2),
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.1 * half) and hi == pytest.approx(ref.high, abs=0.1 * half)
    assert (hi - lo) == pytest.approx(ref.high - ref.low, rel=0.06)


def test_bootstrap_ci_bad_input():
    with pytest.raises(DataError):
        bootstrap_ci([])
    with pytest.raises(ConfigError, match="alpha"):
        bootstrap_ci([1.0, 0.0], alpha=1.5)
    with pytest.raises(ConfigError, match="n_resamples"):
        bootstrap_ci([1.0, 0.0], n_resamples=0)
    with pytest.raises(DataError):
        mean_value({})
    assert mean_value({"a": 1.0, "b": 0.0, "c": 0.5}) == 0.5


# ============================================================================================================
# property tests

WORDS = st.sampled_from(
    [
        "the",
        "The",
        "a",
        "A.",
        "an",
        "cat",
        "Cat's",
        "U.S.",
        "1945",
        "–",
        "don't",
        "é",
        "naïve",
        "x",
        "X",
        "mat",
        "*",
        "!",
        "theatre",
        "İ",
        "ß",
        "-",
        "new",
        "york",
    ]
)
PHRASES = st.one_of(
    st.lists(WORDS, max_size=8).map(" ".join), st.lists(WORDS, max_size=6).map("".join), st.text(max_size=20)
)
GOLD_LISTS = st.lists(PHRASES, min_size=1, max_size=3)
FAST = fuzz_settings(300, deadline=None, database=None)  # no .hypothesis/ example database


@pytest.mark.fuzz
@FAST
@given(PHRASES, GOLD_LISTS)
def test_property_agrees_with_squad_flashrag_and_rouge_score(pred, golds):
    assert exact_match(pred, golds) == float(squad_metric_max_over_ground_truths(squad_exact_match_score, pred, golds))
    assert token_f1(pred, golds) == pytest.approx(
        squad_metric_max_over_ground_truths(squad_f1_score, pred, golds), abs=1e-12
    )
    kept = [g for g in golds if squad_normalize_answer(g)]
    assert contains(pred, golds) == (flashrag_sub_em(pred, kept) if kept else 0.0)
    assert rouge_l(pred, golds) == pytest.approx(ref_rouge_l(pred, golds), abs=1e-12)


@pytest.mark.fuzz
@FAST
@given(PHRASES, GOLD_LISTS)
def test_property_bounds_and_orderings(pred, golds):
    em, f1, acc, rl = (exact_match(pred, golds), token_f1(pred, golds), contains(pred, golds), rouge_l(pred, golds))
    for v in (em, f1, acc, rl):
        assert 0.0 <= v <= 1.0
    if normalize_answer(pred):  # SQuAD v1.1 gives F1 0 when both sides normalise to nothing
        assert em <= f1
        assert em <= acc  # equal normalised strings contain each other
    assert f1 == max(token_f1(pred, [g]) for g in golds)
    assert rl == max(rouge_l(pred, [g]) for g in golds)


@pytest.mark.fuzz
@FAST
@given(PHRASES, PHRASES)
def test_property_identities_and_symmetry(x, y):
    assert exact_match(x, [x]) == 1.0
    if normalize_answer(x):
        assert token_f1(x, [x]) == 1.0 and contains(x, [x]) == 1.0
        assert contains(f"{y} {x} {y}", [x]) == 1.0
    if re.search(r"[a-z0-9]", x.lower()):
        assert rouge_l(x, [x]) == 1.0
    assert rouge_l(x, [y]) == pytest.approx(rouge_l(y, [x]), abs=1e-12)
    assert token_f1(x, [y]) == pytest.approx(token_f1(y, [x]), abs=1e-12)


# ============================================================================================================
# the shared QA dataset: every gold passage contains an answer string (its SOURCE.md: checked 2655/2655)


def test_nq_open_gold_passages(data_dir):
    root = data_dir / "nq-open-oracle-dev"
    if not (root / "answers.jsonl").is_file():
        pytest.skip(f"{root} not found")
    golds = {}
    with open(root / "answers.jsonl", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            golds[obj["query-id"]] = obj["answers"]
    texts = {}
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            texts[obj["_id"]] = obj["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    contexts = {q: [(d, texts[d]) for d in rel] for q, rel in qrels.items()}
    preds = {q: golds[q][0] for q in qrels}  # a gold answer as the prediction
    means, _ = evaluate_answers(
        preds,
        golds,
        ["em", "f1", "contains", "rouge_l", "answer_in_ctx", "ctx_recall", "ctx_precision"],
        contexts=contexts,
        qrels=qrels,
    )
    assert means["answer_in_ctx"] == 1.0
    assert means["ctx_recall"] == means["ctx_precision"] == 1.0
    assert means["em"] == means["f1"] == means["rouge_l"] == 1.0
    assert means["contains"] == 1.0
