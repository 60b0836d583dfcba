"""`ragopt serve-mcp` over streamable HTTP as a subprocess, for end-to-end tests and load benchmarks: started on a
free port with a ready file to learn its URL from, and stopped for sure (terminate, then kill)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


def start_http_server(
    args: Sequence[str],
    workdir: Path,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen, IO[str], str]:
    """Start ``python -m ragopt.cli serve-mcp *args`` on HTTP, port 0, in ``cwd`` (default: ``workdir``) with
    environment ``env``, its output going to ``workdir/server.log``, and wait up to ``timeout`` seconds for it to
    write ``workdir/ready.json``. Returns the process, the open log file (close it after :func:`stop_server`) and
    the server's URL. A server that exits or does not come up in time is killed, and a :class:`RuntimeError` says
    so with the end of its log."""
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "ready.json"
    log = open(workdir / "server.log", "w")  # noqa: SIM115 (it outlives this call: stop_server closes it)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ragopt.cli",
            "serve-mcp",
            *args,
            "--transport",
            "http",
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(cwd or workdir),
    )
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            log.close()
            raise RuntimeError(f"server did not start: {(workdir / 'server.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return proc, log, json.loads(ready.read_text())["url"]


def stop_server(proc: subprocess.Popen, log: IO[str], timeout: float = 20.0) -> None:
    """Terminate ``proc`` (kill it if it has not exited within ``timeout`` seconds), then close its ``log``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    log.close()
