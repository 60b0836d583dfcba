"""Promises of the README checked against independent computations: summary.json's contents, ``cost.*``
objectives, ``latency_ms`` constraints, feasibility in the choice of the best trial, and ``tune --timeout``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

pytest.importorskip("optuna")

import optuna

from ragopt.data import load_dataset
from ragopt.data.splits import split_queries
from ragopt.evaluation.run import evaluate_pipeline
from ragopt.pipeline_io import load_pipeline
from ragopt.store import ArtifactStore
from ragopt.tuning.study import StudyConfig, run_study

COMPLETE = optuna.trial.TrialState.COMPLETE


def _run(study_dict, tmp_path, name="t", **over):
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = StudyConfig.from_dict(study_dict(study=name, **over))
    res = run_study(cfg, storage=url, store=ArtifactStore(tmp_path / "st"), progress=False, out_dir=tmp_path / name)
    return cfg, res, optuna.load_study(study_name=name, storage=url)


def test_summary_json_matches_the_study_and_an_independent_evaluation(study_dict, data_dir, tmp_path):
    cfg, res, study = _run(study_dict, tmp_path, budget={"trials": 6})
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert set(summary) == {"best_params", "best_value", "heldout", "tune", "selection"}
    complete = [t for t in study.trials if t.state == COMPLETE]
    best = max(complete, key=lambda t: t.values[0])
    assert summary["selection"] == {"rule": "best"}
    assert summary["best_value"] == best.values[0] == res.best_value
    assert summary["best_params"] == best.params
    assert summary["tune"]["best"] == best.user_attrs["metrics"]

    # the held-out queries and the metrics on them, recomputed without the study's code
    ds = load_dataset(data_dir / "adi")
    queries = ds.queries_for("test")
    tune_ids, held_ids = split_queries(queries.ids, 0.3, 0)
    pos = {q: i for i, q in enumerate(queries.ids)}
    store = ArtifactStore(tmp_path / "independent")

    def ndcg(pipeline, ids):
        sub = queries[[pos[q] for q in ids]]
        return evaluate_pipeline(pipeline, ds, metrics=["ndcg@10"], store=store, queries=sub, progress=False)

    best_pipe = load_pipeline(tmp_path / "t" / "best_pipeline.yaml")
    assert best_pipe.stages[0].k1 == pytest.approx(best.params["k1"]) and best_pipe.stages[0].b == pytest.approx(
        best.params["b"]
    )
    template = load_pipeline("bm25")  # the study's template: bm25 with its defaults
    held_best, held_base = ndcg(best_pipe, held_ids), ndcg(template, held_ids)
    h = summary["heldout"]
    assert h["n_queries"] == len(held_ids) == 10
    assert h["best"]["ndcg@10"] == pytest.approx(held_best.metrics["ndcg@10"], abs=1e-12)
    assert h["baseline"]["ndcg@10"] == pytest.approx(held_base.metrics["ndcg@10"], abs=1e-12)
    assert h["gain"]["ndcg@10"] == pytest.approx(h["best"]["ndcg@10"] - h["baseline"]["ndcg@10"], abs=1e-12)
    assert h["optimism"]["ndcg@10"] == pytest.approx(best.values[0] - h["best"]["ndcg@10"], abs=1e-12)
    assert h["paired_test"]["n"] == 10 and h["paired_test"]["test"] == "randomization"
    assert h["paired_test"]["diff"] == pytest.approx(h["gain"]["ndcg@10"], abs=1e-12)
    assert summary["tune"]["baseline"]["ndcg@10"] == pytest.approx(ndcg(template, tune_ids).metrics["ndcg@10"])


def test_best_trial_is_the_best_feasible_one(study_dict, tmp_path):
    _, free, study = _run(study_dict, tmp_path, name="free", budget={"trials": 6})
    values = sorted({t.values[0] for t in study.trials if t.state == COMPLETE}, reverse=True)
    assert len(values) >= 2
    cap = (values[0] + values[1]) / 2  # the unconstrained best is infeasible, the runner-up is not
    _, capped, study = _run(
        study_dict,
        tmp_path,
        name="capped",
        budget={"trials": 6},
        objective={"metrics": ["ndcg@10"], "constraints": [{"metric": "ndcg@10", "max": cap}]},
    )
    assert free.best_value == values[0] and capped.best_value == values[1]  # same seed: the same trials
    for t in study.trials:
        assert list(t.constraints.values()) == pytest.approx([t.values[0] - cap])
    summary = json.loads((tmp_path / "capped" / "summary.json").read_text())
    assert summary["best_value"] == values[1]


def test_cost_objectives_are_the_trials_counters(study_dict, tmp_path):
    over = {
        "pipeline": [{"type": "bm25", "top_k": 100}],
        "space": [{"name": "top_k", "path": "stages.0.top_k", "choices": [100, 10, 50]}],
        "tuner": {"name": "grid_native", "seed": 0},
        "budget": {"trials": 3},
        "objective": {
            "metrics": [
                {"metric": "cost.bm25_queries", "direction": "minimize"},
                {"metric": "cost.bm25_queries_per_query", "direction": "minimize"},
                "ndcg@10",
            ]
        },
    }
    _, res, study = _run(study_dict, tmp_path, **over)
    trials = sorted((t for t in study.trials if t.state == COMPLETE), key=lambda t: t.number)
    assert sorted(t.params["top_k"] for t in trials) == [10, 50, 100]
    n_tune = 25  # adi: 35 queries, 30% held out
    # a trial searches every tuning query only when it asks deeper than any earlier trial; otherwise its run is
    # cut from the cached deeper one and costs no search
    deepest, expected = 0, []
    for t in trials:
        expected.append(n_tune if t.params["top_k"] > deepest else 0)
        deepest = max(deepest, t.params["top_k"])
    assert [t.values[0] for t in trials] == expected and 0 in expected
    assert [t.values[1] for t in trials] == [e / n_tune for e in expected]
    for t in trials:
        assert t.values[0] == t.user_attrs["costs"].get("bm25_queries", 0)
        assert t.values[2] == t.user_attrs["metrics"]["ndcg@10"]
    assert study.directions[:2] == [optuna.study.StudyDirection.MINIMIZE] * 2


def test_latency_constraint_is_the_measured_latency(study_dict, tmp_path):
    def run(name, limit):
        objective = {"metrics": ["ndcg@10"], "constraints": [{"metric": "latency_ms", "max": limit}]}
        _, res, study = _run(study_dict, tmp_path, name=name, budget={"trials": 3}, objective=objective)
        return res, [t for t in study.trials if t.state == COMPLETE]

    res, trials = run("loose", 1e6)
    for t in trials:  # latency_ms is recorded rounded to 4 decimals; the constraint uses the exact value
        assert t.user_attrs["latency_ms"] > 0
        assert t.constraints["c0"] == pytest.approx(t.user_attrs["latency_ms"] - 1e6, abs=1e-3)
    assert res.best_value == max(t.values[0] for t in trials)
    _, trials = run("tight", 0.0)  # no search takes no time: every trial infeasible
    assert all(t.constraints["c0"] > 0 for t in trials)


def test_tune_timeout_stops_starting_trials(study_dict, data_dir, tmp_path):
    d = study_dict(
        space=[
            {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0},
            {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.2, "high": 1.0},
        ],
        budget={"trials": 100000},
    )
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(d))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    cmd = [sys.executable, "-m", "ragopt.cli", "tune", str(cfg), "--storage", storage, "--timeout", "2"]
    t0 = time.monotonic()
    out = subprocess.run(
        [*cmd, "--index-dir", str(tmp_path / "i"), "--json"], capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert 1 <= res["n_complete"] < 100000
    # trials started until 2 s had passed, then the study ended (import, summary and held-out evaluation aside)
    study = optuna.load_study(study_name="t", storage=storage)
    starts = sorted(t.datetime_start for t in study.trials)
    assert (starts[-1] - starts[0]).total_seconds() <= 2.5
    assert elapsed < 60
