"""A configuration the tuner proposes again (``repeats``): with ``reuse`` it takes its first evaluation's result
and costs nothing; with ``evaluate`` it runs again, from the caches. Optuna's samplers do propose repeats in small
spaces (NSGA-II proposed 3 of 12 in configs/prp_pareto.yaml's first run)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("optuna")

import optuna

from ragopt.config import param
from ragopt.errors import ConfigError
from ragopt.pipeline import Stage
from ragopt.registry import register
from ragopt.store import ArtifactStore
from ragopt.tuning.report import write_report
from ragopt.tuning.study import StudyConfig, run_study

COMPLETE = optuna.trial.TrialState.COMPLETE

# two configurations, six trials: at least four repeats, whatever the sampler does
TWO = {
    "pipeline": [{"type": "bm25", "top_k": 100}],
    "space": [{"name": "top_k", "path": "stages.0.top_k", "choices": [20, 100]}],
    "tuner": {"name": "random", "seed": 0},
    "budget": {"trials": 6},
    "objective": {"metrics": ["ndcg@10", {"metric": "latency_ms", "direction": "minimize"}]},
}


def _run(study_dict, tmp_path, name, **over):
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = StudyConfig.from_dict(study_dict(study=name, **{**TWO, **over}))
    res = run_study(cfg, storage=url, store=ArtifactStore(tmp_path / name), progress=False, out_dir=tmp_path / name)
    study = optuna.load_study(study_name=name, storage=url)
    return res, sorted((t for t in study.trials if t.state == COMPLETE), key=lambda t: t.number), url


def test_a_repeat_takes_its_first_evaluation(study_dict, tmp_path):
    # a constraint that holds (recall@100 >= 0.01 on every configuration): a repeat must copy it, or Optuna's
    # constrained samplers would read the repeat as infeasible and its configuration's point would drop off the front
    objective = {**TWO["objective"], "constraints": [{"metric": "recall@100", "min": 0.01}]}
    res, trials, url = _run(study_dict, tmp_path, "reuse", objective=objective)
    assert len(trials) == 6 and res.n_complete == 6  # repeats count towards the budget
    first: dict[int, optuna.trial.FrozenTrial] = {}
    for t in trials:
        k = t.params["top_k"]
        if k not in first:  # the first trial of a configuration evaluates it
            assert "repeat_of" not in t.user_attrs and "cache" in t.user_attrs
            first[k] = t
            continue
        f = first[k]
        assert t.user_attrs["repeat_of"] == f.number
        assert t.user_attrs["pipeline"] == f.user_attrs["pipeline"]
        # its own evaluation would have hit the stage cache: its latency would have been a cache hit's
        assert t.values == f.values and t.user_attrs["latency_ms"] == f.user_attrs["latency_ms"]
        for k2 in ("metrics", "costs", "stage_seconds", "fit_s", "search_s"):
            assert t.user_attrs[k2] == f.user_attrs[k2]
        assert "cache" not in t.user_attrs  # it looked nothing up
        assert f.constraints and t.constraints == f.constraints
    assert res.n_repeats == 6 - len(first) >= 4
    # the Pareto front holds each configuration once
    numbers = [p["number"] for p in res.pareto]
    assert numbers and set(numbers) <= {t.number for t in first.values()}
    html = write_report("reuse", url, tmp_path / "r.html").read_text()
    assert html.count("(repeat of ") == res.n_repeats


@register("test_slow_pass")
class SlowPass(Stage):
    """Passes candidates through after sleeping ``delay`` seconds: a stage with a known lower bound on its time."""

    requires = frozenset({"queries", "candidates"})
    provides = frozenset({"candidates"})
    delay: float = param(0.0)

    def transform(self, batch):
        time.sleep(self.delay)
        return batch.with_candidates(batch.doc_idx, batch.scores)


def test_repeats_evaluate_runs_them_again_from_the_caches(study_dict, tmp_path):
    pipeline = [{"type": "bm25", "top_k": 100}, {"type": "test_slow_pass", "delay": 0.05}]
    res, trials, _ = _run(study_dict, tmp_path, "again", repeats="evaluate", pipeline=pipeline)
    n_tune = 25  # adi: 35 queries, 30% held out
    seen: set[int] = set()
    repeats = hits = 0
    for t in trials:
        assert "repeat_of" not in t.user_attrs and "cache" in t.user_attrs  # each one evaluated
        if t.params["top_k"] in seen:  # its retrieval comes from the stage-output cache and searches nothing
            repeats += 1
            assert t.user_attrs["costs"].get("bm25_queries", 0) == 0
            assert t.user_attrs["cache"]["cache_hits"] > hits  # the study's counts so far
        hits = t.user_attrs["cache"]["cache_hits"]
        # the slow stage sleeps 0.05 s a batch whether or not its output came from the cache: a repeat's latency
        # is what its outputs took when computed, not the cache hit's microseconds
        assert t.user_attrs["latency_ms"] >= 1000 * 0.05 / n_tune
        seen.add(t.params["top_k"])
    assert res.n_repeats == 0 and len(seen) == 2 and repeats >= 4


def test_repeats_takes_only_reuse_or_evaluate(study_dict):
    with pytest.raises(ConfigError, match=r"s.yaml:repeats: expected reuse or evaluate, got 'skip'"):
        StudyConfig.from_dict(study_dict(repeats="skip"), source="s.yaml")
