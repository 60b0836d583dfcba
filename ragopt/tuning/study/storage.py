"""Where studies live: Optuna RDB storages (SQLite by default, PostgreSQL for several machines), with worker
heartbeats so that a worker killed mid-trial loses nothing."""

from __future__ import annotations

import copy
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from ragopt._imports import require
from ragopt._urls import redact_url
from ragopt.errors import RagoptError, first_line

__all__ = ["default_storage", "fail_orphaned_trials", "make_storage"]


def default_storage(store: Any) -> str:
    """The default, serverless storage: an SQLite file in the artifact store."""
    path = Path(store.root) / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def make_storage(url: str, heartbeat: int | None = 10, grace: int | None = None):
    """An RDB storage with heartbeats: a worker killed mid-trial leaves a stale trial that the next worker
    marks failed and re-queues (same parameters), so nothing is lost."""
    optuna = require("optuna", "tune", "study storages")

    def open_once():
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=heartbeat,
                    grace_period=grace or 3 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                    engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
                )
        return optuna.storages.RDBStorage(url)

    for attempt in range(6):
        try:
            return open_once()
        except ImportError as e:
            raise RagoptError(
                f"storage {url.split('://')[0]}: a database driver is missing ({e}); for "
                "PostgreSQL install psycopg (pip install 'ragopt[tune]')"
            ) from e
        except Exception as e:
            # two workers creating the schema of a fresh database at once: one loses the race; retry
            if attempt == 5:
                raise RagoptError(f"cannot open study storage {redact_url(url)!r}: {first_line(e)}") from e
            time.sleep(0.2 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")


def fail_orphaned_trials(study: Any, wait: float | None = None, poll: float = 0.25, log: Any = None) -> list[int]:
    """Fail (and re-queue, through the storage's stale-trial callback) the RUNNING trials whose worker died
    before it wrote its first heartbeat; return their numbers.

    Optuna fails only trials whose heartbeat went stale: a trial with no heartbeat row at all stays RUNNING
    forever, and its configuration is never re-run. A worker killed in the first instant of a trial leaves one
    (the heartbeat thread starts with the trial; the kill can land before its first commit). A live worker writes
    its first heartbeat at once, so a trial seen without one for the whole grace period (``wait``, default the
    storage's) is dead. The wait ends as soon as every such trial has a heartbeat or has finished, and costs
    nothing when there are none. No clock is compared with another machine's."""
    optuna = require("optuna", "tune", "study storages")
    storage = study._storage  # optuna wraps an RDB storage in a cache; the wrapper keeps that cache right
    rdb = getattr(storage, "_backend", storage)
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval or not hasattr(rdb, "engine"):
        return []  # no heartbeats: nothing tells a dead trial from a live one
    wait = wait if wait is not None else (getattr(rdb, "grace_period", None) or 2 * interval)
    running = optuna.trial.TrialState.RUNNING
    sqlalchemy = require("sqlalchemy", "tune", "study storages")
    heartbeats = sqlalchemy.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
        sqlalchemy.bindparam("ids", expanding=True)
    )  # optuna's heartbeat table (its schema, stable since heartbeats came in optuna 2.4)

    def without_heartbeat() -> dict[int, int]:
        ids = {t._trial_id: t.number for t in study.get_trials(deepcopy=False, states=(running,))}
        if not ids:
            return {}
        with rdb.engine.connect() as conn:
            beating = {row[0] for row in conn.execute(heartbeats, {"ids": list(ids)})}
        return {tid: n for tid, n in ids.items() if tid not in beating}

    suspects = without_heartbeat()
    if not suspects:
        return []
    (log or _stderr)(
        f"trial(s) {', '.join(map(str, sorted(suspects.values())))} of study {study.study_name!r} are RUNNING "
        f"with no heartbeat (a worker killed as the trial began?); waiting up to {wait:g} s to see whether "
        "they are alive"
    )
    deadline = time.monotonic() + wait
    while suspects and time.monotonic() < deadline:
        time.sleep(poll)
        now = without_heartbeat()
        suspects = {tid: n for tid, n in suspects.items() if tid in now}
    failed = []
    for tid in suspects:
        try:
            if storage.set_trial_state_values(tid, state=optuna.trial.TrialState.FAIL):
                failed.append(tid)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # it finished, or another worker failed it first
    callback = storage.get_heartbeat_stale_trial_callback()
    for tid in failed:
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(tid)))  # re-queues its parameters
    if failed:
        (log or _stderr)(
            f"failed trial(s) {', '.join(str(suspects[t]) for t in failed)}: dead before their first "
            "heartbeat; their parameters are queued again"
        )
    return sorted(suspects[t] for t in failed)


def _stderr(message: str) -> None:
    print(f"ragopt: {message}", file=sys.stderr, flush=True)
