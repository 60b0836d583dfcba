"""Tuning studies over ragopt pipelines, stored in Optuna storages.

A study config (YAML, see ``configs/``) names a dataset, a pipeline template, a search space, the
objective(s) and the tuner. :func:`run_study` runs trials in an Optuna study so that studies resume after
a crash or Ctrl-C, several workers (processes, machines) share one study through a database URL, and
optuna-dashboard can read them. Every tuner, including ragopt's own greedy and hierarchical-bandit tuners,
runs as an Optuna sampler. The chosen configuration is reported on held-out queries the tuner never saw.

* :mod:`~ragopt.tuning.study.config`: :class:`StudyConfig`, :class:`ObjectiveSpec` (parsing, validation);
* :mod:`~ragopt.tuning.study.objective`: :class:`PipelineObjective`, one trial (fit, run, evaluate, with reuse);
* :mod:`~ragopt.tuning.study.sampler`: the Optuna sampler of a study (:func:`TunerSampler` for ragopt's tuners);
* :mod:`~ragopt.tuning.study.storage`: :func:`default_storage`, :func:`make_storage` (heartbeats), :func:`fail_orphaned_trials`;
* :mod:`~ragopt.tuning.study.run`: :func:`run_study`, the run loop (resume, Ctrl-C re-queue);
* :mod:`~ragopt.tuning.study.summary`: :class:`StudyResult`, ``summary.json``, ``best_pipeline.yaml``, held-out.
"""

from ragopt.data.splits import split_queries
from ragopt.tuning.study.config import ObjectiveSpec, StudyConfig
from ragopt.tuning.study.objective import FitMemo, PipelineObjective
from ragopt.tuning.study.run import run_study
from ragopt.tuning.study.sampler import TunerSampler, study_sampler
from ragopt.tuning.study.storage import default_storage, fail_orphaned_trials, make_storage
from ragopt.tuning.study.summary import StudyResult

__all__ = [
    "StudyConfig",
    "ObjectiveSpec",
    "PipelineObjective",
    "FitMemo",
    "run_study",
    "StudyResult",
    "TunerSampler",
    "study_sampler",
    "default_storage",
    "fail_orphaned_trials",
    "make_storage",
    "split_queries",
]
