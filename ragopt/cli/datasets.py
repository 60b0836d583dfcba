"""``ragopt datasets``: list the datasets found on the search path."""

from __future__ import annotations

import argparse
import os

from ragopt.cli import _options as opts
from ragopt.cli._output import Output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("datasets", help="list the datasets found on the search path")
    opts.add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt.data import dataset_search_path, list_datasets

    found = {name: str(path) for name, path in list_datasets().items()}
    search_path = [str(d) for d in dataset_search_path()]
    text = "\n".join(f"{k:<24} {v}" for k, v in found.items()) or "no datasets found"
    text += "\nsearch path: " + os.pathsep.join(search_path)
    return Output(text, {"datasets": found, "search_path": search_path})
