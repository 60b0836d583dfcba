"""SPLADE encoding side by side in one run: raw ``SparseEncoder.encode_document/encode_query`` (the peer library,
stock modules) and ragopt's ``splade`` stage (the same model with ragopt.retrievers.splade_pooling's fast path), on
the packaged SPLADE-tiny and cranfield.

* Documents: the first ``--docs`` cranfield documents (title + text, up to 512 tokens) in batches of
  ``--batch-size``, documents a second; rounds alternate the order.
* Queries: the 225 test queries in batches of 1 (one request) and of 32, milliseconds a query.
* Agreement: largest absolute difference between the two systems' vectors and the number of terms that are
  non-zero in one only.
* Quality: nDCG@10 and R@100 of exact sparse search (query . document over the whole corpus) with each system's
  vectors (needs ``--docs 1400``, the whole corpus; README figure 0.3550 / 0.7356).
* Peak memory: each system encodes the documents once in a child process of its own; the figure is the child's
  peak resident set minus its peak after loading the model and encoding one text.

Writes the section ``encode`` of ``benchmarks/results/splade.json`` (key: threads).

    python benchmarks/splade.py [--docs 1400] [--rounds 2] [--batch-size 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "splade.json"
SYSTEMS = ("SparseEncoder (raw)", "ragopt splade")


def _models() -> dict[str, Any]:
    from sentence_transformers import SparseEncoder

    from ragopt.retrievers.splade import SpladeRetriever

    stage = SpladeRetriever(device="cpu")
    raw = SparseEncoder(stage._resolved()[0], device="cpu").eval()
    return {SYSTEMS[0]: raw, SYSTEMS[1]: stage}


def _encode(system: Any, texts: list[str], kind: str, batch_size: int) -> Any:
    """``texts``' vectors as a scipy CSR matrix."""
    import scipy.sparse as sp
    import torch

    if hasattr(system, "encode_document"):  # the raw SparseEncoder
        fn = system.encode_document if kind == "doc" else system.encode_query
        with torch.inference_mode():
            dense = fn(texts, batch_size=batch_size, convert_to_tensor=True, convert_to_sparse_tensor=False)
        return sp.csr_matrix(dense.numpy())
    system.batch_size = batch_size
    return system.encode(texts, kind)


def _cranfield() -> Any:
    from ragopt.data import load_dataset

    return load_dataset(str(ROOT.parent / "shared" / "data" / "cranfield"))


def _documents(corpus: Any, n: int) -> list[str]:
    return [corpus.text(i, True) for i in range(min(n, len(corpus)))]


def _child(name: str, n_docs: int, batch_size: int) -> None:
    system = _models()[name]
    docs = _documents(_cranfield().corpus, n_docs)
    _encode(system, docs[:1], "doc", batch_size)
    base = _common.proc_status("VmHWM") / 2**20
    _encode(system, docs, "doc", batch_size)
    peak = _common.proc_status("VmHWM") / 2**20
    print(json.dumps({"rss_after_load_mb": round(base, 1), "peak_extra_mb": round(peak - base, 1)}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        _child(args.child, args.docs, args.batch_size)
        return 0
    systems = _models()
    ds = _cranfield()
    queries = ds.queries_for("test")
    qs = list(queries.texts)
    docs = _documents(ds.corpus, args.docs)
    for s in systems.values():  # load and warm up
        _encode(s, qs[:4], "query", 4)
    res: dict[str, Any] = {
        "machine": _common.machine_info(["torch", "sentence-transformers", "transformers"]),
        "load_before": _common.load(),
        "threads": args.threads,
        "model": "splade-tiny (packaged)",
        "documents": {
            "n": len(docs),
            "batch_size": args.batch_size,
            "mean_chars": float(np.mean([len(d) for d in docs])),
        },
    }
    doc_vecs: dict[str, Any] = {}
    dt: dict[str, list[float]] = {n: [] for n in SYSTEMS}
    for r in range(args.rounds):
        for name in SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]:
            t0 = time.perf_counter()
            doc_vecs[name] = _encode(systems[name], docs, "doc", args.batch_size)
            dt[name].append(time.perf_counter() - t0)
            print(f"round {r} {name}: {dt[name][-1]:.1f} s", file=sys.stderr)
    per_s = {n: len(docs) / _common.med(t) for n, t in dt.items()}
    res["documents_per_s"] = {n: round(v, 1) for n, v in per_s.items()}
    res["documents_speedup_vs_raw"] = round(per_s[SYSTEMS[1]] / per_s[SYSTEMS[0]], 2)
    q_vecs = {n: _encode(s, qs, "query", 32) for n, s in systems.items()}
    for bs in (1, 32):
        times: dict[str, list[float]] = {n: [] for n in SYSTEMS}
        for j, i in enumerate(range(0, len(qs), bs)):
            for name in SYSTEMS if j % 2 == 0 else SYSTEMS[::-1]:
                t0 = time.perf_counter()
                _encode(systems[name], qs[i : i + bs], "query", bs)
                times[name].append((time.perf_counter() - t0) / len(qs[i : i + bs]))
        ms = {n: 1000 * float(np.mean(t)) for n, t in times.items()}
        res[f"query_ms_batch{bs}"] = {n: round(v, 3) for n, v in ms.items()}
        res[f"query_speedup_vs_raw_batch{bs}"] = round(ms[SYSTEMS[0]] / ms[SYSTEMS[1]], 2)
    agreement = {}
    for what, vecs in (("documents", doc_vecs), ("queries", q_vecs)):
        a, b = (vecs[n].toarray() for n in SYSTEMS)
        agreement[what] = {
            "max_abs_diff": float(np.abs(a - b).max()),
            "terms_nonzero_in_one_only": int(((a > 0) != (b > 0)).sum()),
            "nonzero_terms": int((a > 0).sum()),
        }
    res["agreement"] = agreement
    if len(docs) == len(ds.corpus):
        from ragopt.evaluation import evaluate
        from ragopt.kernels.topk import topk_rows

        res["quality"] = {"README": {"ndcg@10": 0.3550, "recall@100": 0.7356}}
        for name in SYSTEMS:
            idx, sc = topk_rows((q_vecs[name] @ doc_vecs[name].T).toarray(), 100)
            run = {
                qid: {ds.corpus.ids[i]: float(s) for i, s in zip(row, srow) if i >= 0 and s > 0}
                for qid, row, srow in zip(queries.ids, idx.tolist(), sc.tolist())
            }
            metrics = evaluate(run, ds.qrels("test"), ["ndcg@10", "recall@100"]).metrics
            res["quality"][name] = {k: round(float(v), 4) for k, v in metrics.items()}
    memory = {}
    for name in SYSTEMS:
        out = subprocess.run(
            [sys.executable, __file__, "--child", name, "--docs", str(args.docs)]
            + ["--batch-size", str(args.batch_size), "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
        memory[name] = json.loads(out.stdout.strip().splitlines()[-1])
    res["memory"] = memory
    res["peak_extra_memory_ratio_raw_over_ragopt"] = round(
        memory[SYSTEMS[0]]["peak_extra_mb"] / max(memory[SYSTEMS[1]]["peak_extra_mb"], 1.0), 2
    )
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1), file=sys.stderr)
    _common.merge_result(RESULTS, "encode", res, key=f"threads{args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
