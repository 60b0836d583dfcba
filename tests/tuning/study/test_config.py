"""Study configs: validated before any trial; tuner names and options checked against the registry."""

from __future__ import annotations

import pytest

from ragopt.errors import ConfigError
from ragopt.tuning.study import StudyConfig
from ragopt.tuning.tuners.registry import tuner_names


def test_invalid_space_fails_before_any_trial(study_dict):
    d = study_dict(space=[{"name": "k1", "path": "stages.4.k1", "type": "float", "low": 0.5, "high": 2}])
    with pytest.raises(ConfigError, match="space\\(k1\\)"):
        StudyConfig.from_dict(d)
    with pytest.raises(ConfigError, match="unknown key"):
        StudyConfig.from_dict(study_dict(budgt={"trials": 3}))
    with pytest.raises(ConfigError, match="unknown tuner"):
        StudyConfig.from_dict(study_dict(tuner="tpee"))


@pytest.mark.parametrize("name", tuner_names())
def test_every_registry_name_is_a_valid_study_tuner(study_dict, name):
    cfg = StudyConfig.from_dict(study_dict(tuner={"name": name, "seed": 4}))
    assert (cfg.tuner, cfg.seed, cfg.tuner_options) == (name, 4, {})


def test_tuner_options_are_checked_when_the_config_is_read(study_dict):
    cfg = StudyConfig.from_dict(study_dict(tuner={"name": "hiermab", "policy": "thompson", "c": 0.5}))
    assert cfg.tuner == "hiermab" and cfg.tuner_options == {"policy": "thompson", "c": 0.5}
    with pytest.raises(ConfigError, match="study:tuner.policy.*'hiermab_ts' means policy: thompson"):
        StudyConfig.from_dict(study_dict(tuner={"name": "hiermab_ts", "policy": "ucb1"}))
    with pytest.raises(ConfigError, match="study:tuner.depth.*tuner 'greedy' takes no option 'depth'"):
        StudyConfig.from_dict(study_dict(tuner={"name": "greedy", "depth": 3}))
    # Optuna samplers take their own keyword arguments: checked by Optuna when the sampler is built
    assert StudyConfig.from_dict(study_dict(tuner={"name": "tpe", "n_startup_trials": 4})).tuner_options == {
        "n_startup_trials": 4
    }


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
@pytest.mark.parametrize("where", ["tuner", "holdout", "queries"])
def test_a_seed_outside_what_the_samplers_take_is_refused(study_dict, seed, where):
    # before: tuner.seed -1 reached optuna's sampler and holdout.seed -1 numpy's default_rng: a ValueError traceback
    # after the study had started
    section = {"tuner": {"name": "random", "seed": seed}, "holdout": {"fraction": 0.3, "seed": seed}}
    section["queries"] = {"limit": 10, "seed": seed}
    with pytest.raises(ConfigError, match=rf"study:{where}\.seed: must be an integer"):
        StudyConfig.from_dict(study_dict(**{where: section[where]}))
    assert StudyConfig.from_dict(study_dict(tuner={"name": "random", "seed": 2**32 - 1})).seed == 2**32 - 1


def test_a_study_path_that_is_missing_or_a_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"none\.yaml: study config not found$"):
        StudyConfig.load(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match=r": a folder, not a study config$"):  # was "study config not found"
        StudyConfig.load(tmp_path)


def test_a_negative_batch_size_is_refused(study_dict):
    # batch_size -5 was taken and meant "all queries at once"; run_batched now refuses it too (mid-study)
    with pytest.raises(ConfigError, match=r"^study:batch_size: must be >= 0, got -5$"):
        StudyConfig.from_dict(study_dict(batch_size=-5))
    assert StudyConfig.from_dict(study_dict(batch_size=0)).batch_size == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_trials": 0}, r"^trials: must be an integer >= 1, got 0"),  # was: the config's trials
        ({"n_trials": -1}, r"^trials: must be an integer >= 1, got -1"),  # was: no trial, silently
        ({"timeout": float("nan")}, r"^timeout: must be > 0 seconds, got nan"),
        ({"timeout": -5.0}, r"^timeout: must be > 0 seconds"),
        ({"seed": -1}, r"^seed: must be an integer in 0\.\.4294967295, got -1"),  # was: optuna's ValueError
        ({"heartbeat": -3}, r"^heartbeat: must be an integer >= 1 second"),
    ],
)
def test_run_study_refuses_bad_overrides_before_any_trial(study_dict, tmp_path, kwargs, message):
    pytest.importorskip("optuna")
    from ragopt.store import ArtifactStore
    from ragopt.tuning.study import run_study

    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(ConfigError, match=message):
        run_study(StudyConfig.from_dict(study_dict()), store=store, **kwargs)
    assert not (tmp_path / "store" / "studies.db").exists()  # refused before the storage was opened
