"""``ragopt components [NAME]``: list registered component types, or the parameters of one."""

from __future__ import annotations

import argparse

from ragopt.cli._output import Output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("components", help="list registered component types and their parameters")
    p.add_argument("name", nargs="?", help="show the parameters of one component type")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt.registry import available, describe

    lines = []
    for name in [args.name] if args.name else available():
        d = describe(name)
        lines.append(f"{name}: {d['summary']}")
        if args.name:
            lines += [
                f"  {p['name']} = {'(required)' if p['required'] else p['default']!r}  {p['doc']}" for p in d["params"]
            ]
    return Output("\n".join(lines))
