"""Tuner benchmark: how many evaluations each tuner needs to get near the best configuration.

A realistic BM25 space (k1 x b x scoring variant x stemmer x title: 6 x 5 x 3 x 3 x 2 = 540 configurations)
is evaluated in full once on a shared dataset's tuning queries (nDCG@10 on the study's tune split, the 70%
of judged queries a study tunes on) and cached in ``benchmarks/results/tuners_grid_<dataset>.json``. Each
tuner then runs against that table for several seeds, through the same ask/tell API users call
(:func:`ragopt.tuning.tuners.make_tuner`), so replays are exact and take seconds.

Replay rules:
* k1 and b are continuous parameters (as in ``configs/bm25_scifact.yaml``), discretised to 6 and 5 levels
  for the grid. Tuners that suggest continuous values (tpe, random, cmaes, nsga2) have each suggestion
  snapped to the nearest grid level for the lookup; the tuner is told the snapped configuration's value
  under the parameters it asked (so its model sees the value where it asked). ``--discrete`` declares k1 and
  b with a ``step`` on the grid levels instead, so every tuner asks grid points only.
* Every tuner starts from the template's configuration (BM25 k1=0.9, b=0.4, lucene, english, title),
  snapped to the grid, as ``ragopt tune`` does; the grid tuner ignores it.
* "Evaluations" counts trials (asks), duplicates included: a repeat of a configuration is a cache hit in a
  real study, so the number of *distinct* configurations evaluated is reported beside it.
* A run stops at the grid optimum (its regret is 0 from there on) or after ``--budget`` trials (default:
  the grid size). A run that never gets within 1% counts as needing more than the budget.

    python benchmarks/tuners.py [--dataset scifact] [--seeds 20] [--tuners tpe hiermab ...] [--discrete]
    python benchmarks/tuners.py --dataset cranfield --grid-only     # just compute (or finish) the table
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
METRIC = "ndcg@10"
DEFAULT_TUNERS = ("tpe", "random", "grid", "cmaes", "nsga2", "greedy", "greedy_pipeline", "hiermab", "hiermab_ts")
TARGET_TUNERS = ("tpe", "hiermab")
TARGET_FRACTION = 0.20  # AutoRAG-HP: near-best with about 20% of grid search's calls
WITHIN = 0.01  # "within 1% of the grid optimum" (relative)


def space_spec(discrete: bool = False) -> list[dict[str, Any]]:
    """The benchmark's search space (k1 and b on 6 and 5 levels; ``discrete``: only those levels)."""
    k1 = {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.3, "high": 2.4, "group": "bm25"}
    b = {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.1, "high": 1.0, "group": "bm25"}
    if discrete:
        k1["step"], b["step"] = 0.42, 0.225
    else:
        k1["levels"], b["levels"] = 6, 5
    return [
        k1,
        b,
        {"name": "method", "path": "stages.0.method", "choices": ["lucene", "robertson", "atire"], "group": "scoring"},
        {"name": "stemmer", "path": "stages.0.stemmer", "choices": ["english", "porter", None], "group": "text"},
        {"name": "with_title", "path": "stages.0.with_title", "choices": [True, False], "group": "text"},
    ]


def study_config(dataset: str, discrete: bool = False):
    """The study the table is computed for: BM25 (bm25s, 100 candidates: nDCG@10 needs no more)."""
    from ragopt.tuning.study import StudyConfig

    path = DATA / dataset
    return StudyConfig.from_dict(
        {
            "study": f"tuners-{dataset}",
            "dataset": str(path) if path.is_dir() else dataset,
            "split": "test",
            "holdout": {"fraction": 0.3, "seed": 0},
            "pipeline": [
                {
                    "type": "bm25",
                    "k1": 0.9,
                    "b": 0.4,
                    "method": "lucene",
                    "stemmer": "english",
                    "with_title": True,
                    "top_k": 100,
                }
            ],
            "space": space_spec(discrete),
            "objective": {"metrics": [METRIC]},
        }
    )


def key_str(params: Mapping[str, Any]) -> str:
    """The table key of a configuration: :func:`ragopt.tuning.tuners.config_key` as a string."""
    from ragopt.tuning.tuners import config_key

    return "|".join(f"{k}={r}" for k, r in config_key(params))


