"""Fit a pipeline on a dataset, run it on queries and evaluate it: the jobs behind ``ragopt index``,
``ragopt search`` and ``ragopt eval``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ragopt.data import Dataset, load_dataset
from ragopt.errors import ConfigError, DataError, StageError
from ragopt.evaluation.answers import ANSWERS, answer_metric, evaluate_answers, is_answer_metric
from ragopt.evaluation.judge import JUDGE_METRICS, LLMJudge, evaluate_judged, is_judge_metric, judge_metric
from ragopt.evaluation.metrics import DEFAULT_METRICS, evaluate, parse_metric
from ragopt.pipeline import Stage, run_batched
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Queries

__all__ = [
    "EvalReport",
    "FitReport",
    "evaluate_pipeline",
    "fit_pipeline",
    "run_pipeline",
    "DEFAULT_METRICS",
    "split_metrics",
    "sample_queries",
]


@dataclass
class FitReport:
    """What fitting a pipeline on a dataset's corpus built or reused, and how long it took (corpus load included)."""

    dataset: str
    n_docs: int
    fingerprint: str
    artifacts: list[dict]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalReport:
    """Metrics (means), per-query values, counts, timings, call counters and artifacts of one evaluation."""

    dataset: str
    split: str
    pipeline: dict[str, Any]
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int
    timings: dict[str, float]
    stats: dict[str, Any]
    artifacts: list[dict] = field(default_factory=list)
    qrels: dict[str, Any] = field(default_factory=dict)
    missing_queries: list[str] = field(default_factory=list)
    batch: Batch | None = field(default=None, repr=False)
    #: answer metrics: queries scored / skipped per metric; judged metrics: confidence intervals, judge
    rag: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        out = {
            "dataset": self.dataset,
            "split": self.split,
            "metrics": self.metrics,
            "n_queries": self.n_queries,
            "timings": self.timings,
            "stats": self.stats,
            "artifacts": self.artifacts,
            "qrels": self.qrels,
            "missing_queries": len(self.missing_queries),
            "pipeline": self.pipeline,
        }
        if self.rag:
            out["rag"] = self.rag
        if self.batch is not None and self.batch.answers is not None:
            out["answers"] = dict(zip(self.batch.queries.ids, self.batch.answers))
        if per_query:
            out["per_query"] = self.per_query
        return out


def fit_pipeline(
    pipeline: Stage,
    dataset: Any,
    store: ArtifactStore | None = None,
    progress: bool | None = None,
    rebuild: bool = False,
    fitter: Callable[..., Any] | None = None,
) -> FitReport:
    """Fit ``pipeline`` on the corpus of ``dataset`` (a name, path or Dataset): build its indexes in ``store``
    or reuse matching ones (``rebuild``: build again, replacing them). ``fitter(pipeline, corpus, store, *,
    rebuild, progress)`` fits instead of ``pipeline.fit`` (the tuning memo restores stages fitted earlier)."""
    ds = _dataset(dataset)
    t0 = time.perf_counter()
    if fitter is None:
        pipeline.fit(ds.corpus, store, rebuild=rebuild, progress=progress)
    else:
        fitter(pipeline, ds.corpus, store, rebuild=rebuild, progress=progress)
    return FitReport(
        dataset=ds.name,
        n_docs=len(ds.corpus),
        fingerprint=ds.corpus.fingerprint,
        artifacts=pipeline.artifacts(),
        seconds=round(time.perf_counter() - t0, 3),
    )


def run_pipeline(
    pipeline: Stage,
    dataset: Any,
    split: str = "test",
    store: ArtifactStore | None = None,
    batch_size: int = 1000,
    progress: bool | None = None,
    rebuild: bool = False,
    queries: Queries | None = None,
) -> Batch:
    """Fit ``pipeline`` on the dataset's corpus and run it on ``queries`` (default: the split's judged queries)."""
    ds = _dataset(dataset)
    if "queries" not in pipeline.requires or pipeline.requires - {"queries"}:
        raise StageError(
            f"pipeline starts with a stage that needs {sorted(pipeline.requires)}; "
            "a pipeline run on a dataset must start from queries (put a retriever first)"
        )
    if queries is None:
        queries = ds.queries_for(split)
    fit_pipeline(pipeline, ds, store, progress=progress, rebuild=rebuild)
    return run_batched(pipeline, Batch(queries), batch_size=batch_size, progress=progress)


def split_metrics(metrics: Sequence[str] | str) -> tuple[list[str], list[str], list[str]]:
    """``(retrieval, answer, judged)`` metric names; a name that is none of them is a ConfigError (checked
    before any work). One name may be given as a string (``"ndcg@10"`` was read letter by letter)."""
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    if not metrics:  # was: an evaluation that reported nothing
        raise ConfigError("metrics", "no metrics requested")
    retrieval, answer, judged = [], [], []
    for m in metrics:
        if is_answer_metric(m):
            answer.append(answer_metric(m).name)
        elif is_judge_metric(m):
            judged.append(judge_metric(m))
        else:
            try:
                parse_metric(m)
            except ConfigError as e:
                raise ConfigError(
                    "metrics",
                    f"{e.message}; answer metrics: em, f1, contains, rouge_l, ctx_recall, "
                    f"ctx_precision, answer_in_ctx; judged: {', '.join(JUDGE_METRICS)}",
                ) from None
            retrieval.append(m)
    return retrieval, answer, judged


def sample_queries(queries: Queries, limit: int | None, seed: int = 0) -> Queries:
    """A seeded sample of ``limit`` queries (in their original order); all of them when ``limit`` is None or
    not smaller than their number."""
    if limit is None or limit >= len(queries):
        return queries
    if limit < 1:
        raise ConfigError("limit", f"must be at least 1, got {limit}")
    import random

    rows = sorted(random.Random(seed).sample(range(len(queries)), limit))
    return queries[rows]


