"""Cross-encoder reranking: throughput of the ragopt stage against raw ``CrossEncoder.predict``, and the quality
of a cross-encoder trained with ``ragopt train cross-encoder``.

``throughput``: the same (query, passage) pairs (BM25 candidates of nq-open-oracle-dev queries, title + text)
scored by ``CrossEncoder.predict`` (one call, batch size B) and by the stage's ``score_pairs`` with the pair
cache off and with a cold cache (a fresh SQLite file per sample: lookups and inserts included), on the
same model object, in interleaved samples (alternating order); medians and the ratio stage / raw pairs/s
(target >= 0.95), from wall time and from process CPU time (steadier on a shared machine). The model is a
trained artifact (``--model``) or, by default, a cross-encoder made from the packaged all-MiniLM-L6-v2 with
a seeded random head (speed does not depend on the head's weights).

``sweep``: the training recipes compared (on a GPU) to choose the defaults: each trained on nq-open-oracle-dev,
chosen on half of the held-out queries, reported on both halves, the chosen one cross-domain.

``precision``: the CPU backends of the stage (torch fp32, ONNX Runtime fp32, ONNX Runtime int8 weights) on a
trained model: nDCG@10 of BM25 >> CE per dataset against torch fp32 (int8 must stay within 0.005) and
pairs/s on one sample of pairs (interleaved, cache off). ``--weight-bits 8 7`` runs the int8 variant once per
int8 weight width (``$RAGOPT_ONNX_INT8_WEIGHT_BITS``; without it, this machine's choice); ``--section`` names the
results section (default ``precision``).

``quality``: train (or reuse) a cross-encoder on nq-open-oracle-dev's training queries, then nDCG@10 of
BM25 alone vs BM25 >> cross-encoder on the held-out queries, and cross-domain on scifact and cranfield.

Each merges its section into ``benchmarks/results/rerank.json``; figures and notes in ``benchmarks/RERANK.md``.

    python benchmarks/rerank.py throughput [--model PATH] [--pairs 128] [--batch-size 32] [--repeats 5]
    python benchmarks/rerank.py sweep --device cuda [--budget 200]
    python benchmarks/rerank.py quality [--depth 100] [--cross-depth 100] [--max-queries N] [--epochs 3] [--lr 1e-4]
    python benchmarks/rerank.py precision [--model ARTIFACT] [--datasets nq-open-oracle-dev cranfield]
        [--weight-bits 8 7] [--section precision]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmark this checkout, installed or not
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "rerank.json"

from benchmarks._common import machine_info


def _merge(section: str, value: Any) -> None:
    from ragopt._io import atomic_write_text

    data = json.loads(RESULTS.read_text("utf-8")) if RESULTS.is_file() else {}
    data[section] = value
    atomic_write_text(RESULTS, json.dumps(data, indent=1) + "\n")


def _env() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    from ragopt.rerankers.onnx_backend import quantization_scheme

    info = machine_info(["onnxruntime", "onnx"])
    return {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": torch.get_num_threads(),
        "cpu": info["cpu"],
        "cpu_flags": info["cpu_flags"],
        "int8_scheme": quantization_scheme(),
        **info["versions"],
        "torch": torch.__version__,
        "sentence_transformers": md.version("sentence-transformers"),
        "transformers": md.version("transformers"),
    }


def _default_model(folder: Path) -> Path:
    """A cross-encoder made from the packaged all-MiniLM-L6-v2 (random seeded head), saved to ``folder``."""
    import torch
    from sentence_transformers import CrossEncoder

    from ragopt.encoders import resolve_model

    torch.manual_seed(0)
    CrossEncoder(str(resolve_model("all-MiniLM-L6-v2")[1]), num_labels=1, device="cpu").save(str(folder))
    return folder


def _pairs(n: int, per_query: int) -> tuple[list[str], list[str]]:
    from ragopt.data import load_dataset
    from ragopt.pipeline_io import load_pipeline
    from ragopt.types import Batch

    ds = load_dataset("nq-open-oracle-dev")
    bm25 = load_pipeline("bm25").fit(ds.corpus, progress=False)
    queries = ds.queries_for("test")[: (n + per_query - 1) // per_query]
    batch = bm25.transform(Batch(queries)).cut(per_query)
    qs, ps = [], []
    for r, text in enumerate(queries.texts):
        for t in batch.texts(r):
            qs.append(text)
            ps.append(t)
    return qs[:n], ps[:n]


Samples = dict[str, list[float]]


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[Samples, Samples]:
    """Wall and process-CPU seconds of ``repeats`` calls of each function, alternating their order by round.
    CPU seconds (all threads of this process) are the steadier figure on a shared machine."""
    names = list(fns)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return wall, cpu


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ragopt.rerankers.cross_encoder import CrossEncoderReranker
    from ragopt.store import ArtifactStore
    from ragopt.types import Corpus

    tmp = Path(tempfile.mkdtemp(prefix="ragopt-rerank-bench-"))
    model_path = Path(args.model) if args.model else _default_model(tmp / "model")
    qs, ps = _pairs(args.pairs, args.per_query)
    stage = CrossEncoderReranker(
        model=str(model_path), batch_size=args.batch_size, max_length=args.max_length, device="cpu", cache=False
    )
    model = stage.load_model()  # the very object the stage uses
    pairs = list(zip(qs, ps))
    ident = torch.nn.Identity()

    def raw() -> np.ndarray:
        return model.predict(pairs, batch_size=args.batch_size, activation_fn=ident, show_progress_bar=False)

    cold_n = [0]

    def cold() -> np.ndarray:
        cold_n[0] += 1
        s = stage.clone(cache=True).fit(Corpus([], []), ArtifactStore(tmp / f"store-{cold_n[0]}"))
        return s.score_pairs(qs, ps)

    ref, ours = raw(), stage.score_pairs(qs, ps)  # warm-up, and the outputs must agree
    max_diff = float(np.max(np.abs(ref - ours)))
    wall, cpu = _interleaved(
        {"predict": raw, "stage (cache off)": lambda: stage.score_pairs(qs, ps), "stage (cold cache)": cold},
        args.repeats,
    )
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    res = {
        "env": _env(),
        "model": "trained artifact" if args.model else "all-MiniLM-L6-v2 + random head",
        "n_pairs": len(pairs),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "max_abs_score_diff": max_diff,
        "wall_seconds": {k: [round(x, 3) for x in v] for k, v in wall.items()},
        "cpu_seconds": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        "pairs_per_s": {k: round(len(pairs) / v, 2) for k, v in med.items()},
        "ratio_vs_predict": {k: round(med["predict"] / v, 4) for k, v in med.items() if k != "predict"},
        "pairs_per_cpu_s": {k: round(len(pairs) / v, 2) for k, v in med_cpu.items()},
        "cpu_ratio_vs_predict": {k: round(med_cpu["predict"] / v, 4) for k, v in med_cpu.items() if k != "predict"},
        "target": 0.95,
    }
    print(
        json.dumps(
            {
                k: res[k]
                for k in (
                    "pairs_per_s",
                    "ratio_vs_predict",
                    "pairs_per_cpu_s",
                    "cpu_ratio_vs_predict",
                    "max_abs_score_diff",
                )
            },
            indent=1,
        )
    )
    _merge("throughput", res)
    return res


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from ragopt.store import ArtifactStore
    from ragopt.training.cross_encoder import compare_reranking, heldout_query_ids, train_cross_encoder

    store = ArtifactStore(args.index_dir) if args.index_dir else ArtifactStore()
    t0 = time.perf_counter()
    art = train_cross_encoder(
        args.base,
        "nq-open-oracle-dev",
        train_fraction=args.train_fraction,
        seed=args.seed,
        negatives_per_query=args.negatives,
        negatives_depth=30,
        epochs=args.epochs,
        batch_size=16,
        lr=args.lr,
        max_length=256,
        max_queries=args.max_queries,
        store=store,
        progress=not args.no_progress,
    )
    m = art.manifest
    res: dict[str, Any] = {
        "env": _env(),
        "artifact": str(art.path),
        "reused": not art.created,
        "training": {
            k: m.get(k)
            for k in (
                "n_train_queries",
                "n_heldout_queries",
                "n_pairs",
                "mine_seconds",
                "train_seconds",
                "steps",
                "device",
            )
        },
        "settings": m["spec"]["train"]
        | {
            "negatives": m["spec"]["negatives"]["per_query"],
            "train_fraction": args.train_fraction,
            "max_queries": args.max_queries,
            "seed": args.seed,
        },
        "results": {},
    }
    print(
        f"cross-encoder {art.path} ({'trained' if art.created else 'reused'}, {time.perf_counter() - t0:.0f}s)",
        file=sys.stderr,
    )
    held = heldout_query_ids(art.path)
    if args.heldout_limit:
        held = held[: args.heldout_limit]
    runs = [("nq-open-oracle-dev (held-out)", "nq-open-oracle-dev", held, args.depth)]
    runs += [(name, name, None, args.cross_depth) for name in args.cross]
    from ragopt.rerankers.cross_encoder import CrossEncoderReranker

    for label, name, qids, depth in runs:
        ce = CrossEncoderReranker(
            model=str(art.path), depth=depth, batch_size=args.batch_size, precision=args.precision
        )
        r = compare_reranking(
            ce,
            name,
            query_ids=qids,
            depth=depth,
            metrics=("ndcg@10", "recall@100"),
            store=store,
            progress=not args.no_progress,
        )
        r.pop("per_query")
        res["results"][label] = r
        print(
            f"{label}: {r['n_queries']} queries, depth {depth}: nDCG@10 {r['first_stage']['ndcg@10']:.4f} -> "
            f"{r['reranked']['ndcg@10']:.4f} ({r['gain']['ndcg@10']:+.4f}); {r['stats']['counts']}",
            file=sys.stderr,
        )
        _merge("quality", res)
    return res


VARIANTS = (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"))


@contextlib.contextmanager
def _weight_bits(bits: int | None):
    """``$RAGOPT_ONNX_INT8_WEIGHT_BITS`` set to ``bits`` (None: left as it is) for the duration."""
    from ragopt._onnx import WEIGHT_BITS_ENV

    old = os.environ.get(WEIGHT_BITS_ENV)
    if bits is not None:
        os.environ[WEIGHT_BITS_ENV] = str(bits)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(WEIGHT_BITS_ENV, None)
        else:
            os.environ[WEIGHT_BITS_ENV] = old


def precision(args: argparse.Namespace) -> dict[str, Any]:
    """The CPU backends of the cross_encoder stage against the torch fp32 reference: nDCG@10 of BM25 >> CE on
    each dataset (int8 is acceptable only within 0.005 of fp32) and pairs/s on one sample of pairs."""
    from ragopt.rerankers.cross_encoder import CrossEncoderReranker
    from ragopt.store import ArtifactStore
    from ragopt.training.cross_encoder import compare_reranking, heldout_query_ids

    model = args.model
    if model is None:
        data = json.loads(RESULTS.read_text("utf-8")) if RESULTS.is_file() else {}
        model = data.get("quality", {}).get("artifact")
        if not model or not Path(model).exists():
            raise SystemExit("precision: pass --model (a trained cross-encoder artifact); none from `quality` here")
    store = ArtifactStore(args.index_dir) if args.index_dir else ArtifactStore()
    res: dict[str, Any] = {
        "env": _env(),
        "model": str(model),
        "depth": args.depth,
        "tolerance": 0.005,
        "quality": {},
        "speed": {},
    }

    def stage(backend: str, prec: str, **kw: Any) -> Any:
        return CrossEncoderReranker(
            model=str(model),
            depth=args.depth,
            batch_size=args.batch_size,
            device="cpu",
            backend=backend,
            precision=prec,
            **kw,
        )

    variants = [(b, p, None) for b, p in VARIANTS if p != "int8"] + [
        ("onnx", "int8", bits) for bits in (args.weight_bits or [None])
    ]

    def key(backend: str, prec: str, bits: int | None) -> str:
        return f"{backend} {prec}" + (f" {bits}-bit" if bits else "")

    res["weight_bits"] = args.weight_bits
    runs = []
    for name in args.datasets:
        qids = None
        if name == "nq-open-oracle-dev":
            qids = heldout_query_ids(model)[: args.heldout_limit] if args.heldout_limit else heldout_query_ids(model)
        runs.append((name, qids))
    for name, qids in runs:
        row: dict[str, Any] = {}
        for backend, prec, bits in variants:
            with _weight_bits(bits):  # read when the stage exports and keys its scores
                r = compare_reranking(
                    stage(backend, prec),
                    name,
                    query_ids=qids,
                    depth=args.depth,
                    metrics=("ndcg@10",),
                    store=store,
                    progress=not args.no_progress,
                )
            row[key(backend, prec, bits)] = {
                "ndcg@10": r["reranked"]["ndcg@10"],
                "bm25": r["first_stage"]["ndcg@10"],
                "n_queries": r["n_queries"],
                "rerank_seconds": r["seconds"]["rerank"],
                "counts": r["stats"]["counts"],
            }
            print(
                f"{name} {key(backend, prec, bits)}: nDCG@10 {r['reranked']['ndcg@10']:.4f} (BM25 "
                f"{r['first_stage']['ndcg@10']:.4f}); {r['stats']['counts']}",
                file=sys.stderr,
            )
        ref = row["torch fp32"]["ndcg@10"]
        for k, v in row.items():
            v["delta_vs_torch_fp32"] = round(v["ndcg@10"] - ref, 5)
            v["within_tolerance"] = abs(v["ndcg@10"] - ref) <= 0.005
        res["quality"][name] = row
        _merge(args.section, res)
    qs, ps = _pairs(args.pairs, args.per_query)
    stages = {key(*v): stage(v[0], v[1], cache=False) for v in variants}
    ref_scores = stages["torch fp32"].score_pairs(qs, ps)
    diffs = {}
    for v in variants:  # warm-up (and the ONNX export, timed separately by the artifact store)
        with _weight_bits(v[2]):
            diffs[key(*v)] = float(np.max(np.abs(stages[key(*v)].score_pairs(qs, ps) - ref_scores)))
    wall, cpu = _interleaved({k: (lambda st=st: st.score_pairs(qs, ps)) for k, st in stages.items()}, args.repeats)
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    res["speed"] = {
        "n_pairs": len(qs),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "max_abs_score_diff_vs_torch_fp32": diffs,
        "wall_seconds": {k: [round(x, 3) for x in v] for k, v in wall.items()},
        "pairs_per_s": {k: round(len(qs) / v, 2) for k, v in med.items()},
        "speedup_vs_torch_fp32": {k: round(med["torch fp32"] / v, 3) for k, v in med.items()},
        "pairs_per_cpu_s": {k: round(len(qs) / v, 2) for k, v in med_cpu.items()},
        "cpu_speedup_vs_torch_fp32": {k: round(med_cpu["torch fp32"] / v, 3) for k, v in med_cpu.items()},
    }
    print(
        json.dumps(
            {
                "quality": {
                    d: {k: [v["ndcg@10"], v["delta_vs_torch_fp32"]] for k, v in row.items()}
                    for d, row in res["quality"].items()
                },
                "speed": {
                    k: res["speed"][k] for k in ("pairs_per_s", "speedup_vs_torch_fp32", "cpu_speedup_vs_torch_fp32")
                },
            },
            indent=1,
        )
    )
    _merge(args.section, res)
    return res


SWEEP = [  # name, loss, lr, epochs, max_queries: the recipes compared on the device run (benchmarks/RERANK.md)
    ("listwise lr5e-5 x3", "listwise", 5e-5, 3, None),
    ("listwise lr1e-4 x1 q300", "listwise", 1e-4, 1, 300),
    ("listwise lr1e-4 x3", "listwise", 1e-4, 3, None),
    ("listwise lr5e-5 x1", "listwise", 5e-5, 1, None),
    ("listwise lr1e-4 x1", "listwise", 1e-4, 1, None),
    ("bce lr5e-5 x3", "bce", 5e-5, 3, None),
    ("listwise lr1e-4 x2 q300", "listwise", 1e-4, 2, 300),
    ("listwise lr2e-5 x1", "listwise", 2e-5, 1, None),
]


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Train each recipe of SWEEP (until --budget seconds have passed), choose the best on one half of the
    held-out nq queries (nDCG@10), report both halves, then the chosen model cross-domain."""
    from ragopt.rerankers.cross_encoder import CrossEncoderReranker
    from ragopt.store import ArtifactStore
    from ragopt.training.cross_encoder import compare_reranking, heldout_query_ids, train_cross_encoder
    from ragopt.tuning.study import split_queries

    store = ArtifactStore(args.index_dir) if args.index_dir else ArtifactStore()
    t0 = time.perf_counter()
    res: dict[str, Any] = {"env": _env(), "base": args.base, "depth": args.depth, "configs": {}, "cross_domain": {}}
    val = test = None

    def reranker(path: Path) -> Any:
        return CrossEncoderReranker(
            model=str(path), depth=args.depth, batch_size=args.batch_size, precision=args.precision, device=args.device
        )

    for name, loss, lr, epochs, mq in SWEEP:
        if time.perf_counter() - t0 > args.budget:
            print(f"time budget reached; skipping {name}", file=sys.stderr)
            continue
        art = train_cross_encoder(
            args.base,
            "nq-open-oracle-dev",
            train_fraction=0.6,
            seed=0,
            negatives_per_query=4,
            negatives_depth=30,
            epochs=epochs,
            batch_size=16,
            lr=lr,
            max_length=256,
            max_queries=mq,
            loss=loss,
            device=args.device,
            store=store,
            progress=False,
        )
        held = heldout_query_ids(art.path)
        if val is None:
            val, test = split_queries(held, 0.5, 1)
        r = compare_reranking(
            reranker(art.path),
            "nq-open-oracle-dev",
            query_ids=held,
            depth=args.depth,
            metrics=("ndcg@10", "recall@100"),
            store=store,
            progress=False,
        )
        per = r["per_query"]
        half = {
            h: {
                "n": len(ids),
                **{
                    w: float(np.mean([per[w]["ndcg@10"].get(q, 0.0) for q in ids])) for w in ("first_stage", "reranked")
                },
            }
            for h, ids in (("val", val), ("test", test))
        }
        m = art.manifest
        res["configs"][name] = {
            "loss": loss,
            "lr": lr,
            "epochs": epochs,
            "max_queries": mq,
            **{k: m.get(k) for k in ("n_train_queries", "n_pairs", "steps", "train_seconds")},
            "heldout": {"n": r["n_queries"], "bm25": r["first_stage"], "ce": r["reranked"]},
            **half,
            "rerank_seconds": r["seconds"]["rerank"],
            "counts": r["stats"]["counts"],
            "artifact": str(art.path),
        }
        _merge("sweep", res)
    best = max(res["configs"], key=lambda k: res["configs"][k]["val"]["reranked"])
    res["best_on_val"] = best
    for name in args.cross:
        r = compare_reranking(
            reranker(Path(res["configs"][best]["artifact"])),
            name,
            depth=args.depth,
            metrics=("ndcg@10", "recall@100"),
            store=store,
            progress=False,
        )
        res["cross_domain"][name] = {
            "n": r["n_queries"],
            "bm25": r["first_stage"],
            "ce": r["reranked"],
            "rerank_seconds": r["seconds"]["rerank"],
            "counts": r["stats"]["counts"],
        }
        _merge("sweep", res)
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput", help="stage vs raw CrossEncoder.predict, pairs/s")
    t.add_argument("--model", help="cross-encoder folder or training artifact (default: MiniLM + random head)")
    t.add_argument("--pairs", type=int, default=128)
    t.add_argument("--per-query", type=int, default=8, help="BM25 candidates per query")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--max-length", type=int, default=256)
    t.add_argument("--repeats", type=int, default=5)
    q = sub.add_parser("quality", help="train on nq-open-oracle-dev; BM25 vs BM25 >> CE, in and cross domain")
    q.add_argument("--base", default="all-MiniLM-L6-v2")
    q.add_argument("--train-fraction", type=float, default=0.6)
    q.add_argument("--max-queries", type=int)
    q.add_argument("--negatives", type=int, default=4)
    q.add_argument("--epochs", type=int, default=3)
    q.add_argument("--lr", type=float, default=1e-4)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--depth", type=int, default=100, help="candidates reranked on nq held-out queries")
    q.add_argument("--cross", nargs="*", default=["scifact", "cranfield"], help="cross-domain datasets")
    q.add_argument("--cross-depth", type=int, default=100, help="candidates reranked cross-domain")
    q.add_argument("--heldout-limit", type=int, help="evaluate on the first N held-out queries only")
    q.add_argument("--batch-size", type=int, default=32, help="reranker batch size")
    q.add_argument("--precision", choices=("auto", "fp32", "fp16"), default="fp32", help="reranker precision")
    q.add_argument("--index-dir")
    q.add_argument("--no-progress", action="store_true")
    w = sub.add_parser("sweep", help="compare training recipes (choose on half the held-out nq queries)")
    w.add_argument("--base", default="all-MiniLM-L6-v2")
    w.add_argument("--depth", type=int, default=100)
    w.add_argument("--cross", nargs="*", default=["scifact", "cranfield"])
    w.add_argument("--device", default="auto")
    w.add_argument("--batch-size", type=int, default=128)
    w.add_argument("--precision", choices=("auto", "fp32", "fp16"), default="fp32")
    w.add_argument("--budget", type=float, default=float("inf"), help="stop starting recipes after S seconds")
    w.add_argument("--index-dir")
    c = sub.add_parser("precision", help="CPU backends (torch fp32, onnx fp32, onnx int8): nDCG@10 and pairs/s")
    c.add_argument("--model", help="trained cross-encoder artifact (default: the one `quality` recorded)")
    c.add_argument(
        "--datasets",
        nargs="*",
        default=["nq-open-oracle-dev", "cranfield"],
        help="nq-open-oracle-dev is evaluated on the model's held-out queries",
    )
    c.add_argument("--heldout-limit", type=int, help="first N held-out nq queries only")
    c.add_argument("--depth", type=int, default=100)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--pairs", type=int, default=256, help="pairs of the speed sample")
    c.add_argument("--per-query", type=int, default=8)
    c.add_argument("--repeats", type=int, default=3)
    c.add_argument("--index-dir")
    c.add_argument("--no-progress", action="store_true")
    c.add_argument("--weight-bits", type=int, nargs="*", choices=(7, 8), help="int8 weight widths to compare")
    c.add_argument("--section", default="precision", help="results section to write")
    args = p.parse_args(argv)
    {"throughput": throughput, "quality": quality, "sweep": sweep, "precision": precision}[args.cmd](args)


if __name__ == "__main__":
    main()
