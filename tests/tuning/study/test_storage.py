"""Study storages: the default SQLite file in the artifact store, and RDB storages with heartbeats."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from ragopt.store import ArtifactStore
from ragopt.tuning.study import default_storage, fail_orphaned_trials, make_storage


def test_default_storage_is_an_sqlite_file_in_the_store(tmp_path):
    url = default_storage(ArtifactStore(tmp_path / "idx"))
    assert url == f"sqlite:///{(tmp_path / 'idx' / 'studies.db').resolve()}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:hunter2@db.example:5432/studies", "postgresql://bob:***@db.example:5432/studies"),
        ("postgresql+psycopg://bob:p%40ss@h/d", "postgresql+psycopg://bob:***@h/d"),
        ("postgresql://postgres@127.0.0.1:5432/x", "postgresql://postgres@127.0.0.1:5432/x"),  # no password
        ("sqlite:////tmp/a:b/studies.db", "sqlite:////tmp/a:b/studies.db"),
        ("https://h/mcp?api_key=zz&keyword=cats#f", "https://h/mcp?api_key=***&keyword=cats#f"),  # by name only
    ],
)
def test_a_storage_url_is_shown_without_its_password(url, shown):
    # before: `ragopt tune --storage postgresql://bob:hunter2@...` printed the password on stdout, in --json and in
    # the error when the server could not be reached
    from ragopt._urls import redact_url
    from ragopt.tuning.study.summary import StudyResult

    assert redact_url(url) == shown
    fields = dict.fromkeys(StudyResult.__dataclass_fields__)
    res = StudyResult(**{**fields, "storage": url})
    assert res.to_dict()["storage"] == shown and res.storage == url  # the result keeps the usable URL


def test_storages_send_heartbeats_unless_disabled(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    with_hb = make_storage(url, heartbeat=2)
    assert with_hb.get_heartbeat_interval() == 2 and with_hb.grace_period == 6
    assert make_storage(url, heartbeat=None).get_heartbeat_interval() is None


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_its_parameters_queued_again(
    tmp_path, backend
):
    """Optuna fails only trials whose heartbeat went stale; one that never wrote a heartbeat stayed RUNNING for
    good. Only a trial without a heartbeat for the whole grace period is failed: one whose first heartbeat comes
    late (a loaded worker) lives on, as do beating and finished ones."""
    optuna = pytest.importorskip("optuna")
    url = f"sqlite:///{tmp_path / 's.db'}"
    if backend == "postgresql":
        url = os.environ.get("RAGOPT_TEST_POSTGRES_URL") or pytest.skip("RAGOPT_TEST_POSTGRES_URL not set")
    storage = make_storage(url, heartbeat=1, grace=2)
    name = f"orphans-{uuid.uuid4().hex}"  # a PostgreSQL database outlives the test
    study = optuna.create_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    dead = study.ask()
    x = dead.suggest_int("x", 0, 10_000)
    live = study.ask()
    storage.record_heartbeat(live._trial_id)
    late = study.ask()
    first_beat = threading.Timer(0.7, storage.record_heartbeat, args=(late._trial_id,))
    first_beat.start()
    finished = study.ask()
    study.tell(finished, 1.0)
    said: list[str] = []
    t0 = time.monotonic()
    assert fail_orphaned_trials(study, log=said.append) == [dead.number]
    assert time.monotonic() - t0 >= 2.0  # it watched the dead trial for the whole grace period
    first_beat.join()
    state = {t.number: t.state for t in study.get_trials()}
    TS = optuna.trial.TrialState
    assert state[dead.number] == TS.FAIL
    assert (state[live.number], state[late.number], state[finished.number]) == (TS.RUNNING, TS.RUNNING, TS.COMPLETE)
    assert f"trial(s) {dead.number}" in said[0] and "queued again" in said[-1]
    again = study.ask()  # the re-queued configuration comes first
    assert again.suggest_int("x", 0, 10_000) == x
    # nothing more to do: no wait, no message
    storage.record_heartbeat(again._trial_id)
    said.clear()
    assert fail_orphaned_trials(study, log=said.append) == [] and said == []
    assert fail_orphaned_trials(optuna.create_study(), log=said.append) == []  # in memory: no heartbeats at all
