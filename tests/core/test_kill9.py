"""Faults: a process killed with SIGKILL in the middle of LLM calls or of an artifact build loses only the work
in flight. What was finished is served after a restart, nothing half-written is used, and the SQLite call cache
passes its integrity check."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ragopt.llm.cache import CachedLLM
from ragopt.llm.scripted import ScriptedLLM
from ragopt.store import ArtifactStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

RULES = [{"match": r"question (\d+)", "output": r"answer \1"}]


def _start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after(proc: subprocess.Popen, lines: int, timeout: float = 60.0) -> list[str]:
    """Read ``lines`` lines of the child's output, then SIGKILL it; every line it printed before it died (a child
    that ran on while the parent waited for the CPU may have printed more than ``lines``)."""
    got: list[str] = []
    t0 = time.monotonic()
    while len(got) < lines:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"child ended early: {proc.stderr.read()[-2000:]}")
        got.append(line.strip())
        assert time.monotonic() - t0 < timeout
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return got + [line.strip() for line in proc.stdout.read().splitlines()]  # what was left in the pipe


def test_kill9_during_llm_calls_keeps_what_was_answered(tmp_path):
    child = _start(
        """
        import sys
        from ragopt.llm.cache import CachedLLM
        from ragopt.llm.scripted import ScriptedLLM
        from ragopt.store import ArtifactStore

        llm = ScriptedLLM(rules=[{"match": r"question (\\d+)", "output": r"answer \\1"}], delay_s=0.02)
        client = CachedLLM(llm, store=ArtifactStore(sys.argv[1]), chunk_size=1)
        for i in range(10_000):
            client.generate([f"question {i}"])
            print(i, flush=True)
        """,
        str(tmp_path),
    )
    done = len(_kill_after(child, 25))
    dbs = list(tmp_path.rglob("*.sqlite")) + list(tmp_path.rglob("*.db"))
    assert dbs, "the call cache is a SQLite file in the store"
    for db in dbs:
        assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    client = CachedLLM(ScriptedLLM(rules=RULES, delay_s=0.02), store=ArtifactStore(tmp_path), chunk_size=1)
    n = done + 5
    out = client.generate([f"question {i}" for i in range(n)])
    assert [c.text for c in out] == [f"answer {i}" for i in range(n)]
    hits = client.stats.counts.get("llm_cache_hits", 0)
    # every answer the child printed was committed; at most the one in flight at the kill may also be there
    assert done <= hits <= done + 1 and client.stats.counts["llm_calls"] == n - hits


def test_kill9_during_an_artifact_build_leaves_no_artifact(tmp_path):
    child = _start(
        """
        import sys, time
        from ragopt.store import ArtifactStore

        def build(d):
            (d / "part.bin").write_bytes(b"x" * 1000)
            print("half written", flush=True)
            time.sleep(60)

        ArtifactStore(sys.argv[1]).get_or_create("thing", {"v": 1}, 1, build)
        """,
        str(tmp_path),
    )
    _kill_after(child, 1)
    store = ArtifactStore(tmp_path)
    final = store.path("thing", {"v": 1}, 1)
    assert not final.exists()  # the half-built folder never took the artifact's name
    assert store.list("thing") == []
    calls = []
    art = store.get_or_create(
        "thing", {"v": 1}, 1, lambda d: calls.append(d) or (d / "ok.txt").write_text("ok") and None
    )
    assert art.created and calls and (Path(art.path) / "ok.txt").read_text() == "ok"
