"""``ragopt tune``: run (or resume, or join) a tuning study."""

from __future__ import annotations

import argparse

from ragopt.cli import _options as opts
from ragopt.cli._output import Output
from ragopt.tuning.tuners.registry import describe_tuners  # the tuner table: no Optuna, no numpy


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "tune",
        help="tune a pipeline: run (or resume, or join) a study",
        formatter_class=_KeepLines,
        description="Run a tuning study from a config (dataset, pipeline template, search space, objective, tuner, "
        "budget). Trials are stored in an Optuna storage: rerun the same command to resume; run it on "
        "several machines against one database URL to share the study. The best pipeline is exported "
        "as a YAML that `ragopt eval --pipeline` accepts, and reported on held-out queries.",
        epilog="tuners (--tuner, or the config's `tuner`):\n" + _indent(describe_tuners()),
    )
    p.add_argument("config", metavar="CONFIG.yaml", help="study config, e.g. configs/quickstart.yaml")
    opts.add_dataset(p, help="override the config's dataset (folder or name)", required=False)
    p.add_argument("--tuner", metavar="NAME", help="override the config's tuner (the names are listed below)")
    p.add_argument("--trials", type=int, help="total finished trials the study should reach (default: config)")
    p.add_argument("--timeout", type=float, metavar="S", help="stop starting new trials after S seconds")
    opts.add_storage(p)
    p.add_argument("--study", metavar="NAME", help="study name (default: the config's `study`)")
    p.add_argument("--seed", type=int, help="tuner seed (default: config)")
    opts.add_index_dir(p)
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where to write best_pipeline.yaml and summary.json (default: <index-dir>/studies/<study>)",
    )
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="disable stage reuse (every trial rebuilds its indexes and reruns every stage)",
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=10,
        metavar="S",
        help="worker heartbeat in seconds; a worker silent for 3x this is presumed dead and its "
        "trial re-queued (default: 10; 0 disables)",
    )
    opts.add_progress(p)
    opts.add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt.tuning.study import StudyConfig, run_study

    cfg = StudyConfig.load(args.config)
    if args.dataset:
        cfg.dataset = args.dataset
    res = run_study(
        cfg,
        storage=args.storage,
        study_name=args.study,
        store=opts.store(args),
        n_trials=args.trials,
        timeout=args.timeout,
        tuner=args.tuner,
        seed=args.seed,
        reuse=not args.no_reuse,
        progress=opts.progress(args),
        out_dir=args.out,
        heartbeat=args.heartbeat or None,
    )
    lines = [
        f"study {res.study_name}: {res.n_complete} complete, {res.n_failed} failed trials "
        f"({res.seconds:.1f}s); storage {res.storage}"
    ]
    if res.best_params:
        lines.append(f"best {cfg.objective.metrics}: {res.best_value}")
        lines += [f"  {k} = {v}" for k, v in res.best_params.items()]
        if h := res.heldout:
            lines += [
                f"held-out ({h['n_queries']} queries) {m}: best {h['best'][m]:.4f} vs "
                f"baseline {h['baseline'][m]:.4f} ({h['gain'][m]:+.4f})"
                for m in h["best"]
            ]
        lines.append(f"best pipeline: {res.best_pipeline}  (ragopt eval --pipeline {res.best_pipeline})")
    return Output("\n".join(lines), res.to_dict())


def _indent(lines: str) -> str:
    return "\n".join("  " + line for line in lines.splitlines())


class _KeepLines(argparse.HelpFormatter):
    """Wraps a paragraph as usual, but keeps the lines of a text that has line breaks (the tuner table)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)
