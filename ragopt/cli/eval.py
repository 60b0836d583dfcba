"""``ragopt eval``: evaluate a pipeline on a dataset split."""

from __future__ import annotations

import argparse
import json

from ragopt.cli import _options as opts
from ragopt.cli._output import Output, artifact_lines


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="evaluate a pipeline on a dataset split",
        description="Fit a pipeline, run it on the split's judged queries and report "
        "retrieval metrics with trec_eval semantics, and answer metrics for "
        "pipelines that generate.",
        epilog=f"{opts.EPILOG_DATASET} {opts.EPILOG_PIPELINE} Retrieval metrics: ndcg@k, "
        "recall@k, mrr@k, map, map@k, p@k. Answer metrics (a generate stage; gold answers "
        "from answers.jsonl): em, f1, contains, rouge_l, ctx_recall, ctx_precision, "
        "answer_in_ctx. Judged (--judge): judge_correctness, faithfulness, "
        "answer_relevance.",
    )
    opts.add_pipeline_run(p)
    p.add_argument("--metrics", "-m", help="comma-separated metrics (default: ndcg@10,recall@100,mrr@10,map)")
    p.add_argument("--per-query", metavar="FILE", help="write per-query metric values as JSON to FILE")
    p.add_argument("--save-run", metavar="RUN", help="also write the ranking as a TREC run file")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate a seeded sample of N judged queries (quick looks)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default: 0)")
    p.add_argument(
        "--judge",
        metavar="MODEL",
        help="LLM judge for judged metrics: a packaged alias "
        "(e.g. qwen2.5-coder-1.5b-instruct), a hub id, a YAML file with a backend config, or an inline one "
        "such as '{type: openai, model: NAME, base_url: URL}'",
    )
    p.add_argument(
        "--aggregate",
        choices=("max", "sum", "first"),
        default="max",
        help="how passage scores become document scores for chunked corpora (default: max)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt._io import atomic_write_text
    from ragopt.evaluation import write_run
    from ragopt.evaluation.run import DEFAULT_METRICS, evaluate_pipeline

    metrics = DEFAULT_METRICS
    if args.metrics is not None:  # an empty list (`--metrics ''`) is refused, not read as the defaults
        from ragopt.errors import ConfigError

        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        if not metrics:
            raise ConfigError("--metrics", f"no metric named in {args.metrics!r}; e.g. ndcg@10,recall@100")
    report = evaluate_pipeline(
        opts.load_pipeline(args),
        args.dataset,
        split=args.split,
        metrics=metrics,
        store=opts.store(args),
        progress=opts.progress(args),
        rebuild=args.rebuild,
        aggregate=args.aggregate,
        limit=args.limit,
        seed=args.seed,
        judge=opts.llm_backend(args.judge, "--judge") if args.judge else None,
    )
    if args.per_query:
        atomic_write_text(args.per_query, json.dumps(report.per_query, indent=1))
    if args.save_run:
        write_run(report.batch.to_run(aggregate=args.aggregate), args.save_run)
    t = report.timings
    lines = [
        f"{report.dataset} [{report.split}] {report.n_queries} queries, pipeline {args.pipeline}",
        *(f"  {k:<12} {v:.4f}" + _ci(report, k) for k, v in report.metrics.items()),
        f"  fit {t['fit_s']:.2f}s, search {t['search_s']:.2f}s ({t['qps']:.0f} q/s), total {t['total_s']:.2f}s",
        *artifact_lines(report.artifacts),
    ]
    return Output("\n".join(lines), report.to_dict())


def _ci(report, metric: str) -> str:
    judged = report.rag.get("judged", {})
    if metric in judged.get("ci95", {}):
        lo, hi = judged["ci95"][metric]
        return f"  (95% CI {lo:.3f}-{hi:.3f}, {judged['n_judged'][metric]} judged)"
    return ""
