"""Where studies live: Optuna RDB storages (SQLite by default, PostgreSQL for several machines), with worker
heartbeats so that a worker killed mid-trial loses nothing."""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Any

from ragopt._imports import require
from ragopt.errors import RagoptError

__all__ = ["default_storage", "make_storage"]


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
                raise RagoptError(f"cannot open study storage {url!r}: {e}") from e
            time.sleep(0.2 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")
