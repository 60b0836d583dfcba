"""What a command prints: with ``--json`` exactly one JSON object on stdout, otherwise text.

:func:`stdout_reserved_for_json` points file descriptor 1 at stderr while a command runs, so that logs,
progress bars and anything a backend (Java, C libraries) writes cannot reach stdout; :func:`write` then prints
the command's :class:`Output` on the real stdout."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TextIO


class Output(NamedTuple):
    """A command's result: ``text`` for people, ``obj`` for ``--json`` (None: the command has no --json)."""

    text: str
    obj: dict[str, Any] | None = None


@contextmanager
def stdout_reserved_for_json(enabled: bool) -> Iterator[TextIO]:
    """With ``enabled``, point file descriptor 1 at stderr (Python's ``print``, C and Java code alike) and hand back
    a stream on the real stdout for the single JSON object; otherwise hand back ``sys.stdout``."""
    if not enabled:
        yield sys.stdout
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(saved, "w", encoding="utf-8")
    try:
        yield real
    finally:
        sys.stdout.flush()  # what Python code printed meanwhile, still buffered, belongs on stderr too
        real.flush()
        os.dup2(real.fileno(), 1)
        real.close()


def write(out: TextIO, output: Output, as_json: bool) -> None:
    if as_json:
        if output.obj is None:
            raise TypeError("a command that takes --json must return an Output with obj")
        out.write(json.dumps(output.obj, indent=None, default=_json_default) + "\n")
    else:
        out.write(output.text.rstrip("\n") + "\n")


def artifact_lines(artifacts: list[dict]) -> list[str]:
    """One line per artifact a fit built or reused."""
    return [f"  {'built ' if a['created'] else 'reused'} {a['kind']}: {a['path']}" for a in artifacts]


def _json_default(o: Any) -> Any:
    np = sys.modules.get("numpy")  # a numpy value can only come from a loaded numpy
    if np is not None and isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
