"""Retrieval metrics with ``trec_eval`` semantics, computed by ``pytrec_eval``.

``evaluate(run, qrels, ["ndcg@10", "recall@100", "mrr@10", "map"])`` averages over the qrels queries that
have a relevant document; qrels queries the run lacks score 0 (``trec_eval -c``), run queries the qrels lack
are ignored. Rankings follow trec_eval: score descending, ties by document id descending.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytrec_eval

from ragopt.errors import ConfigError, DataError
from ragopt.types import MAX_GRADE, MIN_GRADE, Qrels, Run, check_relevance_level

__all__ = ["Metric", "EvalResult", "parse_metric", "evaluate", "SUPPORTED_METRICS", "DEFAULT_METRICS"]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map")

SUPPORTED_METRICS = ("ndcg", "ndcg@k", "recall", "recall@k", "mrr", "mrr@k", "map", "map@k", "p", "p@k", "success@k")

# alias -> kind; spelled lower case
_KINDS = {
    "ndcg": "ndcg",
    "ndcg_cut": "ndcg",
    "recall": "recall",
    "r": "recall",
    "set_recall": "recall",
    "mrr": "mrr",
    "rr": "mrr",
    "recip_rank": "mrr",
    "map": "map",
    "ap": "map",
    "map_cut": "map",
    "p": "p",
    "precision": "p",
    "set_p": "p",
    "success": "success",
    "hit": "success",
    "hits": "success",
}
_PATTERN = re.compile(r"([a-z_]+?)(?:[@_.](-?[0-9]+))?")  # ASCII digits: \d took "ndcg@١٠" as ndcg@10


@dataclass(frozen=True)
class Metric:
    """One metric: ``kind`` (ndcg, recall, mrr, map, p, success) and an optional cutoff ``k``."""

    kind: str
    k: int | None = None

    @property
    def name(self) -> str:
        """Canonical name, e.g. ``ndcg@10`` or ``map``."""
        return self.kind if self.k is None else f"{self.kind}@{self.k}"

    @property
    def trec_name(self) -> str:
        """The pytrec_eval measure computed for this metric (``mrr@k`` is derived from ``recip_rank``)."""
        k = self.k
        if self.kind == "ndcg":
            return "ndcg" if k is None else f"ndcg_cut_{k}"
        if self.kind == "recall":
            return "set_recall" if k is None else f"recall_{k}"
        if self.kind == "p":
            return "set_P" if k is None else f"P_{k}"
        if self.kind == "map":
            return "map" if k is None else f"map_cut_{k}"
        if self.kind == "success":
            return f"success_{k}"
        return "recip_rank"

    def __str__(self) -> str:
        return self.name


#: the largest cutoff trec_eval reads as given (a C long beyond it: 1e20 came back under another name, a KeyError)
MAX_CUTOFF = 2**31 - 1


def parse_metric(name: str | Metric) -> Metric:
    """Parse ``ndcg@10``, ``nDCG``, ``R@100``, ``P@5``, ``precision@5``, ``mrr@10``, ``map``, ``recip_rank``,
    trec_eval names like ``ndcg_cut_10`` / ``P_5`` ... (case-insensitive). ConfigError when unknown."""
    if isinstance(name, Metric):
        return name
    text = str(name).strip().lower().replace(" ", "")
    m = _PATTERN.fullmatch(text)
    kind = _KINDS.get(m.group(1)) if m else None
    if kind is None:
        raise ConfigError(
            "metrics",
            f"unknown metric {name!r}; supported: {', '.join(SUPPORTED_METRICS)} "
            "(k a positive integer; aliases r@k, precision@k, recip_rank, hit@k)",
        )
    k = int(m.group(2)) if m.group(2) is not None else None
    if k is not None and not 1 <= k <= MAX_CUTOFF:
        raise ConfigError("metrics", f"metric {name!r}: cutoff k must be in 1..{MAX_CUTOFF}, got {k}")
    if kind == "success" and k is None:
        raise ConfigError("metrics", f"metric {name!r} needs a cutoff, e.g. success@10")
    return Metric(kind, k)


@dataclass
class EvalResult:
    """Means (``metrics``) and per-query values (``per_query[metric][qid]``) of one evaluation."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int
    missing_queries: list[str] = field(default_factory=list)
    extra_queries: int = 0
    relevance_level: int = 1

    def __getitem__(self, metric: str) -> float:
        """Mean of ``metric``; any spelling :func:`parse_metric` accepts (``res["nDCG@10"]``)."""
        return self.metrics[parse_metric(metric).name]

    def to_dict(self, per_query: bool = False) -> dict:
        """JSON-ready summary; ``per_query=True`` adds the per-query values."""
        out = {
            "metrics": dict(self.metrics),
            "n_queries": self.n_queries,
            "n_missing_queries": len(self.missing_queries),
            "missing_queries": list(self.missing_queries),
            "extra_queries": self.extra_queries,
            "relevance_level": self.relevance_level,
        }
        if per_query:
            out["per_query"] = {m: dict(v) for m, v in self.per_query.items()}
        return out


