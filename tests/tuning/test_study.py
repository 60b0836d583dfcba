"""Tuning studies on real pipelines: stage reuse, held-out report, failures, Ctrl-C and kill -9 resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import yaml

from ragopt.config import param
from ragopt.errors import ConfigError
from ragopt.pipeline import Stage
from ragopt.registry import register
from ragopt.store import ArtifactStore
from ragopt.tuning.study import PipelineObjective, StudyConfig, run_study, split_queries


@register("test_flaky")
class Flaky(Stage):
    """Passes candidates through; fails for x == 3, raises KeyboardInterrupt for x == 4 when armed."""

    requires = frozenset({"queries", "candidates"})
    provides = frozenset({"candidates"})
    armed = {"interrupt": False}
    x: int = param(1)

    def transform(self, batch):
        if self.x == 3:
            raise RuntimeError("flaky stage refuses x=3")
        if self.x == 4 and Flaky.armed["interrupt"]:
            Flaky.armed["interrupt"] = False
            raise KeyboardInterrupt
        return batch.with_candidates(batch.doc_idx, batch.scores)


def study_dict(data_dir, **over):
    d = {"study": "t", "dataset": str(data_dir / "adi"), "pipeline": [{"type": "bm25"}],
         "space": [{"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0, "levels": 4},
                   {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.2, "high": 1.0, "levels": 3}],
         "objective": {"metrics": ["ndcg@10"]}, "tuner": {"name": "random", "seed": 1},
         "budget": {"trials": 5}, "holdout": {"fraction": 0.3, "seed": 0}}
    d.update(over)
    return d


def test_split_is_seeded_and_order_free():
    ids = [str(i) for i in range(100)]
    a = split_queries(ids, 0.3, 0)
    assert split_queries(list(reversed(ids)), 0.3, 0)[1] == sorted(a[1], key=lambda q: ids[::-1].index(q))
    assert len(a[1]) == 30 and not set(a[0]) & set(a[1])
    assert split_queries(ids, 0.3, 1)[1] != a[1]


def test_study_runs_reports_heldout_and_exports_best(data_dir, tmp_path):
    cfg = StudyConfig.from_dict(study_dict(data_dir))
    res = run_study(cfg, store=ArtifactStore(tmp_path), progress=False)
    assert res.n_complete == 5 and res.n_failed == 0
    assert res.heldout["n_queries"] == 10 and set(res.heldout["best"]) == {"ndcg@10"}
    assert res.tune["best"]["ndcg@10"] == pytest.approx(res.best_value)
    # the exported pipeline evaluates to the same tuning value
    from ragopt.pipeline_io import load_pipeline

    best = load_pipeline(res.best_pipeline)
    assert best.stages[0].k1 == pytest.approx(res.best_params["k1"])
    obj = PipelineObjective(cfg, store=ArtifactStore(tmp_path))
    assert obj.evaluate(best.to_config())["metrics"]["ndcg@10"] == pytest.approx(res.best_value)
    # resuming a finished study runs nothing more; asking for more trials continues it
    again = run_study(cfg, store=ArtifactStore(tmp_path), progress=False)
    assert again.n_trials == 5
    more = run_study(cfg, store=ArtifactStore(tmp_path), n_trials=7, progress=False)
    assert more.n_complete == 7


def test_invalid_space_fails_before_any_trial(data_dir):
    d = study_dict(data_dir, space=[{"name": "k1", "path": "stages.4.k1", "type": "float", "low": 0.5, "high": 2}])
    with pytest.raises(ConfigError, match="space\\(k1\\)"):
        StudyConfig.from_dict(d)
    with pytest.raises(ConfigError, match="unknown key"):
        StudyConfig.from_dict(study_dict(data_dir, budgt={"trials": 3}))
    with pytest.raises(ConfigError, match="unknown tuner"):
        StudyConfig.from_dict(study_dict(data_dir, tuner="tpee"))


def test_failing_trial_is_recorded_and_study_goes_on(data_dir, tmp_path):
    d = study_dict(data_dir, pipeline=[{"type": "bm25"}, {"type": "test_flaky"}],
                   space=[{"name": "x", "path": "stages.1.x", "choices": [1, 2, 3]}],
                   tuner={"name": "grid_native", "seed": 0}, budget={"trials": 3})
    res = run_study(StudyConfig.from_dict(d), store=ArtifactStore(tmp_path), progress=False)
    assert res.n_complete == 2 and res.n_failed == 1
    study = optuna.load_study(study_name="t", storage=res.storage)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed[0].params == {"x": 3}
    assert "RuntimeError: flaky stage refuses x=3" in failed[0].user_attrs["error"]


def test_ctrl_c_ends_cleanly_and_the_study_resumes(data_dir, tmp_path):
    d = study_dict(data_dir, pipeline=[{"type": "bm25"}, {"type": "test_flaky"}],
                   space=[{"name": "x", "path": "stages.1.x", "choices": [1, 2, 4, 5]}],
                   tuner={"name": "grid_native", "seed": 3}, budget={"trials": 4})
    cfg = StudyConfig.from_dict(d)
    Flaky.armed["interrupt"] = True
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, store=ArtifactStore(tmp_path), progress=False)
    res = run_study(cfg, store=ArtifactStore(tmp_path), progress=False)
    assert res.n_complete == 4
    study = optuna.load_study(study_name="t", storage=res.storage)
    complete = [t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == [1, 2, 4, 5]  # the interrupted configuration was evaluated after resuming


def test_stage_reuse_gives_identical_values_without_repeating_work(data_dir, tmp_path):
    d = study_dict(data_dir, pipeline=[{"type": "bm25", "top_k": 100}],
                   space=[{"name": "top_k", "path": "stages.0.top_k", "choices": [100, 10, 50, 5]}])
    cfg = StudyConfig.from_dict(d)
    reuse = PipelineObjective(cfg, store=ArtifactStore(tmp_path / "a"), reuse=True)
    fresh = PipelineObjective(cfg, store=ArtifactStore(tmp_path / "b"), reuse=False)
    for k in (100, 10, 50, 5):
        cfg_k = reuse.config_for({"top_k": k})
        a, b = reuse.evaluate(cfg_k), fresh.evaluate(cfg_k)
        assert a["metrics"] == b["metrics"]
        if k != 100:  # only the first trial searched: the others were cut from the cached depth-100 run
            assert a["costs"].get("bm25_queries", 0) == 0 and a["costs"]["cache_hits:bm25"] == 1
        assert b["costs"]["bm25_queries"] == 25
    assert reuse.cache.hits == 3 and reuse.cache.misses == 1


def test_stage_outputs_persist_across_processes(data_dir, tmp_path):
    d = study_dict(data_dir)
    cfg = StudyConfig.from_dict(d)
    first = PipelineObjective(cfg, store=ArtifactStore(tmp_path))
    c = first.config_for({"k1": 1.0, "b": 0.6})
    v1 = first.evaluate(c)
    second = PipelineObjective(cfg, store=ArtifactStore(tmp_path))  # a new worker: empty memory
    v2 = second.evaluate(c)
    assert v2["metrics"] == v1["metrics"] and v2["costs"].get("bm25_queries", 0) == 0


@pytest.mark.parametrize("tuner", ["tpe", "greedy", "hiermab", "grid", "nsga2"])
def test_every_tuner_runs_a_study(data_dir, tmp_path, tuner):
    over = {"tuner": {"name": tuner, "seed": 0}, "budget": {"trials": 4}}
    if tuner == "nsga2":
        over["objective"] = {"metrics": ["ndcg@10", {"metric": "latency_ms", "direction": "minimize"}]}
    res = run_study(StudyConfig.from_dict(study_dict(data_dir, **over)), store=ArtifactStore(tmp_path),
                    progress=False)
    assert res.n_complete == 4
    if tuner == "nsga2":
        assert res.pareto and len(res.best_value) == 2
    if tuner in ("greedy", "hiermab"):  # our tuners start from the template's configuration
        study = optuna.load_study(study_name="t", storage=res.storage)
        assert study.trials[0].params == {"k1": 0.9, "b": 0.4}
        keys = [tuple(sorted(t.params.items())) for t in study.trials]
        assert len(set(keys)) == len(keys)  # and never pay twice for one configuration


def test_constraint_makes_trials_infeasible(data_dir, tmp_path):
    d = study_dict(data_dir, objective={"metrics": ["ndcg@10"], "constraints": [{"metric": "ndcg@10", "max": 0.0}]})
    res = run_study(StudyConfig.from_dict(d), store=ArtifactStore(tmp_path), progress=False)
    study = optuna.load_study(study_name="t", storage=res.storage)
    assert all(t.constraints and list(t.constraints.values())[0] > 0 for t in study.trials)


def test_joining_a_study_with_another_space_is_refused(data_dir, tmp_path):
    run_study(StudyConfig.from_dict(study_dict(data_dir, budget={"trials": 1})), store=ArtifactStore(tmp_path),
              progress=False)
    other = study_dict(data_dir, budget={"trials": 1},
                       space=[{"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.1, "high": 3.0}])
    with pytest.raises(ConfigError, match="already exists with another space"):
        run_study(StudyConfig.from_dict(other), store=ArtifactStore(tmp_path), progress=False)


def _write_config(path, data_dir, trials, pipeline="bm25", dataset="scifact"):
    d = study_dict(data_dir, dataset=str(data_dir / dataset), pipeline=pipeline, budget={"trials": trials},
                   tuner={"name": "random", "seed": 0})
    d["space"][0]["levels"] = 40
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.slow
def test_kill_9_mid_study_then_resume_loses_nothing(data_dir, tmp_path):
    cfg = _write_config(tmp_path / "study.yaml", data_dir, trials=6)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    cmd = [sys.executable, "-m", "ragopt.cli", "tune", str(cfg), "--storage", storage, "--no-reuse",
           "--heartbeat", "1", "--index-dir", str(tmp_path / "idx"), "--json"]
    worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_trial = None
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name="t", storage=storage)
        except KeyError:
            continue
        states = [t.state for t in study.trials]
        running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING and t.params]
        if states.count(optuna.trial.TrialState.COMPLETE) >= 2 and running:
            killed_trial = running[0]
            worker.send_signal(signal.SIGKILL)
            break
    worker.wait(30)
    assert killed_trial is not None, "never saw a running trial to kill"
    time.sleep(4)  # past the grace period (3 x heartbeat)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    study = optuna.load_study(study_name="t", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6 == res["n_complete"]
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    stale = next(t for t in study.trials if t.number == killed_trial.number)
    assert stale.state == optuna.trial.TrialState.FAIL
    assert any(t.params == killed_trial.params for t in complete)  # re-run with the same parameters


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not os.environ.get("RAGOPT_TEST_POSTGRES_URL"), reason="RAGOPT_TEST_POSTGRES_URL not set "
                    "(.ci/run starts a PostgreSQL server and sets it)")
def test_two_workers_share_a_postgres_study(data_dir, tmp_path):
    url = os.environ["RAGOPT_TEST_POSTGRES_URL"]
    cfg = _write_config(tmp_path / "study.yaml", data_dir, trials=10, dataset="cranfield")
    name = f"shared-{os.getpid()}-{int(time.time())}"
    cmd = [sys.executable, "-m", "ragopt.cli", "tune", str(cfg), "--storage", url, "--study", name,
           "--index-dir", str(tmp_path / "idx"), "--json"]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    study = optuna.load_study(study_name=name, storage=url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 10 <= len(complete) <= 11  # each worker checks the budget after its trial: at most one over
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    # both workers contributed (each trial records the pid-independent config; count distinct datetimes)
    assert all(json.loads(o[0])["n_complete"] >= 10 for o in outs)


@register("test_bag")
class Bag(Stage):
    """A tiny deterministic retriever (bag-of-words overlap) so fusion tests need no model."""

    provides = frozenset({"candidates"})
    cache_depth_field = "top_k"
    top_k: int = param(100)

    def transform(self, batch):

        from ragopt.kernels.topk import topk_rows

        if "words" not in self._state:
            self._state["words"] = [set(t.lower().split()) for t in self.corpus.texts]
        scores = np.array([[len(set(q.lower().split()) & w) for w in self._state["words"]]
                           for q in batch.queries.texts], dtype=np.float32)
        scores[scores == 0] = -np.inf
        idx, sc = topk_rows(scores, self.top_k)
        return batch.with_candidates(idx, sc, self.corpus)


def test_fit_reuse_restores_nested_stages(data_dir, tmp_path):
    """A fusion stage met again must come back with its inputs fitted, not only itself."""
    d = study_dict(data_dir, pipeline=[{"type": "rrf", "inputs": [{"type": "bm25"}, {"type": "test_bag"}]}],
                   space=[{"name": "k", "path": "stages.0.k", "choices": [10, 60]}])
    obj = PipelineObjective(StudyConfig.from_dict(d), store=ArtifactStore(tmp_path))
    first = obj.evaluate(obj.config_for({"k": 60}))
    other = obj.evaluate(obj.config_for({"k": 10}))
    again = obj.evaluate(obj.config_for({"k": 60}))  # fitted state restored from the fit cache
    assert again["metrics"] == first["metrics"] and other["metrics"]["ndcg@10"] > 0


def test_fit_reuse_restores_nested_components(tmp_path):
    """Dense retrievers keep their loaded vector index in a nested component: it must come back too."""
    from ragopt.config import walk
    from ragopt.retrievers.dense import DenseRetriever

    r = DenseRetriever()
    assert [type(c).__name__ for c in walk(r)] == ["DenseRetriever", "SentenceTransformerEncoder", "FaissFlat"]


@pytest.mark.slow
def test_quickstart_study_end_to_end(data_dir, session_store, tmp_path):
    """The README's main job on real data with the real model: no failed trial, a sensible optimum, an
    exported pipeline that evaluates to the reported value, and every repeat served from the caches."""
    from pathlib import Path

    from ragopt.pipeline_io import load_pipeline

    cfg = StudyConfig.load(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")
    cfg.dataset = str(data_dir / "cranfield")
    res = run_study(cfg, storage=f"sqlite:///{tmp_path / 's.db'}", store=session_store, n_trials=8,
                    tuner="greedy", progress=False, out_dir=tmp_path / "out")
    assert res.n_complete == 8 and res.n_failed == 0
    assert 0.38 <= res.best_value <= 0.45  # at least dense alone (0.38), at most a little above RRF (0.42)
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path / 's.db'}")
    first = study.trials[0]
    assert first.params["retriever"] == "hybrid"  # greedy starts from the template
    later = [t for t in study.trials[1:] if t.params.get("retriever") in ("hybrid", "dense")]
    assert later and all(t.user_attrs["costs"].get("encoder_texts", 0) == 0 for t in later)  # corpus encoded once
    best = load_pipeline(res.best_pipeline)
    obj = PipelineObjective(cfg, store=session_store)
    assert obj.evaluate(best.to_config())["metrics"]["ndcg@10"] == pytest.approx(res.best_value)
    assert set(res.heldout) >= {"best", "baseline", "gain", "n_queries"}
