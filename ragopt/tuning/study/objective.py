"""The trial objective: evaluate a configuration of the pipeline template on the study's tuning queries.

Each evaluation goes through :func:`ragopt.evaluation.run.evaluate_pipeline` (fit, run, evaluate), reusing what
earlier trials computed: fitted stages (:class:`FitMemo`, through :meth:`Stage.fitted_state` /
:meth:`Stage.restore`), indexes and embeddings in the artifact store, and stage outputs (retrieval runs by
depth) in the stage-output cache (:class:`ragopt.cache.StageCache`), in memory and on disk.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Mapping
from typing import Any

from ragopt._imports import require
from ragopt.cache import StageCache
from ragopt.config import canonical_json, config_hash, from_config
from ragopt.data import load_dataset
from ragopt.data.splits import split_queries
from ragopt.errors import ConfigError, DataError
from ragopt.evaluation.answers import ANSWERS, answer_metric, is_answer_metric
from ragopt.evaluation.run import EvalReport, evaluate_pipeline, sample_queries
from ragopt.pipeline import FittedState, Pipeline, Stage
from ragopt.store import ArtifactStore
from ragopt.tuning.space import apply_params
from ragopt.tuning.study.config import COST_PREFIX, PER_QUERY, StudyConfig
from ragopt.tuning.tuners.base import suggest_all
from ragopt.types import Corpus, Queries

__all__ = ["PipelineObjective", "FitMemo", "worker_id"]


class FitMemo:
    """Fitted stages of earlier trials, by what their fit depends on: a pipeline stage whose config (search-time
    parameters aside: its depth field and ``cache_ignore``) and input corpus match an earlier trial's takes that
    trial's fitted state (:meth:`Stage.restore`, nested stages and components included) instead of fitting.

    ``fit`` has the signature of a stage's ``fit`` with the stage first (what
    :func:`~ragopt.evaluation.run.evaluate_pipeline` takes as ``fitter``); it fits with the memo's own
    ``progress`` setting, so that a study's searches stay silent while its fits may show progress."""

    def __init__(self, progress: bool | None = None):
        self.progress = progress
        self._snapshots: dict[str, FittedState] = {}
        self.restored = 0

    @staticmethod
    def key(stage: Stage, corpus: Corpus) -> str:
        search_time = (*stage.cache_ignore, stage.cache_depth_field)
        cfg = {k: v for k, v in stage.to_config().items() if k not in search_time}
        return config_hash({"stage": cfg, "corpus": corpus.fingerprint}, length=32)

    def fit(
        self, pipeline: Stage, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None
    ) -> Stage:
        for stage in pipeline.stages if isinstance(pipeline, Pipeline) else [pipeline]:
            key = self.key(stage, corpus)
            state = self._snapshots.get(key)
            if state is not None:
                stage.restore(state)
                self.restored += 1
            else:
                stage.fit(corpus, store, rebuild=rebuild, progress=self.progress)
                self._snapshots[key] = stage.fitted_state()
            corpus = stage.prepare_corpus(corpus)
        return pipeline