def evaluate(
    run: Run,
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    relevance_level: int = 1,
    judged_only_queries: bool = True,
) -> EvalResult:
    """Evaluate ``run`` against ``qrels`` with trec_eval semantics.

    Queries averaged over: the qrels queries with a document graded >= ``relevance_level`` (all qrels
    queries when ``judged_only_queries`` is False). Those absent from the run, or with an empty row, score 0
    and are listed in ``missing_queries``. Binary measures (recall, P, map, mrr, success) count grades >=
    ``relevance_level`` as relevant; nDCG uses the grades as linear gains (negative grades count as 0).
    A score of ``-inf`` ranks last; a NaN score is a DataError naming the query and document (trec_eval's sort
    puts a NaN anywhere: its comparisons are all false).
    """
    _check_nested_mapping(run, "run", "document -> score")
    _check_nested_mapping(qrels, "qrels", "document -> grade")
    if not qrels:
        raise DataError("qrels are empty: nothing to evaluate against")
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    parsed = list(dict.fromkeys(parse_metric(m) for m in metrics))
    if not parsed:
        raise ConfigError("metrics", "no metrics requested")
    level = check_relevance_level(relevance_level)
    for q, rels in qrels.items():
        for d, g in rels.items():
            if isinstance(g, bool) or not isinstance(g, numbers.Integral):
                raise DataError(f"qrels[{q!r}][{d!r}]: a relevance grade must be an integer, got {g!r}")
            if not MIN_GRADE <= g <= MAX_GRADE:  # trec_eval's memory grows with the largest grade (types.py)
                raise DataError(
                    f"qrels[{q!r}][{d!r}]: relevance grade {g} is outside {MIN_GRADE}..{MAX_GRADE} (the evaluator "
                    "allocates memory in proportion to the largest grade)"
                )
    qids = [q for q, rels in qrels.items() if not judged_only_queries or any(g >= level for g in rels.values())]
    if not qids:
        raise DataError(f"no qrels query has a document with relevance >= {level}: nothing to evaluate")

    sub_qrels = {q: qrels[q] for q in qids}
    sub_run = {q: run[q] for q in qids if run.get(q)}
    _check_no_nan(sub_run)
    missing = [q for q in qids if q not in sub_run]
    extra = sum(1 for q in run if q not in qrels)

    measures = {m.trec_name for m in parsed}
    raw = _pytrec_evaluate(sub_run, sub_qrels, measures, level) if sub_run else {}

    per_query: dict[str, dict[str, float]] = {}
    for m in parsed:
        tname = m.trec_name
        values = {q: float(raw[q][tname]) if q in raw else 0.0 for q in qids}
        if m.kind == "mrr" and m.k is not None:
            # recip_rank truncated to the top k: 1/rank counts only when rank <= k (same tie order)
            values = {q: v if v * m.k >= 1.0 - 1e-9 else 0.0 for q, v in values.items()}
        per_query[m.name] = values
    means = {name: math.fsum(v.values()) / len(qids) for name, v in per_query.items()}
    return EvalResult(means, per_query, len(qids), missing, extra, level)


def _pytrec_evaluate(run: Run, qrels: Qrels, measures: set[str], level: int) -> dict[str, dict[str, float]]:
    """One pytrec_eval pass. The qrels (small, grades already checked) are always handed over as plain ``str -> int``:
    pytrec-eval-terrier before 0.5.8 corrupts memory when its constructor rejects a value (a numpy grade), and the
    process crashes later. The run, which can be large, is coerced (numpy / string scores) only when rejected."""
    spec = _measure_spec(measures)
    evaluator = pytrec_eval.RelevanceEvaluator(_coerce(qrels, int, "qrels"), spec, relevance_level=level)
    try:
        return evaluator.evaluate(run)
    except (TypeError, ValueError):
        coerced = _coerce(run, float, "run")
        _check_no_nan(coerced)  # a score written "nan" is a NaN too
        return evaluator.evaluate(coerced)


def _check_nested_mapping(table: object, name: str, row: str) -> None:
    """``table`` is {query: {document: value}}; a DataError naming ``name`` otherwise (a list of triples raised
    "'list' object has no attribute 'get'")."""
    if not isinstance(table, Mapping):
        raise DataError(f"{name}: expected a mapping query -> {{{row}}}, got {type(table).__name__}")
    bad = [(q, r) for q, r in table.items() if not isinstance(r, Mapping)]
    if bad:
        raise DataError(f"{name}[{bad[0][0]!r}]: expected a mapping {row}, got {type(bad[0][1]).__name__}")


def _check_no_nan(run: Run) -> None:
    nan = next(((q, d) for q, row in run.items() for d, v in row.items() if v != v), None)  # 20 ms per 1M scores
    if nan is not None:
        raise DataError(f"run: query {nan[0]!r}, document {nan[1]!r} has the score NaN, which cannot be ranked")


def _measure_spec(measures: set[str]) -> set[str]:
    """Group cutoff measures: {"ndcg_cut_10", "ndcg_cut_3"} -> {"ndcg_cut.3,10"}."""
    cuts: dict[str, set[int]] = {}
    plain = set()
    for name in measures:
        base, _, k = name.rpartition("_")
        if k.isdigit():
            cuts.setdefault(base, set()).add(int(k))
        else:
            plain.add(name)
    return plain | {f"{base}.{','.join(map(str, sorted(ks)))}" for base, ks in cuts.items()}


def _coerce(table: dict[str, dict[str, object]], cast: type, what: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for q, row in table.items():
        try:
            out[str(q)] = {str(d): cast(v) for d, v in row.items()}
        except (TypeError, ValueError) as e:
            raise DataError(f"{what}: query {q!r} has a value that is not a number ({e})") from None
    return out
