"""Where a `search_tools` call's time goes, in CPU seconds (robust to other jobs on the machine, unlike wall time).

1. The request path, one query at a time, in process: checking and cutting the query, each stage of the
   pipeline (BM25, the dense retriever with its query encoding, fusion), building the result, serialising it,
   and the MCP SDK around it (JSON-RPC, argument validation, result model) measured as a call through the SDK's
   in-memory client minus the service's own search.
2. Query encoding per query by batch size: length-sorted batches of 1..64 over the same 64 queries, and the
   same 64 in one call (what the service did before: every waiting query in one encoder batch).

    OMP_NUM_THREADS=1 python benchmarks/mcp_profile.py [--tools toollens] [--pipeline tools] [-n 100]

Writes ``benchmarks/results/mcp_profile.json``. The HTTP stack (uvicorn, Starlette, the SDK's streamable HTTP
transport) is not in part 1: benchmarks/mcp_load.py reports the server's CPU per call over HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_ms_per(fn, items: list, reps: int = 1) -> float:
    """CPU milliseconds (this process) per item of ``fn(item)`` over ``items``."""
    t = time.process_time()
    for _ in range(reps):
        for it in items:
            fn(it)
    return round(1000 * (time.process_time() - t) / (reps * len(items)), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default="toollens")
    ap.add_argument("--pipeline", default="tools")
    ap.add_argument("-n", type=int, default=100, help="queries for part 1 (default: 100)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mcp_profile.json"))
    args = ap.parse_args()

    import anyio

    from ragopt.config import walk
    from ragopt.data import load_dataset
    from ragopt.mcp.server import _text_result, build_server
    from ragopt.mcp.service import ToolService, cut_query
    from ragopt.pipeline_io import load_pipeline
    from ragopt.store import ArtifactStore

    ds = load_dataset(args.tools)
    queries = list(ds.queries_for("test").texts)
    store = ArtifactStore(os.environ.get("RAGOPT_INDEX_DIR") or ROOT / "indexes")
    svc = ToolService(load_pipeline(args.pipeline), tools=str(ds.path), store=store)
    pipe = svc._index.pipeline
    qs = queries[: args.n]
    path: dict[str, float] = {}
    path["check_and_cut_query"] = cpu_ms_per(lambda q: cut_query(svc.check_query(q, 5)[0], svc.query_words), qs, 10)
    path["pipeline_search"] = cpu_ms_per(lambda q: pipe.search([q]), qs)
    comps = list(walk(pipe))
    retrievers = [c for c in comps if getattr(c, "requires", None) == frozenset({"queries"}) and hasattr(c, "search")]
    for r in retrievers:
        if r is not pipe and r.type_name != "pipeline":
            path[f"  {r.type_name}.search"] = cpu_ms_per(lambda q, r=r: r.search([q]), qs)
    encoders = [c for c in comps if hasattr(c, "encode") and hasattr(c, "load_model")]
    for e in encoders:
        path[f"    {e.type_name}.encode (query)"] = cpu_ms_per(lambda q, e=e: e.encode([q], kind="query"), qs)
    ranked = {q: pipe.search([q]).ranked(0) for q in qs}
    reqs = {q: svc._request(q, 5) for q in qs}
    path["build_result"] = cpu_ms_per(lambda q: reqs[q].result(ranked[q]), qs, 10)
    results = {q: reqs[q].result(ranked[q]) for q in qs}
    path["serialise_result"] = cpu_ms_per(lambda q: _text_result(results[q]), qs, 10)
    path["service_search"] = cpu_ms_per(lambda q: svc.search(q, 5), qs)

    async def through_sdk() -> float:
        from mcp import Client

        async with Client(build_server(svc)) as c:
            await c.call_tool("search_tools", {"query": qs[0], "k": 5})
            t = time.process_time()
            for q in qs:
                await c.call_tool("search_tools", {"query": q, "k": 5})
            return 1000 * (time.process_time() - t) / len(qs)

    path["mcp_sdk_call_in_memory"] = round(anyio.run(through_sdk), 3)
    path["mcp_sdk_overhead"] = round(path["mcp_sdk_call_in_memory"] - path["service_search"], 3)

    encoding: dict[str, float] = {}
    if encoders:
        enc = encoders[0]
        sample = sorted(queries[200:264], key=len)
        for bs in (1, 2, 4, 8, 16, 32, 64):
            chunks = [sample[i : i + bs] for i in range(0, len(sample), bs)]
            encoding[f"sorted batches of {bs}"] = round(
                cpu_ms_per(lambda ch: enc.encode(ch, kind="query"), chunks, 2) * len(chunks) / len(sample), 2
            )
        mixed = queries[200:264]
        encoding["one call of 64 (unsorted)"] = round(
            cpu_ms_per(lambda ch: enc.encode(ch, kind="query"), [mixed], 2) / 64, 2
        )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "pipeline": args.pipeline,
        "tools": ds.path.name,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "request_path_cpu_ms_per_query": path,
        "query_encoding_cpu_ms_per_query": encoding,
    }
    for k, v in path.items():
        print(f"{k:<40} {v:>8.3f} ms", file=sys.stderr)
    for k, v in encoding.items():
        print(f"encode, {k:<32} {v:>8.2f} ms/query", file=sys.stderr)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
