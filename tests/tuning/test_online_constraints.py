"""Constraints in online tuning (ragopt.tuning.online): a pull whose batch violates a constraint is infeasible; the
bandit is told a penalised reward for it, a configuration seen to violate is never served once a feasible one has
been seen (the least-violating one is, and said so, while none is), records and summary say what was feasible,
served batches record their constraint values; without constraints nothing changes."""

from __future__ import annotations

import json
import random

import pytest

from ragopt.tuning.online import BatchResult, OnlineTuner
from ragopt.tuning.space import SearchSpace
from ragopt.tuning.study import StudyConfig
from ragopt.tuning.tuners.registry import make_tuner
from tests.tuning.test_online import A_EFFECT, B_EFFECT, BEST
from tests.tuning.test_online import SPACE as SPACE2

# one parameter, 5 arms: k=4 has the best reward but its prompts are too long (300 tokens per k, limit 1000)
SPACE = [{"name": "k", "path": "stages.0.k", "choices": [1, 2, 3, 4, 5]}]
REWARD = {1: 0.3, 2: 0.5, 3: 0.6, 4: 0.8, 5: 0.4}
FEASIBLE_BEST = {"k": 3}
UNCONSTRAINED_FIELDS = {"batch", "phase", "params", "n", "reward", "llm_calls", "spent"}


def tuner(seed: int = 0, **kw):
    return make_tuner("hiermab", SearchSpace.from_list(SPACE), seed, online=True, **kw)


def tokens(params, batch) -> float:
    """Prompt tokens of a batch: 300 per passage, plus the batch's longest query."""
    return 300 * params["k"] + max(batch)


def evaluate(limit: float | None):
    """evaluate(params, batch): every query scores the arm's reward, one LLM call each; with ``limit``, the
    constraint ``tokens <= limit`` in the Optuna convention (``tokens - limit <= 0`` is feasible)."""

    def run(params, batch) -> BatchResult:
        info = {} if limit is None else {"constraints": [tokens(params, batch) - limit]}
        return BatchResult([REWARD[params["k"]]] * len(batch), len(batch), info)

    return run


def pulls_of(online, k=None):
    return [r for r in online.records if r["phase"] == "pull" and (k is None or r["params"]["k"] == k)]


BATCH = [0, 1, 2, 3]  # longest query 3 tokens: k=3 needs 903 (feasible), k=4 1203 (violation 203)


@pytest.mark.parametrize("seed", range(4))
def test_the_best_reward_arm_violates_so_the_feasible_best_is_served(seed):
    online = OnlineTuner(tuner(seed), evaluate(1000), budget_llm_calls=120)
    summary = online.run([BATCH] * 40)
    assert online.pulls == 30 and summary["served"] == 10
    assert online.best == FEASIBLE_BEST and summary["best_params"] == FEASIBLE_BEST
    assert all(r["params"] == FEASIBLE_BEST for r in online.records if r["phase"] == "serve")
    # every violation is recorded: k=4 exceeds the limit by 203 tokens, k=5 by 503
    for r in pulls_of(online):
        k = r["params"]["k"]
        assert r["constraints"] == [tokens(r["params"], BATCH) - 1000]
        assert r["feasible"] is (k <= 3) and r["violation"] == {4: 203.0, 5: 503.0}.get(k, 0.0)
        assert ("penalised_reward" in r) is (k > 3)
    # the penalty told to the bandit: the worst per-query reward seen in any pull so far, this one's included
    told = [value for _, value in online.tuner.history]
    for i, r in enumerate(pulls_of(online)):
        worst = min(p["reward"] for p in pulls_of(online)[: i + 1])
        assert told[i] == (worst if r["params"]["k"] > 3 else r["reward"])
        if r["params"]["k"] > 3:
            assert r["penalised_reward"] == worst and r["reward"] == REWARD[r["params"]["k"]]
    # so the bandit stops pulling the best-reward arm: measured 2-4 of 30 pulls, 1 of the last 15 (without
    # constraints: 18 of 30, 11 of the last 15)
    assert len(pulls_of(online, 4)) <= 4
    assert sum(r["params"]["k"] == 4 for r in pulls_of(online)[15:]) <= 2
    infeasible = len(pulls_of(online, 4)) + len(pulls_of(online, 5))
    assert summary["infeasible_pulls"] == infeasible >= 2
    assert (summary["infeasible_served"], summary["best_feasible"], summary["best_violation"]) == (0, True, 0.0)
    for r in online.records[30:]:  # served batches record their own constraint values and the incumbent's status
        assert (r["constraints"], r["feasible"], r["violation"]) == ([-97], True, 0.0)
        assert (r["incumbent_feasible"], r["incumbent_violation"]) == (True, 0.0) and "incumbent_note" not in r


