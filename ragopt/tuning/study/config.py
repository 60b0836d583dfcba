"""Study configs: what to tune (a pipeline template and a search space), on what (a dataset split, minus
held-out queries), towards what (objectives and constraints), with which tuner and budget."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragopt._io import not_a_file
from ragopt.config import from_config
from ragopt.errors import ConfigError
from ragopt.evaluation import answer_metric, is_answer_metric, parse_metric
from ragopt.evaluation.judge import is_judge_metric, judge_metric
from ragopt.pipeline import Pipeline
from ragopt.pipeline_io import load_pipeline, pipeline_from_dict, read_yaml
from ragopt.tuning.space import SearchSpace
from ragopt.tuning.tuners.registry import get_tuner
from ragopt.types import check_seed

__all__ = ["StudyConfig", "ObjectiveSpec", "COST_PREFIX", "is_cost_metric"]

#: objective names ``cost.<counter>`` read a call counter of the trial's run (``cost.encoder_texts``)
COST_PREFIX = "cost."
#: ``cost.<counter>_per_query``: the counter divided by the number of evaluated queries
PER_QUERY = "_per_query"
_MINIMIZE_BY_DEFAULT = ("latency_ms", "total_s")
_STUDY_KEYS = (
    "study",
    "description",
    "dataset",
    "split",
    "pipeline",
    "space",
    "objective",
    "tuner",
    "budget",
    "holdout",
    "batch_size",
    "queries",
    "stage_outputs",
    "selection",
    "repeats",
)
SELECTION_RULES = ("best", "lcb")
REPEATS = ("reuse", "evaluate")


def metric_name(name: str) -> str:
    """The canonical name of an objective metric: a retrieval metric (``ndcg@10``), an answer or context metric
    (``em``, ``f1``, ``contains``, ``ctx_recall``, ...), a judged one (``judge_correctness``, ...), or a cost."""
    if is_cost_metric(name):
        return name
    if is_answer_metric(name):
        return answer_metric(name).name
    if is_judge_metric(name):
        return judge_metric(name)
    return parse_metric(name).name


def is_rag_metric(name: str) -> bool:
    """Whether ``name`` needs generated answers (an answer, context or judged metric)."""
    return is_answer_metric(name) or is_judge_metric(name)


def is_cost_metric(name: str) -> bool:
    """Latency, total seconds and ``cost.*`` counters: minimised unless said otherwise; not retrieval metrics."""
    return name in _MINIMIZE_BY_DEFAULT or name.startswith(COST_PREFIX)


@dataclass
class ObjectiveSpec:
    """Objective metrics with directions, and constraints (``{metric, max}`` or ``{metric, min}``)."""

    metrics: list[str]
    directions: list[str]
    constraints: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Any, where: str = "objective") -> ObjectiveSpec:
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
                raise ConfigError(
                    f"{where}.metrics[{i}]", f"expected a metric name or {{metric, direction}}, got {m!r}"
                )
            name = metric_name(name)
            if direction is None:
                direction = "minimize" if is_cost_metric(name) else "maximize"
            if direction not in ("maximize", "minimize"):
                raise ConfigError(f"{where}.metrics[{i}].direction", f"must be maximize or minimize, got {direction!r}")
            metrics.append(name)
            directions.append(direction)
        constraints = []
        raw_constraints = d.get("constraints") or []
        if not isinstance(raw_constraints, list):
            raise ConfigError(
                f"{where}.constraints", f"expected a list of {{metric, max|min}}, got {raw_constraints!r}"
            )
        for i, c in enumerate(raw_constraints):
            if not isinstance(c, Mapping) or "metric" not in c or not ({"max", "min"} & set(c)):
                raise ConfigError(f"{where}.constraints[{i}]", f"expected {{metric, max|min}}, got {c!r}")
            name = metric_name(c["metric"])
            bounds = {k: _number(c[k], f"{where}.constraints[{i}].{k}") for k in ("max", "min") if k in c}
            constraints.append({"metric": name, **bounds})
        return cls(metrics, directions, constraints)

    def retrieval_metrics(self) -> list[str]:
        """Every metric the evaluation must compute (retrieval, answer, context, judged), costs excluded."""
        names = [m for m in self.metrics + [c["metric"] for c in self.constraints] if not is_cost_metric(m)]
        return list(dict.fromkeys(names)) or ["ndcg@10"]

    def rag_metrics(self) -> list[str]:
        return [m for m in self.retrieval_metrics() if is_rag_metric(m)]


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
    #: a seeded sample of the split's judged queries (``queries: {limit: N, seed: S}``), drawn before the holdout
    query_limit: int | None = None
    query_seed: int = 0
    batch_size: int = 1000
    #: when a stage output is written to the store: ``auto`` (when computing it cost more than writing it),
    #: ``always``, ``never`` (memory only); see :mod:`ragopt.cache`
    stage_outputs: str = "auto"
    #: a configuration the tuner proposes again: ``reuse`` (the trial takes its first evaluation's values, metrics,
    #: costs and timings, records ``repeat_of`` and costs nothing; it still counts towards ``budget.trials``), or
    #: ``evaluate`` (run it again: to measure a noisy objective such as ``latency_ms`` more than once)
    repeats: str = "reuse"
    #: how the reported configuration is picked among the complete trials: ``best`` (highest tuning score), or
    #: ``lcb`` (among the ``top`` best, the highest lower confidence bound mean - z * standard error over the
    #: tuning queries: a correction for the selection's optimism)
    selection: dict[str, Any] = field(default_factory=lambda: {"rule": "best", "top": 5, "z": 1.0})
    description: str = ""
    source: str = ""

    @classmethod
    def from_dict(cls, d: Any, source: str = "study", base_dir: Path | None = None) -> StudyConfig:
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
            try:
                stage = load_pipeline(p)
            except ConfigError as e:  # say which study asked for it
                raise ConfigError(f"{source}:pipeline", str(e)) from None
        elif isinstance(p, (list, Mapping)):
            stage = pipeline_from_dict(
                {"pipeline": p} if isinstance(p, list) or "type" in p else p, source=f"{source}:pipeline"
            )
        else:
            raise ConfigError(
                f"{source}:pipeline", f"expected a pipeline name or path, a list of stages or a mapping, got {p!r}"
            )
        if not isinstance(stage, Pipeline):
            stage = Pipeline(stages=[stage])
        template = stage.to_config()
        try:
            space = SearchSpace.from_list(d["space"], where=f"{source}:space")
            space.validate_against(template, lambda cfg: from_config(cfg))
        except ConfigError as e:  # some checks of the space as a whole do not know the file: name it
            raise e if e.path.startswith(source) else ConfigError(source, str(e)) from None
        tuner = d.get("tuner", "tpe")
        opts: dict[str, Any] = {}
        seed = 0
        if isinstance(tuner, Mapping):
            opts = {k: v for k, v in tuner.items() if k not in ("name", "seed")}
            seed = check_seed(tuner.get("seed", 0), f"{source}:tuner.seed")
            tuner = tuner.get("name", "tpe")
        entry = get_tuner(tuner, where=f"{source}:tuner")
        entry.options(opts, where=f"{source}:tuner")  # an option the tuner does not take fails here, not mid-study
        budget = d.get("budget") or {}
        if not isinstance(budget, Mapping) or set(budget) - {"trials", "timeout"}:
            raise ConfigError(f"{source}:budget", "expected {trials: N, timeout: seconds}")
        holdout = d.get("holdout", {"fraction": 0.3, "seed": 0})
        if holdout is None or holdout is False:
            holdout = {"fraction": 0.0}
        if not isinstance(holdout, Mapping) or set(holdout) - {"fraction", "seed"}:
            raise ConfigError(f"{source}:holdout", "expected {fraction: 0..0.9, seed: N}")
        fraction = _number(holdout.get("fraction", 0.3), f"{source}:holdout.fraction")
        if not 0.0 <= fraction <= 0.9:
            raise ConfigError(f"{source}:holdout.fraction", f"must be in [0, 0.9], got {fraction}")
        sample = d.get("queries") or {}
        if not isinstance(sample, Mapping) or set(sample) - {"limit", "seed"}:
            raise ConfigError(f"{source}:queries", "expected {limit: N, seed: S} (a seeded sample of the queries)")
        limit = sample.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 2):
            raise ConfigError(f"{source}:queries.limit", f"must be an integer >= 2, got {limit!r}")
        objective = ObjectiveSpec.from_dict(d.get("objective"), f"{source}:objective")
        if objective.rag_metrics() and "answers" not in stage.provides:
            raise ConfigError(
                f"{source}:objective",
                f"{', '.join(objective.rag_metrics())} need generated answers, but the pipeline has no generate stage",
            )
        stage_outputs = d.get("stage_outputs", "auto")
        if stage_outputs not in ("auto", "always", "never"):
            raise ConfigError(f"{source}:stage_outputs", f"expected auto, always or never, got {stage_outputs!r}")
        repeats = d.get("repeats", "reuse")
        if repeats not in REPEATS:
            raise ConfigError(f"{source}:repeats", f"expected {' or '.join(REPEATS)}, got {repeats!r}")
        selection = _selection(d.get("selection"), f"{source}:selection")
        trials = _int(budget.get("trials", 30), f"{source}:budget.trials")
        timeout = budget.get("timeout")
        if timeout is not None and _number(timeout, f"{source}:budget.timeout") <= 0:
            raise ConfigError(f"{source}:budget.timeout", f"must be > 0 seconds, got {timeout!r}")
        if trials < 1:
            raise ConfigError(f"{source}:budget.trials", f"must be >= 1, got {trials}")
        return cls(
            name=str(d.get("study") or Path(source).stem or "study"),
            dataset=str(d["dataset"]),
            pipeline=template,
            space=space,
            space_spec=list(d["space"]) if isinstance(d["space"], list) else d["space"],
            objective=objective,
            tuner=entry.name,
            seed=seed,
            tuner_options=opts,
            trials=trials,
            timeout=timeout,
            split=str(d.get("split", "test")),
            holdout_fraction=fraction,
            holdout_seed=check_seed(holdout.get("seed", 0), f"{source}:holdout.seed"),
            query_limit=limit,
            query_seed=check_seed(sample.get("seed", 0), f"{source}:queries.seed"),
            batch_size=_at_least(_int(d.get("batch_size", 1000), f"{source}:batch_size"), 0, f"{source}:batch_size"),
            stage_outputs=stage_outputs,
            repeats=repeats,
            selection=selection,
            description=str(d.get("description", "")),
            source=source,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> StudyConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(str(path), not_a_file(path, "study config"))
        try:
            return cls.from_dict(read_yaml(path), source=str(path), base_dir=path.parent)
        except ConfigError as e:  # a check deep inside (a metric name, a component) may not know the file
            if e.path.startswith(str(path)):
                raise
            raise ConfigError(str(path), str(e)) from None


def _selection(d: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": "best", "top": 5, "z": 1.0}
    if d is None:
        return out
    if isinstance(d, str):
        d = {"rule": d}
    if not isinstance(d, Mapping) or set(d) - set(out):
        raise ConfigError(where, "expected {rule: best|lcb, top: N, z: Z}")
    out.update(d)
    if out["rule"] not in SELECTION_RULES:
        raise ConfigError(f"{where}.rule", f"expected one of {', '.join(SELECTION_RULES)}, got {out['rule']!r}")
    if not isinstance(out["top"], int) or out["top"] < 1:
        raise ConfigError(f"{where}.top", f"must be an integer >= 1, got {out['top']!r}")
    try:
        out["z"] = float(out["z"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.z", f"must be a number, got {out['z']!r}") from None
    if out["z"] < 0:
        raise ConfigError(f"{where}.z", f"must be >= 0, got {out['z']}")
    return out


def _int(value: Any, where: str) -> int:
    """``value`` as an int, or a ConfigError at ``where`` (a study file may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"must be an integer, got {value!r}")
    return value


def _at_least(value: int, low: int, where: str) -> int:
    if value < low:  # a batch_size of -5 was taken (as "all queries at once")
        raise ConfigError(where, f"must be >= {low}, got {value}")
    return value


def _number(value: Any, where: str) -> float:
    """``value`` as a finite or infinite float (not NaN), or a ConfigError at ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(where, f"must be a number, got {value!r}")
    return float(value)
