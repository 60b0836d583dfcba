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
