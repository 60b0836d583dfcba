"""A study's sampler: Optuna's samplers run natively, ragopt's tuners through the bridge, which rebuilds the
tuner from the stored trials at every ask (so a resumed or shared study continues where it was)."""

from __future__ import annotations

import pytest

pytest.importorskip("optuna")

import optuna

from ragopt.testing.tuners import synthetic_table
from ragopt.tuning.study.sampler import study_sampler
from ragopt.tuning.tuners.base import suggest_all
from ragopt.tuning.tuners.registry import TUNERS, tuner_names


@pytest.mark.parametrize("name", tuner_names())
def test_each_tuner_gets_its_sampler(name):
    space = synthetic_table().space
    sampler = study_sampler(name, space, 0, ["maximize"], None)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    native = type(sampler).__module__.startswith("optuna.")
    assert native == (TUNERS[name].optuna_sampler is not None), (name, type(sampler))


def _run(sampler, table, n: int, storage=None, name: str = "s") -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, direction="maximize", load_if_exists=True
    )

    def objective(trial):
        return table(suggest_all(trial, table.space))

    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials]


@pytest.mark.parametrize("name", ["greedy", "hiermab_ts", "grid_native"])
def test_the_bridge_resumes_where_an_uninterrupted_run_would_be(name, tmp_path):
    table = synthetic_table()
    defaults = {"method": "robertson", "stemmer": "english", "k1": 1.14, "b": 0.55}

    def sampler():
        return study_sampler(name, table.space, 5, ["maximize"], defaults)

    straight = _run(sampler(), table, 8)
    url = f"sqlite:///{tmp_path / 's.db'}"
    _run(sampler(), table, 5, url)
    resumed = _run(sampler(), table, 3, url)  # a new process: a new sampler on the stored trials
    assert resumed == straight
