"""Retrieval evaluation: trec_eval metrics, paired significance tests, TREC run / qrels files; RAG answer and
context metrics."""

from __future__ import annotations

from ragopt.evaluation.answers import (
    ANSWER_METRICS,
    AnswerEvalResult,
    AnswerMetric,
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
from ragopt.evaluation.metrics import DEFAULT_METRICS, SUPPORTED_METRICS, EvalResult, Metric, evaluate, parse_metric
from ragopt.evaluation.significance import TESTS, TestResult, holm_bonferroni, paired_test, randomization_pvalue
from ragopt.evaluation.trec import ranked, read_qrels_trec, read_run, write_qrels, write_run

__all__ = [
    "ANSWER_METRICS",
    "AnswerEvalResult",
    "AnswerMetric",
    "answer_in_context",
    "answer_metric",
    "bootstrap_ci",
    "contains",
    "context_precision",
    "context_recall",
    "evaluate_answers",
    "exact_match",
    "is_answer_metric",
    "mean_value",
    "normalize_answer",
    "rouge_l",
    "token_f1",
    "DEFAULT_METRICS",
    "SUPPORTED_METRICS",
    "EvalResult",
    "Metric",
    "evaluate",
    "parse_metric",
    "TESTS",
    "TestResult",
    "holm_bonferroni",
    "paired_test",
    "randomization_pvalue",
    "ranked",
    "read_qrels_trec",
    "read_run",
    "write_qrels",
    "write_run",
]
