"""Optuna's samplers behind the ask/tell interface: ``tpe``, ``random``, ``grid``, ``cmaes``, ``nsga2``, ``qmc``.

:func:`make_optuna_sampler` builds the sampler with ragopt's settings; :class:`OptunaTuner` runs it on an
in-memory study (for any objective function); a study in a storage runs the sampler itself
(:mod:`ragopt.tuning.study`). Optuna is imported when a sampler is built, not with this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ragopt._imports import require
from ragopt.errors import ConfigError
from ragopt.tuning.space import SearchSpace
from ragopt.tuning.tuners.base import Tuner, Value, config_key, suggest_all

__all__ = ["OptunaTuner", "make_optuna_sampler", "starts_from_template", "SAMPLERS"]

#: the Optuna samplers :func:`make_optuna_sampler` builds
SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsga2", "qmc")


def starts_from_template(sampler: str) -> bool:
    """Whether a study with this sampler evaluates the template's own configuration first (every sampler but
    grid, which only proposes its grid points)."""
    return sampler != "grid"


class OptunaTuner(Tuner):
    """An Optuna sampler (tpe, random, grid, cmaes, nsga2, qmc) behind the ask/tell interface, on an
    in-memory study. For studies in a storage (resume, several workers) see :mod:`ragopt.tuning.study`."""

    name = "optuna"

    def _configure(self, sampler: str = "tpe", **sampler_kwargs: Any) -> None:
        optuna = require("optuna", "tune", "Optuna samplers")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sampler_name = sampler
        self.name = sampler
        self.study = optuna.create_study(
            directions=self.directions,
            sampler=make_optuna_sampler(sampler, self.space, self.seed, len(self.directions), **sampler_kwargs),
        )
        self._trials: dict[tuple, list] = {}
        if self.defaults and starts_from_template(sampler):
            self.study.enqueue_trial(dict(self.defaults))

    def _propose(self) -> dict[str, Any]:
        trial = self.study.ask()
        params = suggest_all(trial, self.space)
        self._trials.setdefault(config_key(params), []).append(trial)
        return params

    def tell(self, params: Mapping[str, Any], value: Value) -> None:
        optuna = require("optuna", "tune", "Optuna samplers")
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
            self.study.add_trial(
                optuna.trial.create_trial(params=dict(params), distributions=dists, values=values, state=state)
            )
        super().tell(params, value)


def make_optuna_sampler(name: str, space: SearchSpace, seed: int, n_objectives: int = 1, **kwargs: Any):
    """The Optuna sampler ``name`` (one of :data:`SAMPLERS`) for ``space``, seeded; ``kwargs`` go to the
    sampler (tpe, cmaes, nsga2)."""
    optuna = require("optuna", "tune", "Optuna samplers")
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
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            **kwargs,
        )
    if name == "nsga2":
        kwargs.setdefault("population_size", 10)
        return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError("tuner", f"unknown Optuna sampler {name!r} (known: {', '.join(SAMPLERS)})")
