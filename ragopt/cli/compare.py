"""``ragopt compare``: paired significance test between two TREC runs."""

from __future__ import annotations

import argparse

from ragopt.cli import _options as opts
from ragopt.cli._output import Output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "compare",
        help="paired significance test between two TREC runs",
        description="Evaluate two TREC run files on a dataset split and test whether their "
        "per-query values differ (paired t-test, randomization or Wilcoxon).",
        epilog=opts.EPILOG_DATASET,
    )
    p.add_argument("run_a", help="baseline TREC run file")
    p.add_argument("run_b", help="TREC run file to compare against the baseline")
    opts.add_dataset(p, help="dataset folder or name (for its qrels)")
    opts.add_split(p)
    p.add_argument("--metric", default="ndcg@10", help="metric to compare (default: ndcg@10)")
    p.add_argument("--test", choices=("t", "randomization", "wilcoxon"), default="t", help="paired test (default: t)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomization test (default: 0)")
    opts.add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt.data import load_dataset
    from ragopt.evaluation import evaluate, paired_test, read_run

    qrels = load_dataset(args.dataset).qrels(args.split)
    a = evaluate(read_run(args.run_a), qrels, [args.metric])
    b = evaluate(read_run(args.run_b), qrels, [args.metric])
    res = paired_test(a, b, metric=args.metric, test=args.test, seed=args.seed)
    text = (
        f"{res.metric}: A {res.mean_a:.4f}  B {res.mean_b:.4f}  diff {res.diff:+.4f}  "
        f"p={res.p_value:.4g} ({res.test}, n={res.n}){'  significant' if res.significant else ''}"
    )
    return Output(text, res.to_dict())
