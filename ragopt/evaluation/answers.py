"""Answer-side and context-side RAG metrics against gold answers and qrels.

Answer metrics compare a generated answer with a query's gold answers (a list of strings, as in
``answers.jsonl``) and take the best gold answer:

- ``em``: exact match after SQuAD v1.1 normalisation (lower case, ASCII punctuation removed, articles
  a/an/the removed, whitespace collapsed), as the official SQuAD v1.1 ``evaluate-v1.1.py``;
- ``f1``: SQuAD v1.1 token F1 (bag of normalised tokens; 0 when nothing is shared, also when both sides
  normalise to nothing, exactly as v1.1);
- ``contains``: answer containment, FlashRAG's ``acc`` (``Sub_ExactMatch``): a normalised gold answer is a
  substring of the normalised prediction (a plain substring test, so gold ``"us"`` is found in ``"usually"``);
  gold answers that normalise to the empty string are ignored;
- ``rouge_l``: ROUGE-L F-measure over tokens as the ``rouge-score`` package computes it with its default
  tokenizer (lower case, every run of characters other than ``a-z0-9`` is a separator, no stemming); the
  best gold answer by F-measure, like ``RougeScorer.score_multi``.

Context metrics look at what was packed into the prompt, per query a list of ``(doc_id, text)`` pairs:

- ``ctx_recall``: the fraction of the query's relevant documents (qrels grade >= ``relevance_level``, i.e.
  > 0 by default) present in the packed context;
- ``ctx_precision``: the fraction of the distinct packed documents that are relevant (0 for an empty context);
- ``answer_in_ctx``: 1 when a normalised gold answer is a substring of a normalised packed passage.

:func:`evaluate_answers` scores the queries of ``predictions``. A query without gold answers is skipped by
the metrics that need them (and counted), a query without a relevant document is skipped by ``ctx_recall``
and ``ctx_precision`` (as retrieval evaluation only averages over judged queries); a query missing from
``contexts`` has an empty context (closed book).
"""

from __future__ import annotations

import difflib
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ragopt.errors import ConfigError, DataError
from ragopt.types import check_relevance_level

__all__ = [
    "normalize_answer",
    "exact_match",
    "token_f1",
    "contains",
    "rouge_tokenize",
    "rouge_l",
    "context_recall",
    "context_precision",
    "answer_in_context",
    "mean_value",
    "bootstrap_ci",
    "AnswerMetric",
    "ANSWER_METRICS",
    "answer_metric",
    "is_answer_metric",
    "AnswerEvalResult",
    "evaluate_answers",
]

# ---------------------------------------------------------------------------------------------------------
# normalisation and answer metrics

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, drop ASCII punctuation, replace the articles a/an/the with a
    space, collapse whitespace (same order as the official script)."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _gold_list(golds: str | Iterable[str]) -> list[str]:
    if isinstance(golds, str):
        return [golds]
    if isinstance(golds, Mapping) or not isinstance(golds, Iterable):  # 5 raised "'int' object is not iterable"
        raise DataError(f"gold answers must be a string or a list of strings, got {type(golds).__name__}")
    golds = list(golds)
    bad = [g for g in golds if isinstance(g, bool) or not isinstance(g, (str, int, float))]
    if bad:  # None was compared as the text "None"
        raise DataError(f"a gold answer must be a string (or a number), got {type(bad[0]).__name__} {bad[0]!r:.60}")
    out = [str(g) for g in golds]
    if not out:
        raise DataError("no gold answers to compare with (an empty list)")
    return out