@pytest.mark.parametrize("seed", range(4))
def test_without_constraints_the_best_reward_arm_is_served_as_before(seed):
    online = OnlineTuner(tuner(seed), evaluate(None), budget_llm_calls=120)
    summary = online.run([BATCH] * 40)
    assert online.best == {"k": 4} and len(pulls_of(online, 4)) >= 15  # measured 18 of 30
    assert sum(r["params"]["k"] == 4 for r in pulls_of(online)[15:]) >= 8  # measured 11 of the last 15
    assert all(set(r) == UNCONSTRAINED_FIELDS for r in online.records)
    assert not {"infeasible_pulls", "infeasible_served", "best_feasible", "best_violation"} & set(summary)
    assert not online.constrained
    # the same pulls as the bare bandit driven by hand (the behaviour before constraints were enforced)
    bare, chosen = tuner(seed), []
    for _ in range(30):
        params = bare.ask()
        chosen.append(params)
        bare.tell(params, REWARD[params["k"]], weight=4.0)
    assert [r["params"] for r in pulls_of(online)] == chosen
    assert online.best == bare.incumbent()


def test_constraints_that_always_hold_change_only_the_record_fields():
    free = OnlineTuner(tuner(2), evaluate(None), budget_llm_calls=80)
    free.run([BATCH] * 25)
    held = OnlineTuner(tuner(2), evaluate(10_000), budget_llm_calls=80)
    summary = held.run([BATCH] * 25)
    assert [r["params"] for r in held.records] == [r["params"] for r in free.records]
    assert held.best == free.best == {"k": 4}
    assert all(r["feasible"] is True and r["violation"] == 0.0 for r in held.records)
    assert (summary["infeasible_pulls"], summary["best_feasible"], summary["best_violation"]) == (0, True, 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_a_violating_configuration_is_filtered_out_not_only_penalised(seed):
    # the first pull (the defaults, k=4) is told its own reward, 0.8, the only one seen: its penalty is no lower,
    # so the bandit's own incumbent stays k=4 for a while; the configuration served is the best feasible one
    online = OnlineTuner(tuner(seed, defaults={"k": 4}), evaluate(1000), budget_llm_calls=48)
    bandit_would_serve_k4 = 0
    for _ in range(12):
        online.step(BATCH)
        seen = {r["params"]["k"]: r["reward"] for r in pulls_of(online) if r["feasible"]}
        bandit_would_serve_k4 += online.tuner.incumbent() == {"k": 4}
        if seen:
            assert online.best == {"k": max(seen, key=seen.get)} and online.incumbent_status() == (True, 0.0)
        else:
            assert online.best["k"] in (4, 5) and online.incumbent_status()[0] is False
    assert pulls_of(online)[0]["penalised_reward"] == 0.8 and bandit_would_serve_k4 >= 2  # measured 5 of 12
    assert online.best == FEASIBLE_BEST


def test_with_no_feasible_configuration_the_least_violating_one_is_served_and_said():
    # limit 100: every arm violates, k=1 least (203 tokens over) though it has the lowest reward
    online = OnlineTuner(tuner(0, defaults={"k": 4}), evaluate(100), budget_llm_calls=20)
    online.step(BATCH)
    assert pulls_of(online)[0]["params"] == {"k": 4}  # the bandit starts from the defaults
    assert online.best == {"k": 4} and online.incumbent_status() == (False, 1103.0)  # the only one seen
    summary = online.run([BATCH] * 7)
    assert online.pulls == 5 and sorted(r["params"]["k"] for r in pulls_of(online)) == [1, 2, 3, 4, 5]
    assert online.best == {"k": 1} and online.incumbent_status() == (False, 203.0)
    served = [r for r in online.records if r["phase"] == "serve"]
    assert len(served) == 3
    for r in served:
        assert r["params"] == {"k": 1} and (r["feasible"], r["violation"]) == (False, 203.0)
        assert (r["incumbent_feasible"], r["incumbent_violation"]) == (False, 203.0)
        assert r["incumbent_note"] == "no feasible configuration pulled yet: serving the least-violating one"
    assert summary["infeasible_pulls"] == 5 and summary["infeasible_served"] == 3
    assert (summary["best_feasible"], summary["best_violation"]) == (False, 203.0)


# two parameter groups, 12 arms, Bernoulli rewards (as in test_online.py): the best arm (a=2, b=1, mean 0.70)
# violates; after every batch, once a feasible configuration has been pulled, the one served is feasible and the
# best of them by mean reward over its pulls


@pytest.mark.parametrize("seed", range(5))
def test_a_violating_configuration_is_never_served_once_a_feasible_one_is_seen(seed):
    rng = random.Random(seed)

    def bernoulli(params, batch) -> BatchResult:
        mean = 0.3 + A_EFFECT[params["a"]] + B_EFFECT[params["b"]]
        prompt_tokens = 1600 if params == BEST else 1000
        return BatchResult(
            [1.0 if rng.random() < mean else 0.0 for _ in batch], len(batch), {"constraints": [prompt_tokens - 1500]}
        )

    tuner2 = make_tuner("hiermab", SearchSpace.from_list(SPACE2), seed, defaults=BEST, online=True)
    online = OnlineTuner(tuner2, bernoulli, budget_llm_calls=600)
    for _ in range(80):
        online.step(list(range(10)))
        totals: dict[str, list] = {}
        for r in pulls_of(online):
            t = totals.setdefault(json.dumps(r["params"], sort_keys=True), [0.0, 0, True])
            t[0] += r["reward"] * r["n"]
            t[1] += r["n"]
            t[2] = t[2] and r["feasible"]
        feasible = {k: t[0] / t[1] for k, t in totals.items() if t[2]}
        if not feasible:  # only the defaults (BEST) pulled: it is served as the least-violating, and said so
            assert online.best == BEST and online.incumbent_status() == (False, 100.0)
            continue
        assert online.best != BEST and online.incumbent_status() == (True, 0.0)
        assert feasible[json.dumps(online.best, sort_keys=True)] == pytest.approx(max(feasible.values()))
    assert pulls_of(online)[0]["params"] == BEST and pulls_of(online)[0]["violation"] == 100.0
    assert online.pulls == 60
    assert sum(r["params"] == BEST for r in pulls_of(online)) <= 4  # measured 2 of 60 for seeds 0-4
    assert online.best == {"a": 2, "b": 2}  # the feasible best (mean 0.60), found for seeds 0-4
    assert all(r["params"] == online.best for r in online.records[60:])
    assert online.summary()["best_feasible"] is True


def test_served_batches_record_violations_on_new_data():
    online = OnlineTuner(tuner(1), evaluate(1000), budget_llm_calls=80)
    online.run([BATCH] * 20)
    assert online.best == FEASIBLE_BEST
    # a served batch with a long query (400 tokens): k=3 needs 1300 tokens there, 300 over the limit
    (rec,) = online.step([0, 1, 400])
    assert (rec["phase"], rec["params"], rec["constraints"]) == ("serve", FEASIBLE_BEST, [300])
    assert (rec["feasible"], rec["violation"]) == (False, 300.0)
    assert (rec["incumbent_feasible"], rec["incumbent_violation"]) == (True, 0.0)  # feasible on all its pulls
    (ok,) = online.step(BATCH)
    assert (ok["feasible"], ok["violation"]) == (True, 0.0)
    summary = online.summary()
    assert (summary["served"], summary["infeasible_served"], summary["best_feasible"]) == (2, 1, True)
    assert online.best == FEASIBLE_BEST  # serving does not move the incumbent


# -- a study ----------------------------------------------------------------------------------------------------

RULES = [{"match": r"\[3\] (\w+ \w+)", "output": r"\1"}, {"match": r"\[1\] (\w+ \w+)", "output": r"\1"}]


def test_run_online_study_enforces_the_study_constraints(rag_study_dict, tmp_path):
    """The template (one passage, ~120 prompt tokens per query) has the best f1 on the stream; a constraint of at
    least 200 prompt tokens per query makes it infeasible, so a three-passage configuration is served."""
    import yaml

    from ragopt.store import ArtifactStore
    from ragopt.tuning.online import run_online_study

    def study(constraints):
        d = rag_study_dict(
            "online-constraints",
            RULES,
            tuner={"name": "hiermab", "seed": 0},
            objective={"metrics": ["f1"], "constraints": constraints},
        )
        path = tmp_path / f"study{len(constraints)}.yaml"
        path.write_text(yaml.safe_dump(d))
        out = tmp_path / f"out{len(constraints)}"
        cfg = StudyConfig.load(path)
        return run_online_study(cfg, 4, 10, store=ArtifactStore(out / "store"), out_dir=out, heldout=False), out

    free, _ = study([])
    assert free.best_params == {"k": 1, "order": "score"}
    assert all("feasible" not in r and "constraints" not in r for r in free.records)
    assert "infeasible_pulls" not in free.summary

    res, out = study([{"metric": "cost.prompt_tokens_per_query", "min": 200}])
    assert [(r["phase"], r["n"]) for r in res.records] == [("pull", 4), ("pull", 4), ("pull", 2)] + [("serve", 2)] * 2
    first = res.records[0]
    assert first["params"] == {"k": 1, "order": "score"}  # the bandit starts from the template
    # the template's batch: 490 paid prompt tokens for 4 queries, 200 - 122.5 short of the minimum
    assert (first["prompt_tokens"], first["constraints"], first["feasible"]) == (490, [77.5], False)
    assert first["violation"] == 77.5 and first["penalised_reward"] == 0.0  # a query of that batch scored 0
    for r in res.records:
        positive = [c for c in r["constraints"] if c > 0]
        assert r["feasible"] is (not positive) and r["violation"] == pytest.approx(sum(positive))
        assert r["feasible"] is (r["params"]["k"] == 3)  # ~300 prompt tokens per query with 3 passages
    assert res.best_params["k"] == 3 and all(r["params"] == res.best_params for r in res.records[3:])
    assert res.summary["infeasible_pulls"] == sum(r["params"]["k"] == 1 for r in res.records[:3]) >= 1
    assert (res.summary["best_feasible"], res.summary["best_violation"], res.summary["infeasible_served"]) == (
        True,
        0.0,
        0,
    )
    assert all((r["incumbent_feasible"], r["incumbent_violation"]) == (True, 0.0) for r in res.records[3:])
    saved = json.loads((out / "online.json").read_text())
    assert saved["records"] == res.records and saved["summary"]["infeasible_pulls"] == res.summary["infeasible_pulls"]


def test_a_known_floor_can_be_the_penalty():
    online = OnlineTuner(tuner(0, defaults={"k": 4}), evaluate(1000), budget_llm_calls=40, infeasible_reward=0.0)
    online.run([BATCH] * 10)
    bad = [i for i, r in enumerate(pulls_of(online)) if not r["feasible"]]
    assert bad[0] == 0 and all(pulls_of(online)[i]["penalised_reward"] == 0.0 for i in bad)
    assert [online.tuner.history[i][1] for i in bad] == [0.0] * len(bad)
    assert online.tuner.incumbent() == online.best == FEASIBLE_BEST
