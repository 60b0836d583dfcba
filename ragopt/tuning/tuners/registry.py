"""The one table of tuners: every name that a study config, ``ragopt tune --tuner``, :func:`make_tuner` and the
docs accept, what it builds, and what it is.

A name is a tuner class plus a *preset*: the options that the name fixes. ``tpe`` is :class:`OptunaTuner` with
``sampler: tpe``; ``greedy_pipeline`` is ``greedy`` with ``order: pipeline_order``; ``hiermab_ts`` is
``hiermab`` with ``policy: thompson``. Further options come from the study config
(``tuner: {name: hiermab, policy: thompson, c: 0.5}``) or from :func:`make_tuner`'s keyword arguments; an option
that contradicts the name's preset, or that the tuner does not take, is a :class:`ConfigError`.

Adding a tuner: a :class:`~ragopt.tuning.tuners.base.Tuner` subclass in a module of its own beside this one,
and one :class:`TunerEntry` in :data:`_ENTRIES`. Studies run Optuna's samplers natively and every other tuner
through the sampler bridge (:mod:`ragopt.tuning.study.sampler`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ragopt.errors import ConfigError
from ragopt.tuning.space import SearchSpace
from ragopt.tuning.tuners.base import Tuner
from ragopt.tuning.tuners.greedy import GreedyTuner
from ragopt.tuning.tuners.hiermab import HierMABTuner
from ragopt.tuning.tuners.llm import LLMTuner
from ragopt.tuning.tuners.native import GridTuner, RandomTuner
from ragopt.tuning.tuners.optuna_samplers import OptunaTuner

__all__ = ["TunerEntry", "TUNERS", "tuner_names", "get_tuner", "make_tuner", "describe_tuners"]

# the constructor arguments every tuner takes after the space; anything else is an option
_BASE_ARGS = ("seed", "directions", "defaults")


@dataclass(frozen=True)
class TunerEntry:
    """One tuner name: the class it builds, the options the name fixes, and a one-line description."""

    name: str
    cls: type[Tuner]
    description: str
    preset: Mapping[str, Any] = field(default_factory=dict)

    @property
    def optuna_sampler(self) -> str | None:
        """The Optuna sampler this name is (a study runs it as that sampler), or None for ragopt's own tuners."""
        return self.preset["sampler"] if issubclass(self.cls, OptunaTuner) else None

    @property
    def option_names(self) -> tuple[str, ...] | None:
        """The options the tuner's constructor takes (None: any, they go to the Optuna sampler)."""
        params = inspect.signature(self.cls._configure).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return tuple(p.name for p in params if p.name != "self")

    def options(self, given: Mapping[str, Any] | None = None, where: str = "tuner") -> dict[str, Any]:
        """``given`` checked against the tuner and merged with the name's preset: the constructor's options."""
        given = dict(given or {})
        for k, v in self.preset.items():
            if k in given and given[k] != v:
                raise ConfigError(
                    f"{where}.{k}",
                    f"tuner {self.name!r} means {k}: {v}; got {k}: {given[k]!r} (use another tuner name, or drop {k})",
                )
        known = self.option_names
        if known is not None:
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise ConfigError(
                    f"{where}.{unknown[0]}",
                    f"tuner {self.name!r} takes no option {unknown[0]!r} (its options: {', '.join(known) or 'none'})",
                )
        return {**given, **self.preset}

    def build(self, space: SearchSpace, *args: Any, **kwargs: Any) -> Tuner:
        """The tuner on ``space``: the constructor's own arguments (seed, directions, defaults) as given, the
        other keyword arguments checked as options (:meth:`options`)."""
        base = {k: kwargs.pop(k) for k in _BASE_ARGS if k in kwargs}
        return self.cls(space, *args, **base, **self.options(kwargs))


_ENTRIES = (
    TunerEntry(
        "tpe", OptunaTuner, "Optuna's TPE (multivariate; grouped when the space has conditions)", {"sampler": "tpe"}
    ),
    TunerEntry("random", OptunaTuner, "Optuna's random sampler", {"sampler": "random"}),
    TunerEntry(
        "grid",
        OptunaTuner,
        "Optuna's grid sampler over the space's grid (numbers at their `levels`)",
        {"sampler": "grid"},
    ),
    TunerEntry(
        "cmaes",
        OptunaTuner,
        "Optuna's CMA-ES (needs an int or float parameter; others sampled at random)",
        {"sampler": "cmaes"},
    ),
    TunerEntry("nsga2", OptunaTuner, "Optuna's NSGA-II (several objectives: Pareto fronts)", {"sampler": "nsga2"}),
    TunerEntry("qmc", OptunaTuner, "Optuna's quasi-Monte Carlo sampler (Sobol sequence)", {"sampler": "qmc"}),
    TunerEntry(
        "greedy",
        GreedyTuner,
        "greedy coordinate search from the template, model parameters first "
        "(option order: models_first | pipeline_order)",
    ),
    TunerEntry(
        "greedy_pipeline",
        GreedyTuner,
        "greedy with order: pipeline_order (parameters in pipeline order)",
        {"order": "pipeline_order"},
    ),
    TunerEntry(
        "hiermab",
        HierMABTuner,
        "hierarchical multi-armed bandit as in AutoRAG-HP: a parameter group, then "
        "its values (option policy: ucb1 (default) | thompson)",
    ),
    TunerEntry("hiermab_ts", HierMABTuner, "hiermab with policy: thompson (Thompson sampling)", {"policy": "thompson"}),
    TunerEntry("hiermab_ucb", HierMABTuner, "hiermab with policy: ucb1 (the default, named)", {"policy": "ucb1"}),
    TunerEntry("random_native", RandomTuner, "pure-Python random search (no Optuna)"),
    TunerEntry(
        "grid_native", GridTuner, "pure-Python grid search, every grid point once in a seeded order (no Optuna)"
    ),
    TunerEntry(
        "llm",
        LLMTuner,
        "an LLM proposes each configuration from the space and the trials so far; invalid proposals repaired "
        "or rejected (option llm: backend config or model name; default the packaged SmolLM2)",
    ),
)

#: name -> :class:`TunerEntry`, read-only; iterating gives the names in the order above
TUNERS: Mapping[str, TunerEntry] = MappingProxyType({e.name: e for e in _ENTRIES})


def tuner_names() -> list[str]:
    """Every tuner name (what ``ragopt tune --tuner`` and a study config's ``tuner`` accept)."""
    return list(TUNERS)


def get_tuner(name: str, where: str = "tuner") -> TunerEntry:
    """The entry of ``name`` (case-insensitive); a :class:`ConfigError` naming the known ones otherwise."""
    entry = TUNERS.get(str(name).lower())
    if entry is None:
        raise ConfigError(where, f"unknown tuner {name!r} (known: {', '.join(TUNERS)})")
    return entry


def make_tuner(
    name: str,
    space: SearchSpace,
    seed: int = 0,
    directions: Sequence[str] = ("maximize",),
    defaults: Mapping[str, Any] | None = None,
    **options: Any,
) -> Tuner:
    """Build the tuner ``name`` (see :data:`TUNERS`) on ``space``; ``options`` go to its constructor."""
    return get_tuner(name).build(space, seed, directions, defaults, **options)


def describe_tuners() -> str:
    """One line per tuner, ``name: description``: for ``--help`` texts and the docs."""
    width = max(map(len, TUNERS))
    return "\n".join(f"{e.name:<{width}}  {e.description}" for e in TUNERS.values())