def evaluate_pipeline(
    pipeline: Stage,
    dataset: Any,
    split: str = "test",
    metrics: Sequence[str] = DEFAULT_METRICS,
    store: ArtifactStore | None = None,
    batch_size: int = 1000,
    progress: bool | None = None,
    rebuild: bool = False,
    aggregate: str = "max",
    queries: Queries | None = None,
    fitter: Callable[..., Any] | None = None,
    limit: int | None = None,
    seed: int = 0,
    judge: Any = None,
) -> EvalReport:
    """Evaluate ``pipeline`` (a Stage) on ``dataset`` (a name, path or Dataset): on ``queries`` (default: the
    split's judged queries; ``limit``: a seeded sample of that many), fitted by ``fitter`` (see
    :func:`fit_pipeline`). ``metrics`` may mix retrieval metrics (``ndcg@10``), answer and context metrics
    (``em``, ``f1``, ``contains``, ``ctx_recall``, ...; the pipeline must generate answers) and judged ones
    (``judge_correctness``, ``faithfulness``, ``answer_relevance``; ``judge``: an LLM backend or
    :class:`~ragopt.evaluation.judge.LLMJudge`). Every check that can fail runs before any work."""
    retrieval, answer, judged = split_metrics(metrics)
    provides = pipeline.provides
    if (answer or judged) and "answers" not in provides:
        raise ConfigError(
            "metrics",
            f"{', '.join(answer + judged)} need answers, but the pipeline generates none "
            "(end it with a generate stage)",
        )
    if retrieval and "candidates" not in provides:
        raise ConfigError("metrics", f"{', '.join(retrieval)} need candidates, but the pipeline retrieves none")
    if judged and judge is None:
        raise ConfigError("judge", f"{', '.join(judged)} need a judge model (judge=..., --judge MODEL)")
    t0 = time.perf_counter()
    ds = _dataset(dataset)
    golds = ds.answers
    needs_gold = [m for m in answer if ANSWERS in answer_metric(m).needs] + [
        m for m in judged if "answers" in JUDGE_METRICS[m]
    ]
    if needs_gold and not golds:
        raise DataError(f"{', '.join(needs_gold)} need gold answers, but dataset {ds.name!r} has no answers.jsonl")
    qrels = ds.qrels(split)
    restricted = queries is not None or limit is not None
    queries = sample_queries(ds.queries_for(split) if queries is None else queries, limit, seed)
    if restricted:
        qrels = {q: qrels[q] for q in queries.ids if q in qrels}
    # read the corpus here, so that load_s counts it and fit_s does not
    ds.corpus  # noqa: B018
    t_load = time.perf_counter()
    fit = fit_pipeline(pipeline, ds, store, progress=progress, rebuild=rebuild, fitter=fitter)
    t_fit = time.perf_counter()
    batch = run_batched(pipeline, Batch(queries), batch_size=batch_size, progress=progress)
    t_search = time.perf_counter()
    means: dict[str, float] = {}
    per_query: dict[str, dict[str, float]] = {}
    missing: list[str] = []
    n_queries = len(queries)
    rag: dict[str, Any] = {}
    if retrieval:
        result = evaluate(batch.to_run(aggregate=aggregate), qrels, retrieval)
        means.update(result.metrics)
        per_query.update(result.per_query)
        missing, n_queries = result.missing_queries, result.n_queries
    if answer or judged:
        predictions = dict(zip(batch.queries.ids, batch.answers))
        contexts = _contexts(batch)
        if answer:
            res = evaluate_answers(predictions, golds, answer, contexts=contexts, qrels=qrels)
            means.update(res.metrics)
            per_query.update(res.per_query)
            rag["n_scored"] = res.n_scored
            rag["n_skipped"] = {m: len(v) for m, v in res.skipped.items()}
        if judged:
            j = judge if isinstance(judge, LLMJudge) else LLMJudge(judge, store=store)
            res_j = evaluate_judged(
                j, judged, predictions, dict(zip(queries.ids, queries.texts)), golds, contexts, stats=batch.stats
            )
            means.update(res_j.metrics)
            per_query.update(res_j.per_query)
            rag["judged"] = {**res_j.to_dict(), "judge": j.describe()}
    t_eval = time.perf_counter()
    n = len(queries)
    timings = {
        "load_s": t_load - t0,
        "fit_s": t_fit - t_load,
        "search_s": t_search - t_fit,
        "evaluate_s": t_eval - t_search,
        "total_s": t_eval - t0,
        "qps": n / (t_search - t_fit) if t_search > t_fit else float("inf"),
    }
    return EvalReport(
        dataset=ds.name,
        split=split,
        pipeline=pipeline.to_config(),
        metrics=means,
        per_query=per_query,
        n_queries=n_queries,
        timings={k: round(v, 4) for k, v in timings.items()},
        stats=batch.stats.to_dict(),
        artifacts=fit.artifacts,
        qrels=ds.qrels_report(split),
        missing_queries=missing,
        batch=batch,
        rag=rag,
    )


def _contexts(batch: Batch) -> dict[str, list[tuple[str, str]]] | None:
    """``qid -> [(doc_id, text), ...]`` of the passages packed into each answer's prompt (None if not kept)."""
    if batch.contexts is None or batch.corpus is None:
        return None if batch.contexts is None else {q: [] for q in batch.queries.ids}
    ids = batch.corpus.doc_ids
    return {q: [(ids[r], batch.corpus.text(r)) for r in rows] for q, rows in zip(batch.queries.ids, batch.contexts)}


def _dataset(dataset: Any) -> Dataset:
    return load_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