def snap(params: Mapping[str, Any], space) -> dict[str, Any]:
    """The nearest grid point (numeric parameters moved to their nearest level)."""
    from ragopt.testing.tuners import snap_to_grid

    return snap_to_grid(space, params)


# ------------------------------------------------------------------------------------------------ grid
def grid_table(dataset: str, path: Path | None = None, save_every: int = 10, quiet: bool = False) -> dict[str, Any]:
    """The full grid's metric values, computed once and cached in ``path`` (resumes a partial table)."""
    from ragopt._io import atomic_write_text
    from ragopt.store import ArtifactStore
    from ragopt.tuning.study import PipelineObjective

    path = path or RESULTS / f"tuners_grid_{dataset}.json"
    config = study_config(dataset)
    spec = space_spec()
    table: dict[str, Any] = {
        "dataset": dataset,
        "metric": METRIC,
        "split": "test (tune part: holdout 0.3, seed 0)",
        "pipeline": config.pipeline,
        "space": spec,
        "values": {},
        "params": {},
        "seconds": 0.0,
    }
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("space") != spec or old.get("pipeline") != config.pipeline:
            raise SystemExit(f"{path} was computed for another space or pipeline: delete it to recompute")
        table = old
    grid = list(config.space.iter_grid())
    todo = [g for g in grid if key_str(g) not in table["values"]]
    if not todo:
        return table
    with tempfile.TemporaryDirectory(prefix="ragopt-tuners-grid-") as tmp:
        # reuse=False: each configuration is indexed from scratch in a temporary store (no disk growth)
        objective = PipelineObjective(config, ArtifactStore(tmp), reuse=False, progress=False)
        t0 = time.perf_counter()
        for i, params in enumerate(todo, 1):
            ev = objective.evaluate(objective.config_for(params))
            k = key_str(params)
            table["values"][k] = round(float(ev["metrics"][METRIC]), 6)
            table["params"][k] = params
            if i % save_every == 0 or i == len(todo):
                table["seconds"] = round(table.get("seconds", 0.0) + time.perf_counter() - t0, 1)
                t0 = time.perf_counter()
                table["n_queries"] = len(objective.tune_queries)
                atomic_write_text(path, json.dumps(table, indent=0, sort_keys=True)).chmod(0o644)
                if not quiet:
                    print(
                        f"[grid {dataset}] {len(table['values'])}/{len(grid)} ({table['seconds']:.0f}s)",
                        file=sys.stderr,
                        flush=True,
                    )
    return table


# ---------------------------------------------------------------------------------------------- replay
_TEMPLATE = {
    "stages": [{"type": "bm25", "k1": 0.9, "b": 0.4, "method": "lucene", "stemmer": "english", "with_title": True}]
}


def replay(name: str, values: Mapping[str, float], seed: int, budget: int, discrete: bool = False) -> dict[str, Any]:
    """One tuner run against the table: best-so-far after each trial, distinct configurations, ask time."""
    from ragopt.tuning.space import SearchSpace
    from ragopt.tuning.tuners import make_tuner

    space = SearchSpace.from_list(space_spec(discrete))
    defaults = snap(space.defaults_from(_TEMPLATE), space)
    optimum = max(values.values())
    tuner = make_tuner(name, space, seed=seed, defaults=defaults)
    best, trace, distinct, seen, ask_s = -math.inf, [], [], set(), 0.0
    for _ in range(budget):
        t0 = time.perf_counter()
        params = tuner.ask()
        ask_s += time.perf_counter() - t0
        k = key_str(snap(params, space))
        value = values[k]
        seen.add(k)
        best = max(best, value)
        trace.append(best)
        distinct.append(len(seen))
        if best >= optimum:
            break
        t0 = time.perf_counter()
        try:
            tuner.tell(params, value)  # the asked parameters, with the value of their grid point
        except RuntimeError as e:  # optuna's GridSampler stops its study after the last grid point
            if "Study.stop" not in str(e):
                raise
        ask_s += time.perf_counter() - t0
    return {
        "tuner": name,
        "seed": seed,
        "trace": trace,
        "distinct": distinct,
        "ms_per_trial": 1000 * ask_s / max(len(trace), 1),
    }


