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
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragopt.store import ArtifactStore
from ragopt.tuning.study import PipelineObjective, StudyConfig, run_study

CONFIG = ROOT / "configs" / "retrieval_quickstart.yaml"


def study_config(dataset: str, trials: int) -> StudyConfig:
    """The retrieval quickstart study (configs/retrieval_quickstart.yaml), with the benchmark's dataset and budget."""
    cfg = StudyConfig.load(CONFIG)
    cfg.dataset, cfg.trials, cfg.name = dataset, trials, "tuning-bench"
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cranfield")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--stage-outputs", choices=["auto", "always", "never"], default="auto")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tuning.json"))
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = study_config(args.dataset, args.trials)
    cfg.stage_outputs = args.stage_outputs

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
        reuse_trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
        reuse_eval_s = sum(eval_seconds)
        reuse_wall = time.perf_counter() - t0
        print(
            f"reuse: {len(trials)} trials, {reuse_eval_s:.1f}s evaluating, {reuse_trial_s:.1f}s in trials "
            f"({reuse_wall:.1f}s with the report)",
            flush=True,
        )

        fresh = PipelineObjective(cfg, reuse=False)
        rows, no_reuse_s, mismatches = [], 0.0, 0
        for i, t in enumerate(trials):
            pipeline_cfg = json.loads(t.user_attrs["pipeline"])
            s = time.perf_counter()
            ev = fresh.evaluate(pipeline_cfg)
            dt = time.perf_counter() - s
            no_reuse_s += dt
            same = abs(ev["metrics"]["ndcg@10"] - t.values[0]) < 1e-12
            mismatches += not same
            rows.append(
                {
                    "trial": t.number,
                    "params": t.params,
                    "ndcg@10_reuse": t.values[0],
                    "ndcg@10_no_reuse": ev["metrics"]["ndcg@10"],
                    "identical": same,
                    "seconds_reuse": round(eval_seconds[i], 4),
                    "seconds_reuse_trial": (t.datetime_complete - t.datetime_start).total_seconds(),
                    "seconds_no_reuse": round(dt, 3),
                    "cache": t.user_attrs.get("cache"),
                    "costs_reuse": t.user_attrs.get("costs"),
                    "costs_no_reuse": ev["costs"],
                }
            )
            print(
                f"  trial {t.number:>2} {t.params.get('retriever'):>6}  reuse {rows[-1]['seconds_reuse']:6.2f}s  "
                f"no-reuse {dt:6.2f}s  ndcg@10 {t.values[0]:.4f} {'==' if same else '!='} "
                f"{ev['metrics']['ndcg@10']:.4f}",
                flush=True,
            )

    ratio = no_reuse_s / reuse_eval_s if reuse_eval_s else float("inf")
    ratio_trials = no_reuse_s / reuse_trial_s if reuse_trial_s else float("inf")
    out = {
        "dataset": args.dataset,
        "trials": len(rows),
        "tuner": "tpe",
        "seed": 0,
        "reuse_seconds": round(reuse_eval_s, 2),
        "reuse_trial_seconds": round(reuse_trial_s, 2),
        "no_reuse_seconds": round(no_reuse_s, 2),
        "ratio": round(ratio, 2),
        "ratio_whole_trials": round(ratio_trials, 2),
        "stage_outputs": cfg.stage_outputs,
        "identical_values": mismatches == 0,
        "mismatches": mismatches,
        "best_value": res.best_value,
        "best_params": res.best_params,
        "heldout": res.heldout,
        "machine": {
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "per_trial": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(
        f"\n| arm | evaluating (s) |\n|---|---|\n| reuse | {reuse_eval_s:.1f} |\n"
        f"| no reuse | {no_reuse_s:.1f} |\n\nratio (no reuse / reuse): {ratio:.1f}x "
        f"({ratio_trials:.1f}x against whole reuse trials, tuner and storage included); identical metric values "
        f"per trial: {mismatches == 0} ({mismatches} mismatches)"
    )


if __name__ == "__main__":
    main()
