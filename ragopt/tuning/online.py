"""Online tuning with the hierarchical bandit (AutoRAG-HP's online mode): each arriving batch of queries is one pull.

    tuner = make_tuner("hiermab", space, seed=0, online=True)
    online = OnlineTuner(tuner, evaluate, budget_llm_calls=500, reference=...)
    for batch in stream:
        record = online.step(batch)        # pull (explore) while budget is left, then serve the best so far
    online.best                            # the configuration served now

``evaluate(params, batch) -> BatchResult(rewards, llm_calls)``: the per-query values of the objective metric on
that batch (their mean is the pull's reward, told with the number of queries as its weight) and the LLM calls the
evaluation made (paid calls: cache hits are free). The budget counts the LLM calls of pulls only; once it is spent
(or :meth:`OnlineTuner.stop_exploring` is called) every further batch is served by the best configuration so far
(:meth:`HierMABTuner.incumbent`). Budgets are honoured exactly: a pull's batch is cut to the queries the remaining
budget pays for at the highest per-query rate seen so far, and the rest of that batch is served.

``reference`` (a configuration, evaluated on every batch outside the budget, or a known mean reward per query)
gives each record its regret, ``n_queries x (reference reward - reward)``, and the cumulative regret.

Constraints are enforced as an offline study's are (Optuna's convention, as
:meth:`~ragopt.tuning.study.objective.PipelineObjective.constraint_values` gives them: a value ``<= 0`` is
feasible). An evaluation reports them as ``BatchResult.info["constraints"]`` (:func:`study_evaluator` does when
the study has any); a batch is infeasible if any value is ``> 0``, and its violation is the sum of the positive
values (as Optuna's samplers rank infeasible trials; a NaN counts as an infinite violation).

* The bandit is told a penalised reward for an infeasible pull: the worst per-query reward seen in any pull so far
  (this one's included; the lowest for a maximised metric, the highest for a minimised one), with the pull's
  weight, or ``infeasible_reward`` when given (the metric's floor, e.g. 0.0 for f1, if it is known). It is an
  empirical estimate of the worst possible reward that needs no metric range (for f1, em or ndcg it soon reaches
  0): a violating pull scores no better than the worst query seen, below the configurations seen to be feasible,
  and its values and group share the penalty, as the bandit shares any reward. Early on, with little seen, the
  penalty is mild (a first pull is told its own worst per-query reward); the configuration served is filtered
  regardless.
* A configuration is feasible when it was feasible on every pull that reported constraints (one violating batch
  makes it infeasible for good). The configuration served (:attr:`OnlineTuner.best`) is the best by the bandit's
  mean reward among the feasible ones; if none has been seen yet, the least-violating one (smallest worst-pull
  violation; then the best mean reward), and serve records say so.
* Records then carry ``feasible`` and ``violation`` of their own batch (served batches too, so a violation of the
  served configuration on new data shows); pulls told a penalty ``penalised_reward``; served batches
  ``incumbent_feasible`` (None: never pulled, so unknown), ``incumbent_violation`` and, for an infeasible one,
  ``incumbent_note``. The summary adds ``infeasible_pulls``, ``infeasible_served`` (served batches that violated),
  ``best_feasible`` and ``best_violation``.

Without constraints (no record reports any) nothing of this applies: pulls, serving, records and summary are
those of the unconstrained bandit.

:func:`run_online_study` runs it on a :class:`~ragopt.tuning.study.StudyConfig`: the study's tuning queries,
in a seeded order, are the stream; rewards are the per-query values of the study's (single) objective metric;
``online.json`` and ``best_pipeline.yaml`` are written like an offline study's summary.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragopt._io import atomic_write_text
from ragopt.config import canonical_json
from ragopt.errors import ConfigError
from ragopt.tuning.study.config import StudyConfig, is_cost_metric
from ragopt.tuning.study.objective import PipelineObjective
from ragopt.tuning.tuners.base import config_key
from ragopt.tuning.tuners.hiermab import HierMABTuner
from ragopt.tuning.tuners.registry import TUNERS, get_tuner, make_tuner
from ragopt.types import check_seed

__all__ = ["BatchResult", "OnlineTuner", "OnlineStudyResult", "run_online_study", "study_evaluator", "batches_of"]


@dataclass
class BatchResult:
    """One configuration evaluated on one batch: per-query rewards (queries without a value left out), the LLM
    calls made, and anything else to record (metrics, costs)."""

    rewards: list[float]
    llm_calls: int = 0
    info: dict[str, Any] = field(default_factory=dict)


Evaluate = Callable[[dict[str, Any], Any], BatchResult]


def _cut(batch: Any, n: int) -> tuple[Any, Any]:
    return batch[:n], batch[n:]


def _constraints(res: BatchResult) -> list[float] | None:
    """The constraint values an evaluation reported (``info["constraints"]``), or None."""
    values = res.info.get("constraints")
    return None if values is None else [float(v) for v in values]


def _violation_of(values: Sequence[float]) -> float:
    """How far constraint values (``<= 0`` feasible) are violated: the sum of the positive ones (0.0: feasible);
    a NaN is an infinite violation."""
    return sum(math.inf if math.isnan(v) else v for v in values if math.isnan(v) or v > 0) + 0.0


def batches_of(items: Any, batch_size: int) -> list[Any]:
    """``items`` (anything sliceable: a list, :class:`~ragopt.types.Queries`) in consecutive batches."""
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


class OnlineTuner:
    """Drives a :class:`HierMABTuner` (``online=True``) over a stream of batches; see the module docstring.

    ``records``: one per evaluated (part of a) batch: ``batch`` (index), ``phase`` (``pull`` or ``serve``),
    ``params``, ``n`` (queries with a reward), ``reward`` (their mean; None if none), ``llm_calls``, ``spent``
    (the budget's LLM calls so far), and with a reference ``reference_reward``, ``regret``, ``cum_regret``; with
    constraints, the fields of the module docstring. ``infeasible_reward``: the reward told to the bandit for a pull
    that violates a constraint (default: the worst per-query reward seen so far)."""

    def __init__(
        self,
        tuner: HierMABTuner,
        evaluate: Evaluate,
        budget_llm_calls: int | None = None,
        reference: Mapping[str, Any] | float | None = None,
        cut: Callable[[Any, int], tuple[Any, Any]] = _cut,
        *,
        infeasible_reward: float | None = None,
    ):
        if not isinstance(tuner, HierMABTuner):
            raise ConfigError("tuner", f"online tuning needs the hierarchical bandit (hiermab), got {tuner.name!r}")
        if not tuner.online:
            raise ConfigError("tuner", "online tuning needs HierMABTuner(online=True) (make_tuner(..., online=True))")
        if budget_llm_calls is not None and budget_llm_calls < 0:
            raise ConfigError("budget_llm_calls", f"must be >= 0, got {budget_llm_calls}")
        self.tuner = tuner
        self.evaluate = evaluate
        self.budget = budget_llm_calls
        self.reference = dict(reference) if isinstance(reference, Mapping) else reference
        self.cut = cut
        self.sign = 1.0 if tuner.directions[0] == "maximize" else -1.0
        self.records: list[dict[str, Any]] = []
        self.spent = 0  # LLM calls of pulls (the budget's)
        self.serve_llm_calls = 0
        self.reference_llm_calls = 0
        self.cum_regret = 0.0
        self.n_batches = 0
        self.exploring = True
        self._rate = 0.0  # highest LLM calls per query seen in a pull
        self.infeasible_reward = infeasible_reward
        self.constrained = False  # an evaluation reported constraint values
        self._worst: float | None = None  # the worst per-query reward seen in a pull (the default penalty)
        self._violation: dict[tuple, float] = {}  # per configuration pulled with constraints: its worst violation
        self._params: dict[tuple, dict[str, Any]] = {}

    # -- state -----------------------------------------------------------------------------------
    @property
    def best(self) -> dict[str, Any]:
        """The configuration served now: the best so far by mean reward over its pulls; with constraints, among the
        feasible configurations, or the least-violating one while none is (see the module docstring)."""
        if not self._violation:
            return self.tuner.incumbent()
        stats = self.tuner.config_stats

        def mean(key: tuple) -> float:  # the bandit's mean (oriented to maximise) over the configuration's pulls
            st = stats.get(key)
            return st.mean if st is not None and st.n > 0 else -math.inf

        feasible = [k for k, v in self._violation.items() if v == 0.0]
        if feasible:
            key = max(feasible, key=lambda k: (mean(k), k))
        else:
            key = min(self._violation, key=lambda k: (self._violation[k], -mean(k), k))
        return dict(self._params[key])

    def incumbent_status(self) -> tuple[bool | None, float | None]:
        """Whether :attr:`best` was feasible on all its pulls, and its worst violation (None, None: it was never
        pulled with constraint values)."""
        v = self._violation.get(config_key(self.best))
        return (None, None) if v is None else (v == 0.0, v)

    @property
    def pulls(self) -> int:
        return sum(1 for r in self.records if r["phase"] == "pull")

    def stop_exploring(self) -> None:
        """Serve the best configuration so far from now on, whatever the budget says."""
        self.exploring = False

    def budget_left(self) -> float:
        return math.inf if self.budget is None else self.budget - self.spent

    # -- one batch -------------------------------------------------------------------------------
    def step(self, batch: Any) -> list[dict[str, Any]]:
        """Evaluate one arriving batch: a pull (cut to what the budget pays for, the rest served) while exploring,
        else served by the best configuration. Returns the batch's records."""
        if not len(batch):
            return []
        index = self.n_batches
        self.n_batches += 1
        out: list[dict[str, Any]] = []
        if self.exploring and self.budget_left() <= 0:
            self.exploring = False
        rest = batch
        if self.exploring:
            n = len(batch)
            if self.budget is not None and self._rate > 0:
                n = min(n, int(math.floor(self.budget_left() / self._rate + 1e-9)))
            if n <= 0:
                self.exploring = False
            else:
                part, rest = self.cut(batch, n) if n < len(batch) else (batch, batch[:0])
                out.append(self._pull(index, part))
                if self.budget_left() <= 0:
                    self.exploring = False
        if len(rest):
            out.append(self._serve(index, rest))
        return out

    def run(self, batches: Iterable[Any], on_record: Callable[[dict[str, Any]], None] | None = None) -> dict:
        """Every batch of ``batches`` through :meth:`step`; returns :meth:`summary`."""
        for batch in batches:
            for rec in self.step(batch):
                if on_record is not None:
                    on_record(rec)
        return self.summary()

    def _evaluate(self, params: dict[str, Any], batch: Any) -> tuple[BatchResult, str | None]:
        try:
            return self.evaluate(params, batch), None
        except Exception as e:  # a failed evaluation is a failed pull, and the stream goes on
            return BatchResult([], 0), f"{type(e).__name__}: {e}"[:500]

    def _pull(self, index: int, batch: Any) -> dict[str, Any]:
        params = self.tuner.ask()
        res, error = self._evaluate(params, batch)
        reward = sum(res.rewards) / len(res.rewards) if res.rewards else None
        if res.rewards:
            worst = min(res.rewards) if self.sign > 0 else max(res.rewards)
            self._worst = worst if self._worst is None else min(self._worst, worst, key=lambda r: self.sign * r)
        extra = self._feasibility(res)
        penalty = None
        if extra:
            violation = extra["violation"]
            key = config_key(params)
            self._violation[key] = max(self._violation.get(key, 0.0), violation)
            self._params[key] = dict(params)
            if violation > 0:
                penalty = self.infeasible_reward if self.infeasible_reward is not None else self._worst
                if penalty is not None:  # None: no reward seen yet, nothing to tell
                    extra["penalised_reward"] = penalty
        if error is not None:
            self.tuner.tell(params, None, weight=1.0)
        elif penalty is not None:
            self.tuner.tell(params, penalty, weight=float(max(len(res.rewards), 1)))
        elif reward is not None:
            self.tuner.tell(params, reward, weight=float(len(res.rewards)))
        self.spent += int(res.llm_calls)
        if len(batch):
            self._rate = max(self._rate, res.llm_calls / len(batch))
        return self._record(index, "pull", params, batch, res, reward, error, extra)

    def _feasibility(self, res: BatchResult) -> dict[str, Any]:
        """``feasible`` and ``violation`` of an evaluated batch that reported constraint values (and notes that the
        tuner is constrained); empty when it reported none."""
        values = _constraints(res)
        if values is None:
            return {}
        self.constrained = True
        violation = _violation_of(values)
        return {"feasible": violation == 0.0, "violation": violation}

    def _serve(self, index: int, batch: Any) -> dict[str, Any]:
        params = self.best
        res, error = self._evaluate(params, batch)
        reward = sum(res.rewards) / len(res.rewards) if res.rewards else None
        self.serve_llm_calls += int(res.llm_calls)
        extra = self._feasibility(res)
        if self.constrained:
            feasible, violation = self.incumbent_status()
            extra.update(incumbent_feasible=feasible, incumbent_violation=violation)
            if feasible is False:
                extra["incumbent_note"] = "no feasible configuration pulled yet: serving the least-violating one"
        return self._record(index, "serve", params, batch, res, reward, error, extra)

    def _record(
        self,
        index: int,
        phase: str,
        params: dict,
        batch: Any,
        res: BatchResult,
        reward: float | None,
        error: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "batch": index,
            "phase": phase,
            "params": dict(params),
            "n": len(res.rewards),
            "reward": reward,
            "llm_calls": int(res.llm_calls),
            "spent": self.spent,
        }
        if error is not None:
            rec["error"] = error
        if res.info:
            rec.update(res.info)
        if extra:
            rec.update(extra)
        if self.reference is not None:
            if isinstance(self.reference, dict):
                ref, _ = self._evaluate(self.reference, batch)
                self.reference_llm_calls += int(ref.llm_calls)
                ref_reward = sum(ref.rewards) / len(ref.rewards) if ref.rewards else None
            else:
                ref_reward = float(self.reference)
            regret = None  # a failed evaluation, or no query with a value: no regret to tell
            if ref_reward is not None and reward is not None:
                regret = self.sign * (ref_reward - reward) * len(res.rewards)
                self.cum_regret += regret
            rec.update(reference_reward=ref_reward, regret=regret, cum_regret=self.cum_regret)
        self.records.append(rec)
        return rec

    def summary(self) -> dict[str, Any]:
        pulls = [r for r in self.records if r["phase"] == "pull"]
        scored = [r for r in self.records if r["reward"] is not None]
        n = sum(r["n"] for r in scored)
        out = {
            "batches": self.n_batches,
            "pulls": len(pulls),
            "served": sum(1 for r in self.records if r["phase"] == "serve"),
            "budget_llm_calls": self.budget,
            "spent_llm_calls": self.spent,
            "serve_llm_calls": self.serve_llm_calls,
            "mean_reward": sum(r["reward"] * r["n"] for r in scored) / n if n else None,
            "distinct_configs": len({canonical_json(r["params"]) for r in pulls}),
            "best_params": self.best,
        }
        if self.constrained:
            feasible, violation = self.incumbent_status()
            out.update(
                infeasible_pulls=sum(1 for r in pulls if r.get("feasible") is False),
                infeasible_served=sum(1 for r in self.records if r["phase"] == "serve" and r.get("feasible") is False),
                best_feasible=feasible,
                best_violation=violation,
            )
        if self.reference is not None:
            out.update(
                reference=self.reference,
                cum_regret=self.cum_regret,
                reference_llm_calls=self.reference_llm_calls,
            )
        return out


# ---------------------------------------------------------------------------------------------------
# studies


@dataclass
class OnlineStudyResult:
    """What :func:`run_online_study` returns (and writes to ``online.json``)."""

    study_name: str
    tuner: str
    metric: str
    batch_size: int
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    best_params: dict[str, Any]
    best_pipeline: str | None
    heldout: dict[str, Any]
    out_dir: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def study_evaluator(objective: PipelineObjective, metric: str | None = None) -> Evaluate:
    """``evaluate(params, queries)`` for :class:`OnlineTuner` on a study: the pipeline configuration of
    ``params`` evaluated on that batch of queries; rewards are the per-query values of ``metric`` (default: the
    study's first objective), LLM calls the evaluation's ``llm_calls`` counter."""
    config = objective.config
    metric = metric or config.objective.metrics[0]

    def evaluate(params: dict[str, Any], queries: Any) -> BatchResult:
        ev = objective.evaluate(objective.config_for(params), queries=queries)
        values = ev["per_query"].get(metric, {})
        rewards = [float(values[q]) for q in queries.ids if q in values]
        costs = ev["costs"]
        info = {
            "queries": list(queries.ids),
            "metrics": ev["metrics"],
            "prompt_tokens": int(costs.get("prompt_tokens", 0)),
            "llm_cache_hits": int(costs.get("llm_cache_hits", 0)),
        }
        if config.objective.constraints:
            info["constraints"] = objective.constraint_values(ev)
        return BatchResult(rewards, int(costs.get("llm_calls", 0)), info)

    return evaluate


def check_online(config: StudyConfig, tuner: str | None = None) -> str:
    """The tuner name an online study runs; a ConfigError naming the option for what online mode cannot do."""
    entry = get_tuner(tuner or config.tuner, where="--tuner")
    if not issubclass(entry.cls, HierMABTuner):
        bandits = ", ".join(n for n, e in TUNERS.items() if issubclass(e.cls, HierMABTuner))
        raise ConfigError(
            "--online",
            f"online tuning pulls the hierarchical bandit; tuner {entry.name!r} is not one (--tuner: {bandits})",
        )
    metrics = config.objective.metrics
    if len(metrics) != 1:
        raise ConfigError(
            "--online", f"online tuning needs one objective metric (the bandit's reward), the config has {metrics}"
        )
    if is_cost_metric(metrics[0]):
        raise ConfigError(
            "--online",
            f"the online reward is a per-query metric (ndcg@10, f1, em, ...); {metrics[0]!r} is not one",
        )
    return entry.name


def run_online_study(
    config: StudyConfig,
    batch_size: int,
    budget_llm_calls: int | None = None,
    *,
    tuner: str | None = None,
    seed: int | None = None,
    store: Any = None,
    reference: Mapping[str, Any] | str | float | None = None,
    passes: int = 1,
    shuffle: bool = True,
    reuse: bool = True,
    progress: bool | None = None,
    out_dir: str | Path | None = None,
    heldout: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> OnlineStudyResult:
    """Online tuning of a study: its tuning queries (shuffled with the seed; ``passes`` times over) arrive in
    batches of ``batch_size``; each batch is one pull of the hierarchical bandit until ``budget_llm_calls`` LLM
    calls are spent, then the best configuration so far serves. ``reference``: a configuration (sampler-facing
    values), ``"template"`` (the template's own), or a mean reward per query: records then carry regret.
    Writes ``online.json`` and ``best_pipeline.yaml`` to ``out_dir`` (default ``<store>/studies/<name>-online``);
    with ``heldout``, the best configuration and the template are also evaluated on the held-out queries."""
    from ragopt.pipeline_io import pipeline_from_dict, save_pipeline
    from ragopt.store import ArtifactStore

    t0 = time.perf_counter()
    name = check_online(config, tuner)
    if batch_size < 1:
        raise ConfigError("--batch-size", f"must be >= 1, got {batch_size}")
    if passes < 1:
        raise ConfigError("passes", f"must be >= 1, got {passes}")
    seed = config.seed if seed is None else check_seed(seed, "seed")
    store = store if store is not None else ArtifactStore()
    objective = PipelineObjective(config, store=store, reuse=reuse, progress=progress)
    defaults = config.space.defaults_from(config.pipeline)
    # the config's own options when it names this tuner (another tuner's options do not apply)
    opts = {k: v for k, v in config.tuner_options.items() if k != "online"} if name == config.tuner else {}
    bandit = make_tuner(name, config.space, seed, config.objective.directions, defaults, online=True, **opts)
    if isinstance(reference, str):
        if reference != "template":
            raise ConfigError("--reference", f"expected 'template' or a configuration, got {reference!r}")
        reference = defaults
    metric = config.objective.metrics[0]
    online = OnlineTuner(bandit, study_evaluator(objective, metric), budget_llm_calls, reference)
    queries = objective.tune_queries
    stream: list[Any] = []
    for p in range(passes):
        rows = list(range(len(queries)))
        if shuffle:
            random.Random(f"{seed}-{p}").shuffle(rows)
        stream += batches_of(queries[rows], batch_size)
    online.run(stream, on_record)
    best = online.best
    out = Path(out_dir) if out_dir else Path(store.root) / "studies" / f"{config.name}-online"
    out.mkdir(parents=True, exist_ok=True)
    best_cfg = objective.config_for(best)
    best_path = str(
        save_pipeline(
            pipeline_from_dict({"pipeline": best_cfg}, source="best"),
            out / "best_pipeline.yaml",
            name=f"{config.name}-online-best",
            description=f"best configuration of online study {config.name} ({online.pulls} pulls)",
        )
    )
    held: dict[str, Any] = {}
    if heldout and len(objective.heldout_queries):
        best_ev = objective.evaluate(best_cfg, heldout=True)
        base_ev = objective.evaluate(config.pipeline, heldout=True)
        held = {
            "n_queries": len(objective.heldout_queries),
            "best": best_ev["metrics"].get(metric),
            "baseline": base_ev["metrics"].get(metric),
        }
        if held["best"] is not None and held["baseline"] is not None:
            held["gain"] = held["best"] - held["baseline"]
    result = OnlineStudyResult(
        study_name=config.name,
        tuner=name,
        metric=metric,
        batch_size=batch_size,
        summary=online.summary(),
        records=online.records,
        best_params=best,
        best_pipeline=best_path,
        heldout=held,
        out_dir=str(out),
        seconds=round(time.perf_counter() - t0, 3),
    )
    atomic_write_text(out / "online.json", json.dumps(result.to_dict(), indent=1, default=_jsonable))
    return result


def _jsonable(x: Any) -> Any:
    if isinstance(x, Sequence) and not isinstance(x, str):
        return list(x)
    return str(x)
