"""The tuner registry is the one list of tuner names: every name builds its tuner, old names keep working,
presets and options are checked, and the CLI, the study config and make_tuner all accept exactly its names."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys

import pytest
import yaml

from ragopt.errors import ConfigError
from ragopt.testing.tuners import conditional_space, mixed_space
from ragopt.tuning.tuners.base import Tuner
from ragopt.tuning.tuners.greedy import GreedyTuner
from ragopt.tuning.tuners.hiermab import HierMABTuner
from ragopt.tuning.tuners.native import GridTuner, RandomTuner
from ragopt.tuning.tuners.optuna_samplers import SAMPLERS, OptunaTuner
from ragopt.tuning.tuners.registry import TUNERS, describe_tuners, get_tuner, make_tuner, tuner_names

# every name a saved study, a study config or a make_tuner call could use before the registry existed (the
# old TUNERS tuple, plus qmc and hiermab_ucb, which make_tuner accepted), with what it must build
OLD_NAMES = {
    "tpe": (OptunaTuner, {"sampler_name": "tpe"}),
    "random": (OptunaTuner, {"sampler_name": "random"}),
    "grid": (OptunaTuner, {"sampler_name": "grid"}),
    "cmaes": (OptunaTuner, {"sampler_name": "cmaes"}),
    "nsga2": (OptunaTuner, {"sampler_name": "nsga2"}),
    "qmc": (OptunaTuner, {"sampler_name": "qmc"}),
    "greedy": (GreedyTuner, {"order": "models_first"}),
    "greedy_pipeline": (GreedyTuner, {"order": "pipeline_order"}),
    "hiermab": (HierMABTuner, {"policy": "ucb1", "name": "hiermab"}),
    "hiermab_ucb": (HierMABTuner, {"policy": "ucb1", "name": "hiermab"}),
    "hiermab_ts": (HierMABTuner, {"policy": "thompson", "name": "hiermab_ts"}),
    "random_native": (RandomTuner, {}),
    "grid_native": (GridTuner, {}),
}


@pytest.mark.parametrize("name", tuner_names())
def test_every_registry_name_builds_its_tuner(name: str) -> None:
    entry = TUNERS[name]
    # the llm tuner asks the scripted test double here, not the packaged model (tests/tuning/test_llm_tuner.py)
    options = {"llm": {"type": "scripted", "default": "{}"}} if name == "llm" else {}
    tuner = make_tuner(name, mixed_space(), seed=0, **options)
    assert isinstance(tuner, entry.cls) and isinstance(tuner, Tuner)
    assert entry.description and entry.name == name
    params = tuner.ask()
    tuner.tell(params, 0.5)
    assert tuner.best == (params, 0.5)


@pytest.mark.parametrize("name", sorted(OLD_NAMES))
def test_old_names_build_what_they_built(name: str) -> None:
    cls, attrs = OLD_NAMES[name]
    tuner = make_tuner(name, conditional_space(), seed=1)
    assert type(tuner) is cls
    for attr, value in attrs.items():
        assert getattr(tuner, attr) == value, (name, attr)


def test_registry_lists_each_name_once_and_nothing_else() -> None:
    assert tuner_names() == list(TUNERS) and len(set(tuner_names())) == len(TUNERS)
    assert set(tuner_names()) == set(OLD_NAMES) | {"llm"}  # llm: added after the registry
    assert {e.optuna_sampler for e in TUNERS.values()} - {None} == set(SAMPLERS)
    lines = describe_tuners().splitlines()
    assert [line.split()[0] for line in lines] == tuner_names()


def test_hiermab_ts_is_a_preset_of_the_policy_parameter() -> None:
    space = mixed_space()

    def asks(tuner: Tuner) -> list[dict]:
        out = []
        for i in range(12):
            p = tuner.ask()
            tuner.tell(p, (i * 7 % 5) / 5)
            out.append(p)
        return out

    preset = asks(make_tuner("hiermab_ts", space, seed=3))
    assert asks(make_tuner("hiermab", space, seed=3, policy="thompson")) == preset
    assert asks(make_tuner("hiermab_ts", space, seed=3, policy="thompson")) == preset  # agreeing: fine
    assert asks(make_tuner("hiermab", space, seed=3)) == asks(make_tuner("hiermab_ucb", space, seed=3))
    with pytest.raises(ConfigError, match="'hiermab_ts' means policy: thompson; got policy: 'ucb1'"):
        make_tuner("hiermab_ts", space, policy="ucb1")
    with pytest.raises(ConfigError, match="'greedy_pipeline' means order: pipeline_order"):
        make_tuner("greedy_pipeline", space, order="models_first")
    assert make_tuner("greedy", space, order="pipeline_order").order == "pipeline_order"


def test_unknown_names_and_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown tuner 'tpee' \(known: tpe, random, grid, "):
        make_tuner("tpee", mixed_space())
    with pytest.raises(ConfigError, match="tuner 'greedy' takes no option 'c' \\(its options: order\\)"):
        make_tuner("greedy", mixed_space(), c=2.0)
    with pytest.raises(ConfigError, match="takes no option 'order' \\(its options: none\\)"):
        make_tuner("random_native", mixed_space(), order="x")
    assert get_tuner("TPE").name == "tpe"  # names are case-insensitive, as make_tuner's always were
    assert TUNERS["tpe"].option_names is None  # Optuna samplers take the sampler's own keyword arguments
    assert TUNERS["hiermab"].option_names == ("policy", "c", "online", "max_arms")


def test_importing_the_tuners_loads_no_optuna() -> None:
    """The CLI reads the names while building its parser: that must stay cheap."""
    code = (
        "import sys, ragopt.tuning.tuners as t; assert t.tuner_names(); "
        "assert 'optuna' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _tune_option(name: str):
    from ragopt.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    return next(a for a in commands.choices["tune"]._actions if name in a.option_strings)


def test_cli_tuner_names_are_the_registry(data_dir, tmp_path, capsys) -> None:
    """``ragopt tune --tuner`` accepts exactly the registry's names: its choices when it declares them, and
    the names it lists for an unknown tuner either way."""
    from ragopt.cli import main

    pytest.importorskip("optuna")
    choices = _tune_option("--tuner").choices
    if choices is not None:
        assert list(choices) == tuner_names()
    cfg = tmp_path / "study.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "dataset": str(data_dir / "adi"),
                "pipeline": [{"type": "bm25"}],
                "space": [{"name": "b", "path": "stages.0.b", "choices": [0.5, 0.75]}],
            }
        )
    )
    with contextlib.suppress(SystemExit):
        assert main(["tune", str(cfg), "--tuner", "bogus", "--index-dir", str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    listed = re.search(r"\((?:known|choose from): ([^)]*)\)", err)
    assert listed, err
    assert [n.strip(" '") for n in listed.group(1).split(",")] == tuner_names()
