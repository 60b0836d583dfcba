"""``ragopt report``: write an HTML report of a study."""

from __future__ import annotations

import argparse

from ragopt.cli import _options as opts
from ragopt.cli._output import Output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="write an HTML report of a study",
        description="Write a self-contained HTML report of a study: optimisation history, "
        "parameter importances, Pareto front, cost per stage, all trials.",
    )
    p.add_argument("study", metavar="STUDY", help="study name")
    opts.add_storage(p)
    opts.add_index_dir(p)
    p.add_argument("--out", "-o", metavar="FILE", help="output HTML file (default: <study>_report.html)")
    opts.add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt._urls import redact_url
    from ragopt.tuning.report import write_report
    from ragopt.tuning.study import default_storage

    storage = args.storage or default_storage(opts.store(args))
    path = write_report(args.study, storage, args.out or f"{args.study}_report.html")
    return Output(
        f"report written to {path}", {"report": str(path), "study": args.study, "storage": redact_url(storage)}
    )
