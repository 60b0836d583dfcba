"""The ``llm`` tuner (ragopt.tuning.tuners.llm): an LLM proposes each configuration. With the scripted test double:
a valid proposal is used verbatim, an out-of-range one repaired, garbage rejected and counted (a seeded random
configuration asked instead), the prompt holds the space and the trials so far, calls go through the LLM call
cache, and a study runs it through the Optuna bridge. One slow test asks the packaged SmolLM2."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("optuna")

import optuna

from ragopt.errors import ConfigError
from ragopt.llm.scripted import ScriptedLLM
from ragopt.store import ArtifactStore
from ragopt.testing.tuners import categorical_space, conditional_space, mixed_space, run_conformance
from ragopt.tuning.space import SearchSpace
from ragopt.tuning.tuners.base import config_key
from ragopt.tuning.tuners.llm import LLMTuner, parse_proposal, repair_proposal
from ragopt.tuning.tuners.registry import make_tuner

VALID = {"method": "robertson", "k1": 0.9891961665079654, "b": 0.5, "lr": 0.001, "depth": 40, "n": 8, "k": 20}


def scripted(*rules: tuple[str, str], default: str = "no idea") -> ScriptedLLM:
    return ScriptedLLM(name="tuner-test", rules=[{"match": m, "output": o} for m, o in rules], default=default)


def tuner_with(llm, tmp_path, space=None, seed=0, **kw) -> LLMTuner:
    return make_tuner("llm", space or mixed_space(), seed, llm=llm, store=ArtifactStore(tmp_path / "store"), **kw)


def test_a_valid_proposal_is_used_verbatim(tmp_path):
    llm = scripted(("No trials yet", f"Sure! Here it is:\n```json\n{json.dumps(VALID)}\n```"))
    t = tuner_with(llm, tmp_path)
    assert t.ask() == VALID
    assert t.counts == {"proposals": 1, "valid": 1, "repaired": 0, "rejected": 0, "retried": 0, "fallbacks": 0}
    assert t.last["status"] == "valid" and t.llm_stats["llm_calls"] == 1


def test_an_out_of_range_proposal_is_repaired(tmp_path):
    wild = {"method": "Robertson", "k1": 9.5, "b": 0.3, "lr": 5, "depth": 33, "n": 0, "k": 12, "colour": "red"}
    t = tuner_with(scripted(("No trials yet", json.dumps(wild))), tmp_path)
    got = t.ask()
    # clamped to the range, snapped to the step / nearest choice, respelled, unknown key dropped
    assert got == {"method": "robertson", "k1": 2.4, "b": 0.25, "lr": 0.1, "depth": 30, "n": 1, "k": 10}
    assert t.counts["repaired"] == 1 and t.counts["valid"] == 0 and t.counts["rejected"] == 0
    assert any("k1: 9.5 -> 2.4" in n for n in t.last["notes"]) and any("colour" in n for n in t.last["notes"])
    # a missing parameter is filled (from the best so far, else the middle of its grid): a repair too
    partial = repair_proposal(mixed_space(), {"method": "atire"}, lambda p: p.grid()[len(p.grid()) // 2])
    assert partial[1] == "repaired" and partial[0]["method"] == "atire" and partial[0]["depth"] == 60


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("I would try a larger k1.", "unparseable"),
        ('{"method": "bm99", "k1": 1.0}', "invalid"),  # not a choice, and nothing to snap it to
        ('{"depth": "deep"}', "invalid"),
        ('{"colour": "red"}', "invalid"),  # no parameter of the space at all
    ],
)
def test_garbage_is_rejected_counted_and_replaced_by_a_random_configuration(tmp_path, reply, reason):
    # the model says the same thing again when told what was wrong: both answers rejected, then a fallback
    t = tuner_with(scripted(("No trials yet", reply)), tmp_path, seed=3)
    got = t.ask()
    assert t.counts == {"proposals": 2, "valid": 0, "repaired": 0, "rejected": 2, "retried": 1, "fallbacks": 1}
    assert t.rejections == {reason: 2} and t.last["reason"] == reason
    assert set(got) == {p.name for p in mixed_space().params}
    # the fallback is seeded: the same seed gives the same configuration
    assert tuner_with(scripted(("No trials yet", reply)), tmp_path / "again", seed=3).ask() == got
    # retries: 0 falls back at once
    t0 = tuner_with(scripted(("No trials yet", reply)), tmp_path / "none", seed=3, retries=0)
    assert t0.ask() == got and t0.counts["proposals"] == 1 and t0.counts["retried"] == 0


def test_a_failed_llm_call_falls_back_and_the_tuner_goes_on(tmp_path):
    llm = ScriptedLLM(name="down", fail_on="Search space", default=json.dumps(VALID))
    t = tuner_with(llm, tmp_path)
    got = [t.ask() for _ in range(2)]
    assert t.rejections == {"llm_error": 2} and t.counts["fallbacks"] == 2 and t.counts["proposals"] == 0
    assert "scripted failure" in t.last["notes"][0] and got[0] != got[1]


def test_a_proposal_already_tried_is_rejected_as_duplicate(tmp_path):
    llm = scripted((r"Best so far: (\{[^\n]*\})", r"\1"), ("No trials yet", json.dumps(VALID)))
    t = tuner_with(llm, tmp_path, retries=0)
    first = t.ask()
    t.tell(first, 0.5)
    second = t.ask()
    assert first == VALID and second != VALID
    assert t.rejections == {"duplicate": 1} and t.counts["proposals"] == 2 and t.counts["fallbacks"] == 1


def test_a_rejected_answer_is_answered_and_the_model_asked_again(tmp_path):
    """After a duplicate the tuner tells the model which trial it repeats and asks again in the same chat; a
    model that then proposes something new is used, with no fallback."""
    other = dict(VALID, k1=1.5, depth=20)
    llm = scripted(
        (r"already tried \(trial 1, score 0\.5\)", json.dumps(other)),  # the follow-up names the trial
        (r"Best so far: (\{[^\n]*\})", r"\1"),
        ("No trials yet", json.dumps(VALID)),
    )
    t = tuner_with(llm, tmp_path, retries=2)
    first = t.ask()
    t.tell(first, 0.5)
    second = t.ask()
    assert second == other
    assert t.counts == {"proposals": 3, "valid": 2, "repaired": 0, "rejected": 1, "retried": 1, "fallbacks": 0}
    assert t.rejections == {"duplicate": 1} and t.last["attempts"] == 2 and t.ask_info["attempts"] == 2
    chat = llm.calls[-1][1]  # system, user, the rejected answer, the feedback
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert json.loads(chat[2]["content"]) == VALID and "not in the list of trials" in chat[3]["content"]
    # an unparseable first answer gets its own feedback
    llm2 = scripted(("has no JSON object", json.dumps(VALID)), ("No trials yet", "I would raise k1."))
    t2 = tuner_with(llm2, tmp_path / "two")
    assert t2.ask() == VALID and t2.rejections == {"unparseable": 1} and t2.counts["fallbacks"] == 0


def test_the_prompt_holds_the_space_and_the_trials_so_far(tmp_path):
    llm = scripted(default="{}")
    t = tuner_with(llm, tmp_path, space=conditional_space())
    for value in (0.25, None, 0.75):
        p = t.ask()
        t.tell(p, value)
    t.ask()
    prompt = llm.calls[-1][1][1]["content"]
    assert '- family: one of ["bm25", "dense"]' in prompt
    assert '- k1: number from 0.5 to 2.0 (only when family is "bm25")' in prompt
    assert "- depth: integer from 10 to 40 in steps of 10" in prompt
    assert "Trials so far:\n1. " in prompt and "\n(3 trials)" in prompt
    # each prompt repeats the previous one up to its last trial (a KV cache of the shared head serves it)
    prompts = [c[1][1]["content"] for c in llm.calls if "Trials so far:" in c[1][1]["content"]]
    assert len(prompts) >= 2
    for before, after in zip(prompts, prompts[1:]):
        head = before[: before.index("\n(")]
        assert after.startswith(head) and len(head) > len(after) // 2
    for i, (params, value) in enumerate(t.history, 1):
        score = "failed" if value is None else f"{value:.4g}"
        assert f"{i}. {json.dumps(params, sort_keys=True)} -> score {score}" in prompt
    assert f"Best so far: {json.dumps(t.best[0], sort_keys=True)} -> score 0.75" in prompt
    assert "higher is better" in prompt
    # max_history keeps the most recent trials
    short = tuner_with(scripted(default="{}"), tmp_path / "short", space=conditional_space(), max_history=1)
    for p in t.history:
        short.tell(*p)
    assert "the last 1 shown" in short.prompt()[1]["content"] and "\n3. " in short.prompt()[1]["content"]
    assert "\n1. " not in short.prompt()[1]["content"]


def test_calls_go_through_the_cache_so_a_repeated_run_is_free(tmp_path):
    def run(llm) -> tuple[list, LLMTuner]:
        t = tuner_with(llm, tmp_path, space=categorical_space(), seed=5)
        asks = []
        for i in range(6):
            p = t.ask()
            asks.append(p)
            t.tell(p, i / 10)
        return asks, t

    rule = ("No trials yet", '{"model": "m2", "stemmer": "porter", "title": true}')
    first, t1 = run(scripted(rule, (r"Best so far: (\{[^\n]*\})", r"\1")))
    # 6 asks; the last 5 repeat the best so far, are told so and repeat it again: one follow-up each
    assert t1.llm_stats["llm_calls"] == 6 + 5 and t1.counts["retried"] == 5
    llm = scripted(rule, (r"Best so far: (\{[^\n]*\})", r"\1"))
    again, t2 = run(llm)
    assert again == first and t2.llm_stats.get("llm_calls", 0) == 0 and t2.llm_stats["llm_cache_hits"] == 11
    assert llm.calls == []  # the model was never asked


def test_passes_the_conformance_suite_with_the_scripted_backend(tmp_path):
    # proposes the best so far (a duplicate), else a fixed configuration that fits only some spaces, else nothing
    llm = {
        "type": "scripted",
        "rules": [
            {"match": r"Best so far: (\{[^\n]*\})", "output": r"\1"},
            {"match": "No trials yet", "output": json.dumps(VALID)},
        ],
        "default": "?",
    }
    store = ArtifactStore(tmp_path / "store")
    run_conformance(lambda space, seed: make_tuner("llm", space, seed, llm=llm, store=store))


def test_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"tuner.llm.bogus"):
        make_tuner("llm", mixed_space(), 0, llm={"type": "scripted", "bogus": 1})
    with pytest.raises(ConfigError, match="tuner.max_history"):
        make_tuner("llm", mixed_space(), 0, llm={"type": "scripted"}, max_history=-1)
    with pytest.raises(ConfigError, match="tuner.retries: must be an integer >= 0"):
        make_tuner("llm", mixed_space(), 0, llm={"type": "scripted"}, retries=-1)
    with pytest.raises(ConfigError, match="tuner 'llm' takes no option 'temperature'"):
        make_tuner("llm", mixed_space(), 0, temperature=0.7)
    assert isinstance(make_tuner("llm", mixed_space(), 0).backend, object)  # the default builds without loading


def test_parse_proposal_finds_the_first_object():
    assert parse_proposal('Try {"a": 1, "b": "x"} next, or {"a": 2}') == {"a": 1, "b": "x"}
    assert parse_proposal("{'a': True, 'b': None,}") == {"a": True, "b": None}
    assert parse_proposal("{} then {oops") is None and parse_proposal("no json") is None
    # cut short by max_new_tokens (SmolLM2 did this): the complete pairs, the rest filled by the repair
    assert parse_proposal('```json\n{\n  "context_k": 3,\n  "order": "edges",\n  "top_k":') == {
        "context_k": 3,
        "order": "edges",
    }


def test_a_study_runs_the_llm_tuner_and_records_each_proposal(study_dict_llm, tmp_path):
    from ragopt.tuning.study import StudyConfig, run_study

    cfg = StudyConfig.from_dict(study_dict_llm)
    store = ArtifactStore(tmp_path / "store")
    res = run_study(cfg, storage=f"sqlite:///{tmp_path / 's.db'}", store=store, progress=False)
    assert res.n_complete == 4
    trials = optuna.load_study(study_name="t", storage=res.storage).trials
    infos = [t.user_attrs["tuner"] for t in trials]
    # trial 0: the scripted model's first proposal (valid); later: the best so far again -> duplicate, fallback
    assert trials[0].params == {"k1": 1.5, "b": 0.6} and infos[0]["status"] == "valid"
    assert [i["status"] for i in infos[1:]] == ["rejected"] * 3 and all(i["reason"] == "duplicate" for i in infos[1:])
    assert len({config_key(t.params) for t in trials}) == 4
    # one call for the first; the duplicates were answered once each (retries: 1), the model repeated itself
    assert [i["llm"] for i in infos] == [{"llm_calls": 1, "llm_cache_hits": 0}] + [
        {"llm_calls": 2, "llm_cache_hits": 0}
    ] * 3
    # the same study again (another name): every proposal comes from the call cache in the study's store
    again = run_study(cfg, storage=f"sqlite:///{tmp_path / 's.db'}", study_name="t2", store=store, progress=False)
    trials2 = optuna.load_study(study_name="t2", storage=again.storage).trials
    assert [t.params for t in trials2] == [t.params for t in trials]
    assert [t.user_attrs["tuner"]["llm"]["llm_calls"] for t in trials2] == [0] * 4
    assert [t.user_attrs["tuner"]["llm"]["llm_cache_hits"] for t in trials2] == [1, 2, 2, 2]


@pytest.fixture()
def study_dict_llm(data_dir):
    return {
        "study": "t",
        "dataset": str(data_dir / "adi"),
        "pipeline": [{"type": "bm25"}],
        "space": [
            {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0, "levels": 4},
            {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.2, "high": 1.0, "levels": 3},
        ],
        "objective": {"metrics": ["ndcg@10"]},
        "tuner": {
            "name": "llm",
            "seed": 1,
            "llm": {
                "type": "scripted",
                "rules": [
                    {"match": r"Best so far: (\{[^\n]*\})", "output": r"\1"},
                    {"match": "No trials yet", "output": '{"k1": 1.5, "b": 0.6}'},
                ],
            },
        },
        "budget": {"trials": 4},
        "holdout": {"fraction": 0.3, "seed": 0},
    }


@pytest.mark.slow
def test_the_packaged_smollm2_proposes_configurations(smollm2, session_store):
    """Mechanics with a real model (not quality): every ask is a configuration of the space, every answer is
    counted once as valid, repaired or rejected, and a replay with the same tells is served by the cache."""
    space = SearchSpace.from_list(
        [
            {"name": "context_k", "path": "stages.1.context_k", "choices": [1, 3, 5]},
            {"name": "order", "path": "stages.1.order", "choices": ["score", "edges"]},
            {"name": "top_k", "path": "stages.0.top_k", "type": "int", "low": 10, "high": 100, "step": 10},
        ]
    )

    def run() -> tuple[list, LLMTuner]:
        t = make_tuner("llm", space, 0, llm=smollm2, store=session_store, max_new_tokens=48)
        asks = []
        for i in range(4):
            p = t.ask()
            asks.append(p)
            t.tell(p, 0.1 * (i + 1))
        return asks, t

    asks, t = run()
    for p in asks:
        assert set(p) == {"context_k", "order", "top_k"} and p["context_k"] in (1, 3, 5)
        assert p["order"] in ("score", "edges") and 10 <= p["top_k"] <= 100 and p["top_k"] % 10 == 0
    c = t.counts
    # each ask: one answer, plus one follow-up (retries: 1) when it was rejected; a fallback after two rejections
    assert c["proposals"] == 4 + c["retried"] == c["valid"] + c["repaired"] + c["rejected"]
    assert c["retried"] <= 4 and c["fallbacks"] <= c["retried"] and c["rejected"] == sum(t.rejections.values())
    assert t.llm_stats["llm_calls"] + t.llm_stats.get("llm_cache_hits", 0) == c["proposals"]
    print(f"SmolLM2 as a tuner: {c}, rejections {t.rejections}, last reply {t.last.get('reply', '')[:120]!r}")
    again, t2 = run()
    assert again == asks and t2.llm_stats.get("llm_calls", 0) == 0 and t2.counts == c
