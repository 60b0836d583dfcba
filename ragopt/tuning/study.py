"""Tuning studies over ragopt pipelines, stored in Optuna storages.

A study config (YAML, see ``configs/``) names a dataset, a pipeline template, a search space, the
objective(s) and the tuner. :func:`run_study` runs trials in an Optuna study so that studies resume after
a crash or Ctrl-C, several workers (processes, machines) share one study through a database URL, and
optuna-dashboard can read them. Every tuner, including ragopt's own greedy and hierarchical-bandit tuners,
runs as an Optuna sampler (:class:`TunerSampler` rebuilds the tuner's state from the stored trials).

Each trial reuses whatever earlier trials computed (:mod:`ragopt.cache`): fitted stages in memory,
indexes and embeddings in the artifact store, stage outputs (retrieval runs by depth) in memory and on
disk. The chosen configuration is reported on held-out queries the tuner never saw.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ragopt.config import canonical_json, config_hash, from_config, walk
from ragopt.errors import ConfigError, RagoptError
from ragopt._progress import progress_enabled
from ragopt.pipeline import Pipeline, Stage, run_batched
from ragopt.tuning.space import SearchSpace, apply_params
from ragopt.tuning.tuners import TUNERS, Tuner, make_tuner, suggest_all
from ragopt.types import Batch

__all__ = ["StudyConfig", "ObjectiveSpec", "PipelineObjective", "run_study", "StudyResult", "TunerSampler",
           "default_storage", "split_queries", "make_storage"]

_COST_PREFIX = "cost."
_MINIMIZE_BY_DEFAULT = ("latency_ms", "total_s")
_STUDY_KEYS = ("study", "description", "dataset", "split", "pipeline", "space", "objective", "tuner", "budget",
               "holdout", "batch_size")


# ---------------------------------------------------------------------------------------------------
# config

@dataclass
class ObjectiveSpec:
    """Objective metrics with directions, and constraints (``{metric, max}`` or ``{metric, min}``)."""

    metrics: list[str]
    directions: list[str]
    constraints: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Any, where: str = "objective") -> "ObjectiveSpec":
        from ragopt.evaluation import parse_metric

        if d is None:
            d = {"metrics": ["ndcg@10"]}
        if isinstance(d, (str, list)):
            d = {"metrics": d if isinstance(d, list) else [d]}
        if not isinstance(d, Mapping):
            raise ConfigError(where, f"expected a mapping, got {d!r}")
        for k in d:
            if k not in ("metrics", "constraints"):
                raise ConfigError(f"{where}.{k}", "unknown key (known: metrics, constraints)")
        metrics, directions = [], []
        items = d.get("metrics") or []
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}.metrics", "a non-empty list of metrics is required")
        for i, m in enumerate(items):
            if isinstance(m, str):
                name, direction = m, None
            elif isinstance(m, Mapping) and "metric" in m:
                name, direction = m["metric"], m.get("direction")
            else:
                raise ConfigError(f"{where}.metrics[{i}]", f"expected a metric name or {{metric, direction}}, got {m!r}")
            if not _is_cost_metric(name):
                name = parse_metric(name).name
            if direction is None:
                direction = "minimize" if _is_cost_metric(name) else "maximize"
            if direction not in ("maximize", "minimize"):
                raise ConfigError(f"{where}.metrics[{i}].direction", f"must be maximize or minimize, got {direction!r}")
            metrics.append(name)
            directions.append(direction)
        constraints = []
        for i, c in enumerate(d.get("constraints") or []):
            if not isinstance(c, Mapping) or "metric" not in c or not ({"max", "min"} & set(c)):
                raise ConfigError(f"{where}.constraints[{i}]", f"expected {{metric, max|min}}, got {c!r}")
            name = c["metric"] if _is_cost_metric(c["metric"]) else parse_metric(c["metric"]).name
            constraints.append({"metric": name, **{k: float(c[k]) for k in ("max", "min") if k in c}})
        return cls(metrics, directions, constraints)

    def retrieval_metrics(self) -> list[str]:
        names = [m for m in self.metrics + [c["metric"] for c in self.constraints] if not _is_cost_metric(m)]
        return list(dict.fromkeys(names)) or ["ndcg@10"]


def _is_cost_metric(name: str) -> bool:
    return name in _MINIMIZE_BY_DEFAULT or name.startswith(_COST_PREFIX)


@dataclass
class StudyConfig:
    """A tuning study: what to tune, on what, towards what."""

    name: str
    dataset: str
    pipeline: dict[str, Any]
    space: SearchSpace
    space_spec: list[Any]
    objective: ObjectiveSpec
    tuner: str = "tpe"
    seed: int = 0
    tuner_options: dict[str, Any] = field(default_factory=dict)
    trials: int = 30
    timeout: float | None = None
    split: str = "test"
    holdout_fraction: float = 0.3
    holdout_seed: int = 0
    batch_size: int = 1000
    description: str = ""
    source: str = ""

    @classmethod
    def from_dict(cls, d: Any, source: str = "study", base_dir: Path | None = None) -> "StudyConfig":
        from ragopt.pipeline_io import load_pipeline, pipeline_from_dict

        if not isinstance(d, Mapping):
            raise ConfigError(source, f"a study config must be a mapping, got {type(d).__name__}")
        for k in d:
            if k not in _STUDY_KEYS:
                raise ConfigError(f"{source}:{k}", f"unknown key (known: {', '.join(_STUDY_KEYS)})")
        for k in ("dataset", "pipeline", "space"):
            if k not in d:
                raise ConfigError(source, f"missing required key {k!r}")
        # pipeline: a name/path, or inline
        p = d["pipeline"]
        if isinstance(p, str):
            path = Path(p)
            if base_dir is not None and not path.is_absolute() and (base_dir / path).is_file():
                p = str(base_dir / path)
            stage = load_pipeline(p)
        else:
            stage = pipeline_from_dict({"pipeline": p} if isinstance(p, list) or "type" in p else p,
                                       source=f"{source}:pipeline")
        if not isinstance(stage, Pipeline):
            stage = Pipeline(stages=[stage])
        template = stage.to_config()
        space = SearchSpace.from_list(d["space"], where=f"{source}:space")
        space.validate_against(template, lambda cfg: from_config(cfg))
        tuner = d.get("tuner", "tpe")
        opts: dict[str, Any] = {}
        seed = 0
        if isinstance(tuner, Mapping):
            opts = {k: v for k, v in tuner.items() if k not in ("name", "seed")}
            seed = int(tuner.get("seed", 0))
            tuner = tuner.get("name", "tpe")
        if tuner not in TUNERS:
            raise ConfigError(f"{source}:tuner", f"unknown tuner {tuner!r} (known: {', '.join(TUNERS)})")
        budget = d.get("budget") or {}
        if not isinstance(budget, Mapping) or set(budget) - {"trials", "timeout"}:
            raise ConfigError(f"{source}:budget", "expected {trials: N, timeout: seconds}")
        holdout = d.get("holdout", {"fraction": 0.3, "seed": 0})
        if holdout is None or holdout is False:
            holdout = {"fraction": 0.0}
        if not isinstance(holdout, Mapping) or set(holdout) - {"fraction", "seed"}:
            raise ConfigError(f"{source}:holdout", "expected {fraction: 0..0.9, seed: N}")
        fraction = float(holdout.get("fraction", 0.3))
        if not 0.0 <= fraction <= 0.9:
            raise ConfigError(f"{source}:holdout.fraction", f"must be in [0, 0.9], got {fraction}")
        trials = int(budget.get("trials", 30))
        if trials < 1:
            raise ConfigError(f"{source}:budget.trials", f"must be >= 1, got {trials}")
        return cls(name=str(d.get("study") or Path(source).stem or "study"), dataset=str(d["dataset"]),
                   pipeline=template, space=space, space_spec=list(d["space"]) if isinstance(d["space"], list)
                   else d["space"], objective=ObjectiveSpec.from_dict(d.get("objective"), f"{source}:objective"),
                   tuner=tuner, seed=seed, tuner_options=opts, trials=trials,
                   timeout=budget.get("timeout"), split=str(d.get("split", "test")), holdout_fraction=fraction,
                   holdout_seed=int(holdout.get("seed", 0)), batch_size=int(d.get("batch_size", 1000)),
                   description=str(d.get("description", "")), source=source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StudyConfig":
        from ragopt.pipeline_io import read_yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(str(path), "study config not found")
        return cls.from_dict(read_yaml(path), source=str(path), base_dir=path.parent)


def split_queries(qids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A fixed, seeded split of query ids into (tune, held-out); independent of input order."""
    import numpy as np

    ids = sorted(qids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    n_hold = int(round(len(ids) * fraction))
    hold = {ids[i] for i in order[:n_hold]}
    return [q for q in qids if q not in hold], [q for q in qids if q in hold]


# ---------------------------------------------------------------------------------------------------
# objective

class PipelineObjective:
    """Evaluate pipeline configurations on a dataset's tuning queries, reusing everything it can."""

    def __init__(self, config: StudyConfig, store: Any = None, reuse: bool = True, progress: bool | None = None):
        from ragopt.cache import StageCache
        from ragopt.data import load_dataset
        from ragopt.store import ArtifactStore

        self.config = config
        self.reuse = reuse
        self.progress = progress
        self.store = store if store is not None else ArtifactStore()
        self.dataset = load_dataset(config.dataset)
        queries = self.dataset.queries_for(config.split)
        tune_ids, hold_ids = split_queries(queries.ids, config.holdout_fraction, config.holdout_seed)
        pos = {q: i for i, q in enumerate(queries.ids)}
        self.tune_queries = queries[[pos[q] for q in tune_ids]]
        self.heldout_queries = queries[[pos[q] for q in hold_ids]]
        qrels = self.dataset.qrels(config.split)
        self.tune_qrels = {q: qrels[q] for q in tune_ids if q in qrels}
        self.heldout_qrels = {q: qrels[q] for q in hold_ids if q in qrels}
        self.cache = StageCache(self.store) if reuse else None
        self._fitted: dict[str, dict] = {}
        self.evaluations = 0

    # -- building --------------------------------------------------------------------------------
    def config_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return apply_params(self.config.pipeline, self.config.space, params)

    def build(self, cfg: Mapping[str, Any]) -> Stage:
        return from_config(dict(cfg))

    def _fit(self, pipeline: Stage, store: Any) -> None:
        corpus = self.dataset.corpus
        stages = pipeline.stages if isinstance(pipeline, Pipeline) else [pipeline]
        for stage in stages:
            key = None
            if self.reuse:
                cfg = {k: v for k, v in stage.to_config().items()
                       if k not in stage.cache_ignore and k != stage.cache_depth_field}
                key = config_hash({"stage": cfg, "corpus": corpus.fingerprint}, length=32)
            if key is not None and key in self._fitted:
                # same config => same tree of components: restore the fitted state of the stage and of
                # every component nested in it (fusion inputs, sub-pipelines, encoders, vector indexes)
                for sub, state in zip(walk(stage), self._fitted[key]):
                    sub._state.clear()
                    sub._state.update(state)
                    if "artifacts" in state:
                        sub._state["artifacts"] = [dict(a, created=False) for a in state["artifacts"]]
            else:
                stage.fit(corpus, store, progress=self.progress)
                if key is not None:
                    self._fitted[key] = [dict(sub._state) for sub in walk(stage)]
            corpus = stage.prepare_corpus(corpus)
        pipeline._state["corpus"] = corpus

    # -- evaluating ------------------------------------------------------------------------------
    def evaluate(self, cfg: Mapping[str, Any], heldout: bool = False) -> dict[str, Any]:
        """Metrics, costs and timings of one configuration on the tuning (or held-out) queries."""
        import tempfile

        from ragopt.evaluation import evaluate

        queries = self.heldout_queries if heldout else self.tune_queries
        qrels = self.heldout_qrels if heldout else self.tune_qrels
        if len(queries) == 0:
            raise ConfigError("holdout", "no queries in this split of the study (check holdout.fraction)")
        pipeline = self.build(cfg)
        t0 = time.perf_counter()
        if self.reuse:
            self._fit(pipeline, self.store)
            t1 = time.perf_counter()
            with self.cache.active():
                batch = run_batched(pipeline, Batch(queries), batch_size=self.config.batch_size, progress=False)
        else:  # the honest baseline for "reuse disabled": nothing from earlier trials, not even indexes
            from ragopt.store import ArtifactStore

            with tempfile.TemporaryDirectory(prefix="ragopt-noreuse-") as tmp:
                pipeline.fit(self.dataset.corpus, ArtifactStore(tmp), progress=self.progress)
                t1 = time.perf_counter()
                batch = run_batched(pipeline, Batch(queries), batch_size=self.config.batch_size, progress=False)
        t2 = time.perf_counter()
        result = evaluate(batch.to_run(), qrels, self.config.objective.retrieval_metrics())
        self.evaluations += 1
        costs = dict(batch.stats.counts)
        out = {"metrics": dict(result.metrics), "n_queries": result.n_queries,
               "latency_ms": 1000.0 * (t2 - t1) / max(len(queries), 1), "fit_s": t1 - t0, "search_s": t2 - t1,
               "total_s": time.perf_counter() - t0, "costs": costs,
               "stage_seconds": {k: round(v, 4) for k, v in batch.stats.seconds.items()},
               "per_query": result.per_query}
        return out

    def values(self, ev: Mapping[str, Any]) -> list[float]:
        return [self.metric_value(ev, m) for m in self.config.objective.metrics]

    @staticmethod
    def metric_value(ev: Mapping[str, Any], name: str) -> float:
        if name in ev["metrics"]:
            return float(ev["metrics"][name])
        if name in ("latency_ms", "total_s"):
            return float(ev[name])
        if name.startswith(_COST_PREFIX):
            return float(ev["costs"].get(name[len(_COST_PREFIX):], 0))
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
        trial.set_user_attr("pipeline", canonical_json(cfg))
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
        if self.cache is not None:
            trial.set_user_attr("cache", self.cache.counters())
        for i, v in enumerate(self.constraint_values(ev)):
            trial.set_constraint(f"c{i}", v)
        vals = self.values(ev)
        return vals[0] if len(vals) == 1 else vals


# ---------------------------------------------------------------------------------------------------
# Optuna bridge for ragopt's own tuners

def TunerSampler(factory: Callable[[], Tuner]) -> Any:
    """An Optuna sampler that runs a ragopt :class:`Tuner`, rebuilt from the study's trials each time.

    Replaying the stored trials (tells for finished ones, pending for running ones, in trial order) makes
    the tuner stateless between calls: it resumes after a crash and cooperates across workers."""
    return _tuner_sampler_class()(factory)


_SAMPLER_CLS: Any = None


def _tuner_sampler_class() -> type:
    global _SAMPLER_CLS
    if _SAMPLER_CLS is not None:
        return _SAMPLER_CLS
    import optuna

    class _TunerSampler(optuna.samplers.BaseSampler):
        def __init__(self, factory: Callable[[], Tuner]):
            self._factory = factory
            self._space = factory().space
            self._fallback = optuna.samplers.RandomSampler()

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {p.name: p.distribution() for p in self._space.params}

        def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            states = optuna.trial.TrialState
            tuner = self._factory()
            for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
                if t.number >= trial.number:
                    continue
                if t.state == states.COMPLETE:
                    tuner.tell(t.params, list(t.values) if len(t.values) > 1 else t.values[0])
                elif t.state in (states.FAIL, states.PRUNED):
                    tuner.tell(t.params, None)
                elif t.params:
                    tuner.pending(t.params)
            tuner.rng.seed(f"{tuner.seed}-{trial.number}")  # fresh, reproducible randomness per trial
            return tuner.ask()

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            return self._fallback.sample_independent(study, trial, name, distribution)

    _SAMPLER_CLS = _TunerSampler
    return _SAMPLER_CLS


def default_storage(store: Any) -> str:
    """The default, serverless storage: an SQLite file in the artifact store."""
    path = Path(store.root) / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def make_storage(url: str, heartbeat: int | None = 10, grace: int | None = None):
    """An RDB storage with heartbeats: a worker killed mid-trial leaves a stale trial that the next worker
    marks failed and re-queues (same parameters), so nothing is lost."""
    import random
    import warnings

    import optuna

    def open_once():
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=heartbeat, grace_period=grace or 3 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                    engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
        return optuna.storages.RDBStorage(url)

    for attempt in range(6):
        try:
            return open_once()
        except ImportError as e:
            raise RagoptError(f"storage {url.split('://')[0]}: a database driver is missing ({e}); for "
                              "PostgreSQL install psycopg (pip install 'ragopt[tune]')") from e
        except Exception as e:
            # two workers creating the schema of a fresh database at once: one loses the race; retry
            if attempt == 5:
                raise RagoptError(f"cannot open study storage {url!r}: {e}") from e
            time.sleep(0.2 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass
class StudyResult:
    study_name: str
    storage: str
    best_value: float | list[float] | None
    best_params: dict[str, Any]
    best_pipeline: str | None
    n_trials: int
    n_complete: int
    n_failed: int
    heldout: dict[str, Any]
    tune: dict[str, Any]
    pareto: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_study(config: StudyConfig, storage: str | None = None, study_name: str | None = None,
              store: Any = None, n_trials: int | None = None, timeout: float | None = None,
              tuner: str | None = None, seed: int | None = None, reuse: bool = True,
              progress: bool | None = None, out_dir: str | os.PathLike | None = None,
              heartbeat: int | None = 10, grace: int | None = None) -> StudyResult:
    """Run (or resume, or join) a study until it has ``n_trials`` finished trials or ``timeout`` passes."""
    import optuna

    from ragopt.store import ArtifactStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    store = store if store is not None else ArtifactStore()
    tuner_name = tuner or config.tuner
    if tuner_name not in TUNERS:
        raise ConfigError("--tuner", f"unknown tuner {tuner_name!r} (known: {', '.join(TUNERS)})")
    seed = config.seed if seed is None else seed
    n_trials = n_trials or config.trials
    timeout = timeout if timeout is not None else config.timeout
    name = study_name or config.name
    url = storage or default_storage(store)
    objective = PipelineObjective(config, store=store, reuse=reuse, progress=progress)
    directions = config.objective.directions
    defaults = config.space.defaults_from(config.pipeline)
    if tuner_name in ("tpe", "random", "grid", "cmaes", "nsga2"):
        from ragopt.tuning.tuners import make_optuna_sampler

        sampler = make_optuna_sampler(tuner_name, config.space, seed, len(directions), **config.tuner_options)
    else:
        sampler = TunerSampler(lambda: make_tuner(tuner_name, config.space, seed, directions, defaults,
                                                  **config.tuner_options))
    study = optuna.create_study(study_name=name, storage=make_storage(url, heartbeat, grace), sampler=sampler,
                                directions=directions, load_if_exists=True)
    _check_study_matches(study, config, tuner_name)
    if not study.trials and tuner_name in ("tpe", "random", "cmaes", "nsga2"):
        study.enqueue_trial(defaults)  # start from the template's own configuration
    done = _n_finished(study)
    bar = None
    if progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=n_trials, initial=min(done, n_trials), desc=f"tune {name}", unit="trial", file=sys.stderr)

    def on_trial(study_: Any, trial: Any) -> None:
        if _n_finished(study_) >= n_trials:
            study_.stop()
        if bar is not None:
            bar.update(1)
            try:
                best = study_.best_value if len(directions) == 1 else None
                bar.set_postfix_str(f"best={best:.4f}" if best is not None else f"pareto={len(study_.best_trials)}")
            except ValueError:
                pass

    try:
        if done < n_trials:
            study.optimize(objective, n_trials=None, timeout=timeout, callbacks=[on_trial], catch=(Exception,),
                           gc_after_trial=False)
    except KeyboardInterrupt:
        # re-queue the interrupted configuration so a resumed study evaluates it
        trials = study.get_trials(deepcopy=False)
        requeued = {t.user_attrs.get("requeued_from") for t in trials}
        for t in trials:
            if t.user_attrs.get("interrupted") and t.params and t.number not in requeued:
                study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
        raise
    finally:
        if bar is not None:
            bar.close()
    return _summarise(study, objective, config, url, Path(out_dir) if out_dir else Path(store.root) / "studies" / name,
                      time.perf_counter() - t_start)


def _constraint_values(trial: Any) -> list[float]:
    c = trial.constraints or []
    return list(c.values()) if isinstance(c, dict) else list(c)


def _n_finished(study: Any) -> int:
    """Trials that count against the budget: complete, pruned, and failed *by their configuration*. Trials
    failed by a crash or Ctrl-C (no error recorded) are re-run with the same parameters, so do not count."""
    import optuna

    states = optuna.trial.TrialState
    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (states.COMPLETE, states.PRUNED) or (t.state == states.FAIL and "error" in t.user_attrs):
            n += 1
    return n


def _check_study_matches(study: Any, config: StudyConfig, tuner: str) -> None:
    """A study joined by name must be the same search: refuse to mix spaces or objectives."""
    sig = config_hash({"space": config.space_spec, "pipeline": config.pipeline,
                       "objective": [config.objective.metrics, config.objective.directions],
                       "dataset": config.dataset, "split": config.split,
                       "holdout": [config.holdout_fraction, config.holdout_seed]})
    have = study.user_attrs.get("ragopt_signature")
    if have is None:
        study.set_user_attr("ragopt_signature", sig)
        study.set_user_attr("ragopt_config", json.loads(canonical_json({
            "dataset": config.dataset, "split": config.split, "pipeline": config.pipeline,
            "space": config.space_spec, "objective": {"metrics": config.objective.metrics,
                                                      "directions": config.objective.directions},
            "tuner": tuner, "holdout": {"fraction": config.holdout_fraction, "seed": config.holdout_seed}})))
    elif have != sig:
        raise ConfigError("study", f"study {study.study_name!r} already exists with another space, pipeline, "
                                   "objective or dataset; use another --study name")


def _summarise(study: Any, objective: PipelineObjective, config: StudyConfig, url: str, out_dir: Path,
               seconds: float) -> StudyResult:
    import optuna

    from ragopt.pipeline_io import pipeline_from_dict, save_pipeline

    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == states.COMPLETE]
    failed = [t for t in trials if t.state == states.FAIL]
    best_params: dict[str, Any] = {}
    best_value: Any = None
    pareto: list[dict[str, Any]] = []
    best_trial = None
    if complete:
        feasible = [t for t in complete if all(c <= 0 for c in _constraint_values(t))] or complete
        if len(config.objective.directions) == 1:
            sign = 1 if config.objective.directions[0] == "maximize" else -1
            best_trial = max(feasible, key=lambda t: sign * t.values[0])
            best_value = best_trial.values[0]
        else:
            front = [t for t in study.best_trials if t in feasible] or study.best_trials
            pareto = [{"number": t.number, "values": t.values, "params": t.params} for t in front]
            sign = 1 if config.objective.directions[0] == "maximize" else -1
            best_trial = max(front, key=lambda t: sign * t.values[0])
            best_value = list(best_trial.values)
        best_params = dict(best_trial.params)
    heldout: dict[str, Any] = {}
    tune: dict[str, Any] = {}
    best_path = None
    if best_trial is not None:
        best_cfg = json.loads(best_trial.user_attrs["pipeline"])
        out_dir.mkdir(parents=True, exist_ok=True)
        stage = pipeline_from_dict({"pipeline": best_cfg}, source="best")
        best_path = str(save_pipeline(stage, out_dir / "best_pipeline.yaml", name=f"{study.study_name}-best",
                                      description=f"best of study {study.study_name} (trial {best_trial.number}, "
                                                  f"{dict(zip(config.objective.metrics, best_trial.values))})"))
        metrics = objective.config.objective.retrieval_metrics()
        tune = {"best": best_trial.user_attrs.get("metrics", {}),
                "baseline": objective.evaluate(config.pipeline)["metrics"]}
        if len(objective.heldout_queries):
            best_ev = objective.evaluate(best_cfg, heldout=True)
            base_ev = objective.evaluate(config.pipeline, heldout=True)
            heldout = {"n_queries": len(objective.heldout_queries), "best": best_ev["metrics"],
                       "baseline": base_ev["metrics"],
                       "gain": {m: best_ev["metrics"][m] - base_ev["metrics"][m] for m in metrics}}
            from ragopt.evaluation import paired_test

            m0 = metrics[0]
            heldout["paired_test"] = paired_test(base_ev["per_query"][m0], best_ev["per_query"][m0],
                                                 test="randomization").to_dict()
        (out_dir / "summary.json").write_text(json.dumps({"best_params": best_params, "best_value": best_value,
                                                          "heldout": heldout, "tune": tune}, indent=1))
    return StudyResult(study_name=study.study_name, storage=url, best_value=best_value, best_params=best_params,
                       best_pipeline=best_path, n_trials=len(trials), n_complete=len(complete),
                       n_failed=len(failed), heldout=heldout, tune=tune, pareto=pareto, seconds=round(seconds, 3))
