"""The ``ragopt`` command line: one module per command, each with ``register(commands)`` (its sub-parser,
with ``handler`` set to its ``run(args)``) and ``run(args) -> Output``. Adding a command is one new module and one
entry in :data:`COMMANDS`; options that several commands share are declared once, in :mod:`ragopt.cli._options`.

Every command that takes ``--json`` prints exactly one JSON object on stdout and nothing else: logs,
progress bars and anything a backend (Java, bm25s) writes go to stderr (:mod:`ragopt.cli._output`). Errors
(ragopt's own, and an ``OSError`` such as a path the system refused) print one line ``ragopt: error: ...`` on
stderr and exit with status 2; Ctrl-C exits with 130 and leaves the artifact store as it was (artifacts are
written atomically).

Building the parser loads no numpy, YAML, Optuna or torch: command modules import what loads them inside ``run``,
so that ``ragopt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ragopt import __version__
from ragopt.cli import compare, components, datasets, eval, index, pipelines, report, search, serve_mcp, train, tune
from ragopt.cli._output import stdout_reserved_for_json, write
from ragopt.errors import RagoptError

__all__ = ["main", "build_parser", "COMMANDS"]

#: the commands, in the order ``ragopt --help`` lists them
COMMANDS = (index, search, eval, compare, tune, report, train, serve_mcp, datasets, pipelines, components)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragopt",
        description="Build, evaluate and tune retrieval and RAG pipelines.",
        epilog="Run `ragopt COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"ragopt {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    try:
        with stdout_reserved_for_json(as_json) as out:
            output = args.handler(args)
            if output is not None:
                write(out, output, as_json)
        return 0
    except RagoptError as e:
        print(f"ragopt: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the system refused (an output under /proc, a folder not writable): one line too
        print(f"ragopt: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ragopt: interrupted; finished artifacts are intact, partial ones were discarded", file=sys.stderr)
        return 130
