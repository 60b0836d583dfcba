"""Load and abuse test of `ragopt serve-mcp` with locust (a maintained load tool), over streamable HTTP.

Starts the server (``--pipeline``, default bm25) on 127.0.0.1 with a random bearer token, then for each user count
runs locust headless for ``--minutes`` (users from benchmarks/mcp_locustfile.py: agents that do the MCP handshake
and call ``search_tools`` back to back, plus ``--attackers`` users sending refused requests all along), while a
thread samples the server's resident memory and CPU every ``--sample`` seconds. Reports per user count: calls,
errors (failed agent calls), throughput, p50/p95/p99/max latency of ``search_tools`` (locust's figures), the
attacks and how each was answered, and the server's memory over time (first and last minute, growth per minute
from a least-squares line). Writes ``benchmarks/results/mcp_locust.json``.

    pip install locust   # benchmark-only: not in any ragopt extra
    python benchmarks/mcp_locust.py [--pipeline bm25] [--users 8 32 128] [--minutes 2.5] [--attackers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.mcp_load import cpu_seconds, results, start_server
from ragopt.testing.mcp_http import stop_server

LOCUSTFILE = Path(__file__).with_name("mcp_locustfile.py")
SEARCH = "tools/call search_tools"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """(seconds since start, RSS MB, CPU seconds) of process ``pid`` every ``every`` seconds."""

    def __init__(self, pid: int, every: float):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self._stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.samples.append(
                    (round(time.monotonic() - self.t0, 1), round(rss_mb(self.pid), 1), round(cpu_seconds(self.pid), 2))
                )
            except OSError:
                return
            self._stop_event.wait(self.every)

    def stop(self) -> list[tuple[float, float, float]]:
        self._stop_event.set()
        self.join(timeout=10)
        return self.samples


def memory_summary(samples: list[tuple[float, float, float]]) -> dict:
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    first, last = rss[t <= t[0] + 60], rss[t >= t[-1] - 60]
    slope = float(np.polyfit(t, rss, 1)[0]) * 60 if len(t) > 2 else float("nan")
    return {
        "rss_mb_start": float(rss[0]),
        "rss_mb_end": float(rss[-1]),
        "rss_mb_max": float(rss.max()),
        "rss_mb_first_minute_mean": round(float(first.mean()), 1),
        "rss_mb_last_minute_mean": round(float(last.mean()), 1),
        "rss_mb_per_minute": round(slope, 2),
    }


def read_stats(prefix: Path) -> tuple[dict, dict, list[dict]]:
    rows = list(csv.DictReader(open(f"{prefix}_stats.csv")))
    by_name = {r["Name"]: r for r in rows}
    failures = list(csv.DictReader(open(f"{prefix}_failures.csv"))) if Path(f"{prefix}_failures.csv").exists() else []
    return by_name.get(SEARCH, {}), by_name, failures


def run_locust(url: str, token: str, users: int, seconds: int, attackers: int, queries: Path, prefix: Path) -> int:
    env = {
        **os.environ,
        "RAGOPT_MCP_TOKEN": token,
        "RAGOPT_LOCUST_QUERIES": str(queries),
        "RAGOPT_LOCUST_ATTACKERS": str(attackers),
    }
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or shutil.which("locust")
    if locust is None:
        raise SystemExit("locust is not installed: pip install locust")
    cmd = [
        locust,
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "-u",
        str(users + attackers),
        "-r",
        str(max(8, users // 4)),
        "-t",
        f"{seconds}s",
        "--stop-timeout",
        "10",
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    with open(f"{prefix}.log", "w") as log:
        return subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 120).returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default="toollens")
    ap.add_argument("--pipeline", default="bm25")
    ap.add_argument("--users", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--minutes", type=float, default=2.5, help="per user count (default: 2.5)")
    ap.add_argument("--attackers", type=int, default=2, help="abusive users alongside the agents (default: 2)")
    ap.add_argument("--sample", type=float, default=2.0, help="seconds between memory samples (default: 2)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mcp_locust.json"))
    ap.add_argument("--append", action="store_true", help="add these runs to the --out file's")
    args = ap.parse_args()

    from ragopt.data import load_dataset

    ds = load_dataset(args.tools)
    token = secrets.token_urlsafe(24)
    runs = []
    with tempfile.TemporaryDirectory(prefix="ragopt-mcp-locust-") as tmp:
        queries = Path(tmp) / "queries.txt"
        queries.write_text("\n".join(" ".join(q.split()) for q in ds.queries_for("test").texts) + "\n")
        t0 = time.perf_counter()
        proc, log, url = start_server(str(ds.path), args.pipeline, token, Path(tmp) / "server", 600.0)
        start_s = round(time.perf_counter() - t0, 2)
        sampler = Sampler(proc.pid, args.sample)
        sampler.start()
        try:
            for users in args.users:
                seconds = int(args.minutes * 60)
                load_before = os.getloadavg()
                t_start = time.monotonic() - sampler.t0
                cpu0 = cpu_seconds(proc.pid)
                prefix = Path(tmp) / f"u{users}"
                rc = run_locust(url, token, users, seconds, args.attackers, queries, prefix)
                cpu = cpu_seconds(proc.pid) - cpu0
                t_end = time.monotonic() - sampler.t0
                if proc.poll() is not None:
                    raise SystemExit(f"the server died: {(Path(tmp) / 'server' / 'server.log').read_text()[-2000:]}")
                search, by_name, failures = read_stats(prefix)
                if not search:
                    raise SystemExit(f"locust recorded no search calls: {Path(f'{prefix}.log').read_text()[-3000:]}")
                samples = [s for s in sampler.samples if t_start <= s[0] <= t_end]
                n = int(search["Request Count"])
                attacks = {
                    name.removeprefix("attack: "): {
                        "requests": int(r["Request Count"]),
                        "not_refused_as_expected": int(r["Failure Count"]),
                        "median_ms": float(r["Median Response Time"]),
                    }
                    for name, r in by_name.items()
                    if name.startswith("attack: ")
                }
                handshake = {
                    name: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"])}
                    for name, r in by_name.items()
                    if name in ("initialize", "notifications/initialized", "DELETE session")
                }
                run = {
                    "pipeline": args.pipeline,
                    "tools": ds.path.name,
                    "users": users,
                    "attackers": args.attackers,
                    "seconds": seconds,
                    "calls": n,
                    "errors": int(search["Failure Count"]),
                    "error_rate": round(int(search["Failure Count"]) / max(n, 1), 5),
                    "throughput_rps": round(float(search["Requests/s"]), 1),
                    "p50_ms": float(search["50%"]),
                    "p95_ms": float(search["95%"]),
                    "p99_ms": float(search["99%"]),
                    "max_ms": round(float(search["Max Response Time"]), 1),
                    "handshake": handshake,
                    "attacks": attacks,
                    "failure_examples": [
                        {"name": f["Name"], "error": f["Error"][:300], "count": int(f["Occurrences"])}
                        for f in failures[:8]
                    ],
                    "server_cpu_s": round(cpu, 1),
                    "server_cpu_cores": round(cpu / max(t_end - t_start, 1e-9), 2),
                    "memory": memory_summary(samples) if samples else {},
                    "rss_samples": [[s[0] - samples[0][0], s[1]] for s in samples][:: max(1, len(samples) // 60)],
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                    "locust_exit_code": rc,
                    "server_start_s": start_s,
                }
                runs.append(run)
                mem = run["memory"]
                print(
                    f"{args.pipeline} {users:>3} users, {seconds} s: {n} calls, {run['errors']} errors, "
                    f"{run['throughput_rps']} calls/s, p50 {run['p50_ms']:.0f} ms, p99 {run['p99_ms']:.0f} ms; "
                    f"attacks {sum(a['requests'] for a in attacks.values())} "
                    f"({sum(a['not_refused_as_expected'] for a in attacks.values())} not refused as expected); "
                    f"RSS {mem.get('rss_mb_first_minute_mean')} -> {mem.get('rss_mb_last_minute_mean')} MB "
                    f"({mem.get('rss_mb_per_minute')} MB/min); load {load_before[0]:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            all_samples = sampler.stop()
            stop_server(proc, log)
    out = Path(args.out)
    result = results(
        out,
        args.append,
        runs,
        transport="streamable HTTP (protocol 2025-06-18 handshake, Mcp-Session-Id), 127.0.0.1, bearer token",
        tool="locust (FastHttpUser), headless, one process on the same cores as the server",
        k=5,
    )
    result["rss_mb_whole_run"] = memory_summary(all_samples) if all_samples else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
