"""Stage reuse in tuning: the same trials with and without reuse, side by side in one run.

A TPE study (default 40 trials) over the retrieval quickstart space (configs/retrieval_quickstart.yaml) on cranfield:
retriever family (BM25, dense MiniLM, RRF of both), BM25 k1/b, RRF k, candidate depth, final cutoff. Arm 1 runs the study with stage reuse
(artifact store, fitted-stage memory, stage-output cache by depth) from an empty store. Arm 2 replays the
very same configurations with reuse disabled (each trial builds its indexes and embeddings in a fresh
store and runs every stage). Both arms must give identical metric values per trial; the wall-time ratio
is the figure of merit (target >= 10x). Both arms are timed the same way, around the objective's
evaluation of a configuration; the reuse arm's whole-trial time (the tuner's sampling and Optuna's
storage included) is reported beside it.

    .venv/bin/python benchmarks/tuning.py [--dataset cranfield] [--trials 40] [--out benchmarks/results/tuning.json]
    .venv/bin/python benchmarks/tuning.py --resume --out ...    # continue an interrupted no-reuse replay

The results file is rewritten (atomically) after every replayed trial, with the ratio over the trials replayed so far,
so a run that is stopped can be resumed later from the configurations it recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragopt._io import atomic_write_text
from ragopt.store import ArtifactStore
from ragopt.tuning.study import PipelineObjective, StudyConfig, run_study

CONFIG = ROOT / "configs" / "retrieval_quickstart.yaml"


def study_config(dataset: str, trials: int) -> StudyConfig:
    """The retrieval quickstart study (configs/retrieval_quickstart.yaml), with the benchmark's dataset and budget."""
    cfg = StudyConfig.load(CONFIG)
    cfg.dataset, cfg.trials, cfg.name = dataset, trials, "tuning-bench"
    return cfg


def reuse_arm(cfg: StudyConfig, dataset: str) -> dict:
    """Arm 1: the study with stage reuse from an empty store; every trial's configuration and timings."""
    # time the reuse arm's evaluations exactly as the no-reuse arm's are timed (held-out report excluded)
    eval_seconds: list[float] = []
    evaluate = PipelineObjective.evaluate

    def timed(self, cfg, heldout=False):
        s = time.perf_counter()
        out = evaluate(self, cfg, heldout=heldout)
        if self.reuse and not heldout:
            eval_seconds.append(time.perf_counter() - s)
        return out

    PipelineObjective.evaluate = timed
    try:
        with tempfile.TemporaryDirectory(prefix="ragopt-bench-tuning-") as tmp:
            store = ArtifactStore(Path(tmp) / "store")
            t0 = time.perf_counter()
            res = run_study(
                cfg,
                storage=f"sqlite:///{tmp}/studies.db",
                store=store,
                progress=False,
                heartbeat=None,
                out_dir=Path(tmp) / "out",
            )
            # the study's wall time includes its held-out report; time the trials alone from the storage
            study = optuna.load_study(study_name="tuning-bench", storage=f"sqlite:///{tmp}/studies.db")
            trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            reuse_wall = time.perf_counter() - t0
    finally:
        PipelineObjective.evaluate = evaluate
    rows = [
        {
            "trial": t.number,
            "params": t.params,
            "pipeline": json.loads(t.user_attrs["pipeline"]),
            "ndcg@10_reuse": t.values[0],
            "seconds_reuse": round(eval_seconds[i], 4),
            "seconds_reuse_trial": (t.datetime_complete - t.datetime_start).total_seconds(),
            "cache": t.user_attrs.get("cache"),
            "costs_reuse": t.user_attrs.get("costs"),
        }
        for i, t in enumerate(trials)
    ]
    print(
        f"reuse: {len(rows)} trials, {sum(eval_seconds):.1f}s evaluating, "
        f"{sum(r['seconds_reuse_trial'] for r in rows):.1f}s in trials ({reuse_wall:.1f}s with the report)",
        flush=True,
    )
    return {
        "dataset": dataset,
        "trials": len(rows),
        "tuner": "tpe",
        "seed": 0,
        "stage_outputs": cfg.stage_outputs,
        "best_value": res.best_value,
        "best_params": res.best_params,
        "heldout": res.heldout,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
            "torch_threads": _torch_threads(),
        },
        "per_trial": rows,
    }


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - the dense arm needs torch anyway
        return None
    return torch.get_num_threads()


