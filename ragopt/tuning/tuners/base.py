"""The ask/tell interface every tuner implements, and what tuners share.

    tuner = make_tuner("tpe", space, seed=0)     # ragopt.tuning.tuners.registry
    for _ in range(30):
        params = tuner.ask()                     # sampler-facing values of the active parameters
        tuner.tell(params, objective(params))    # a float, a list of floats, or None for a failed trial
    tuner.best                                   # (params, value)

or simply ``optimize(tuner, objective, n_trials)``. Objectives can be anything: a ragopt pipeline
evaluation (:mod:`ragopt.tuning.study`) or a lookup table of precomputed results
(:class:`ragopt.testing.tuners.LookupTable`).

Every tuner is seeded and deterministic given its seed and the sequence of tells, which is what lets the
Optuna bridge (:func:`ragopt.tuning.study.sampler.TunerSampler`) rebuild any tuner's state from a stored study.
A new tuner subclasses :class:`Tuner` (implements :meth:`Tuner._propose`, optionally :meth:`Tuner._observe`,
and takes its options in :meth:`Tuner._configure`)
in a module of its own under ``ragopt/tuning/tuners/`` and gets one entry in
:data:`ragopt.tuning.tuners.registry.TUNERS`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragopt.errors import ConfigError
from ragopt.tuning.space import Param, SearchSpace

__all__ = ["Tuner", "Value", "check_choice", "config_key", "suggest_all", "suggest", "optimize"]

#: what an objective returns for one configuration: one value, one per objective, or None (failed)
Value = float | Sequence[float] | None


def check_choice(path: str, value: Any, choices: Sequence[str]) -> None:
    """ConfigError at ``path`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(path, f"must be {' or '.join(map(repr, choices))}, got {value!r}")


def config_key(params: Mapping[str, Any]) -> tuple:
    """A hashable, order-free key of a configuration (values compared by ``repr``)."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


class Tuner:
    """Base class: keeps the history and the best result; subclasses implement :meth:`_propose`.

    Constructor of every tuner: ``(space, seed=0, directions=("maximize",), defaults=None, **options)``;
    ``defaults`` is the template's own configuration (tuners that start from it use it; all fill in
    parameters a proposal left out from it). The ``options`` are the keyword arguments of the tuner's
    :meth:`_configure`, which runs once the base state is set."""

    name = "base"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        directions: Sequence[str] = ("maximize",),
        defaults: Mapping[str, Any] | None = None,
        **options: Any,
    ):
        for d in directions:
            check_choice("directions", d, ("maximize", "minimize"))
        self.space = space
        self.seed = seed
        self.directions = list(directions)
        self.rng = random.Random(seed)
        self.defaults = dict(defaults) if defaults else None
        self.history: list[tuple[dict[str, Any], Value]] = []
        self.asked: set[tuple] = set()
        self._configure(**options)

    def _configure(self) -> None:
        """Take the tuner's own options (keyword arguments with defaults) and set up its state: subclasses
        override it; the registry reads the options from its signature."""

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


def optimize(
    tuner: Tuner,
    objective: Callable[[dict[str, Any]], Value],
    n_trials: int,
    catch: tuple[type[BaseException], ...] = (Exception,),
) -> tuple[dict[str, Any], Value] | None:
    """Run ``n_trials`` ask/evaluate/tell rounds; an exception in ``objective`` is a failed trial."""
    for _ in range(n_trials):
        params = tuner.ask()
        try:
            value = objective(params)
        except catch:
            value = None
        tuner.tell(params, value)
    return tuner.best
