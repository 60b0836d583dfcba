"""The README's main job (configs/quickstart.yaml, a RAG study) end to end with the packaged SmolLM2 on real
questions, on a smaller sample and budget: no failed trial, an exported pipeline that evaluates to the reported
value, retrieval reused across generator-only changes, and a rerun served entirely by the caches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("optuna")

import optuna

from ragopt.pipeline_io import load_pipeline
from ragopt.tuning.study import PipelineObjective, StudyConfig, run_study

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parents[3] / "configs" / "quickstart.yaml"


def test_main_job_runs_end_to_end_and_repeats_for_free(data_dir, session_store, tmp_path):
    if not (data_dir / "nq-open-oracle-dev" / "answers.jsonl").is_file():
        pytest.skip("nq-open-oracle-dev not in the shared data")
    cfg = StudyConfig.load(CONFIG)
    cfg.dataset = str(data_dir / "nq-open-oracle-dev")
    cfg.query_limit, cfg.trials = 14, 5  # 10 tuned, 4 held out
    res = run_study(
        cfg, storage=f"sqlite:///{tmp_path / 'a.db'}", store=session_store, progress=False, out_dir=tmp_path / "a"
    )
    assert res.n_complete == 5 and res.n_failed == 0
    # token F1 lies in [0, 1]; the best of five trials answers at least some questions partly right
    assert 0.0 < res.best_value <= 1.0
    trials = optuna.load_study(study_name="quickstart", storage=res.storage).trials
    for t in trials:  # the 1,500-token prompt budget was measured on every trial
        assert t.user_attrs["costs"]["generate_prompt_tokens"] > 0
    # trials after the first with an already-seen retriever did not search again
    seen: set[str] = set()
    for t in trials:
        r = t.params["retriever"]
        if r in seen:
            assert t.user_attrs["costs"].get("bm25_queries", 0) == 0
            assert t.user_attrs["costs"].get("encoder_texts", 0) <= 10  # at most the queries, never the corpus
        seen.add(r)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["best_value"] == res.best_value and "f1" in summary["heldout"]["best"]
    best = load_pipeline(res.best_pipeline)
    obj = PipelineObjective(cfg, store=session_store)
    again = obj.evaluate(best.to_config())
    assert again["metrics"]["f1"] == pytest.approx(res.best_value)
    assert again["costs"].get("llm_calls", 0) == 0  # every prompt was answered before: served by the LLM cache
    # the same study from a fresh study database: the same values, no LLM call paid
    res2 = run_study(
        cfg, storage=f"sqlite:///{tmp_path / 'b.db'}", store=session_store, progress=False, out_dir=tmp_path / "b"
    )
    trials2 = optuna.load_study(study_name="quickstart", storage=res2.storage).trials
    assert [t.values for t in trials2] == [t.values for t in trials]
    assert all(t.user_attrs["costs"].get("llm_calls", 0) == 0 for t in trials2)
