"""Selection with a correction for the winner's curse, and the optimism reported on held-out queries."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("optuna")

import optuna

from ragopt.errors import ConfigError
from ragopt.store import ArtifactStore
from ragopt.tuning.study import StudyConfig, run_study
from ragopt.tuning.study.summary import select


class _FakeObjective:
    """Per-query scores by configuration name: what a re-evaluation on the tuning queries would give."""

    def __init__(self, per_query):
        self.per_query = per_query
        self.calls = 0

    def evaluate(self, cfg, heldout=False):
        self.calls += 1
        return {"per_query": {"ndcg@10": self.per_query[cfg["name"]]}}


def _trial(number, name, value):
    return SimpleNamespace(number=number, values=[value], user_attrs={"pipeline": json.dumps({"name": name})})


def _cfg(study_dict, **selection):
    return StudyConfig.from_dict(study_dict(selection=selection))


def test_lcb_prefers_the_configuration_good_everywhere(study_dict):
    # "lucky": mean 0.55 from two queries at 1.0 and eight at ~0.44; "steady": 0.50 on every query
    lucky = {f"q{i}": (1.0 if i < 2 else 0.4375) for i in range(10)}
    steady = {f"q{i}": 0.5 for i in range(10)}
    poor = {f"q{i}": 0.1 for i in range(10)}
    obj = _FakeObjective({"lucky": lucky, "steady": steady, "poor": poor})
    trials = [_trial(0, "lucky", 0.55), _trial(1, "steady", 0.50), _trial(2, "poor", 0.10)]
    out = select(trials, obj, _cfg(study_dict, rule="lcb", top=2, z=1.0), sign=1)
    assert out["chosen"] == 1 and obj.calls == 2  # only the top two are re-evaluated
    rows = {r["number"]: r for r in out["candidates"]}
    # lucky: sd over 10 queries = sqrt(sum((x-0.55)^2)/9) = sqrt((2*0.2025 + 8*0.01265625)/9) = 0.2372
    assert rows[0]["mean"] == pytest.approx(0.55) and rows[0]["se"] == pytest.approx(0.23717 / 10**0.5, rel=1e-3)
    assert rows[0]["lcb"] == pytest.approx(0.55 - 0.075, abs=1e-3) and rows[1]["lcb"] == pytest.approx(0.5)
    # z = 0 is plain "best by mean"
    assert select(trials, obj, _cfg(study_dict, rule="lcb", top=2, z=0.0), sign=1)["chosen"] == 0
    assert select(trials, obj, _cfg(study_dict), sign=1) == {"rule": "best"}


def test_selection_is_validated(study_dict):
    with pytest.raises(ConfigError, match=r"selection\.rule"):
        _cfg(study_dict, rule="median")
    with pytest.raises(ConfigError, match=r"selection\.top"):
        _cfg(study_dict, rule="lcb", top=0)
    with pytest.raises(ConfigError, match=r"selection\.z"):
        _cfg(study_dict, rule="lcb", z="wide")
    with pytest.raises(ConfigError, match="selection"):
        StudyConfig.from_dict(study_dict(selection={"rule": "lcb", "topk": 3}))


def test_study_reports_selection_and_optimism(study_dict, tmp_path):
    cfg = StudyConfig.from_dict(study_dict(selection={"rule": "lcb", "top": 3}, budget={"trials": 6}))
    res = run_study(
        cfg,
        storage=f"sqlite:///{tmp_path / 's.db'}",
        store=ArtifactStore(tmp_path / "st"),
        progress=False,
        out_dir=tmp_path / "out",
    )
    sel = res.selection
    assert sel["rule"] == "lcb" and len(sel["candidates"]) == 3
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 's.db'}")
    by_number = {t.number: t for t in study.trials}
    for row in sel["candidates"]:  # the re-evaluated mean is the trial's own tuning score
        assert row["mean"] == pytest.approx(by_number[row["number"]].values[0])
    assert res.best_value == by_number[sel["chosen"]].values[0]
    assert res.heldout["optimism"]["ndcg@10"] == pytest.approx(res.best_value - res.heldout["best"]["ndcg@10"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["selection"]["chosen"] == sel["chosen"] and "optimism" in summary["heldout"]
