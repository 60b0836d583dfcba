"""The run loop of a study: create, resume or join it in its storage, run trials until the budget is reached,
re-queue the configuration that Ctrl-C interrupted, then summarise."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ragopt._imports import require
from ragopt._progress import progress_enabled
from ragopt.config import canonical_json, config_hash
from ragopt.errors import ConfigError
from ragopt.store import ArtifactStore
from ragopt.tuning.study.config import StudyConfig
from ragopt.tuning.study.objective import PipelineObjective
from ragopt.tuning.study.sampler import study_sampler
from ragopt.tuning.study.storage import default_storage, fail_orphaned_trials, make_storage
from ragopt.tuning.study.summary import StudyResult, summarise
from ragopt.tuning.tuners.optuna_samplers import starts_from_template
from ragopt.tuning.tuners.registry import get_tuner
from ragopt.types import check_seed

__all__ = ["run_study"]


def run_study(
    config: StudyConfig,
    storage: str | None = None,
    study_name: str | None = None,
    store: Any = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    tuner: str | None = None,
    seed: int | None = None,
    reuse: bool = True,
    progress: bool | None = None,
    out_dir: str | os.PathLike | None = None,
    heartbeat: int | None = 10,
    grace: int | None = None,
) -> StudyResult:
    """Run (or resume, or join) a study until it has ``n_trials`` finished trials or ``timeout`` passes."""
    optuna = require("optuna", "tune", "tuning studies")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    store = store if store is not None else ArtifactStore()
    entry = get_tuner(tuner or config.tuner, where="--tuner")
    tuner_name = entry.name
    seed = config.seed if seed is None else check_seed(seed, "seed")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise ConfigError("trials", f"must be an integer >= 1, got {n_trials!r}")  # 0 meant the config's, -1 nothing
    if timeout is not None and not timeout > 0:  # NaN too
        raise ConfigError("timeout", f"must be > 0 seconds, got {timeout!r}")
    if heartbeat is not None and (isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or heartbeat < 1):
        raise ConfigError("heartbeat", f"must be an integer >= 1 second (None: off), got {heartbeat!r}")
    n_trials = n_trials or config.trials
    timeout = timeout if timeout is not None else config.timeout
    name = study_name or config.name
    url = storage or default_storage(store)
    objective = PipelineObjective(config, store=store, reuse=reuse, progress=progress)
    directions = config.objective.directions
    defaults = config.space.defaults_from(config.pipeline)
    options = dict(config.tuner_options)
    if "store" in (entry.option_names or ()):
        options.setdefault("store", store)  # the llm tuner keeps its call cache in the study's store
    sampler = study_sampler(tuner_name, config.space, seed, directions, defaults, options)
    study = optuna.create_study(
        study_name=name,
        storage=make_storage(url, heartbeat, grace),
        sampler=sampler,
        directions=directions,
        load_if_exists=True,
    )
    _check_study_matches(study, config, tuner_name)
    if not study.trials and entry.optuna_sampler and starts_from_template(entry.optuna_sampler):
        study.enqueue_trial(defaults)  # start from the template's own configuration
    done = _n_finished(study)
    if done < n_trials:
        fail_orphaned_trials(study)  # a worker killed before its first heartbeat left a trial RUNNING for good
    bar = None
    if progress_enabled(progress):
        from tqdm.auto import tqdm  # lazy: importing it costs ~100 ms

        bar = tqdm(total=n_trials, initial=min(done, n_trials), desc=f"tune {name}", unit="trial", file=sys.stderr)

    def on_trial(study_: Any, trial: Any) -> None:
        if _n_finished(study_) >= n_trials:
            study_.stop()
        if bar is not None:
            bar.update(1)
            try:
                best = study_.best_value if len(directions) == 1 else None
                bar.set_postfix_str(f"best={best:.4f}" if best is not None else f"pareto={len(study_.best_trials)}")
            except ValueError:
                pass

    try:
        if done < n_trials:
            study.optimize(
                objective,
                n_trials=None,
                timeout=timeout,
                callbacks=[on_trial],
                catch=(Exception,),
                gc_after_trial=False,
            )
    except KeyboardInterrupt:
        # re-queue the interrupted configuration so a resumed study evaluates it
        trials = study.get_trials(deepcopy=False)
        requeued = {t.user_attrs.get("requeued_from") for t in trials}
        for t in trials:
            if t.user_attrs.get("interrupted") and t.params and t.number not in requeued:
                study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
        raise
    finally:
        if bar is not None:
            bar.close()
    return summarise(
        study,
        objective,
        config,
        url,
        Path(out_dir) if out_dir else Path(store.root) / "studies" / name,
        time.perf_counter() - t_start,
    )


def _n_finished(study: Any) -> int:
    """Trials that count against the budget: complete, pruned, and failed *by their configuration*. Trials
    failed by a crash or Ctrl-C (no error recorded) are re-run with the same parameters, so do not count."""
    states = require("optuna", "tune", "tuning studies").trial.TrialState
    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (states.COMPLETE, states.PRUNED) or (t.state == states.FAIL and "error" in t.user_attrs):
            n += 1
    return n


def _check_study_matches(study: Any, config: StudyConfig, tuner: str) -> None:
    """A study joined by name must be the same search: refuse to mix spaces or objectives."""
    sig = config_hash(
        {
            "space": config.space_spec,
            "pipeline": config.pipeline,
            "objective": [config.objective.metrics, config.objective.directions],
            "dataset": config.dataset,
            "split": config.split,
            "holdout": [config.holdout_fraction, config.holdout_seed],
        }
    )
    have = study.user_attrs.get("ragopt_signature")
    if have is None:
        study.set_user_attr("ragopt_signature", sig)
        study.set_user_attr(
            "ragopt_config",
            json.loads(
                canonical_json(
                    {
                        "dataset": config.dataset,
                        "split": config.split,
                        "pipeline": config.pipeline,
                        "space": config.space_spec,
                        "objective": {"metrics": config.objective.metrics, "directions": config.objective.directions},
                        "tuner": tuner,
                        "holdout": {"fraction": config.holdout_fraction, "seed": config.holdout_seed},
                    }
                )
            ),
        )
    elif have != sig:
        raise ConfigError(
            "study",
            f"study {study.study_name!r} already exists with another space, pipeline, "
            "objective or dataset; use another --study name",
        )
