"""LLM-judged metrics over the scripted test double: verdicts from label logprobs and from generated replies,
skipped and unparseable cases, bootstrap intervals, and judgements served by the call cache."""

from __future__ import annotations

import pytest

from ragopt.errors import ConfigError, DataError
from ragopt.evaluation.judge import JUDGE_PROMPT_VERSION, LLMJudge, evaluate_judged, is_judge_metric
from ragopt.llm.scripted import ScriptedLLM
from ragopt.store import ArtifactStore
from ragopt.types import Stats

PRED = {"q1": "Paris", "q2": "Berlin", "q3": "Rome"}
QUESTIONS = {"q1": "capital of france?", "q2": "capital of france?", "q3": "capital of italy?"}
GOLD = {"q1": ["Paris"], "q2": ["Paris"], "q3": []}


def scoring_judge():
    # Yes is likelier exactly when the proposed answer equals a gold answer in the prompt
    return ScriptedLLM(
        score_rules=[
            {"match": r"Gold answer\(s\): Paris\nProposed answer: Paris", "continuation": "Yes", "logprob": -0.1},
            {"match": r"Gold answer", "continuation": "No", "logprob": -0.2},
            {"match": r"Context:", "continuation": "Yes", "logprob": -0.3},
        ],
        default_logprob=-5.0,
    )


def test_score_mode_verdicts_ci_and_cache(tmp_path):
    judge = LLMJudge(scoring_judge(), store=ArtifactStore(tmp_path))
    assert judge.mode == "score" and judge.describe()["prompt_version"] == JUDGE_PROMPT_VERSION
    stats = Stats()
    res = evaluate_judged(judge, ["judge_correctness"], PRED, QUESTIONS, GOLD, stats=stats)
    assert res.per_query["judge_correctness"] == {"q1": 1.0, "q2": 0.0}
    assert res.skipped["judge_correctness"] == ["q3"]  # no gold answer
    assert res.metrics["judge_correctness"] == 0.5 and res.n_judged["judge_correctness"] == 2
    lo, hi = res.ci["judge_correctness"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert res.confidence["judge_correctness"]["q1"] > 0.5 > res.confidence["judge_correctness"]["q2"]
    assert stats.counts["llm_calls"] == 4  # two labels scored for each of the two judged queries
    again = Stats()
    evaluate_judged(
        LLMJudge(scoring_judge(), store=ArtifactStore(tmp_path)), ["correctness"], PRED, QUESTIONS, GOLD, stats=again
    )
    assert again.counts["llm_cache_hits"] == 4 and again.counts.get("llm_calls", 0) == 0


def test_generate_mode_parses_and_counts_unparseable(tmp_path):
    llm = ScriptedLLM(
        rules=[
            {"match": "Proposed answer: Paris", "output": "Yes."},
            {"match": "Proposed answer: Berlin", "output": "I think it is wrong"},
            {"match": "Answer: Paris\n\nDoes the answer address", "output": "yes, it does"},
        ],
        default="NO",
    )
    judge = LLMJudge(llm, mode="generate", store=ArtifactStore(tmp_path))
    res = evaluate_judged(judge, ["judge_correctness", "answer_relevance"], PRED, QUESTIONS, GOLD)
    assert res.per_query["judge_correctness"] == {"q1": 1.0}
    assert res.unparseable["judge_correctness"] == 1
    assert res.per_query["answer_relevance"] == {"q1": 1.0, "q2": 0.0, "q3": 0.0}


def test_faithfulness_needs_context_and_bad_input(tmp_path):
    judge = LLMJudge(scoring_judge(), store=ArtifactStore(tmp_path))
    ctx = {"q1": [("d1", "Paris is the capital of France.")], "q2": []}
    res = evaluate_judged(judge, ["faithfulness"], PRED, QUESTIONS, contexts=ctx)
    assert res.per_query["faithfulness"] == {"q1": 1.0} and sorted(res.skipped["faithfulness"]) == ["q2", "q3"]
    with pytest.raises(DataError, match="needs answers"):
        evaluate_judged(judge, ["judge_correctness"], PRED, QUESTIONS, golds=None)
    with pytest.raises(ConfigError, match="unknown judged metric"):
        evaluate_judged(judge, ["truthiness"], PRED, QUESTIONS, GOLD)
    with pytest.raises(ConfigError, match="no logprobs"):
        from ragopt.llm.openai_backend import OpenAIBackend

        LLMJudge(OpenAIBackend(model="m", base_url="http://127.0.0.1:9", logprobs=False), mode="score")
    assert is_judge_metric("faithfulness") and is_judge_metric("Judge-Correctness") and not is_judge_metric("em")
