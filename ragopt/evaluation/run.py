"""Run a pipeline over a dataset split and evaluate it: the job behind ``ragopt eval``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ragopt.errors import StageError
from ragopt.pipeline import Stage, run_batched
from ragopt.store import ArtifactStore
from ragopt.types import Batch

__all__ = ["EvalReport", "evaluate_pipeline", "run_pipeline", "DEFAULT_METRICS"]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map")


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

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        out = {"dataset": self.dataset, "split": self.split, "metrics": self.metrics,
               "n_queries": self.n_queries, "timings": self.timings, "stats": self.stats,
               "artifacts": self.artifacts, "qrels": self.qrels,
               "missing_queries": len(self.missing_queries), "pipeline": self.pipeline}
        if per_query:
            out["per_query"] = self.per_query
        return out


def run_pipeline(pipeline: Stage, dataset: Any, split: str = "test", store: ArtifactStore | None = None,
                 batch_size: int = 1000, progress: bool | None = None, rebuild: bool = False) -> Batch:
    """Fit ``pipeline`` on the dataset's corpus and run it on the split's judged queries."""
    from ragopt.data import load_dataset

    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if "queries" not in pipeline.requires or pipeline.requires - {"queries"}:
        raise StageError(f"pipeline starts with a stage that needs {sorted(pipeline.requires)}; "
                         "a pipeline run on a dataset must start from queries (put a retriever first)")
    pipeline.fit(ds.corpus, store, rebuild=rebuild, progress=progress)
    return run_batched(pipeline, Batch(ds.queries_for(split)), batch_size=batch_size, progress=progress)


def evaluate_pipeline(pipeline: Stage, dataset: Any, split: str = "test",
                      metrics: Sequence[str] = DEFAULT_METRICS, store: ArtifactStore | None = None,
                      batch_size: int = 1000, progress: bool | None = None, rebuild: bool = False,
                      aggregate: str = "max") -> EvalReport:
    """Evaluate ``pipeline`` (a Stage) on ``dataset`` (a name, path or Dataset)."""
    from ragopt.data import load_dataset
    from ragopt.evaluation import evaluate, parse_metric

    for m in metrics:  # fail on a bad metric name before any work
        parse_metric(m)
    t0 = time.perf_counter()
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    queries = ds.queries_for(split)
    qrels = ds.qrels(split)
    corpus = ds.corpus
    t_load = time.perf_counter()
    pipeline.fit(corpus, store, rebuild=rebuild, progress=progress)
    t_fit = time.perf_counter()
    batch = run_batched(pipeline, Batch(queries), batch_size=batch_size, progress=progress)
    t_search = time.perf_counter()
    result = evaluate(batch.to_run(aggregate=aggregate), qrels, metrics)
    t_eval = time.perf_counter()
    n = len(queries)
    timings = {"load_s": t_load - t0, "fit_s": t_fit - t_load, "search_s": t_search - t_fit,
               "evaluate_s": t_eval - t_search, "total_s": t_eval - t0,
               "qps": n / (t_search - t_fit) if t_search > t_fit else float("inf")}
    artifacts = []
    for s in _all_stages(pipeline):
        artifacts.extend(s._state.get("artifacts", []))
    return EvalReport(
        dataset=ds.name, split=split, pipeline=pipeline.to_config(), metrics=result.metrics,
        per_query=result.per_query, n_queries=result.n_queries,
        timings={k: round(v, 4) for k, v in timings.items()}, stats=batch.stats.to_dict(),
        artifacts=artifacts, qrels=ds.qrels_report(split), missing_queries=result.missing_queries, batch=batch)


def _all_stages(stage: Stage):
    from ragopt.pipeline import stages_of

    return list(stages_of(stage))
