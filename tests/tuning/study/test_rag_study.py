"""Studies over RAG pipelines (scripted test double as the LLM): answer metrics as objectives, generator
parameters in the space, retrieval reused across the generation boundary, prompts never paid twice, and the
bad combinations refused before any trial."""

from __future__ import annotations

import pytest

pytest.importorskip("optuna")

import optuna

from ragopt.errors import ConfigError, DataError
from ragopt.store import ArtifactStore
from ragopt.tuning.study import StudyConfig, run_study


@pytest.fixture()
def rag_study(rag_study_dict):
    def make(**over):
        d = rag_study_dict(
            "rag",
            # answers with the first two words of the first packed passage
            [{"match": r"\[1\] (\w+ \w+)", "output": r"\1"}],
            objective={"metrics": ["f1"], "constraints": [{"metric": "cost.prompt_tokens", "max": 100000}]},
            tuner={"name": "grid_native", "seed": 0},
            budget={"trials": 4},
        )
        return {**d, **over}

    return make


def test_generator_parameters_reuse_retrieval_and_prompts(rag_study, tmp_path):
    res = run_study(
        StudyConfig.from_dict(rag_study()),
        storage=f"sqlite:///{tmp_path / 's.db'}",
        store=ArtifactStore(tmp_path / "store"),
        progress=False,
    )
    assert res.n_complete == 4 and res.heldout["n_queries"] == 6
    trials = optuna.load_study(study_name="rag", storage=res.storage).trials
    costs = [t.user_attrs["costs"] for t in trials]
    # the first trial retrieves; the others change only the generator and reuse BM25's output
    assert costs[0]["bm25_queries"] == 14 and all(c.get("bm25_queries", 0) == 0 for c in costs[1:])
    assert all(c.get("cache_hits:bm25") == 1 for c in costs[1:])
    # k=1 in either order is the same prompt: the second time it is served by the LLM call cache
    by_params = {(t.params["k"], t.params["order"]): c for t, c in zip(trials, costs)}
    first_k1 = costs.index(next(c for t, c in zip(trials, costs) if t.params["k"] == 1))
    second_k1 = [c for t, c in zip(trials, costs) if t.params["k"] == 1][1]
    assert costs[first_k1]["llm_calls"] == 14 and second_k1.get("llm_calls", 0) == 0
    assert second_k1["llm_cache_hits"] == 14
    assert by_params[(3, "score")]["prompt_tokens"] > by_params[(1, "score")].get("prompt_tokens", 0)
    # the per-query prompt budget counts every prompt, paid or cached
    assert by_params[(1, "score")]["generate_prompt_tokens"] == by_params[(1, "reversed")]["generate_prompt_tokens"]
    ev = {"costs": by_params[(3, "score")], "n_queries": 14, "metrics": {}}
    from ragopt.tuning.study import PipelineObjective

    value = PipelineObjective.metric_value(ev, "cost.generate_prompt_tokens_per_query")
    assert value == pytest.approx(by_params[(3, "score")]["generate_prompt_tokens"] / 14)


def test_rag_objectives_are_checked_before_any_trial(rag_study, data_dir, tmp_path):
    with pytest.raises(ConfigError, match="need generated answers, but the pipeline has no generate stage"):
        StudyConfig.from_dict(
            rag_study(pipeline=[{"type": "bm25"}], space=[{"name": "k1", "path": "stages.0.k1", "choices": [0.9, 1.2]}])
        )
    with pytest.raises(ConfigError, match=r"stages\.1\.context_k"):  # a generator parameter without a generator
        StudyConfig.from_dict(rag_study(pipeline=[{"type": "bm25"}], objective={"metrics": ["ndcg@10"]}))
    with pytest.raises(ConfigError, match="queries.limit"):
        StudyConfig.from_dict(rag_study(queries={"limit": 1}))
    cfg = StudyConfig.from_dict(rag_study(dataset=str(data_dir / "adi")))
    with pytest.raises(DataError, match="needs gold answers, but dataset 'adi' has no answers.jsonl"):
        run_study(cfg, storage=f"sqlite:///{tmp_path / 's.db'}", store=ArtifactStore(tmp_path / "st"), progress=False)
    assert not optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}")  # no trial, no study


def test_bundled_rag_study_config_is_valid():
    from pathlib import Path

    cfg = StudyConfig.load(Path(__file__).resolve().parents[3] / "configs" / "quickstart.yaml")
    assert cfg.objective.metrics == ["f1"] and cfg.query_limit == 40 and cfg.dataset == "nq-open-oracle-dev"
    assert [p.name for p in cfg.space.params] == ["retriever", "context_k", "order", "compression"]
    assert cfg.pipeline["stages"][-1]["type"] == "generate"


def test_bundled_pareto_study_is_two_objective():
    from pathlib import Path

    cfg = StudyConfig.load(Path(__file__).resolve().parents[3] / "configs" / "rag_pareto.yaml")
    assert cfg.objective.metrics == ["f1", "cost.generate_prompt_tokens_per_query"]
    assert cfg.objective.directions == ["maximize", "minimize"] and cfg.tuner == "nsga2"


def test_judged_metric_aliases_name_the_metric_the_evaluation_reports(rag_study):
    from ragopt.tuning.study.config import metric_name

    assert metric_name("correctness") == metric_name("Judge-Correctness") == "judge_correctness"
    assert metric_name("relevance") == "answer_relevance"
