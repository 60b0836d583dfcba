"""What a study ends with: best_pipeline.yaml that evaluates to the reported value, summary.json, and the
held-out report."""

from __future__ import annotations

import json

import pytest

from ragopt.pipeline_io import load_pipeline
from ragopt.store import ArtifactStore
from ragopt.tuning.study import PipelineObjective, StudyConfig, run_study


def test_study_runs_reports_heldout_and_exports_best(study_dict, tmp_path):
    cfg = StudyConfig.from_dict(study_dict())
    res = run_study(cfg, store=ArtifactStore(tmp_path), progress=False)
    assert res.n_complete == 5 and res.n_failed == 0
    assert res.heldout["n_queries"] == 10 and set(res.heldout["best"]) == {"ndcg@10"}
    assert res.tune["best"]["ndcg@10"] == pytest.approx(res.best_value)
    assert res.heldout["paired_test"]["n"] == 10 and 0 <= res.heldout["paired_test"]["p_value"] <= 1
    # the exported pipeline evaluates to the same tuning value
    best = load_pipeline(res.best_pipeline)
    assert best.stages[0].k1 == pytest.approx(res.best_params["k1"])
    obj = PipelineObjective(cfg, store=ArtifactStore(tmp_path))
    assert obj.evaluate(best.to_config())["metrics"]["ndcg@10"] == pytest.approx(res.best_value)
    summary = json.loads((tmp_path / "studies" / "t" / "summary.json").read_text())
    assert summary["best_params"] == res.best_params and summary["heldout"]["n_queries"] == 10
    assert summary["tune"]["baseline"] == res.tune["baseline"]
    # resuming a finished study runs nothing more; asking for more trials continues it
    again = run_study(cfg, store=ArtifactStore(tmp_path), progress=False)
    assert again.n_trials == 5
    more = run_study(cfg, store=ArtifactStore(tmp_path), n_trials=7, progress=False)
    assert more.n_complete == 7


def test_without_holdout_there_is_no_heldout_report(study_dict, tmp_path):
    res = run_study(
        StudyConfig.from_dict(study_dict(holdout=None, budget={"trials": 2})),
        store=ArtifactStore(tmp_path),
        progress=False,
    )
    assert res.n_complete == 2 and res.heldout == {} and set(res.tune) == {"best", "baseline"}
