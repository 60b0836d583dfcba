"""GPU check for dense retrieval: GPU encoding and GPU exact search against the CPU path.

Two steps, because the GPU machine has no model weights, no datasets and no network:

1. Here (CPU), prepare a bundle:  python benchmarks/gpu_check.py prepare --dataset cranfield --out .gpu_bundle
   It copies the dataset's corpus and queries, saves the packaged all-MiniLM-L6-v2 with fp16 weights (the
   fp32 file is over the device tool's 64 MiB carry limit), and stores the CPU reference: fp32 embeddings
   from the original fp32 model, exact top-k (numpy and faiss IndexFlatIP, which must agree) and the CPU
   encoding throughput.
2. There (GPU):  python benchmarks/gpu_check.py run --bundle .gpu_bundle --out $OUT/gpu_check.json
   Encodes with ragopt's SentenceTransformerEncoder on cuda (fp16, the GPU default) and on that machine's
   CPU (fp32, same fp16-stored weights upcast), searches with ragopt's TorchExact on cuda and on cpu, and
   reports: top-k agreement with the CPU reference (GPU exact search on the reference vectors must give
   the same top-k; GPU fp16 encoding must agree on nearly every query), and speedups GPU vs CPU measured
   side by side in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def _exact_topk(q: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    from ragopt.kernels.topk import topk_rows

    return topk_rows(q @ d.T, k)[0]


def _agreement(a: np.ndarray, b: np.ndarray) -> dict:
    same_set = float(np.mean([set(x) == set(y) for x, y in zip(a, b)]))
    same_order = float(np.mean([np.array_equal(x, y) for x, y in zip(a, b)]))
    overlap = float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)]))
    top1 = float(np.mean(a[:, 0] == b[:, 0]))
    return {"same_topk_set": same_set, "same_topk_order": same_order, "mean_overlap": overlap, "same_top1": top1}


def prepare(args: argparse.Namespace) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from ragopt.data import load_dataset
    from ragopt.encoders import SentenceTransformerEncoder, resolve_model

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    ds = load_dataset(args.dataset)
    corpus, queries = ds.corpus, ds.queries_for("test")
    (out / "data" / "corpus.json").write_text(json.dumps({"ids": corpus.ids, "texts": corpus.contents(True)}))
    (out / "data" / "queries.json").write_text(json.dumps({"ids": queries.ids, "texts": queries.texts}))
    # fp16 copy of the model
    _, path = resolve_model("all-MiniLM-L6-v2")
    model = SentenceTransformer(str(path), device="cpu")
    model.half()
    model.save(str(out / "model"))
    # CPU reference with the original fp32 model, through ragopt's encoder
    enc = SentenceTransformerEncoder(model="all-MiniLM-L6-v2", device="cpu", precision="fp32")
    t = time.perf_counter()
    d = enc.encode(corpus.contents(True), kind="doc")
    cpu_doc_s = time.perf_counter() - t
    q = enc.encode(queries.texts, kind="query")
    ref = _exact_topk(q, d, args.k)
    import faiss

    index = faiss.IndexFlatIP(d.shape[1])
    index.add(d)
    faiss_top = index.search(q, args.k)[1]
    np.save(out / "ref_doc.npy", d)
    np.save(out / "ref_query.npy", q)
    np.save(out / "ref_topk.npy", ref)
    meta = {
        "dataset": args.dataset,
        "k": args.k,
        "n_docs": len(corpus),
        "n_queries": len(queries),
        "here_cpu_docs_per_s": len(corpus) / cpu_doc_s,
        "here_cpus": os.cpu_count(),
        "numpy_vs_faiss_flat": _agreement(ref, faiss_top),
        "torch": torch.__version__,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(json.dumps(meta, indent=1))
    print(f"bundle: {out} ({size:.1f} MiB)")


def _time(fn, repeats: int = 3) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
    return best, res


def run(args: argparse.Namespace) -> None:
    import torch

    from ragopt.encoders import SentenceTransformerEncoder
    from ragopt.indexes.torch_index import TorchExact

    bundle = Path(args.bundle)
    meta = json.loads((bundle / "meta.json").read_text())
    k = meta["k"]
    corpus = json.loads((bundle / "data" / "corpus.json").read_text())
    queries = json.loads((bundle / "data" / "queries.json").read_text())
    ref_d, ref_q = np.load(bundle / "ref_doc.npy"), np.load(bundle / "ref_query.npy")
    ref_top = np.load(bundle / "ref_topk.npy")
    report: dict = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "prepared": meta,
    }
    if not torch.cuda.is_available():
        report["error"] = "no CUDA device"
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
        return
    model = str(bundle / "model")
    results = {}
    # encoding: GPU fp16 (default on cuda) and GPU fp32, CPU fp32 on this machine's cores, same weights
    for name, device, precision in (
        ("gpu_fp16", "cuda", "auto"),
        ("gpu_fp32", "cuda", "fp32"),
        ("cpu_fp32", "cpu", "fp32"),
    ):
        enc = SentenceTransformerEncoder(model=model, device=device, precision=precision, batch_size=128)
        enc.encode(corpus["texts"][:64], kind="doc")  # warm-up (loading, kernels)
        secs, d = _time(lambda: enc.encode(corpus["texts"], kind="doc"), repeats=1 if device == "cpu" else 3)
        q = enc.encode(queries["texts"], kind="query")
        top = _exact_topk(q, d, k)
        results[name] = {
            "docs_per_s": len(corpus["texts"]) / secs,
            "encode_s": secs,
            "agreement_with_cpu_reference": _agreement(top, ref_top),
            "max_abs_diff_doc_vectors": float(np.abs(d - ref_d).max()),
        }
        print(name, json.dumps(results[name]), flush=True)
    report["encoding"] = results
    report["encoding_speedup_gpu_fp16_vs_cpu"] = results["gpu_fp16"]["docs_per_s"] / results["cpu_fp32"]["docs_per_s"]
    # exact search on the CPU reference vectors: torch on cuda vs torch on cpu vs the numpy reference
    tmp = Path("/tmp/ragopt_gpu_check_index")
    search = {}
    for name, device, precision in (
        ("gpu_fp32", "cuda", "fp32"),
        ("gpu_fp16", "cuda", "fp16"),
        ("cpu_fp32", "cpu", "fp32"),
    ):
        idx = TorchExact(device=device, precision=precision)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        idx.build(ref_d, tmp)
        idx.load(tmp, ref_d.shape[1])
        idx.search(ref_q[:8], k)  # warm-up
        secs, (top, _) = _time(lambda: idx.search(ref_q, k), repeats=5)
        # many queries: the corpus repeated to make the GPU work (throughput at scale)
        search[name] = {
            "qps": len(ref_q) / secs,
            "search_s": secs,
            "agreement_with_cpu_reference": _agreement(top, ref_top),
        }
        print("search", name, json.dumps(search[name]), flush=True)
    report["search"] = search
    report["search_speedup_gpu_fp32_vs_cpu"] = search["gpu_fp32"]["qps"] / search["cpu_fp32"]["qps"]
    # a larger synthetic index so the search speedup is measured where it matters
    rng = np.random.default_rng(0)
    big = rng.standard_normal((200_000, ref_d.shape[1]), dtype=np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    qs = rng.standard_normal((1000, ref_d.shape[1]), dtype=np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    truth = _exact_topk(qs, big, 10)
    scale = {}
    for name, device in (("gpu_fp32", "cuda"), ("cpu_fp32", "cpu")):
        idx = TorchExact(device=device, precision="fp32")
        shutil.rmtree(tmp)
        tmp.mkdir()
        idx.build(big, tmp)
        idx.load(tmp, big.shape[1])
        idx.search(qs[:8], 10)
        secs, (top, _) = _time(lambda: idx.search(qs, 10), repeats=3)
        scale[name] = {"qps": len(qs) / secs, "agreement_with_numpy": _agreement(top, truth)}
        print("search@200k", name, json.dumps(scale[name]), flush=True)
    report["search_200k"] = scale
    report["search_200k_speedup"] = scale["gpu_fp32"]["qps"] / scale["cpu_fp32"]["qps"]
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if "speedup" in k}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--dataset", default="cranfield")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", default=".gpu_bundle")
    p = sub.add_parser("run")
    p.add_argument("--bundle", default=".gpu_bundle")
    p.add_argument("--out", default="gpu_check.json")
    args = ap.parse_args()
    prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    main()
