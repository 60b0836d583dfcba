"""Bounded load test of `ragopt serve-mcp` over streamable HTTP on loopback.

Starts the server as a subprocess on 127.0.0.1 (a free port, a random bearer token), then for each client
count N opens N MCP client sessions at once and has each send R ``search_tools`` calls back to back (queries
from the tool set, k=5), all under one deadline. Reports throughput (calls / wall time of the calls), latency
percentiles per call, and errors (exceptions, timeouts and ``isError`` results: must be 0). The clients run in
this process, so on a small machine they compete with the server for the same cores.

    python benchmarks/mcp_load.py [--tools toollens] [--pipeline tools] [--clients 8 32] [--requests 50]

``--compare REF`` also serves the ragopt of git revision REF (``git archive`` into a temporary folder), or of
a folder REF that holds a ``ragopt`` package (same index store, same tools), and runs every round against both servers in turn, alternating which goes first, so
the figures compare side by side under the same load (``variant``: ``before`` is REF, ``after`` this tree).
``--compare-pipeline P`` does the same with this tree serving two pipelines: ``before`` is ``--pipeline``,
``after`` is P (e.g. a YAML that changes one stage's backend).
Each run also records the CPU seconds the server process and this client process used, per call.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragopt.testing.mcp_http import start_http_server, stop_server


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checkout(ref: str, dest: Path) -> Path:
    """The ragopt package and named pipelines of git revision ``ref``, extracted under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "ragopt", "pipelines"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def start_server(
    tools: str,
    pipeline: str,
    token: str,
    workdir: Path,
    start_timeout: float,
    src: Path = ROOT,
    extra: tuple[str, ...] = (),
) -> tuple:
    """Serve from the ragopt under ``src`` (``python -m`` puts the working folder first on sys.path)."""
    args = ["--tools", tools, "--pipeline", pipeline, "--host", "127.0.0.1"]
    args += ["--index-dir", os.environ.get("RAGOPT_INDEX_DIR") or str(ROOT / "indexes"), *extra]
    try:
        return start_http_server(args, workdir, {**os.environ, "RAGOPT_MCP_TOKEN": token}, start_timeout, cwd=src)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None


def results(out: Path, append: bool, runs: list[dict], **fields) -> dict:
    """What a results file holds: the date, the CPU count, OMP_NUM_THREADS, ``fields``, then the ``runs`` (after
    those already in ``out`` when ``append``)."""
    previous = json.loads(out.read_text())["runs"] if append and out.is_file() else []
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        **fields,
        "runs": previous + runs,
    }


