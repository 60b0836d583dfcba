"""The run loop of studies on real pipelines: every tuner, failures, constraints, Ctrl-C and kill -9 resume,
joining a study, workers sharing one database, and the README's main job end to end."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")

import optuna

from ragopt.errors import ConfigError
from ragopt.pipeline_io import load_pipeline
from ragopt.store import ArtifactStore
from ragopt.tuning.study import PipelineObjective, StudyConfig, run_study
from ragopt.tuning.study.storage import make_storage
from ragopt.tuning.tuners.greedy import GreedyTuner
from ragopt.tuning.tuners.hiermab import HierMABTuner
from ragopt.tuning.tuners.registry import TUNERS, tuner_names


def test_failing_trial_is_recorded_and_study_goes_on(study_dict, tmp_path):
    d = study_dict(
        pipeline=[{"type": "bm25"}, {"type": "test_flaky"}],
        space=[{"name": "x", "path": "stages.1.x", "choices": [1, 2, 3]}],
        tuner={"name": "grid_native", "seed": 0},
        budget={"trials": 3},
    )
    res = run_study(StudyConfig.from_dict(d), store=ArtifactStore(tmp_path), progress=False)
    assert res.n_complete == 2 and res.n_failed == 1
    study = optuna.load_study(study_name="t", storage=res.storage)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed[0].params == {"x": 3}
    assert "RuntimeError: flaky stage refuses x=3" in failed[0].user_attrs["error"]


def test_ctrl_c_ends_cleanly_and_the_study_resumes(study_dict, flaky, tmp_path):
    d = study_dict(
        pipeline=[{"type": "bm25"}, {"type": "test_flaky"}],
        space=[{"name": "x", "path": "stages.1.x", "choices": [1, 2, 4, 5]}],
        tuner={"name": "grid_native", "seed": 3},
        budget={"trials": 4},
    )
    cfg = StudyConfig.from_dict(d)
    flaky.armed["interrupt"] = True
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, store=ArtifactStore(tmp_path), progress=False)
    res = run_study(cfg, store=ArtifactStore(tmp_path), progress=False)
    assert res.n_complete == 4
    study = optuna.load_study(study_name="t", storage=res.storage)
    complete = [t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == [1, 2, 4, 5]  # the interrupted configuration was evaluated after resuming


@pytest.mark.parametrize("tuner", tuner_names())
def test_every_tuner_runs_a_study(study_dict, tmp_path, tuner):
    over = {"tuner": {"name": tuner, "seed": 0}, "budget": {"trials": 4}}
    if tuner == "llm":  # the mechanics with the scripted double; the real model is tests/tuning/test_llm_tuner.py's
        over["tuner"]["llm"] = {"type": "scripted", "rules": [{"match": ".", "output": '{"k1": 1.2, "b": 0.6}'}]}
    if tuner == "nsga2":
        over["objective"] = {"metrics": ["ndcg@10", {"metric": "latency_ms", "direction": "minimize"}]}
    res = run_study(StudyConfig.from_dict(study_dict(**over)), store=ArtifactStore(tmp_path), progress=False)
    assert res.n_complete == 4
    study = optuna.load_study(study_name="t", storage=res.storage)
    assert study.user_attrs["ragopt_config"]["tuner"] == tuner
    if tuner == "nsga2":
        assert res.pareto and len(res.best_value) == 2
    sampler = TUNERS[tuner].optuna_sampler
    from_template = sampler not in (None, "grid") or TUNERS[tuner].cls in (GreedyTuner, HierMABTuner)
    if from_template:
        assert study.trials[0].params == {"k1": 0.9, "b": 0.4}  # the template's own configuration comes first
    if sampler is None:  # ragopt's tuners never pay twice for one configuration
        keys = [tuple(sorted(t.params.items())) for t in study.trials]
        assert len(set(keys)) == len(keys)


def test_the_tuner_can_be_overridden_and_unknown_names_are_refused(study_dict, tmp_path):
    cfg = StudyConfig.from_dict(study_dict(budget={"trials": 2}))
    res = run_study(cfg, store=ArtifactStore(tmp_path), tuner="hiermab_ts", progress=False)
    study = optuna.load_study(study_name="t", storage=res.storage)
    assert res.n_complete == 2 and study.user_attrs["ragopt_config"]["tuner"] == "hiermab_ts"
    with pytest.raises(ConfigError, match=r"--tuner.*unknown tuner 'bogus' \(known: " + ", ".join(tuner_names())):
        run_study(cfg, store=ArtifactStore(tmp_path), tuner="bogus", progress=False)


def test_constraint_makes_trials_infeasible(study_dict, tmp_path):
    d = study_dict(objective={"metrics": ["ndcg@10"], "constraints": [{"metric": "ndcg@10", "max": 0.0}]})
    res = run_study(StudyConfig.from_dict(d), store=ArtifactStore(tmp_path), progress=False)
    study = optuna.load_study(study_name="t", storage=res.storage)
    assert all(t.constraints and list(t.constraints.values())[0] > 0 for t in study.trials)


def test_a_trial_left_running_without_a_heartbeat_is_failed_and_rerun_on_resume(study_dict, tmp_path, capsys):
    """A worker killed before its trial's first heartbeat left the trial RUNNING for good (optuna fails only
    stale heartbeats): the next run of the study fails it after the grace period and re-runs its parameters."""
    cfg = StudyConfig.from_dict(study_dict(budget={"trials": 2}))
    res = run_study(cfg, store=ArtifactStore(tmp_path), progress=False, heartbeat=1, grace=2)
    study = optuna.load_study(study_name="t", storage=make_storage(res.storage, heartbeat=None))
    first = study.trials[0]
    orphan = study.ask(fixed_distributions=first.distributions)  # a trial whose worker then died at once
    res = run_study(cfg, store=ArtifactStore(tmp_path), n_trials=3, progress=False, heartbeat=1, grace=2)
    assert res.n_complete == 3
    after = optuna.load_study(study_name="t", storage=res.storage).trials
    TS = optuna.trial.TrialState
    assert after[orphan.number].state == TS.FAIL and TS.RUNNING not in {t.state for t in after}
    rerun = [t for t in after if t.number > orphan.number and t.state == TS.COMPLETE]
    assert [t.params for t in rerun] == [orphan.params]  # its configuration, and only it, ran again
    assert f"trial(s) {orphan.number} of study 't' are RUNNING with no heartbeat" in capsys.readouterr().err


def test_joining_a_study_with_another_space_is_refused(study_dict, tmp_path):
    run_study(StudyConfig.from_dict(study_dict(budget={"trials": 1})), store=ArtifactStore(tmp_path), progress=False)
    other = study_dict(
        budget={"trials": 1}, space=[{"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.1, "high": 3.0}]
    )
    with pytest.raises(ConfigError, match="already exists with another space"):
        run_study(StudyConfig.from_dict(other), store=ArtifactStore(tmp_path), progress=False)


def _write_config(path, study_dict, data_dir, trials, pipeline="bm25", dataset="scifact"):
    d = study_dict(
        dataset=str(data_dir / dataset),
        pipeline=pipeline,
        budget={"trials": trials},
        tuner={"name": "random", "seed": 0},
    )
    d["space"][0]["levels"] = 40
    path.write_text(yaml.safe_dump(d))
    return path


def _tune_cmd(cfg, storage: str, tmp_path, *options: str) -> list[str]:
    """The command line of a `ragopt tune` worker: ``cfg`` on ``storage`` with ``options``, indexes under
    ``tmp_path``, the result as JSON on stdout."""
    return [
        sys.executable,
        "-m",
        "ragopt.cli",
        "tune",
        str(cfg),
        "--storage",
        storage,
        *options,
        "--index-dir",
        str(tmp_path / "idx"),
        "--json",
    ]


@pytest.mark.slow
def test_kill_9_mid_study_then_resume_loses_nothing(study_dict, data_dir, tmp_path):
    cfg = _write_config(tmp_path / "study.yaml", study_dict, data_dir, trials=6)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    cmd = _tune_cmd(cfg, storage, tmp_path, "--no-reuse", "--heartbeat", "1")
    worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_trial = None
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            # through make_storage, which retries when the worker is creating the fresh database's schema at the
            # same moment (raw RDBStorage lost that race once: IntegrityError on alembic_version)
            study = optuna.load_study(study_name="t", storage=make_storage(storage, heartbeat=None))
        except KeyError:
            continue
        states = [t.state for t in study.trials]
        # every parameter stored (they are suggested one at a time; a kill between two would retry k1 alone)
        running = [
            t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING and set(t.params) == {"k1", "b"}
        ]
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


def postgres_url() -> str:
    """The test server's URL (.ci/run starts one and sets RAGOPT_TEST_POSTGRES_URL). Without one the test skips,
    unless RAGOPT_REQUIRE_POSTGRES=1 (set by CI): then it fails, so CI cannot go green without PostgreSQL."""
    url = os.environ.get("RAGOPT_TEST_POSTGRES_URL")
    if url:
        return url
    why = "RAGOPT_TEST_POSTGRES_URL not set (.ci/run starts a PostgreSQL server and sets it)"
    if os.environ.get("RAGOPT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (RAGOPT_REQUIRE_POSTGRES=1) but {why}", pytrace=False)
    pytest.skip(why)


def test_postgres_is_mandatory_when_required(monkeypatch):
    monkeypatch.delenv("RAGOPT_TEST_POSTGRES_URL", raising=False)
    monkeypatch.setenv("RAGOPT_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is required"):
        postgres_url()
    monkeypatch.delenv("RAGOPT_REQUIRE_POSTGRES")
    with pytest.raises(pytest.skip.Exception):
        postgres_url()


def test_ci_requires_postgres():
    ci = (Path(__file__).resolve().parents[3] / ".ci" / "run").read_text()
    assert "export RAGOPT_REQUIRE_POSTGRES=1" in ci.split("make test")[0]


@pytest.mark.slow
@pytest.mark.integration
def test_two_workers_share_a_postgres_study(study_dict, data_dir, tmp_path):
    url = postgres_url()
    cfg = _write_config(tmp_path / "study.yaml", study_dict, data_dir, trials=10, dataset="cranfield")
    name = f"shared-{os.getpid()}-{int(time.time())}"
    cmd = _tune_cmd(cfg, url, tmp_path, "--study", name)
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    study = optuna.load_study(study_name=name, storage=url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 10 <= len(complete) <= 11  # each worker checks the budget after its trial: at most one over
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    # both workers contributed: every trial records the process that ran it (host:pid)
    per_worker = collections.Counter(t.user_attrs["worker"] for t in complete)
    pids = {f"{socket.gethostname()}:{w.pid}" for w in workers}
    assert set(per_worker) == pids, per_worker
    assert all(json.loads(o[0])["n_complete"] >= 10 for o in outs)  # study-wide, as each worker saw it at the end


@pytest.mark.slow
def test_retrieval_quickstart_study_end_to_end(data_dir, session_store, tmp_path):
    """The retrieval quickstart on real data with the real model: no failed trial, a sensible optimum, an
    exported pipeline that evaluates to the reported value, and every repeat served from the caches."""
    cfg = StudyConfig.load(Path(__file__).resolve().parents[3] / "configs" / "retrieval_quickstart.yaml")
    cfg.dataset = str(data_dir / "cranfield")
    res = run_study(
        cfg,
        storage=f"sqlite:///{tmp_path / 's.db'}",
        store=session_store,
        n_trials=8,
        tuner="greedy",
        progress=False,
        out_dir=tmp_path / "out",
    )
    assert res.n_complete == 8 and res.n_failed == 0
    assert 0.38 <= res.best_value <= 0.45  # at least dense alone (0.38), at most a little above RRF (0.42)
    study = optuna.load_study(study_name="retrieval_quickstart", storage=f"sqlite:///{tmp_path / 's.db'}")
    first = study.trials[0]
    assert first.params["retriever"] == "hybrid"  # greedy starts from the template
    later = [t for t in study.trials[1:] if t.params.get("retriever") in ("hybrid", "dense")]
    assert later and all(t.user_attrs["costs"].get("encoder_texts", 0) == 0 for t in later)  # corpus encoded once
    best = load_pipeline(res.best_pipeline)
    obj = PipelineObjective(cfg, store=session_store)
    assert obj.evaluate(best.to_config())["metrics"]["ndcg@10"] == pytest.approx(res.best_value)
    assert set(res.heldout) >= {"best", "baseline", "gain", "n_queries"}
