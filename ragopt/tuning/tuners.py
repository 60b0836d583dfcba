"""Tuners behind one ask/tell interface, usable on any objective function.

    tuner = make_tuner("tpe", space, seed=0)
    for _ in range(30):
        params = tuner.ask()                     # sampler-facing values of the active parameters
        tuner.tell(params, objective(params))    # a float, a list of floats, or None for a failed trial
    tuner.best                                   # (params, value)

or simply ``optimize(tuner, objective, n_trials)``. Objectives can be anything: a ragopt pipeline
evaluation (see :mod:`ragopt.tuning.study`) or a lookup table of precomputed results.

Every tuner is seeded and deterministic given its seed and the sequence of tells, which is what lets the
Optuna bridge (:class:`ragopt.tuning.study.TunerSampler`) rebuild any tuner's state from a stored study.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Mapping, Sequence

from ragopt.errors import ConfigError
from ragopt.tuning.space import Param, SearchSpace

__all__ = ["Tuner", "RandomTuner", "GridTuner", "GreedyTuner", "OptunaTuner", "make_tuner", "optimize",
           "TUNERS", "config_key"]

Value = float | Sequence[float] | None


def config_key(params: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


class Tuner:
    """Base class: keeps the history and the best result; subclasses implement :meth:`_propose`."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int = 0, directions: Sequence[str] = ("maximize",),
                 defaults: Mapping[str, Any] | None = None):
        for d in directions:
            if d not in ("maximize", "minimize"):
                raise ConfigError("directions", f"must be 'maximize' or 'minimize', got {d!r}")
        self.space = space
        self.seed = seed
        self.directions = list(directions)
        self.rng = random.Random(seed)
        self.defaults = dict(defaults) if defaults else None
        self.history: list[tuple[dict[str, Any], Value]] = []
        self.asked: set[tuple] = set()

    # -- interface ---------------------------------------------------------------------------------
    def ask(self) -> dict[str, Any]:
        params = self.space.complete(self._propose(), self._default_for)
        self.asked.add(config_key(params))
        return params

    def _default_for(self, p: Param) -> Any:
        """Value for a parameter a proposal left out (one that another value just activated)."""
        if self.defaults and p.name in self.defaults:
            return self.defaults[p.name]
        g = p.grid()
        return g[len(g) // 2]

    def tell(self, params: Mapping[str, Any], value: Value) -> None:
        self.asked.add(config_key(params))
        self.history.append((dict(params), value))
        self._observe(dict(params), value)

    def pending(self, params: Mapping[str, Any]) -> None:
        """A trial with these params is running elsewhere (distributed studies): don't propose it again."""
        self.asked.add(config_key(params))

    # -- helpers -----------------------------------------------------------------------------------
    def score(self, value: Value) -> float:
        """The (first) objective as a number to maximise; failed trials score -inf."""
        if value is None:
            return -math.inf
        v = value[0] if isinstance(value, (list, tuple)) else value
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return -math.inf
        return float(v) if self.directions[0] == "maximize" else -float(v)

    @property
    def best(self) -> tuple[dict[str, Any], Value] | None:
        done = [(p, v) for p, v in self.history if self.score(v) > -math.inf]
        if not done:
            return None
        return max(done, key=lambda pv: self.score(pv[1]))

    def _propose(self) -> dict[str, Any]:
        raise NotImplementedError

    def _observe(self, params: dict[str, Any], value: Value) -> None:
        pass

    def _random_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.space.params:
            if all(ref in out and out[ref] in allowed for ref, allowed in p.when.items()):
                out[p.name] = self._random_value(p)
        return out

    def _random_value(self, p: Param) -> Any:
        if p.kind == "categorical" or p.values is not None:
            return self.rng.choice(p.grid())
        if p.kind == "int":
            if p.log:
                return int(round(math.exp(self.rng.uniform(math.log(p.low), math.log(p.high)))))
            step = int(p.step or 1)
            return int(p.low) + step * self.rng.randrange((int(p.high) - int(p.low)) // step + 1)
        if p.log:
            return math.exp(self.rng.uniform(math.log(p.low), math.log(p.high)))
        if p.step:
            return self.rng.choice(p.grid())
        return self.rng.uniform(p.low, p.high)

    def _untried_grid(self) -> list[dict[str, Any]]:
        return [g for g in self.space.iter_grid() if config_key(g) not in self.asked]

    def _fallback(self) -> dict[str, Any]:
        """An untried grid point at random, or (grid exhausted) a random configuration."""
        left = self._untried_grid()
        return self.rng.choice(left) if left else self._random_config()


class RandomTuner(Tuner):
    """Uniform random search (log-uniform on log scales)."""

    name = "random"

    def _propose(self) -> dict[str, Any]:
        return self._random_config()


class GridTuner(Tuner):
    """Every grid point once, in a seeded random order (numeric parameters discretised to ``levels``)."""

    name = "grid"

    def _propose(self) -> dict[str, Any]:
        if not hasattr(self, "_order"):
            self._order = list(self.space.iter_grid())
            self.rng.shuffle(self._order)
        for g in self._order:
            if config_key(g) not in self.asked:
                return g
        return self._random_config()


class GreedyTuner(Tuner):
    """Coordinate-wise greedy search from the template's configuration.

    Parameters are swept one at a time over their grid, the others held at the best configuration so far;
    ``order="models_first"`` sweeps parameters marked ``model: true`` first (the order the IBM RAG-HPO
    study found better), ``"pipeline_order"`` follows the pipeline's stage order. After a pass that improved
    the best configuration another pass starts; when nothing improves, untried grid points are sampled."""

    name = "greedy"

    def __init__(self, space: SearchSpace, seed: int = 0, directions: Sequence[str] = ("maximize",),
                 defaults: Mapping[str, Any] | None = None, order: str = "models_first"):
        super().__init__(space, seed, directions, defaults)
        if order not in ("models_first", "pipeline_order"):
            raise ConfigError("order", f"must be 'models_first' or 'pipeline_order', got {order!r}")
        self.order = order
        params = list(space.params)

        def stage_index(p: Param) -> int:
            parts = p.path.split(".")
            return int(parts[1]) if len(parts) > 1 and parts[0] == "stages" and parts[1].isdigit() else 0

        params.sort(key=stage_index)  # stable: declaration order within a stage
        if order == "models_first":
            params.sort(key=lambda p: 0 if p.model else 1)
        self.sequence = params
        self._queue: list[dict[str, Any]] = []
        self._pos = -1
        self._pass_start_best: float = -math.inf
        self._improved = False

    def _incumbent(self) -> dict[str, Any]:
        b = self.best
        if b is not None:
            return dict(b[0])
        return dict(self.defaults) if self.defaults else self._random_config()

    def _propose(self) -> dict[str, Any]:
        start = self._incumbent()
        if not self.asked:
            return start
        while True:
            while self._queue:
                cand = self._queue.pop(0)
                if config_key(cand) not in self.asked:
                    return cand
            self._pos += 1
            if self._pos >= len(self.sequence):
                best = self.best
                best_score = self.score(best[1]) if best else -math.inf
                if best_score > self._pass_start_best:  # this pass improved: sweep again
                    self._pass_start_best = best_score
                    self._pos = 0
                else:
                    return self._fallback()
            p = self.sequence[self._pos]
            inc = self._incumbent()
            if not self.space.is_active(p, {**inc, p.name: inc.get(p.name, p.grid()[0])}):
                continue
            for v in p.grid():
                cand = {**inc, p.name: v}
                cand = self.space.complete(cand, self._default_for)
                self._queue.append(cand)



class OptunaTuner(Tuner):
    """An Optuna sampler (tpe, random, grid, cmaes, nsga2, qmc, gp) behind the ask/tell interface, on an
    in-memory study. For studies in a storage (resume, several workers) see :mod:`ragopt.tuning.study`."""

    name = "optuna"

    def __init__(self, space: SearchSpace, seed: int = 0, directions: Sequence[str] = ("maximize",),
                 defaults: Mapping[str, Any] | None = None, sampler: str = "tpe", **sampler_kwargs: Any):
        super().__init__(space, seed, directions, defaults)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sampler_name = sampler
        self.name = sampler
        self.study = optuna.create_study(directions=self.directions,
                                         sampler=make_optuna_sampler(sampler, space, seed, len(self.directions),
                                                                     **sampler_kwargs))
        self._trials: dict[tuple, list] = {}
        if defaults and sampler not in ("grid",):
            self.study.enqueue_trial(dict(defaults))

    def _propose(self) -> dict[str, Any]:
        trial = self.study.ask()
        params = suggest_all(trial, self.space)
        self._trials.setdefault(config_key(params), []).append(trial)
        return params

    def tell(self, params: Mapping[str, Any], value: Value) -> None:
        import optuna

        trials = self._trials.get(config_key(params))
        if trials:
            trial = trials.pop(0)
            try:
                if value is None:
                    self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    self.study.tell(trial, list(value) if isinstance(value, (list, tuple)) else value)
            except RuntimeError as e:  # GridSampler stops the study after its last point (outside optimize)
                if "stop" not in str(e).lower():
                    raise
        else:  # told without asking (e.g. a result computed elsewhere): add it as a finished trial
            dists = {p.name: p.distribution() for p in self.space.active(params)}
            values = None if value is None else (list(value) if isinstance(value, (list, tuple)) else [value])
            state = optuna.trial.TrialState.FAIL if value is None else optuna.trial.TrialState.COMPLETE
            self.study.add_trial(optuna.trial.create_trial(params=dict(params), distributions=dists,
                                                           values=values, state=state))
        super().tell(params, value)


def suggest_all(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Define-by-run suggestion of the active parameters on an Optuna trial."""
    values: dict[str, Any] = {}
    for p in space.params:
        if not all(ref in values and values[ref] in allowed for ref, allowed in p.when.items()):
            continue
        values[p.name] = suggest(trial, p)
    return values


def suggest(trial: Any, p: Param) -> Any:
    """Suggest one parameter on an Optuna trial with its matching distribution."""
    if p.kind == "categorical":
        return trial.suggest_categorical(p.name, p.labels)
    if p.values is not None:
        return trial.suggest_categorical(p.name, p.values)
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)


def make_optuna_sampler(name: str, space: SearchSpace, seed: int, n_objectives: int = 1, **kwargs: Any):
    import optuna

    name = name.lower()
    if name == "tpe":
        kwargs.setdefault("n_startup_trials", 8)
        kwargs.setdefault("multivariate", True)
        kwargs.setdefault("group", any(p.when for p in space.params))
        return optuna.samplers.TPESampler(seed=seed, **kwargs)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        grid = {p.name: p.grid() for p in space.params}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if name == "cmaes":
        numeric = [p for p in space.params if p.kind != "categorical" and p.values is None]
        if not numeric:
            raise ConfigError("tuner", "cmaes needs at least one int or float parameter in the space")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False,
                                            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                            **kwargs)
    if name == "nsga2":
        kwargs.setdefault("population_size", 10)
        return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError("tuner", f"unknown Optuna sampler {name!r}")


TUNERS = ("tpe", "random", "grid", "cmaes", "nsga2", "greedy", "greedy_pipeline", "hiermab", "hiermab_ts",
          "random_native", "grid_native")


def make_tuner(name: str, space: SearchSpace, seed: int = 0, directions: Sequence[str] = ("maximize",),
               defaults: Mapping[str, Any] | None = None, **kwargs: Any) -> Tuner:
    """Build a tuner by name: tpe, random, grid, cmaes, nsga2 (Optuna samplers); greedy (models first),
    greedy_pipeline (pipeline order); hiermab (UCB1), hiermab_ts (Thompson sampling); random_native,
    grid_native (pure-Python, no Optuna)."""
    from ragopt.tuning.hiermab import HierMABTuner

    n = name.lower()
    if n in ("tpe", "random", "grid", "cmaes", "nsga2", "qmc"):
        return OptunaTuner(space, seed, directions, defaults, sampler=n, **kwargs)
    if n == "greedy":
        return GreedyTuner(space, seed, directions, defaults, order=kwargs.pop("order", "models_first"))
    if n == "greedy_pipeline":
        return GreedyTuner(space, seed, directions, defaults, order="pipeline_order")
    if n in ("hiermab", "hiermab_ucb"):
        return HierMABTuner(space, seed, directions, defaults, policy=kwargs.pop("policy", "ucb1"), **kwargs)
    if n == "hiermab_ts":
        return HierMABTuner(space, seed, directions, defaults, policy="thompson", **kwargs)
    if n == "random_native":
        return RandomTuner(space, seed, directions, defaults)
    if n == "grid_native":
        return GridTuner(space, seed, directions, defaults)
    raise ConfigError("tuner", f"unknown tuner {name!r} (known: {', '.join(TUNERS)})")


def optimize(tuner: Tuner, objective: Callable[[dict[str, Any]], Value], n_trials: int,
             catch: tuple[type[BaseException], ...] = (Exception,)) -> tuple[dict[str, Any], Value] | None:
    """Run ``n_trials`` ask/evaluate/tell rounds; an exception in ``objective`` is a failed trial."""
    for _ in range(n_trials):
        params = tuner.ask()
        try:
            value = objective(params)
        except catch:
            value = None
        tuner.tell(params, value)
    return tuner.best
