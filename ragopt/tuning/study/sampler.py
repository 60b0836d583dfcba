"""The Optuna sampler of a study: Optuna's own samplers as they are, ragopt's tuners through a bridge.

:func:`TunerSampler` runs any :class:`~ragopt.tuning.tuners.base.Tuner` as an Optuna sampler. The tuner is
rebuilt from the study's stored trials at every ask (tells for finished trials, ``pending`` for running ones, in
trial order), so it keeps no state between calls: it resumes after a crash and cooperates across workers.
Optuna is imported when a sampler is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragopt._imports import require
from ragopt.tuning.space import SearchSpace
from ragopt.tuning.tuners.base import Tuner
from ragopt.tuning.tuners.optuna_samplers import make_optuna_sampler
from ragopt.tuning.tuners.registry import get_tuner

__all__ = ["TunerSampler", "study_sampler"]


def study_sampler(
    tuner: str,
    space: SearchSpace,
    seed: int,
    directions: Sequence[str],
    defaults: Mapping[str, Any] | None,
    options: Mapping[str, Any] | None = None,
    where: str = "tuner",
) -> Any:
    """The Optuna sampler that runs the tuner named ``tuner`` in a stored study."""
    entry = get_tuner(tuner, where)
    opts = entry.options(options, where)
    if entry.optuna_sampler is not None:
        kwargs = {k: v for k, v in opts.items() if k != "sampler"}
        return make_optuna_sampler(entry.optuna_sampler, space, seed, len(directions), **kwargs)
    return TunerSampler(lambda: entry.build(space, seed, directions, defaults, **opts))


def TunerSampler(factory: Callable[[], Tuner]) -> Any:
    """An Optuna sampler that runs a ragopt :class:`Tuner`, rebuilt from the study's trials each time."""
    return _tuner_sampler_class()(factory)


_SAMPLER_CLS: Any = None


def _tuner_sampler_class() -> type:
    """The sampler class, defined on first use: it subclasses Optuna's BaseSampler, and Optuna loads lazily."""
    global _SAMPLER_CLS
    if _SAMPLER_CLS is not None:
        return _SAMPLER_CLS
    optuna = require("optuna", "tune", "tuning studies")

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
            params = tuner.ask()
            info = getattr(tuner, "ask_info", None)  # e.g. the llm tuner: proposal used, repaired or rejected
            if info:
                study._storage.set_trial_user_attr(trial._trial_id, "tuner", info)
            return params

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            return self._fallback.sample_independent(study, trial, name, distribution)

    _SAMPLER_CLS = _TunerSampler
    return _SAMPLER_CLS