async def one_round(
    url: str, token: str, n_clients: int, n_requests: int, queries: list[str], k: int, timeout: float
) -> dict:
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    latencies: list[float] = []
    errors: list[str] = []
    done = {"calls": 0}
    go = anyio.Event()
    connected = {"n": 0}
    all_connected = anyio.Event()
    t_connect = time.perf_counter()
    t_start = {"t": 0.0}

    async def client(i: int) -> None:
        try:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
                async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=60) as c:
                    connected["n"] += 1
                    if connected["n"] == n_clients:
                        all_connected.set()
                    await go.wait()
                    for j in range(n_requests):
                        q = queries[(i * n_requests + j) % len(queries)]
                        t0 = time.perf_counter()
                        try:
                            r = await c.call_tool("search_tools", {"query": q, "k": k})
                            if r.is_error or not r.structured_content or "tools" not in r.structured_content:
                                errors.append(f"isError: {r.content[0].text[:200] if r.content else r}")
                        except Exception as e:
                            errors.append(f"{type(e).__name__}: {e}"[:200])
                        latencies.append(time.perf_counter() - t0)
                        done["calls"] += 1
        except Exception as e:
            errors.append(f"session {i}: {type(e).__name__}: {e}"[:200])
            connected["n"] += 1
            if connected["n"] == n_clients:
                all_connected.set()

    timed_out = False
    with anyio.move_on_after(timeout) as scope:
        async with anyio.create_task_group() as tg:
            for i in range(n_clients):
                tg.start_soon(client, i)
            await all_connected.wait()
            connect_s = time.perf_counter() - t_connect
            t_start["t"] = time.perf_counter()
            go.set()
    timed_out = scope.cancelled_caught
    wall = time.perf_counter() - t_start["t"] if t_start["t"] else float("nan")
    total = n_clients * n_requests
    missing = total - done["calls"]
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "clients": n_clients,
        "requests_per_client": n_requests,
        "requests": total,
        "completed": done["calls"],
        "errors": len(errors) + missing,
        "timed_out": timed_out,
        "error_examples": errors[:5],
        "wall_s": round(wall, 3),
        "throughput_rps": round(done["calls"] / wall, 1) if wall == wall and wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "mean_ms": round(float(lat.mean()), 2),
        "max_ms": round(float(lat.max()), 2),
        "connect_s": round(connect_s, 3) if not timed_out or t_start["t"] else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default="toollens", help="tools JSONL or dataset (name or folder) with tools.jsonl")
    ap.add_argument("--pipeline", default="tools")
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--requests", type=int, default=50, help="search_tools calls per client (default: 50)")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=300.0, help="deadline of each round in seconds")
    ap.add_argument("--start-timeout", type=float, default=300.0)
    ap.add_argument(
        "--compare",
        metavar="REF",
        help="also serve git revision REF (or the ragopt in folder REF) and run each round on both",
    )
    ap.add_argument(
        "--compare-pipeline",
        metavar="P",
        help="also serve pipeline P (name or YAML) from this tree and run each round on both (before: --pipeline)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="rounds per client count and server (default: 1)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mcp_load.json"))
    ap.add_argument("--append", action="store_true", help="add these runs to the --out file's")
    args = ap.parse_args()

    import anyio

    from ragopt.data import load_dataset

    tools = args.tools
    queries: list[str] = []
    if not Path(tools).is_file():
        ds = load_dataset(tools)
        tools = str(ds.path)
        queries = list(ds.queries_for("test").texts)
    if not queries:
        queries = ["search the web", "weather forecast", "send an email", "convert currency", "translate text"]
    token = secrets.token_urlsafe(24)
    runs = []
    with tempfile.TemporaryDirectory(prefix="ragopt-mcp-load-") as tmp:
        variants = {"after": (ROOT, args.pipeline)}
        if args.compare:
            before = Path(args.compare) if (Path(args.compare) / "ragopt").is_dir() else None
            before = before or checkout(args.compare, Path(tmp) / "before")
            variants = {"before": (before, args.pipeline), "after": (ROOT, args.pipeline)}
        elif args.compare_pipeline:
            variants = {"before": (ROOT, args.pipeline), "after": (ROOT, args.compare_pipeline)}
        comparing = bool(args.compare or args.compare_pipeline)
        servers: dict[str, tuple] = {}
        try:
            for name, (src, pipeline) in variants.items():
                t0 = time.perf_counter()
                proc, log, url = start_server(
                    tools, pipeline, token, Path(tmp) / f"server-{name}", args.start_timeout, src
                )
                servers[name] = (proc, log, url, round(time.perf_counter() - t0, 2))
                anyio.run(one_round, url, token, 1, 5, queries, args.k, args.timeout)  # warm-up
            names = list(servers)
            for n in args.clients:
                for rep in range(args.repeat):
                    order = names if (rep + args.clients.index(n)) % 2 == 0 else names[::-1]
                    for name in order:
                        proc, _, url, start_s = servers[name]
                        load_before = os.getloadavg()
                        cpu0, client0 = cpu_seconds(proc.pid), time.process_time()
                        r = anyio.run(one_round, url, token, n, args.requests, queries, args.k, args.timeout)
                        server_cpu, client_cpu = cpu_seconds(proc.pid) - cpu0, time.process_time() - client0
                        r.update(
                            pipeline=args.pipeline,
                            tools=Path(tools).name,
                            served_pipeline=variants[name][1],
                            variant=name if comparing else "current",
                            ref=args.compare if args.compare and name == "before" else "working tree",
                            repeat=rep,
                            loadavg_1min_before=round(load_before[0], 2),
                            loadavg_1min_after=round(os.getloadavg()[0], 2),
                            server_cpu_ms_per_call=round(1000 * server_cpu / max(r["completed"], 1), 2),
                            client_cpu_ms_per_call=round(1000 * client_cpu / max(r["completed"], 1), 2),
                            server_start_s=start_s,
                        )
                        runs.append(r)
                        print(
                            f"{variants[name][1]} {r['variant']:>7} {n:>3} clients x {args.requests}: "
                            f"{r['throughput_rps']:.1f} calls/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                            f"errors {r['errors']}, server CPU {r['server_cpu_ms_per_call']:.2f} ms/call, "
                            f"client CPU {r['client_cpu_ms_per_call']:.2f} ms/call, load {load_before[0]:.2f}"
                            + (" (TIMED OUT)" if r["timed_out"] else ""),
                            file=sys.stderr,
                        )
        finally:
            for proc, log, _, _ in servers.values():
                stop_server(proc, log)
    out = Path(args.out)
    result = results(out, args.append, runs, transport="streamable HTTP, 127.0.0.1, bearer token", k=args.k)
    if any(r.get("variant") == "before" for r in result["runs"]):
        result["ratios"] = ratios(result["runs"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)
    if any(r["errors"] for r in runs):
        sys.exit(1)


def ratios(runs: list[dict]) -> list[dict]:
    """after / before per pipeline and client count, over the mean of the rounds of each."""
    out = []
    keys = sorted({(r["pipeline"], r["clients"]) for r in runs if r.get("variant") in ("before", "after")})
    for pipeline, n in keys:
        sel = {
            v: [r for r in runs if r["pipeline"] == pipeline and r["clients"] == n and r.get("variant") == v]
            for v in ("before", "after")
        }
        if not sel["before"] or not sel["after"]:
            continue
        mean = lambda v, key: float(np.mean([r[key] for r in sel[v]]))
        out.append(
            {
                "pipeline": pipeline,
                "clients": n,
                "ref": sel["before"][0]["ref"],
                "throughput_before": round(mean("before", "throughput_rps"), 1),
                "throughput_after": round(mean("after", "throughput_rps"), 1),
                "throughput_ratio": round(mean("after", "throughput_rps") / mean("before", "throughput_rps"), 2),
                "p99_ms_before": round(mean("before", "p99_ms"), 1),
                "p99_ms_after": round(mean("after", "p99_ms"), 1),
                "server_cpu_ms_per_call_before": round(mean("before", "server_cpu_ms_per_call"), 2),
                "server_cpu_ms_per_call_after": round(mean("after", "server_cpu_ms_per_call"), 2),
            }
        )
    return out


if __name__ == "__main__":
    main()
