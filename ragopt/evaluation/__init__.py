"""Retrieval evaluation: trec_eval metrics, paired significance tests, TREC run / qrels files."""

from __future__ import annotations

from ragopt.evaluation.metrics import (DEFAULT_METRICS, SUPPORTED_METRICS, EvalResult, Metric, evaluate,
                                       parse_metric)
from ragopt.evaluation.significance import TESTS, TestResult, holm_bonferroni, paired_test, randomization_pvalue
from ragopt.evaluation.trec import ranked, read_qrels_trec, read_run, write_qrels, write_run

__all__ = [
    "DEFAULT_METRICS", "SUPPORTED_METRICS", "EvalResult", "Metric", "evaluate", "parse_metric",
    "TESTS", "TestResult", "holm_bonferroni", "paired_test", "randomization_pvalue",
    "ranked", "read_qrels_trec", "read_run", "write_qrels", "write_run",
]
