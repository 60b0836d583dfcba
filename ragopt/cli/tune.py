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
    online = p.add_argument_group(
        "online mode",
        "--online: the config's tuning queries arrive as a stream of batches; each batch is one pull of the "
        "hierarchical bandit (hiermab) until --budget-llm-calls LLM calls are spent, then the best configuration "
        "so far serves every batch. Writes online.json and best_pipeline.yaml to --out.",
    )
    online.add_argument("--online", action="store_true", help="tune online, one bandit pull per batch of queries")
    online.add_argument("--batch-size", type=int, metavar="N", help="queries per batch (one pull); needs --online")
    online.add_argument(
        "--budget-llm-calls",
        type=int,
        metavar="M",
        help="LLM calls the pulls may spend (default: no limit); needs --online",
    )
    online.add_argument(
        "--reference",
        metavar="CONFIG",
        help="fixed configuration to measure regret against: 'template' or a JSON object of parameter values; "
        "it is evaluated on every batch, outside the budget; needs --online",
    )
    online.add_argument("--passes", type=int, default=1, metavar="K", help="times the stream goes over the queries")
    opts.add_progress(p)
    opts.add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt._urls import redact_url
    from ragopt.errors import ConfigError
    from ragopt.tuning.study import StudyConfig, run_study

    cfg = StudyConfig.load(args.config)
    if args.dataset:
        cfg.dataset = args.dataset
    if args.online:
        return _run_online(args, cfg)
    for option, value in (
        ("--batch-size", args.batch_size),
        ("--budget-llm-calls", args.budget_llm_calls),
        ("--reference", args.reference),
    ):
        if value is not None:
            raise ConfigError(option, "is an option of online tuning; add --online")
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
        f"study {res.study_name}: {res.n_complete} complete"
        + (f" ({res.n_repeats} repeated an earlier configuration)" if res.n_repeats else "")
        + f", {res.n_failed} failed trials ({res.seconds:.1f}s); storage {redact_url(res.storage)}"
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


def _run_online(args: argparse.Namespace, cfg) -> Output:
    import json
    import sys

    from ragopt.errors import ConfigError
    from ragopt.tuning.online import run_online_study
    from ragopt.tuning.tuners.hiermab import HierMABTuner
    from ragopt.tuning.tuners.registry import get_tuner

    for option, value in (("--trials", args.trials), ("--timeout", args.timeout), ("--storage", args.storage)):
        if value is not None:
            raise ConfigError(option, "is an option of offline studies; --online stops at the end of the stream")
    if args.no_reuse:
        raise ConfigError("--no-reuse", "is an option of offline studies, not of --online")
    if args.batch_size is None:
        raise ConfigError("--batch-size", "--online needs --batch-size N (queries per pull)")
    tuner = args.tuner
    if tuner is None and not issubclass(get_tuner(cfg.tuner).cls, HierMABTuner):
        tuner = "hiermab"  # the config's offline tuner cannot run online: the bandit does
    reference = args.reference
    if reference is not None and reference != "template":
        try:
            reference = json.loads(reference)
        except ValueError:
            reference = None
        if not isinstance(reference, dict):
            raise ConfigError("--reference", f"expected 'template' or a JSON object, got {args.reference!r}")
        unknown = sorted(set(reference) - {p.name for p in cfg.space.params})
        if unknown:
            raise ConfigError("--reference", f"{unknown[0]!r} is not a parameter of the space")
        reference = {**cfg.space.defaults_from(cfg.pipeline), **reference}
        reference = cfg.space.complete(reference, lambda p: p.grid()[0])
    if args.study:
        cfg.name = args.study

    def show(rec: dict) -> None:
        reward = "failed" if "error" in rec else "-" if rec["reward"] is None else f"{rec['reward']:.4f}"
        budget = f"/{args.budget_llm_calls}" if args.budget_llm_calls is not None else ""
        line = (
            f"batch {rec['batch']:>3} {rec['phase']:<5} {cfg.objective.metrics[0]} {reward} (n={rec['n']})  "
            f"llm_calls {rec['llm_calls']} (spent {rec['spent']}{budget})"
        )
        if rec.get("regret") is not None:
            line += f"  regret {rec['regret']:+.3f} (cum {rec['cum_regret']:.3f})"
        line += "  " + " ".join(f"{k}={v}" for k, v in rec["params"].items())
        print(line, file=sys.stderr, flush=True)

    res = run_online_study(
        cfg,
        args.batch_size,
        args.budget_llm_calls,
        tuner=tuner,
        seed=args.seed,
        store=opts.store(args),
        reference=reference,
        passes=args.passes,
        progress=opts.progress(args),
        out_dir=args.out,
        on_record=show,
    )
    s = res.summary
    lines = [
        f"online study {res.study_name} ({res.tuner}, batches of {res.batch_size}): {s['batches']} batches, "
        f"{s['pulls']} pulls, {s['served']} served by the best ({res.seconds:.1f}s)",
        f"llm calls: {s['spent_llm_calls']} in pulls"
        + (f" (budget {s['budget_llm_calls']})" if s["budget_llm_calls"] is not None else "")
        + f", {s['serve_llm_calls']} serving",
        f"mean {res.metric} over the stream: " + ("-" if s["mean_reward"] is None else f"{s['mean_reward']:.4f}"),
    ]
    if "cum_regret" in s:
        lines.append(f"cumulative regret vs the reference: {s['cum_regret']:.4f}")
    lines.append("best so far:")
    lines += [f"  {k} = {v}" for k, v in res.best_params.items()]
    if h := res.heldout:
        if h.get("gain") is not None:
            lines.append(
                f"held-out ({h['n_queries']} queries) {res.metric}: best {h['best']:.4f} vs "
                f"baseline {h['baseline']:.4f} ({h['gain']:+.4f})"
            )
    lines.append(f"best pipeline: {res.best_pipeline}; per-batch records: {res.out_dir}/online.json")
    return Output("\n".join(lines), res.to_dict())


def _indent(lines: str) -> str:
    return "\n".join("  " + line for line in lines.splitlines())


class _KeepLines(argparse.HelpFormatter):
    """Wraps a paragraph as usual, but keeps the lines of a text that has line breaks (the tuner table)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)
