"""Online tuning with the hierarchical bandit (ragopt.tuning.online): on a synthetic stream with known per-arm means
it concentrates its pulls on the best arm with sublinear regret, far below random choice; the LLM-call budget
stops the pulls exactly; and `ragopt tune --online` runs a small RAG study with the scripted test double."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from ragopt.errors import ConfigError
from ragopt.tuning.online import BatchResult, OnlineTuner, check_online
from ragopt.tuning.space import SearchSpace
from ragopt.tuning.study import StudyConfig
from ragopt.tuning.tuners.registry import make_tuner

# two parameter groups, 4 x 3 = 12 arms; the best arm (a=2, b=1) has mean 0.70, the runner-up 0.60
A_EFFECT = [0.0, 0.10, 0.25, 0.05]
B_EFFECT = [0.0, 0.15, 0.05]
BEST = {"a": 2, "b": 1}
SPACE = [
    {"name": "a", "path": "stages.0.a", "choices": [0, 1, 2, 3], "group": "retrieval"},
    {"name": "b", "path": "stages.1.b", "choices": [0, 1, 2], "group": "generation"},
]


def mean_of(params) -> float:
    return 0.3 + A_EFFECT[params["a"]] + B_EFFECT[params["b"]]


def bernoulli_stream(seed: int):
    """evaluate(params, batch): one Bernoulli(mean) reward per query, one LLM call per query."""
    rng = random.Random(seed)

    def evaluate(params, batch) -> BatchResult:
        return BatchResult([1.0 if rng.random() < mean_of(params) else 0.0 for _ in batch], len(batch))

    return evaluate


def pseudo_regret(choices, batch_size: int) -> list[float]:
    best = mean_of(BEST)
    return [batch_size * (best - mean_of(p)) for p in choices]


@pytest.mark.parametrize("seed", range(5))
def test_bandit_concentrates_on_the_best_arm_with_sublinear_regret(seed):
    pulls, bs = 150, 10
    online = OnlineTuner(make_tuner("hiermab", SearchSpace.from_list(SPACE), seed, online=True), bernoulli_stream(seed))
    online.run([list(range(bs))] * pulls)
    assert online.pulls == pulls and online.spent == pulls * bs
    chosen = [r["params"] for r in online.records]
    late = chosen[pulls // 2 :]
    assert sum(p == BEST for p in late) / len(late) >= 0.5  # measured 0.56-0.81 over seeds 0-4
    assert online.best == BEST
    regret = pseudo_regret(chosen, bs)
    first, second = sum(regret[: pulls // 2]), sum(regret[pulls // 2 :])
    assert second < first  # sublinear: the second half costs less than the first
    rng = random.Random(seed)
    uniform = pseudo_regret([{"a": rng.randrange(4), "b": rng.randrange(3)} for _ in range(pulls)], bs)
    assert sum(regret) < 0.5 * sum(uniform)  # measured 0.22-0.41 x uniform (78-145 vs 338-362)


def test_a_float_reference_gives_regret_per_record():
    online = OnlineTuner(
        make_tuner("hiermab", SearchSpace.from_list(SPACE), 0, online=True),
        lambda params, batch: BatchResult([mean_of(params)] * len(batch), 0),
        reference=0.7,
    )
    online.run([list(range(4))] * 6)
    for r in online.records:
        assert r["regret"] == pytest.approx(4 * (0.7 - mean_of(r["params"])))
    assert online.cum_regret == pytest.approx(sum(r["regret"] for r in online.records))
    assert online.summary()["cum_regret"] == pytest.approx(online.cum_regret)


@pytest.mark.parametrize(
    ("calls_per_query", "budget", "pulled"), [(1, 10, [4, 4, 2]), (2, 20, [4, 4, 2]), (1, 8, [4, 4])]
)
def test_the_llm_call_budget_stops_pulls_exactly(calls_per_query, budget, pulled):
    evaluate = bernoulli_stream(0)

    def costly(params, batch):
        res = evaluate(params, batch)
        return BatchResult(res.rewards, calls_per_query * len(batch))

    online = OnlineTuner(make_tuner("hiermab", SearchSpace.from_list(SPACE), 0, online=True), costly, budget)
    online.run([list(range(4))] * 5)
    pulls = [r for r in online.records if r["phase"] == "pull"]
    served = [r for r in online.records if r["phase"] == "serve"]
    assert [r["n"] for r in pulls] == pulled
    assert online.spent == budget == pulls[-1]["spent"]
    # the rest of the cut batch and every later batch are served by the best so far, outside the budget
    assert sum(r["n"] for r in served) == 20 - sum(pulled)
    assert all(r["params"] == online.best for r in served[-1:])
    assert online.serve_llm_calls == calls_per_query * (20 - sum(pulled))
    assert online.summary()["pulls"] == len(pulled) and online.summary()["spent_llm_calls"] == budget


def test_stop_exploring_on_request_and_a_zero_budget():
    online = OnlineTuner(make_tuner("hiermab", SearchSpace.from_list(SPACE), 0, online=True), bernoulli_stream(1))
    online.run([list(range(5))] * 3)
    online.stop_exploring()
    best = online.best
    online.run([list(range(5))] * 2)
    assert [r["phase"] for r in online.records] == ["pull"] * 3 + ["serve"] * 2
    assert all(r["params"] == best for r in online.records[3:])
    none = OnlineTuner(make_tuner("hiermab", SearchSpace.from_list(SPACE), 0, online=True), bernoulli_stream(1), 0)
    none.run([list(range(5))] * 2)
    assert none.pulls == 0 and none.spent == 0 and none.n_batches == 2
    assert online.step([]) == [] and online.n_batches == 5  # an empty batch is no batch


def test_a_failed_batch_is_a_failed_pull_and_the_stream_goes_on():
    def flaky(params, batch):
        if params["a"] == 0 and params["b"] == 0:
            raise RuntimeError("endpoint down")
        return BatchResult([mean_of(params)] * len(batch), len(batch))

    tuner = make_tuner("hiermab", SearchSpace.from_list(SPACE), 0, defaults={"a": 0, "b": 0}, online=True)
    online = OnlineTuner(tuner, flaky)
    online.run([list(range(3))] * 8)
    assert online.records[0]["error"] == "RuntimeError: endpoint down" and online.records[0]["reward"] is None
    assert online.pulls == 8 and all("error" not in r for r in online.records[1:])


def test_online_needs_the_bandit():
    space = SearchSpace.from_list(SPACE)
    with pytest.raises(ConfigError, match="needs the hierarchical bandit"):
        OnlineTuner(make_tuner("greedy", space, 0), bernoulli_stream(0))
    with pytest.raises(ConfigError, match=r"online=True"):
        OnlineTuner(make_tuner("hiermab", space, 0), bernoulli_stream(0))


# -- studies and the CLI ----------------------------------------------------------------------------------------


@pytest.fixture()
def rag_config(rag_study_dict, tmp_path):
    def make(**over):
        d = rag_study_dict(
            "online",
            # answers with the first two words of the third packed passage, else of the first
            [{"match": r"\[3\] (\w+ \w+)", "output": r"\1"}, {"match": r"\[1\] (\w+ \w+)", "output": r"\1"}],
            tuner={"name": "tpe", "seed": 0},
        )
        d.update(over)
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(d))
        return path

    return make


def test_cli_online_smoke(rag_config, tmp_path, capfd):
    from ragopt.cli import main
    from ragopt.store import ArtifactStore
    from ragopt.tuning.study import PipelineObjective

    path = rag_config()
    out = tmp_path / "out"
    argv = ["tune", str(path), "--online", "--batch-size", "4", "--budget-llm-calls", "10"]
    argv += ["--reference", "template", "--index-dir", str(tmp_path / "idx"), "--out", str(out), "--json"]
    assert main(argv) == 0
    captured = capfd.readouterr()
    res = json.loads(captured.out)
    s = res["summary"]
    # 14 tuning queries in batches of 4, 4, 4, 2; 1 LLM call per query: pulls of 4, 4 and 2 spend the 10 calls
    assert res["tuner"] == "hiermab" and res["metric"] == "f1"  # the config's tpe cannot run online: the bandit does
    assert (s["batches"], s["pulls"], s["spent_llm_calls"], s["budget_llm_calls"]) == (4, 3, 10, 10)
    assert [(r["phase"], r["n"], r["llm_calls"]) for r in res["records"]] == [
        ("pull", 4, 4),
        ("pull", 4, 4),
        ("pull", 2, 2),
        ("serve", 2, 2),
        ("serve", 2, 2),
    ]
    assert s["serve_llm_calls"] == 4 and res["records"][-1]["params"] == res["best_params"]
    assert res["records"][0]["params"] == {"k": 1, "order": "score"}  # the bandit starts from the template
    assert res["heldout"]["n_queries"] == 6
    # k=3 answers from the third passage (the scripted double): worse than the template on batch 1
    assert [r["regret"] for r in res["records"]] == pytest.approx([0.0, 1.0, 0.0, 0.0, 0.0])
    assert s["cum_regret"] == pytest.approx(1.0) and res["best_params"] == {"k": 1, "order": "score"}
    # every record's reward is that configuration's f1 on that batch, as a separate evaluation gives it
    objective = PipelineObjective(StudyConfig.load(path), store=ArtifactStore(tmp_path / "check"))
    by_id = {q: i for i, q in enumerate(objective.tune_queries.ids)}
    for r in res["records"]:
        batch = objective.tune_queries[[by_id[q] for q in r["queries"]]]
        ev = objective.evaluate(objective.config_for(r["params"]), queries=batch)
        assert r["reward"] == pytest.approx(ev["metrics"]["f1"])
        ref = objective.evaluate(objective.config_for({"k": 1, "order": "score"}), queries=batch)
        assert r["regret"] == pytest.approx(r["n"] * (ref["metrics"]["f1"] - r["reward"]))
    n = sum(r["n"] for r in res["records"])
    assert s["mean_reward"] == pytest.approx(sum(r["reward"] * r["n"] for r in res["records"]) / n)
    saved = json.loads((out / "online.json").read_text())
    assert saved["summary"] == s and (out / "best_pipeline.yaml").is_file()
    lines = [line for line in captured.err.splitlines() if line.startswith("batch")]
    assert len(lines) == 5 and "pull" in lines[0] and "(spent 4/10)" in lines[0] and "serve" in lines[-1]
    # text output
    assert main(argv[:-1] + ["--out", str(tmp_path / "out2")]) == 0
    text = capfd.readouterr().out
    # the same stream again: every prompt is in the LLM call cache, so the pulls cost nothing and never stop
    assert "4 batches, 4 pulls, 0 served by the best" in text and "llm calls: 0 in pulls (budget 10)" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--online", "--batch-size", "4", "--tuner", "tpe"], "--online: online tuning pulls the hierarchical bandit"),
        (["--online"], "--batch-size: --online needs --batch-size N"),
        (["--batch-size", "4"], "--batch-size: is an option of online tuning; add --online"),
        (["--budget-llm-calls", "4"], "--budget-llm-calls: is an option of online tuning"),
        (["--online", "--batch-size", "4", "--trials", "3"], "--trials: is an option of offline studies"),
        (["--online", "--batch-size", "4", "--reference", '{"kk": 1}'], "--reference: 'kk' is not a parameter"),
    ],
)
def test_cli_refuses_bad_online_combinations(rag_config, tmp_path, capfd, extra, message):
    from ragopt.cli import main

    assert main(["tune", str(rag_config()), "--index-dir", str(tmp_path / "idx"), *extra]) == 2
    assert message in capfd.readouterr().err


def test_online_needs_one_per_query_objective(rag_config):
    cfg = StudyConfig.load(rag_config(objective={"metrics": ["f1", "cost.llm_calls"]}))
    with pytest.raises(ConfigError, match="--online: online tuning needs one objective metric"):
        check_online(cfg, "hiermab")
    cfg = StudyConfig.load(rag_config(objective={"metrics": ["cost.llm_calls"]}))
    with pytest.raises(ConfigError, match="'cost.llm_calls' is not one"):
        check_online(cfg, "hiermab")
    assert check_online(StudyConfig.load(rag_config()), "hiermab_ts") == "hiermab_ts"


def test_run_online_study_in_python(rag_config, tmp_path):
    from ragopt.store import ArtifactStore
    from ragopt.tuning.online import run_online_study

    # the config's tpe options do not go to the bandit that replaces it
    cfg = StudyConfig.load(rag_config(tuner={"name": "tpe", "seed": 0, "n_startup_trials": 3}))
    with pytest.raises(ConfigError, match="tuner 'tpe' is not one"):
        run_online_study(cfg, 4)
    res = run_online_study(
        cfg, 5, tuner="hiermab_ts", store=ArtifactStore(tmp_path / "st"), out_dir=tmp_path / "o", heldout=False
    )
    assert res.tuner == "hiermab_ts" and [r["n"] for r in res.records] == [5, 5, 4] and res.heldout == {}
    assert res.summary["spent_llm_calls"] == 14 and res.summary["budget_llm_calls"] is None
    assert json.loads((tmp_path / "o" / "online.json").read_text())["records"] == res.records
