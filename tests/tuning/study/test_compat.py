"""A study saved by ragopt before the tuning package was split (commit 8cf9021, ``ragopt/tuning/study.py``)
still loads, is recognised as the same search, and resumes exactly as the old code resumed it.

``data/pre_split_studies.sql`` is the SQL dump of an Optuna SQLite storage in which that code ran 3 trials of
each of four studies (one per tuner family, ``hiermab_ts`` among them); ``data/pre_split_expected.json`` holds
the parameters and values of all 6 trials after the old code resumed each study to its budget of 6."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("optuna")

import optuna

from ragopt.store import ArtifactStore
from ragopt.tuning.study import StudyConfig, run_study

DATA = Path(__file__).parent / "data"
SPACE = [
    {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0, "levels": 4, "group": "bm25"},
    {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.2, "high": 1.0, "levels": 3, "group": "bm25"},
    {"name": "stemmer", "path": "stages.0.stemmer", "choices": ["english", None]},
]


def _old_config(tuner: str) -> StudyConfig:
    return StudyConfig.from_dict(
        {
            "study": f"old-{tuner}",
            "dataset": "adi",
            "pipeline": [{"type": "bm25"}],
            "space": SPACE,
            "objective": {"metrics": ["ndcg@10"]},
            "tuner": {"name": tuner, "seed": 3},
            "budget": {"trials": 6},
            "holdout": {"fraction": 0.3, "seed": 0},
        }
    )


@pytest.fixture
def old_storage(tmp_path, data_dir, monkeypatch) -> str:
    monkeypatch.setenv("RAGOPT_DATA_PATH", str(data_dir))  # the studies name their dataset "adi"
    db = tmp_path / "studies.db"
    with sqlite3.connect(db) as con:
        con.executescript((DATA / "pre_split_studies.sql").read_text())
    con.close()
    return f"sqlite:///{db}"


@pytest.mark.parametrize("tuner", ["tpe", "greedy_pipeline", "hiermab_ts", "grid_native"])
def test_a_study_saved_before_the_split_resumes_as_it_did(old_storage, tmp_path, tuner):
    expected = json.loads((DATA / "pre_split_expected.json").read_text())[tuner]
    name = f"old-{tuner}"
    before = optuna.load_study(study_name=name, storage=old_storage)
    assert len(before.trials) == 3 and before.user_attrs["ragopt_config"]["tuner"] == tuner
    res = run_study(
        _old_config(tuner),
        storage=old_storage,
        store=ArtifactStore(tmp_path / "store"),
        progress=False,
        out_dir=tmp_path / "out",
    )
    assert res.n_complete == 6 and res.n_failed == 0
    study = optuna.load_study(study_name=name, storage=old_storage)
    assert [t.params for t in study.trials] == expected["params"]
    assert [t.value for t in study.trials] == pytest.approx([v for (v,) in expected["values"]], rel=1e-9)
    assert res.best_params == expected["best_params"]
    assert res.best_value == pytest.approx(expected["best_value"], rel=1e-9)
    assert study.user_attrs == before.user_attrs  # the same search: nothing rewritten
    for t in study.trials[3:]:
        # a configuration evaluated before (by the old trials too) is a repeat: it looked nothing up
        own = "repeat_of" if "repeat_of" in t.user_attrs else "cache"
        assert {"pipeline", "metrics", "costs", "stage_seconds", "latency_ms", "fit_s", "search_s", own} <= set(
            t.user_attrs
        )