def _first(trace: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(trace) if v >= target), None)


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, med, q3


def summarise(runs: list[dict[str, Any]], values: Mapping[str, float], budget: int) -> dict[str, Any]:
    """Per tuner: evaluations (and distinct configurations) to within 1% and to the optimum; regret curve."""
    optimum = max(values.values())
    n_grid = len(values)
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["tuner"] for r in runs):
        mine = [r for r in runs if r["tuner"] == name]
        to1 = [_first(r["trace"], (1 - WITHIN) * optimum) for r in mine]
        d1 = [r["distinct"][n - 1] if n else None for r, n in zip(mine, to1)]
        tob = [len(r["trace"]) if r["trace"][-1] >= optimum else None for r in mine]
        row: dict[str, Any] = {"seeds": len(mine)}
        for label, xs in (("evals_to_1pct", to1), ("distinct_to_1pct", d1), ("evals_to_best", tob)):
            vals = [x if x is not None else math.inf for x in xs]
            q1, med, q3 = _quartiles(vals)
            row[label] = {
                "median": med,
                "q1": q1,
                "q3": q3,
                "per_seed": xs,
                "not_reached": sum(x is None for x in xs),
                "median_pct_of_grid": round(100 * med / n_grid, 2) if math.isfinite(med) else None,
            }
        regret = []
        for r in mine:
            tr = r["trace"] + [r["trace"][-1]] * (budget - len(r["trace"]))
            regret.append([100 * (optimum - v) / optimum for v in tr])
        curves = {
            "median": [round(statistics.median(c), 3) for c in zip(*regret)],
            "q1": [round(_quartiles(list(c))[0], 3) for c in zip(*regret)],
            "q3": [round(_quartiles(list(c))[2], 3) for c in zip(*regret)],
        }
        # stored up to where they stop changing (the last value holds until the budget)
        n = max(next((len(c) - i for i, v in enumerate(reversed(c)) if v != c[-1]), 0) + 1 for c in curves.values())
        for label, c in curves.items():
            row[f"regret_pct_{label}"] = c[:n]
        row["ms_per_trial"] = round(statistics.median(r["ms_per_trial"] for r in mine), 2)
        med = row["evals_to_1pct"]["median"]
        row["within_1pct_at_20pct_of_grid"] = bool(math.isfinite(med) and med <= TARGET_FRACTION * n_grid)
        out[name] = row
    return out


def _run_one(args: tuple) -> dict[str, Any]:
    return replay(*args)


def run_dataset(
    dataset: str, tuners: list[str], seeds: int, budget: int | None, discrete: bool, workers: int
) -> dict[str, Any]:
    table = grid_table(dataset)
    values = table["values"]
    n_grid = len(values)
    budget = budget or n_grid
    optimum = max(values.values())
    best_key = max(values, key=values.get)
    jobs = [(name, values, seed, budget, discrete) for name in tuners for seed in range(seeds)]
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            runs = list(ex.map(_run_one, jobs))
    else:
        runs = [_run_one(j) for j in jobs]
    print(f"[replay {dataset}] {len(jobs)} runs in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return {
        "dataset": dataset,
        "metric": METRIC,
        "n_queries": table.get("n_queries"),
        "grid_size": n_grid,
        "grid_seconds": table.get("seconds"),
        "optimum": optimum,
        "optimum_params": table["params"][best_key],
        "n_within_1pct": sum(v >= (1 - WITHIN) * optimum for v in values.values()),
        "worst": min(values.values()),
        "budget": budget,
        "space": "discrete" if discrete else "continuous",
        "tuners": summarise(runs, values, budget),
    }


