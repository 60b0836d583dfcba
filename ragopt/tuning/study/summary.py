"""What a study ends with: the best trial (or the Pareto front), its pipeline exported as YAML, its metrics
against the template's on the tuning queries and on held-out queries the tuner never saw (with a paired
significance test), in ``summary.json`` beside ``best_pipeline.yaml``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragopt._imports import require
from ragopt._io import atomic_write_text
from ragopt._urls import redact_url
from ragopt.evaluation import paired_test
from ragopt.pipeline_io import pipeline_from_dict, save_pipeline
from ragopt.tuning.study.config import StudyConfig
from ragopt.tuning.study.objective import PipelineObjective, is_repeat

__all__ = ["StudyResult", "summarise"]


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
    #: complete trials that repeated an evaluated configuration and took its result (``repeats: reuse``)
    n_repeats: int
    heldout: dict[str, Any]
    tune: dict[str, Any]
    pareto: list[dict[str, Any]]
    seconds: float
    selection: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as shown (``--json``): the storage URL without its password."""
        return {**self.__dict__, "storage": redact_url(self.storage)}


def _constraint_values(trial: Any) -> list[float]:
    c = trial.constraints or []
    return list(c.values()) if isinstance(c, dict) else list(c)


def summarise(
    study: Any, objective: PipelineObjective, config: StudyConfig, url: str, out_dir: Path, seconds: float
) -> StudyResult:
    """The study's result; with a best trial, also ``best_pipeline.yaml`` and ``summary.json`` in ``out_dir``."""
    optuna = require("optuna", "tune", "tuning studies")
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == states.COMPLETE]
    failed = [t for t in trials if t.state == states.FAIL]
    best_params: dict[str, Any] = {}
    best_value: Any = None
    pareto: list[dict[str, Any]] = []
    best_trial = None
    selection: dict[str, Any] = {"rule": "best"}
    if complete:
        feasible = [t for t in complete if all(c <= 0 for c in _constraint_values(t))] or complete
        if len(config.objective.directions) == 1:
            sign = 1 if config.objective.directions[0] == "maximize" else -1
            best_trial = max(feasible, key=lambda t: sign * t.values[0])
            selection = select(feasible, objective, config, sign)
            if selection.get("chosen") is not None:
                best_trial = next(t for t in feasible if t.number == selection["chosen"])
            best_value = best_trial.values[0]
        else:
            front = [t for t in study.best_trials if t in feasible] or study.best_trials
            front = [t for t in front if not is_repeat(t)]  # a repeat is its first trial's point
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
        best_path = str(
            save_pipeline(
                stage,
                out_dir / "best_pipeline.yaml",
                name=f"{study.study_name}-best",
                description=f"best of study {study.study_name} (trial {best_trial.number}, "
                f"{dict(zip(config.objective.metrics, best_trial.values))})",
            )
        )
        metrics = objective.config.objective.retrieval_metrics()
        tune = {
            "best": best_trial.user_attrs.get("metrics", {}),
            "baseline": objective.evaluate(config.pipeline)["metrics"],
        }
        if len(objective.heldout_queries):
            best_ev = objective.evaluate(best_cfg, heldout=True)
            base_ev = objective.evaluate(config.pipeline, heldout=True)
            heldout = {
                "n_queries": len(objective.heldout_queries),
                "best": best_ev["metrics"],
                "baseline": base_ev["metrics"],
                "gain": {m: best_ev["metrics"][m] - base_ev["metrics"][m] for m in metrics},
            }
            m0 = metrics[0]
            heldout["paired_test"] = paired_test(
                base_ev["per_query"][m0], best_ev["per_query"][m0], test="randomization"
            ).to_dict()
            obj_metric = config.objective.metrics[0]
            if obj_metric in best_ev["metrics"] and best_value is not None:
                tuned = best_value[0] if isinstance(best_value, list) else best_value
                # the winner's curse: what the tuning score promised beyond what held-out queries give
                heldout["optimism"] = {obj_metric: tuned - best_ev["metrics"][obj_metric]}
        atomic_write_text(
            out_dir / "summary.json",
            json.dumps(
                {
                    "best_params": best_params,
                    "best_value": best_value,
                    "heldout": heldout,
                    "tune": tune,
                    "selection": selection,
                },
                indent=1,
            ),
        )
    return StudyResult(
        study_name=study.study_name,
        storage=url,
        best_value=best_value,
        best_params=best_params,
        best_pipeline=best_path,
        n_trials=len(trials),
        n_complete=len(complete),
        n_repeats=sum(is_repeat(t) for t in complete),
        n_failed=len(failed),
        heldout=heldout,
        tune=tune,
        pareto=pareto,
        seconds=round(seconds, 3),
        selection=selection,
    )


def select(feasible: list[Any], objective: PipelineObjective, config: StudyConfig, sign: int) -> dict[str, Any]:
    """Which trial to report. ``best``: the highest tuning score. ``lcb``: among the ``top`` best, the highest
    lower confidence bound ``mean - z * se`` of the objective over the tuning queries (per-query values from a
    re-evaluation, which the stage and LLM caches make nearly free): a configuration that won on a few lucky
    queries loses to one nearly as good everywhere. Returns the rule, the candidates with their bounds and the
    chosen trial's number (``None`` for ``best``)."""
    rule = config.selection.get("rule", "best")
    if rule == "best":
        return {"rule": "best"}
    metric = config.objective.metrics[0]
    distinct = [t for t in feasible if not is_repeat(t)]
    ranked = sorted(distinct, key=lambda t: -sign * t.values[0])[: int(config.selection.get("top", 5))]
    z = float(config.selection.get("z", 1.0))
    rows = []
    for t in ranked:
        ev = objective.evaluate(json.loads(t.user_attrs["pipeline"]))
        per_query = ev["per_query"].get(metric)
        if not per_query:  # a cost or latency objective has no per-query values: keep the best
            return {"rule": rule, "note": f"{metric} has no per-query values; kept the best trial"}
        v = [sign * float(x) for x in per_query.values()]
        n = len(v)
        mean = sum(v) / n
        sd = (sum((x - mean) ** 2 for x in v) / (n - 1)) ** 0.5 if n > 1 else 0.0
        se = sd / n**0.5
        rows.append({"number": t.number, "value": t.values[0], "mean": sign * mean, "se": se, "lcb": mean - z * se})
    chosen = max(rows, key=lambda r: (r["lcb"], -r["number"]))
    for r in rows:
        r["lcb"] = sign * r["lcb"]  # back in the metric's own direction
    return {"rule": rule, "z": z, "top": len(rows), "candidates": rows, "chosen": chosen["number"]}
