"""The tool service with the new stages (issue 13 part 7): a cross-encoder fine-tuned on the tool sets' training
queries, and an LLM query rewrite, on top of ``pipelines/tools.yaml``; selection recall on held-out queries with
the p50 latency of one call.

    OMP_NUM_THREADS=1 RAGOPT_INDEX_DIR=/work/ragbench-store python benchmarks/tools_tune.py train -d toollens
    python benchmarks/tools_tune.py rerank -d toollens --depths 10,20,50
    python benchmarks/tools_tune.py fuse -d toollens --depths 10,20
    python benchmarks/tools_tune.py rewrite -d toollens --queries 200 --depths 20
    python benchmarks/tools_tune.py dense -d toollens --depths 10,20

``train`` fine-tunes all-MiniLM-L6-v2 as a cross-encoder (``ragopt.training.train_cross_encoder``) on a seeded 60%
of the set's judged queries, hard negatives from the ``tools`` pipeline's top 30; the other 40% are held out (their
ids are stored in the artifact). ``rerank`` scores ``tools`` alone and ``tools >> cross-encoder`` (top ``depth``) on
(a seeded sample of) those held-out queries, and times single-query calls of both pipelines (the service's unit of
work; the cross-encoder's pair cache off, so every call computes). ``rewrite`` does the same for
``pipelines/tools_rewrite.yaml`` (SmolLM2 names the capability a task needs; rewrites cached, so latency is
measured on queries not rewritten before). ``fuse`` scores ``tools`` fused with its own cross-encoder reranking
(RRF k=60, and a sum of per-query z-scores: ``pipelines/tools_ce.yaml``). ``dense`` fine-tunes the pipeline's dense
encoder on the same training queries (``ragopt train bi-encoder``) and scores ``tools`` with it, alone and fused
with the cross-encoder's reranking. Figures go to ``benchmarks/results/tools_tune.json`` under the dataset,
then the arm.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import load, machine_info, merge_result, store

RESULTS = Path(__file__).resolve().parent / "results" / "tools_tune.json"
METRICS = ("recall@1", "recall@3", "recall@5", "ndcg@5", "mrr@10")
PACKAGES = ("ragopt", "torch", "sentence-transformers", "transformers", "faiss-cpu", "bm25s")


def train(args) -> Any:
    from ragopt.training.cross_encoder import train_cross_encoder

    t = time.perf_counter()
    art = train_cross_encoder(
        "all-MiniLM-L6-v2",
        args.dataset,
        train_fraction=0.6,
        seed=0,
        negatives_pipeline="tools",
        negatives_per_query=4,
        negatives_depth=30,
        epochs=args.epochs,
        max_length=args.max_length,
        max_queries=args.max_queries,
        store=store(),
        progress=True,
    )
    m = art.manifest
    print(f"{'trained' if art.created else 'reused'} {art.path} in {time.perf_counter() - t:.0f} s", flush=True)
    entry = {
        "artifact": art.path.name,
        "base": "all-MiniLM-L6-v2",
        "negatives": "tools pipeline top 30, 4 per query",
        **{k: m.get(k) for k in ("n_train_queries", "n_heldout_queries", "n_pairs", "train_seconds", "device")},
        "epochs": args.epochs,
        "max_length": args.max_length,
        "max_queries": args.max_queries,
        "load": load(),
    }
    _write(args, "cross_encoder_training", entry)
    return art


def _write(args, arm: str, entry: dict[str, Any]) -> None:
    """One arm's figures under the dataset; a ``--tag`` (another training recipe) keeps them beside the default's."""
    machine = {**machine_info(PACKAGES), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    key = f"{arm} [{args.tag}]" if args.tag else arm
    merge_result(RESULTS, args.dataset, {**entry, "machine": machine}, key=key)


def heldout_all(art) -> list[str]:
    from ragopt.training.cross_encoder import heldout_query_ids

    return sorted(heldout_query_ids(art.path))


def heldout(args, art) -> list[str]:
    """The held-out query ids, or a seeded sample of ``--queries`` of them."""
    ids = heldout_all(art)
    if args.queries and args.queries < len(ids):
        rng = np.random.default_rng(0)
        ids = sorted(rng.choice(ids, size=args.queries, replace=False).tolist())
    return ids


def tools_stages(encoder: str | None = None) -> list[dict[str, Any]]:
    """The stage configs of ``pipelines/tools.yaml`` (with ``encoder`` as its dense stage's model if given)."""
    import copy

    from ragopt.pipeline_io import read_yaml, resolve_pipeline_path

    steps = copy.deepcopy(list(read_yaml(resolve_pipeline_path("tools"))["pipeline"]))
    if encoder is not None:
        dense = [s for s in steps[0]["inputs"] if s["type"] == "dense"]
        assert len(dense) == 1, "pipelines/tools.yaml: expected one dense input to its fusion"
        dense[0]["encoder"]["model"] = encoder
    return steps


def tools_with(*stages: dict[str, Any], encoder: str | None = None):
    """``pipelines/tools.yaml`` with ``stages`` appended (or, for a ``rewrite`` stage, put first)."""
    from ragopt.pipeline_io import pipeline_from_dict

    steps = tools_stages(encoder)
    for s in stages:
        steps = [s, *steps] if s["type"] == "rewrite" else [*steps, s]
    return pipeline_from_dict({"pipeline": steps}, source="tools_tune")


def ce_stage(path: Path, depth: int, cache: bool = True) -> dict[str, Any]:
    return {
        "type": "cross_encoder",
        "model": str(path),
        "depth": depth,
        "batch_size": 64,
        "max_length": 128,
        "device": "cpu",
        "with_title": True,
        "cache": cache,
    }


def quality(pipe, ds, ids: list[str], st) -> tuple[dict[str, float], dict[str, dict[str, float]], float]:
    from ragopt.evaluation.metrics import evaluate
    from ragopt.pipeline import run_batched
    from ragopt.types import Batch

    queries = ds.queries_for("test")
    keep = set(ids)
    queries = queries[[i for i, q in enumerate(queries.ids) if q in keep]]
    qrels = ds.qrels("test")
    qrels = {q: qrels[q] for q in queries.ids}
    pipe.fit(ds.corpus, st, progress=True)
    t = time.perf_counter()
    out = run_batched(pipe, Batch(queries), batch_size=256, progress=True)
    seconds = time.perf_counter() - t
    res = evaluate(out.to_run(), qrels, METRICS)
    return res.metrics, res.per_query, seconds


def latency(pipe, ds, ids: list[str], n: int) -> dict[str, float]:
    """Milliseconds per single-query call of a fitted pipeline, over ``n`` held-out queries after two warm-up calls."""
    from ragopt.types import Batch

    queries = ds.queries_for("test")
    pos = {q: i for i, q in enumerate(queries.ids)}
    rows = [pos[q] for q in ids[: n + 2]]
    ms = []
    for j, r in enumerate(rows):
        t = time.perf_counter()
        pipe.transform(Batch(queries[[r]]))
        if j >= 2:
            ms.append(1000 * (time.perf_counter() - t))
    return {
        "p50_ms": round(float(np.median(ms)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "calls": len(ms),
    }


def entry_of(ids: list[str], metrics: dict[str, float], seconds: float, **extra: Any) -> dict[str, Any]:
    """One arm's figures as written to the results."""
    out = {"n_queries": len(ids), "metrics": {k: round(v, 4) for k, v in metrics.items()}}
    return {**out, "batch_seconds": round(seconds, 2), **extra, "load": load()}


def rerank(args) -> None:
    from ragopt.data import load_dataset

    art = train(args)
    ds, st = load_dataset(args.dataset), store()
    ids = heldout(args, art)
    print(f"{args.dataset}: {len(ids)} held-out queries", flush=True)
    arms: dict[str, int | None] = {"tools": None, **{f"tools >> ce@{d}": d for d in args.depths}}
    for name, depth in arms.items():
        extra = () if depth is None else (ce_stage(art.path, depth),)
        m, _, s = quality(tools_with(*extra), ds, ids, st)
        # timed without the pair cache, so every call computes its scores
        timing = tools_with(*(() if depth is None else (ce_stage(art.path, depth, cache=False),)))
        timing.fit(ds.corpus, st)
        entry = entry_of(ids, m, s, latency=latency(timing, ds, ids, args.latency_calls))
        print(f"  {name}: {entry['metrics']} p50 {entry['latency']['p50_ms']} ms", flush=True)
        _write(args, name, entry)


def fused(depth: int, ce_path: Path, fusion: str, cache: bool = True, encoder: str | None = None):
    """The tools pipeline's list fused with its own cross-encoder reranking (``rrf``: k=60; ``weighted``: z-scores,
    equal weights), so the first stage's order still counts where the cross-encoder is unsure."""
    from ragopt.pipeline_io import pipeline_from_dict

    base = tools_stages(encoder)
    both = [
        {"type": "pipeline", "stages": base},
        {"type": "pipeline", "stages": [*base, ce_stage(ce_path, depth, cache)]},
    ]
    spec = {"type": fusion, "inputs": both, "top_k": 50}
    spec.update({"k": 60} if fusion == "rrf" else {"normalize": "zscore"})
    return pipeline_from_dict({"pipeline": [spec]}, source="tools_tune")


def fuse(args) -> None:
    """``tools`` fused with ``tools >> cross-encoder`` at each depth (the pair scores come from the cache)."""
    from ragopt.data import load_dataset

    art = train(args)
    ds, st = load_dataset(args.dataset), store()
    ids = heldout(args, art)
    for d in args.depths:
        for fusion in ("rrf", "weighted"):
            name = f"{fusion}(tools, tools >> ce@{d})"
            m, _, s = quality(fused(d, art.path, fusion), ds, ids, st)
            timing = fused(d, art.path, fusion, cache=False)
            timing.fit(ds.corpus, st)
            entry = entry_of(ids, m, s, latency=latency(timing, ds, ids, args.latency_calls))
            print(f"  {name}: {entry['metrics']} p50 {entry['latency']['p50_ms']} ms", flush=True)
            _write(args, name, entry)


def train_dense(args) -> Any:
    """The tools pipeline's dense encoder fine-tuned on the same training queries (``ragopt train bi-encoder``:
    in-batch and one mined hard negative per positive from the ``tools`` pipeline's top 30, 1 epoch)."""
    from ragopt.training.bi_encoder import train_bi_encoder

    t = time.perf_counter()
    art = train_bi_encoder(
        "all-MiniLM-L6-v2",
        args.dataset,
        train_fraction=0.6,
        seed=0,
        negatives_pipeline="tools",
        negatives_per_query=1,
        negatives_depth=30,
        epochs=args.dense_epochs,
        max_queries=args.dense_max_queries,
        device="cpu",
        store=store(),
        progress=True,
    )
    m = art.manifest
    print(f"{'trained' if art.created else 'reused'} {art.path} in {time.perf_counter() - t:.0f} s", flush=True)
    keys = ("n_train_queries", "n_heldout_queries", "n_pairs", "steps", "train_seconds", "masked_in_batch_positives")
    entry = {
        "artifact": art.path.name,
        "base": "all-MiniLM-L6-v2",
        "negatives": "tools pipeline top 30, 1 per positive, plus in-batch",
        **{k: m.get(k) for k in keys},
        "epochs": args.dense_epochs,
        "max_queries": args.dense_max_queries,
        "load": load(),
    }
    _write(args, "bi_encoder_training", entry)
    return art


def dense(args) -> None:
    """``tools`` with its dense encoder fine-tuned, alone and fused with the cross-encoder's reranking (the same
    held-out queries: both recipes split the judged queries with seed 0 and a 60% training share)."""
    from ragopt.data import load_dataset
    from ragopt.training.bi_encoder import heldout_query_ids as dense_heldout

    ce = train(args)
    bi = train_dense(args)
    assert sorted(dense_heldout(bi.path)) == heldout_all(ce), "the two recipes must hold out the same queries"
    enc = str(bi.path / "model")
    ds, st = load_dataset(args.dataset), store()
    ids = heldout(args, ce)
    arms = {"tools (fine-tuned dense)": tools_with(encoder=enc)}
    for d in args.depths:
        arms[f"weighted(tools, tools >> ce@{d}) (fine-tuned dense)"] = fused(d, ce.path, "weighted", encoder=enc)
    for name, pipe in arms.items():
        m, _, s = quality(pipe, ds, ids, st)
        if "ce@" in name:
            d = int(name.split("ce@")[1].split(")")[0])
            timing = fused(d, ce.path, "weighted", cache=False, encoder=enc)
        else:
            timing = tools_with(encoder=enc)
        timing.fit(ds.corpus, st)
        entry = entry_of(ids, m, s, latency=latency(timing, ds, ids, args.latency_calls))
        print(f"  {name}: {entry['metrics']} p50 {entry['latency']['p50_ms']} ms", flush=True)
        _write(args, name, entry)


def rewrite(args) -> None:
    from ragopt.data import load_dataset

    art = train(args)
    ds, st = load_dataset(args.dataset), store()
    ids = heldout(args, art)
    stage = {
        "type": "rewrite",
        "llm": {"type": "transformers", "model": "smollm2-135m-instruct", "device": "cpu"},
        "template": "capability",
        "mode": "append",
        "max_new_tokens": 32,
        "chat": True,
    }
    arms = {"tools (rewrite sample)": tools_with(), "rewrite >> tools": tools_with(stage)}
    if args.depths:
        d = args.depths[0]
        arms[f"rewrite >> tools >> ce@{d}"] = tools_with(stage, ce_stage(art.path, d))
    for name, pipe in arms.items():
        m, _, s = quality(pipe, ds, ids, st)
        extra = {}
        if name == "rewrite >> tools":  # per call, on held-out queries outside the sample (not in the LLM cache)
            rest = sorted(set(heldout_all(art)) - set(ids))
            pipe.fit(ds.corpus, st)
            extra["latency"] = latency(pipe, ds, rest, args.latency_calls)
        entry = entry_of(ids, m, s, **extra)
        print(f"  {name}: {entry['metrics']} {entry.get('latency', '')}", flush=True)
        _write(args, name, entry)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("train", "rerank", "rewrite", "fuse", "dense"))
    ap.add_argument("--dataset", "-d", default="toollens")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--max-queries", type=int, default=None, help="train on at most N of the training queries")
    ap.add_argument("--queries", type=int, default=None, help="a seeded sample of the held-out queries")
    ap.add_argument("--depths", type=lambda s: [int(x) for x in s.split(",") if x], default=[10, 20, 50])
    ap.add_argument("--latency-calls", type=int, default=50)
    ap.add_argument("--dense-epochs", type=int, default=1, help="dense: epochs of the bi-encoder fine-tune")
    ap.add_argument("--dense-max-queries", type=int, default=None, help="dense: cap on its training queries")
    ap.add_argument(
        "--tag",
        default="",
        help="suffix for the result keys, e.g. '4000q' when --max-queries/--epochs differ from the default run's",
    )
    args = ap.parse_args()
    {"train": train, "rerank": rerank, "rewrite": rewrite, "fuse": fuse, "dense": dense}[args.command](args)


if __name__ == "__main__":
    main()