class PipelineObjective:
    """Evaluate pipeline configurations on a dataset's tuning queries, reusing everything it can
    (``reuse=False``: nothing, not even indexes: each evaluation fits in a fresh temporary store)."""

    def __init__(self, config: StudyConfig, store: Any = None, reuse: bool = True, progress: bool | None = None):
        self.config = config
        self.reuse = reuse
        self.progress = progress
        self.store = store if store is not None else ArtifactStore()
        self.dataset = load_dataset(config.dataset)
        queries = sample_queries(self.dataset.queries_for(config.split), config.query_limit, config.query_seed)
        needs_gold = [
            m
            for m in config.objective.rag_metrics()
            if (is_answer_metric(m) and ANSWERS in answer_metric(m).needs) or m == "judge_correctness"
        ]
        if needs_gold and not self.dataset.answers:  # before any trial
            raise DataError(
                f"objective {', '.join(needs_gold)} needs gold answers, but dataset "
                f"{self.dataset.name!r} has no answers.jsonl"
            )
        tune_ids, hold_ids = split_queries(queries.ids, config.holdout_fraction, config.holdout_seed)
        self.tune_queries = _select(queries, tune_ids)
        self.heldout_queries = _select(queries, hold_ids)
        self.cache = StageCache(self.store, persist=config.stage_outputs) if reuse else None
        self.memo = FitMemo(progress) if reuse else None
        self.evaluations = 0

    # -- building --------------------------------------------------------------------------------
    def config_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return apply_params(self.config.pipeline, self.config.space, params)

    def build(self, cfg: Mapping[str, Any]) -> Stage:
        return from_config(dict(cfg))

    # -- evaluating ------------------------------------------------------------------------------
    def evaluate(self, cfg: Mapping[str, Any], heldout: bool = False, queries: Queries | None = None) -> dict[str, Any]:
        """Metrics, costs and timings of one configuration on the tuning (or held-out) queries, or on ``queries``
        (a batch of an online study's stream)."""
        if queries is None:
            queries = self.heldout_queries if heldout else self.tune_queries
        if len(queries) == 0:
            raise ConfigError("holdout", "no queries in this split of the study (check holdout.fraction)")
        pipeline = self.build(cfg)
        if self.reuse:
            with self.cache.active():
                report = self._evaluate(pipeline, queries, self.store, self.memo.fit)
        else:  # the honest baseline for "reuse disabled": nothing from earlier trials, not even indexes
            with tempfile.TemporaryDirectory(prefix="ragopt-noreuse-") as tmp:
                report = self._evaluate(pipeline, queries, ArtifactStore(tmp), self._fit_fresh)
        self.evaluations += 1
        t, stats = report.timings, report.batch.stats
        return {
            "metrics": dict(report.metrics),
            "n_queries": report.n_queries,
            # what a query takes without the caches: the outputs and LLM calls they served count at the time
            # they took when computed, so a trial that reuses an earlier trial's work is not the faster for it
            "latency_ms": 1000.0 * (t["search_s"] + stats.cached_seconds) / max(len(queries), 1),
            "cached_s": round(stats.cached_seconds, 4),
            "fit_s": t["fit_s"],
            "search_s": t["search_s"],
            "total_s": t["total_s"],
            "costs": dict(stats.counts),
            "stage_seconds": {k: round(v, 4) for k, v in stats.seconds.items()},
            "per_query": report.per_query,
        }

    def _evaluate(self, pipeline: Stage, queries: Queries, store: ArtifactStore, fitter: Any) -> EvalReport:
        return evaluate_pipeline(
            pipeline,
            self.dataset,
            self.config.split,
            self.config.objective.retrieval_metrics(),
            store=store,
            batch_size=self.config.batch_size,
            progress=False,
            queries=queries,
            fitter=fitter,
        )

    def _fit_fresh(
        self, pipeline: Stage, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None
    ) -> Stage:
        return pipeline.fit(corpus, store, rebuild=rebuild, progress=self.progress)

    def values(self, ev: Mapping[str, Any]) -> list[float]:
        return [self.metric_value(ev, m) for m in self.config.objective.metrics]

    @staticmethod
    def metric_value(ev: Mapping[str, Any], name: str) -> float:
        if name in ev["metrics"]:
            return float(ev["metrics"][name])
        if name in ("latency_ms", "total_s"):
            return float(ev[name])
        if name.startswith(COST_PREFIX):
            counter = name[len(COST_PREFIX) :]
            if counter.endswith(PER_QUERY) and counter not in ev["costs"]:  # cost.<counter>_per_query
                return float(ev["costs"].get(counter[: -len(PER_QUERY)], 0)) / max(int(ev["n_queries"]), 1)
            return float(ev["costs"].get(counter, 0))
        raise ConfigError("objective", f"unknown objective metric {name!r}")

    def constraint_values(self, ev: Mapping[str, Any]) -> list[float]:
        """Optuna convention: <= 0 is feasible."""
        out = []
        for c in self.config.objective.constraints:
            v = self.metric_value(ev, c["metric"])
            if "max" in c:
                out.append(v - c["max"])
            if "min" in c:
                out.append(c["min"] - v)
        return out

    # -- optuna ----------------------------------------------------------------------------------
    def __call__(self, trial: Any) -> float | list[float]:
        params = suggest_all(trial, self.config.space)
        cfg = self.config_for(params)
        cfg_json = canonical_json(cfg)
        trial.set_user_attr("pipeline", cfg_json)
        trial.set_user_attr("worker", worker_id())
        if self.config.repeats == "reuse":
            first = first_evaluation(trial.study, cfg_json)
            if first is not None:
                return self._repeat(trial, first)
        try:
            ev = self.evaluate(cfg)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            raise
        trial.set_user_attr("metrics", ev["metrics"])
        trial.set_user_attr("costs", ev["costs"])
        trial.set_user_attr("stage_seconds", ev["stage_seconds"])
        trial.set_user_attr("latency_ms", round(ev["latency_ms"], 4))
        trial.set_user_attr("fit_s", round(ev["fit_s"], 4))
        trial.set_user_attr("search_s", round(ev["search_s"], 4))
        trial.set_user_attr("cached_s", ev["cached_s"])
        if self.cache is not None:
            trial.set_user_attr("cache", self.cache.counters())
        for i, v in enumerate(self.constraint_values(ev)):
            trial.set_constraint(f"c{i}", v)
        vals = self.values(ev)
        return vals[0] if len(vals) == 1 else vals

    @staticmethod
    def _repeat(trial: Any, first: Any) -> float | list[float]:
        """A configuration evaluated before: take that trial's values and records instead of evaluating again.
        Evaluating it again would read the stage and LLM caches, so its timings (``latency_ms``) would be those
        of cache hits, not of the configuration."""
        trial.set_user_attr("repeat_of", first.number)
        for k in _RECORDS:
            if k in first.user_attrs:
                trial.set_user_attr(k, first.user_attrs[k])
        for name, v in (first.constraints or {}).items():  # named by __call__ (c0, c1, ...)
            trial.set_constraint(name, v)
        vals = list(first.values)
        return vals[0] if len(vals) == 1 else vals


#: what a trial records of its evaluation (``PipelineObjective.__call__``), which a repeat copies
_RECORDS = ("metrics", "costs", "stage_seconds", "latency_ms", "fit_s", "search_s", "cached_s")


def is_repeat(trial: Any) -> bool:
    """Whether ``trial`` took an earlier trial's result (``repeats: reuse``) instead of evaluating its pipeline."""
    return "repeat_of" in trial.user_attrs


def first_evaluation(study: Any, cfg_json: str) -> Any | None:
    """The complete trial of ``study`` that evaluated the pipeline config ``cfg_json`` (canonical JSON) itself,
    not as a repeat; None if there is none."""
    states = require("optuna", "tune", "tuning studies").trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(states.COMPLETE,)):
        if t.user_attrs.get("pipeline") == cfg_json and not is_repeat(t):
            return t
    return None


def worker_id() -> str:
    """Which process ran a trial (``host:pid``), recorded on every trial so that a shared study shows who did what."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _select(queries: Queries, ids: list[str]) -> Queries:
    pos = {q: i for i, q in enumerate(queries.ids)}
    return queries[[pos[q] for q in ids]]