def summarise(out: dict) -> None:
    """Totals and ratios over the trials both arms have run (all of them once the replay is complete)."""
    done = [r for r in out["per_trial"] if "seconds_no_reuse" in r]
    reuse_s = sum(r["seconds_reuse"] for r in done)
    reuse_trial_s = sum(r["seconds_reuse_trial"] for r in done)
    no_reuse_s = sum(r["seconds_no_reuse"] for r in done)
    mismatches = sum(not r["identical"] for r in done)
    out.update(
        {
            "replayed": len(done),
            "complete": len(done) == len(out["per_trial"]),
            "reuse_seconds": round(reuse_s, 2),
            "reuse_trial_seconds": round(reuse_trial_s, 2),
            "no_reuse_seconds": round(no_reuse_s, 2),
            "ratio": round(no_reuse_s / reuse_s, 2) if reuse_s else None,
            "ratio_whole_trials": round(no_reuse_s / reuse_trial_s, 2) if reuse_trial_s else None,
            "identical_values": mismatches == 0,
            "mismatches": mismatches,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cranfield")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--stage-outputs", choices=["auto", "always", "never"], default="auto")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tuning.json"))
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue the no-reuse replay recorded in --out (written after every trial) instead of starting over",
    )
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_path = Path(args.out)
    cfg = study_config(args.dataset, args.trials)
    cfg.stage_outputs = args.stage_outputs

    # a one-off process cost (importing torch and sentence-transformers, several seconds) is not stage work: pay it
    # before either arm's clock starts, or the first trial timed (of either arm, or after a resume) would carry it
    import sentence_transformers  # noqa: F401

    if args.resume:
        if not out_path.is_file():
            sys.exit(f"--resume: no results file at {out_path}; run without --resume first")
        out = json.loads(out_path.read_text())
        if out.get("dataset") != args.dataset or "pipeline" not in (out.get("per_trial") or [{}])[0]:
            sys.exit(f"--resume: {out_path} is not a resumable run on {args.dataset}")
        print(f"resuming: {sum('seconds_no_reuse' in r for r in out['per_trial'])}/{len(out['per_trial'])} replayed")
    else:
        out = reuse_arm(cfg, args.dataset)
        summarise(out)
        atomic_write_text(out_path, json.dumps(out, indent=1))  # never half-written

    fresh = PipelineObjective(cfg, reuse=False)
    for row in out["per_trial"]:
        if "seconds_no_reuse" in row:
            continue
        s = time.perf_counter()
        ev = fresh.evaluate(row["pipeline"])
        dt = time.perf_counter() - s
        same = abs(ev["metrics"]["ndcg@10"] - row["ndcg@10_reuse"]) < 1e-12
        row.update(
            {
                "ndcg@10_no_reuse": ev["metrics"]["ndcg@10"],
                "identical": same,
                "seconds_no_reuse": round(dt, 3),
                "costs_no_reuse": ev["costs"],
                "no_reuse_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
            }
        )
        summarise(out)
        atomic_write_text(out_path, json.dumps(out, indent=1))  # never half-written
        print(
            f"  trial {row['trial']:>2} {row['params'].get('retriever'):>6}  reuse {row['seconds_reuse']:6.2f}s  "
            f"no-reuse {dt:6.2f}s  ndcg@10 {row['ndcg@10_reuse']:.4f} {'==' if same else '!='} "
            f"{ev['metrics']['ndcg@10']:.4f}  [{out['replayed']}/{out['trials']} replayed, ratio so far "
            f"{out['ratio']}x]",
            flush=True,
        )

    print(
        f"\n| arm | evaluating (s) |\n|---|---|\n| reuse | {out['reuse_seconds']:.1f} |\n"
        f"| no reuse | {out['no_reuse_seconds']:.1f} |\n\nratio (no reuse / reuse): {out['ratio']}x "
        f"({out['ratio_whole_trials']}x against whole reuse trials, tuner and storage included); identical metric "
        f"values per trial: {out['identical_values']} ({out['mismatches']} mismatches)"
    )


if __name__ == "__main__":
    main()