def exact_match(prediction: str, golds: str | Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0 (SQuAD v1.1)."""
    pred = normalize_answer(prediction)
    return 1.0 if any(pred == normalize_answer(g) for g in _gold_list(golds)) else 0.0


def _f_measure(overlap: int, n_pred: int, n_gold: int) -> float:
    """Harmonic mean of precision ``overlap / n_pred`` and recall ``overlap / n_gold`` (0.0 without overlap)."""
    if overlap == 0:
        return 0.0
    precision = overlap / n_pred
    recall = overlap / n_gold
    return 2 * precision * recall / (precision + recall)


def _f1_one(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    return _f_measure(sum(common.values()), len(pred_tokens), len(gold_tokens))


def token_f1(prediction: str, golds: str | Iterable[str]) -> float:
    """SQuAD v1.1 token F1 of the normalised prediction against the best gold answer."""
    pred = normalize_answer(prediction).split()
    return max(_f1_one(pred, normalize_answer(g).split()) for g in _gold_list(golds))


def _contained(norm_golds: list[str], norm_text: str) -> bool:
    return any(g and g in norm_text for g in norm_golds)


def contains(prediction: str, golds: str | Iterable[str]) -> float:
    """Answer containment (FlashRAG ``acc``): 1.0 when a normalised gold answer is a substring of the
    normalised prediction. Gold answers that normalise to nothing are ignored."""
    return 1.0 if _contained([normalize_answer(g) for g in _gold_list(golds)], normalize_answer(prediction)) else 0.0


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokenize(text: str) -> list[str]:
    """``rouge-score``'s default tokenizer without stemming: lower case, every run of characters other than
    ASCII ``a-z0-9`` separates tokens."""
    return _NON_ALNUM.sub(" ", str(text).lower()).split()


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _rouge_l_one(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return 0.0
    return _f_measure(_lcs_length(pred_tokens, gold_tokens), len(pred_tokens), len(gold_tokens))


def rouge_l(prediction: str, golds: str | Iterable[str]) -> float:
    """ROUGE-L F-measure (token LCS) against the best gold answer, as ``rouge_score.rouge_scorer`` with
    ``["rougeL"]`` and no stemmer."""
    pred = rouge_tokenize(prediction)
    return max(_rouge_l_one(pred, rouge_tokenize(g)) for g in _gold_list(golds))


# ---------------------------------------------------------------------------------------------------------
# context metrics


def _relevant(qrels_row: Mapping[str, object] | None, relevance_level: int) -> set[str]:
    if not qrels_row:
        return set()
    out = set()
    for doc, grade in qrels_row.items():
        try:
            if float(grade) >= relevance_level:
                out.add(str(doc))
        except (TypeError, ValueError):
            raise DataError(f"qrels: document {doc!r} has a grade that is not a number: {grade!r}") from None
    return out


def _context_ids(context: Iterable) -> list[str]:
    ids = []
    for item in context or ():
        if isinstance(item, (tuple, list)) and len(item) == 2:
            ids.append(str(item[0]))
        else:
            raise DataError(f"context entries must be (doc_id, text) pairs, got {item!r}")
    return list(dict.fromkeys(ids))


def context_recall(context: Iterable, qrels_row: Mapping[str, object], relevance_level: int = 1) -> float:
    """Fraction of the relevant documents (grade >= ``relevance_level``) present in the packed context
    (``(doc_id, text)`` pairs). DataError when the query has no relevant document."""
    relevant = _relevant(qrels_row, relevance_level)
    if not relevant:
        raise DataError(f"context_recall: the query has no document with relevance >= {relevance_level}")
    return len(relevant.intersection(_context_ids(context))) / len(relevant)


def context_precision(context: Iterable, qrels_row: Mapping[str, object] | None, relevance_level: int = 1) -> float:
    """Fraction of the distinct packed documents that are relevant; 0.0 for an empty context."""
    ids = _context_ids(context)
    if not ids:
        return 0.0
    relevant = _relevant(qrels_row, relevance_level)
    return sum(1 for d in ids if d in relevant) / len(ids)


def answer_in_context(context: Iterable, golds: str | Iterable[str]) -> float:
    """1.0 when a normalised gold answer is a substring of one normalised packed passage (each passage on
    its own, so no match spans two passages)."""
    norm_golds = [normalize_answer(g) for g in _gold_list(golds)]
    for item in context or ():
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise DataError(f"context entries must be (doc_id, text) pairs, got {item!r}")
        text = item[1]
        if text is None:
            raise DataError(f"answer_in_context: context document {item[0]!r} has no text")
        if _contained(norm_golds, normalize_answer(text)):
            return 1.0
    return 0.0


# ---------------------------------------------------------------------------------------------------------
# aggregation


def _as_array(values: Mapping[str, float] | Iterable[float]) -> np.ndarray:
    if isinstance(values, Mapping):
        values = list(values.values())
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"expected a flat list of per-query values, got shape {arr.shape}")
    return arr


def mean_value(values: Mapping[str, float] | Iterable[float]) -> float:
    """Mean of per-query values (a dict qid -> value or a sequence); DataError when there are none."""
    arr = _as_array(values)
    if arr.size == 0:
        raise DataError("no per-query values to average")
    return math.fsum(arr.tolist()) / arr.size


def bootstrap_ci(
    values: Mapping[str, float] | Iterable[float], n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap: ``(mean, lo, hi)`` where [lo, hi] is the central ``1 - alpha`` interval of the
    means of ``n_resamples`` resamples (with replacement, same size) drawn by ``numpy.random.default_rng(seed)``.
    """
    arr = _as_array(values)
    if arr.size == 0:
        raise DataError("bootstrap_ci: no per-query values")
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError("alpha", f"must be in (0, 1), got {alpha!r}")
    n_resamples = int(n_resamples)
    if n_resamples < 1:
        raise ConfigError("n_resamples", f"must be >= 1, got {n_resamples}")
    mean = mean_value(arr)
    rng = np.random.default_rng(seed)
    n = arr.size
    means = np.empty(n_resamples, dtype=np.float64)
    block = max(1, min(n_resamples, 4_000_000 // n))  # bound the index matrix to about 32 MB
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = arr[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(lo), float(hi)


# ---------------------------------------------------------------------------------------------------------
# registry

ANSWERS, QRELS, CONTEXT = "answers", "qrels", "context"


@dataclass(frozen=True)
class AnswerMetric:
    """A RAG metric: canonical ``name``, optimisation ``direction`` and the inputs it ``needs``
    (a subset of ``answers``, ``qrels``, ``context``)."""

    name: str
    needs: frozenset[str]
    description: str
    direction: str = "maximize"

    def __str__(self) -> str:
        return self.name


ANSWER_METRICS: dict[str, AnswerMetric] = {
    m.name: m
    for m in (
        AnswerMetric("em", frozenset({ANSWERS}), "SQuAD exact match against the best gold answer"),
        AnswerMetric("f1", frozenset({ANSWERS}), "SQuAD token F1 against the best gold answer"),
        AnswerMetric("contains", frozenset({ANSWERS}), "a gold answer is contained in the answer (FlashRAG acc)"),
        AnswerMetric("rouge_l", frozenset({ANSWERS}), "ROUGE-L F-measure against the best gold answer"),
        AnswerMetric("ctx_recall", frozenset({QRELS, CONTEXT}), "fraction of relevant docs in the packed context"),
        AnswerMetric("ctx_precision", frozenset({QRELS, CONTEXT}), "fraction of packed docs that are relevant"),
        AnswerMetric("answer_in_ctx", frozenset({ANSWERS, CONTEXT}), "a gold answer appears in the packed context"),
    )
}

# alias (lower case, '-' and ' ' read as '_') -> canonical name
_ALIASES = {
    "em": "em",
    "exact_match": "em",
    "exactmatch": "em",
    "f1": "f1",
    "token_f1": "f1",
    "contains": "contains",
    "acc": "contains",
    "sub_em": "contains",
    "containment": "contains",
    "answer_contains": "contains",
    "rouge_l": "rouge_l",
    "rougel": "rouge_l",
    "ctx_recall": "ctx_recall",
    "context_recall": "ctx_recall",
    "ctx_precision": "ctx_precision",
    "context_precision": "ctx_precision",
    "answer_in_ctx": "answer_in_ctx",
    "answer_in_context": "answer_in_ctx",
}


def _key(name: object) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def is_answer_metric(name: object) -> bool:
    """True when ``name`` (any alias, case-insensitive) is an answer/context metric of this module."""
    if isinstance(name, AnswerMetric):
        return True
    return _key(name) in _ALIASES


def answer_metric(name: str | AnswerMetric) -> AnswerMetric:
    """The :class:`AnswerMetric` for ``name`` (aliases: exact_match, token_f1, acc, sub_em, rouge-l,
    context_recall, context_precision, answer_in_context); ConfigError with a suggestion when unknown."""
    if isinstance(name, AnswerMetric):
        return name
    canon = _ALIASES.get(_key(name))
    if canon is None:
        hint = difflib.get_close_matches(_key(name), list(_ALIASES), n=1)
        extra = f"; did you mean {_ALIASES[hint[0]]!r}?" if hint else ""
        raise ConfigError(
            "metrics", f"unknown answer metric {name!r}{extra} (answer metrics: {', '.join(ANSWER_METRICS)})"
        )
    return ANSWER_METRICS[canon]


# ---------------------------------------------------------------------------------------------------------
# evaluation


@dataclass
class AnswerEvalResult:
    """Means (``metrics``) and per-query values (``per_query[metric][qid]``) of one answer evaluation.

    Unpacks as ``means, per_query = evaluate_answers(...)``. ``skipped[metric]`` lists the queries a metric
    could not score (no gold answer, or no relevant document); ``n_scored[metric]`` counts the others."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int
    n_scored: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def __iter__(self) -> Iterator:
        return iter((self.metrics, self.per_query))

    def __getitem__(self, metric: str) -> float:
        """Mean of ``metric`` (any alias)."""
        return self.metrics[answer_metric(metric).name]

    def ci(
        self, metric: str, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
    ) -> tuple[float, float, float]:
        """Bootstrap ``(mean, lo, hi)`` of ``metric`` over its scored queries (see :func:`bootstrap_ci`)."""
        return bootstrap_ci(self.per_query[answer_metric(metric).name], n_resamples, alpha, seed)

    def to_dict(self, per_query: bool = False) -> dict:
        """JSON-ready summary; ``per_query=True`` adds the per-query values."""
        out = {
            "metrics": dict(self.metrics),
            "n_queries": self.n_queries,
            "n_scored": dict(self.n_scored),
            "n_skipped": {m: len(v) for m, v in self.skipped.items()},
        }
        if per_query:
            out["per_query"] = {m: dict(v) for m, v in self.per_query.items()}
        return out


_NEED_TEXT = {
    ANSWERS: "gold answers (answers.jsonl)",
    QRELS: "qrels",
    CONTEXT: "the packed contexts (a generate stage that keeps its context; not closed-book output)",
}


def evaluate_answers(
    predictions: Mapping[str, str],
    golds: Mapping[str, Sequence[str]] | None,
    metrics: Sequence[str | AnswerMetric] | str,
    contexts: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    relevance_level: int = 1,
) -> AnswerEvalResult:
    """Score ``predictions`` (qid -> answer) with answer / context ``metrics``.

    ``golds``: qid -> gold answers; ``contexts``: qid -> packed ``(doc_id, text)`` pairs; ``qrels``: qid ->
    {doc_id: grade}. The queries scored are those of ``predictions``; each metric skips (and counts in
    ``skipped``) the queries it cannot score. ConfigError for an unknown metric, DataError when a metric's
    inputs are missing or it can score no query."""
    if isinstance(metrics, (str, AnswerMetric)):
        metrics = [metrics]
    parsed = list(dict.fromkeys(answer_metric(m) for m in metrics))
    if not parsed:
        raise ConfigError("metrics", "no metrics requested")
    for name, table in (("predictions", predictions), ("golds", golds), ("contexts", contexts), ("qrels", qrels)):
        if table is not None and not isinstance(table, Mapping):  # a list of answers was read as query ids
            raise DataError(f"{name}: expected a mapping keyed by query id, got {type(table).__name__}")
    if not predictions:
        raise DataError("no predictions to evaluate")
    relevance_level = check_relevance_level(relevance_level)
    have = {ANSWERS: bool(golds), QRELS: bool(qrels), CONTEXT: contexts is not None}
    for m in parsed:
        missing = [need for need in sorted(m.needs) if not have[need]]
        if missing:
            raise DataError(
                f"metric {m.name!r} needs {' and '.join(_NEED_TEXT[n] for n in missing)}, "
                "which this evaluation does not have"
            )
    golds = golds or {}
    qrels = qrels or {}
    contexts = contexts or {}

    qids = [str(q) for q in predictions]
    gold_of: dict[str, list[str]] = {}  # each predicted query's gold answers as a list, checked once
    for q in qids:
        gold = golds.get(q)
        if isinstance(gold, str) or gold:  # None or an empty list: no gold answers (answer metrics skip the query)
            try:
                gold_of[q] = _gold_list(gold)
            except DataError as e:
                raise DataError(f"golds[{q!r}]: {e}") from None
    per_query: dict[str, dict[str, float]] = {}
    skipped: dict[str, list[str]] = {}
    for m in parsed:
        values: dict[str, float] = {}
        skip: list[str] = []
        for q in qids:
            gold = gold_of.get(q)
            if ANSWERS in m.needs and not gold:
                skip.append(q)
                continue
            if m.name in ("ctx_recall", "ctx_precision") and not _relevant(qrels.get(q), relevance_level):
                skip.append(q)
                continue
            pred = predictions[q]
            pred = "" if pred is None else str(pred)
            if m.name == "em":
                values[q] = exact_match(pred, gold)
            elif m.name == "f1":
                values[q] = token_f1(pred, gold)
            elif m.name == "contains":
                values[q] = contains(pred, gold)
            elif m.name == "rouge_l":
                values[q] = rouge_l(pred, gold)
            elif m.name == "ctx_recall":
                values[q] = context_recall(contexts.get(q, ()), qrels[q], relevance_level)
            elif m.name == "ctx_precision":
                values[q] = context_precision(contexts.get(q, ()), qrels[q], relevance_level)
            elif m.name == "answer_in_ctx":
                values[q] = answer_in_context(contexts.get(q, ()), gold)
            else:  # pragma: no cover - the registry and this dispatch list the same names
                raise ConfigError("metrics", f"answer metric {m.name!r} has no implementation")
        if not values:
            why = (
                "has gold answers"
                if ANSWERS in m.needs
                else f"has a relevant document (grade >= {relevance_level}) in the qrels"
            )
            raise DataError(f"metric {m.name!r}: none of the {len(qids)} predicted queries {why}; nothing to score")
        per_query[m.name] = values
        skipped[m.name] = skip
    means = {name: mean_value(v) for name, v in per_query.items()}
    return AnswerEvalResult(means, per_query, len(qids), {m: len(v) for m, v in per_query.items()}, skipped)
