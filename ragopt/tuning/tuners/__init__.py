"""Tuners behind one ask/tell interface, usable on any objective function.

* :mod:`~ragopt.tuning.tuners.base`: the :class:`Tuner` base class, :func:`config_key`, :func:`optimize`,
  :func:`suggest_all` (define-by-run suggestion on an Optuna trial);
* one module per family: :mod:`~ragopt.tuning.tuners.optuna_samplers` (tpe, random, grid, cmaes, nsga2, qmc),
  :mod:`~ragopt.tuning.tuners.greedy`, :mod:`~ragopt.tuning.tuners.hiermab`,
  :mod:`~ragopt.tuning.tuners.native` (pure-Python random and grid);
* :mod:`~ragopt.tuning.tuners.registry`: the one table of names (:data:`TUNERS`, :func:`make_tuner`).

    tuner = make_tuner("hiermab", space, seed=0)
    best_params, best_value = optimize(tuner, objective, n_trials=50)
"""

from ragopt.tuning.tuners.base import Tuner, Value, config_key, optimize, suggest, suggest_all
from ragopt.tuning.tuners.greedy import GreedyTuner
from ragopt.tuning.tuners.hiermab import HierMABTuner, OnlineResult, run_online
from ragopt.tuning.tuners.native import GridTuner, RandomTuner
from ragopt.tuning.tuners.optuna_samplers import OptunaTuner, make_optuna_sampler
from ragopt.tuning.tuners.registry import TUNERS, TunerEntry, describe_tuners, get_tuner, make_tuner, tuner_names

__all__ = [
    "Tuner",
    "Value",
    "config_key",
    "optimize",
    "suggest",
    "suggest_all",
    "GreedyTuner",
    "HierMABTuner",
    "OnlineResult",
    "run_online",
    "GridTuner",
    "RandomTuner",
    "OptunaTuner",
    "make_optuna_sampler",
    "TUNERS",
    "TunerEntry",
    "describe_tuners",
    "get_tuner",
    "make_tuner",
    "tuner_names",
]
