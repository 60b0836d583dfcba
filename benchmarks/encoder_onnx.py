"""The sentence_transformer encoder's backends side by side in one run: raw ``SentenceTransformer.encode`` (the
peer library), ragopt with ``backend: torch``, ``backend: onnx`` (fp32) and ``backend: onnx, precision: int8``, on
all-MiniLM-L6-v2 (packaged) and scifact.

* Query encoding, the MCP service's and the retriever's per-request cost: the 300 scifact test queries in
  batches of 1 and of 8, milliseconds a query; every system takes its turn per batch, alternating the order.
* Passage encoding: ``--docs`` scifact passages (title + text) in batches of 64, passages a second; rounds
  alternate the order.
* Agreement: largest absolute difference from the raw vectors (fp32) and the smallest cosine (int8).
* Quality: nDCG@10 and R@100 of exact search over the whole scifact corpus encoded by each backend (published
  all-MiniLM-L6-v2 figure: about 0.645 / 0.925). Each corpus encoding is an artifact of the store: a rerun reuses
  it, and the time reported is then the time to load it.

Threads: ``--threads`` for torch and ONNX Runtime alike (default 1, as the MCP service runs). Writes the section
``onnx`` of ``benchmarks/results/encoder_onnx.json`` (key: threads).

    python benchmarks/encoder_onnx.py [--threads 1] [--rounds 3] [--docs 192] [--skip-quality]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "encoder_onnx.json"
SYSTEMS = ("SentenceTransformer.encode (raw)", "ragopt torch", "ragopt onnx fp32", "ragopt onnx int8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="passes over the queries / passage samples")
    ap.add_argument("--docs", type=int, default=192, help="passages per encoding sample")
    ap.add_argument("--skip-quality", action="store_true", help="no whole-corpus encodings")
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # ONNX Runtime reads it when a session opens
    import torch
    from sentence_transformers import SentenceTransformer

    from ragopt.data import load_dataset
    from ragopt.encoders import SentenceTransformerEncoder
    from ragopt.store import ArtifactStore, default_root

    torch.set_num_threads(args.threads)
    root = default_root()
    store = ArtifactStore(root if root.is_absolute() else ROOT / root)
    ds = load_dataset(str(ROOT.parent / "shared" / "data" / args.dataset))
    queries = ds.queries_for("test")
    corpus = ds.corpus
    encoders = {
        "ragopt torch": SentenceTransformerEncoder(device="cpu"),
        "ragopt onnx fp32": SentenceTransformerEncoder(backend="onnx"),
        "ragopt onnx int8": SentenceTransformerEncoder(backend="onnx", precision="int8"),
    }
    for enc in encoders.values():
        enc.use_store(store)
    _, local, _, _ = encoders["ragopt torch"]._resolved()
    raw = SentenceTransformer(str(local), device="cpu")

    def encode_with(name: str, texts: list[str], kind: str) -> np.ndarray:
        if name == SYSTEMS[0]:
            return raw.encode(texts, batch_size=len(texts), normalize_embeddings=True, show_progress_bar=False)
        return encoders[name].encode(texts, kind, progress=False)

    qs = list(queries.texts)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(corpus), min(args.docs, len(corpus)), replace=False))
    docs = [corpus.text(int(i), True) for i in rows]
    for name in SYSTEMS:  # load, export (once), warm up
        encode_with(name, qs[:8], "query")
    ref_q = encode_with(SYSTEMS[0], qs, "query")
    agreement = {}
    for name in SYSTEMS[1:]:
        v = np.concatenate([encode_with(name, qs[i : i + 8], "query") for i in range(0, len(qs), 8)])
        agreement[name] = {
            "max_abs_diff": float(np.abs(v - ref_q).max()),
            "min_cosine": float((v * ref_q).sum(axis=1).min()),
        }
    res: dict[str, Any] = {
        "machine": _common.machine_info(["torch", "sentence-transformers", "onnxruntime", "onnx"]),
        "load_before": _common.load(),
        "threads": args.threads,
        "model": str(local),
        "n_queries": len(qs),
        "agreement_with_raw_on_queries": agreement,
        "quantization": encoders["ragopt onnx int8"].spec()["quantization"],
    }
    for bs in (1, 8):
        times: dict[str, list[float]] = {n: [] for n in SYSTEMS}
        j = 0
        for _ in range(args.rounds):
            for i in range(0, len(qs), bs):
                chunk = qs[i : i + bs]
                for name in SYSTEMS if j % 2 == 0 else SYSTEMS[::-1]:
                    t0 = time.perf_counter()
                    encode_with(name, chunk, "query")
                    times[name].append((time.perf_counter() - t0) / len(chunk))
                j += 1
        ms = {n: 1000 * float(np.mean(t)) for n, t in times.items()}
        res[f"query_ms_batch{bs}"] = {n: round(v, 3) for n, v in ms.items()}
        res[f"query_speedup_vs_raw_batch{bs}"] = {n: round(ms[SYSTEMS[0]] / v, 2) for n, v in ms.items()}
        print(f"queries, batch {bs}: " + ", ".join(f"{n} {v:.2f} ms" for n, v in ms.items()), file=sys.stderr)
    dt: dict[str, list[float]] = {n: [] for n in SYSTEMS}
    for r in range(args.rounds):
        for name in SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]:
            t0 = time.perf_counter()
            for i in range(0, len(docs), 64):
                encode_with(name, docs[i : i + 64], "doc")
            dt[name].append(time.perf_counter() - t0)
    per_s = {n: len(docs) / _common.med(t) for n, t in dt.items()}
    res["passages"] = {"n": len(docs), "batch_size": 64, "mean_chars": float(np.mean([len(d) for d in docs]))}
    res["passages_per_s"] = {n: round(v, 1) for n, v in per_s.items()}
    res["passages_speedup_vs_raw"] = {n: round(v / per_s[SYSTEMS[0]], 2) for n, v in per_s.items()}
    print("passages/s: " + ", ".join(f"{n} {v:.1f}" for n, v in per_s.items()), file=sys.stderr)
    if not args.skip_quality:
        from ragopt.evaluation import evaluate
        from ragopt.kernels.topk import topk_rows

        res["quality"] = {"published_all_minilm_l6_v2": {"ndcg@10": 0.645, "recall@100": 0.925}}
        for name, enc in encoders.items():
            t0 = time.perf_counter()
            vecs, art = enc.encode_corpus(corpus, store, progress=True)
            took = time.perf_counter() - t0
            q = enc.encode(qs, "query")
            idx, sc = topk_rows(q @ np.asarray(vecs).T, 100)
            run = {
                qid: {corpus.ids[i]: float(s) for i, s in zip(row, srow) if i >= 0}
                for qid, row, srow in zip(queries.ids, idx.tolist(), sc.tolist())
            }
            metrics = evaluate(run, ds.qrels("test"), ["ndcg@10", "recall@100"]).metrics
            res["quality"][name] = {
                **{k: round(float(v), 4) for k, v in metrics.items()},
                "corpus_encode_s" if art.created else "corpus_load_s": round(took, 1),
            }
            print(f"quality {name}: {res['quality'][name]}", file=sys.stderr)
    _common.merge_result(RESULTS, "onnx", res, key=f"threads{args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
