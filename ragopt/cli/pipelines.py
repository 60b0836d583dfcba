"""``ragopt pipelines``: list the named pipelines."""

from __future__ import annotations

import argparse

from ragopt.cli import _options as opts
from ragopt.cli._output import Output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("pipelines", help="list the named pipelines")
    opts.add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt.pipeline_io import list_pipelines, read_yaml

    rows = {}
    for name, path in list_pipelines().items():
        try:
            desc = (read_yaml(path) or {}).get("description", "")
        except Exception as e:  # a broken file is listed with its error, not fatal here
            desc = f"(unreadable: {e})"
        rows[name] = {"path": str(path), "description": " ".join(str(desc).split())}
    text = "\n".join(f"{k:<16} {v['description'][:100]}" for k, v in rows.items()) or "no pipelines found"
    return Output(text, {"pipelines": rows})