# ---------------------------------------------------------------------------------------------- output
def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = list(results["datasets"].values())
    fig, axes = plt.subplots(1, len(ds), figsize=(7 * len(ds), 5), squeeze=False)
    for ax, d in zip(axes[0], ds):
        n = d["grid_size"]
        for name, row in d["tuners"].items():

            def full(c: list[float]) -> list[float]:
                return c + [c[-1]] * (d["budget"] - len(c))

            med = full(row["regret_pct_median"])
            x = [100 * (i + 1) / n for i in range(len(med))]
            style = "-" if name in TARGET_TUNERS else "--"
            (line,) = ax.plot(x, med, style, label=name, lw=2.2 if name in TARGET_TUNERS else 1.2)
            if name in TARGET_TUNERS:
                ax.fill_between(
                    x, full(row["regret_pct_q1"]), full(row["regret_pct_q3"]), alpha=0.15, color=line.get_color()
                )
        ax.axhline(100 * WITHIN, color="grey", lw=0.8, ls=":")
        ax.axvline(100 * TARGET_FRACTION, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"evaluations, % of the grid ({n} configurations)")
        ax.set_ylabel(f"regret: % below the grid's best {d['metric']} (median over seeds)")
        ax.set_title(f"{d['dataset']}: best {d['metric']} {d['optimum']:.4f}, {d['n_within_1pct']} configs within 1%")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(results: dict[str, Any]) -> str:
    lines = []
    for d in results["datasets"].values():
        n = d["grid_size"]
        lines += [
            f"**{d['dataset']}** ({n} configurations, {d['n_queries']} tuning queries; grid best {d['metric']} "
            f"{d['optimum']:.4f}; {d['n_within_1pct']} configurations within 1% of it; "
            f"{results['seeds']} seeds; {d['space']} k1/b)",
            "",
            "| tuner | evals to 1%: median (IQR) | % of grid | distinct configs to 1% | evals to best: "
            "median (IQR) | ms/trial | <= 20% of grid |",
            "|---|---|---|---|---|---|---|",
        ]

        def f(x: float) -> str:
            return "—" if not math.isfinite(x) else f"{x:g}"

        for name, row in d["tuners"].items():
            e, dd, b = row["evals_to_1pct"], row["distinct_to_1pct"], row["evals_to_best"]
            miss = f", {b['not_reached']} seeds not reached" if b["not_reached"] else ""
            lines.append(
                f"| {name} | {f(e['median'])} ({f(e['q1'])}–{f(e['q3'])}) | "
                f"{e['median_pct_of_grid']}% | {f(dd['median'])} | {f(b['median'])} "
                f"({f(b['q1'])}–{f(b['q3'])}{miss}) | {row['ms_per_trial']} | "
                f"{'yes' if row['within_1pct_at_20pct_of_grid'] else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ragopt._io import atomic_write_text
    from ragopt.tuning.tuners import TUNERS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", nargs="+", default=["scifact", "cranfield"])
    ap.add_argument("--tuners", nargs="+", default=list(DEFAULT_TUNERS), choices=list(TUNERS))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=None, help="trials per run (default: the grid size)")
    ap.add_argument("--discrete", action="store_true", help="k1 and b on their grid levels (step), not continuous")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--grid-only", action="store_true", help="compute (or finish) the grid tables and stop")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/tuners.json)")
    args = ap.parse_args(argv)
    if args.grid_only:
        for ds in args.dataset:
            t = grid_table(ds)
            print(f"{ds}: {len(t['values'])} configurations, best {max(t['values'].values()):.4f}")
        return 0
    suffix = "_discrete" if args.discrete else ""
    out = args.out or RESULTS / f"tuners{suffix}.json"
    import optuna

    results: dict[str, Any] = {
        "benchmark": "tuners",
        "date": datetime.date.today().isoformat(),
        "seeds": args.seeds,
        "within": WITHIN,
        "target": {"tuners": list(TARGET_TUNERS), "max_fraction_of_grid": TARGET_FRACTION},
        "environment": {
            "python": platform.python_version(),
            "optuna": optuna.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "datasets": {
            ds: run_dataset(ds, args.tuners, args.seeds, args.budget, args.discrete, args.workers)
            for ds in args.dataset
        },
    }
    atomic_write_text(out, json.dumps(results, indent=1))
    out.chmod(0o644)
    plot(results, out.with_name(f"tuners_regret{suffix}.png"))
    print(markdown_table(results))
    print(f"results: {out}, plot: {out.with_name(f'tuners_regret{suffix}.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
