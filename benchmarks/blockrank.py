"""BlockRank: prefill cost of block-sparse vs full attention, and zero-shot ranking quality of the attention signal.

``cost``: one prompt of ``n`` candidates (n = 10, 20, 50, 100, 200; real nq-open-oracle-dev passages cut to
``--doc-tokens`` tokens) through the same model up to ``--layer`` (the layer whose attention scores; no later
layer runs in attention mode), three ways: ``full`` (plain causal attention over the whole prompt: SDPA with
is_causal), ``masked`` (block-sparse 4D mask in one pass: same FLOPs as full) and ``blocked`` (instruction once,
documents in batches over its KV cache, then the query over every block's KV: linear in n; no KV reuse across
runs) and ``flex`` (one pass with torch's FlexAttention and a block mask: only the allowed tiles are computed;
compiled for the prompt's length padded to a multiple of 256, so the first call of a new length compiles: that call
is timed apart as ``flex_first_call_s``). Each (variant, n) runs in a fresh subprocess: wall seconds of the prefill
(median of ``--repeats``) and peak resident memory above the loaded model (ru_maxrss). The blocked and flex scores
are checked against the masked ones (blocked for n above ``--masked-max``).

``quality``: BM25 top ``--depth`` on a seeded sample of nq-open-oracle-dev queries, split (seeded) into
calibration and held-out halves; the per-layer curve (P@1, nDCG@10) on both halves, the layer chosen on the
calibration half, and on the held-out half BM25 alone vs BM25 >> blockrank at that layer (zero-shot).

Each merges its section into ``benchmarks/results/blockrank.json`` (quality keyed by model).

    python benchmarks/blockrank.py cost [--sizes 10 20 50 100 200] [--variants full masked blocked flex] [--doc-tokens 32] [--layer 15]
    python benchmarks/blockrank.py quality [--model smollm2-135m-instruct] [--queries 40] [--depth 20] [--permutations K] [--no-labels]
    python benchmarks/blockrank.py variants [--queries 40] [--depth 20]   # aggregation x query tokens x layout
    python benchmarks/blockrank.py finetune [--steps 100] [--n-docs 5] [--aux-weight 0.1] [--queries 30]
    python benchmarks/blockrank.py order --artifact indexes/blockrank-llm/<key> [--query-tokens 1]   # scores vs candidate order
    python benchmarks/blockrank.py order --artifact <key> --zero-shot-only --model M --layer L   # any model, held-out queries
    python benchmarks/blockrank.py tables
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "blockrank.json"
DATA = ROOT.parent / "shared" / "data"

from benchmarks._common import load, machine_info, merge_result

#: the cost variants: (sparse, prefill) of the stage (also benchmarks/blockrank_gpu.py's)
VARIANTS = {"full": (False, "masked"), "masked": (True, "masked"), "blocked": (True, "blocked"), "flex": (True, "flex")}


def _merge(section: str, value: Any, key: str | None = None) -> None:
    merge_result(RESULTS, section, value, key)


def _dataset(name: str):
    from ragopt.data import load_dataset

    path = DATA / name
    return load_dataset(str(path) if path.is_dir() else name)


def _stage(args: argparse.Namespace, **kw):
    import torch

    from ragopt.llm.transformers_backend import TransformersLLM
    from ragopt.rerankers.blockrank import BlockRankReranker
    from ragopt.store import ArtifactStore

    torch.set_num_threads(args.threads)
    llm = TransformersLLM(model=args.model, device="cpu").use_store(ArtifactStore(args.store))
    return BlockRankReranker(llm=llm, **kw)


# -- cost ----------------------------------------------------------------------------------------------------
def cost_one(args: argparse.Namespace) -> dict[str, Any]:
    """One (variant, n) in this process: prefill seconds and peak memory above the loaded model."""
    import numpy as np

    ds = _dataset(args.dataset)
    sparse, prefill = VARIANTS[args.variant]
    st = _stage(args, sparse=sparse, prefill=prefill, max_doc_tokens=args.doc_tokens, kv_cache_mb=0, layer=args.layer)
    st.fit(ds.corpus, None)
    _, tok = st.model()
    texts = [ds.corpus.text(i, True) for i in range(args.n)]
    prompt = st.build_prompt(tok, ds.queries_for("test").texts[0], st.doc_token_ids(tok, texts))
    layer = st.chosen_layer(st.model()[0])
    st.attend(st.build_prompt(tok, "warm up", st.doc_token_ids(tok, texts[:2])), [layer])
    compile_s = None
    if prefill == "flex":  # compiled for this prompt's padded length first: the compilation is reported apart
        t0 = time.perf_counter()
        st.attend(prompt, [layer])
        compile_s = round(time.perf_counter() - t0, 2)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, out = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = st.attend(prompt, [layer])[layer]
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scores = st.head_scores(prompt, [layer])[layer].mean(0) if out is not None else None
    return {
        "variant": args.variant,
        "n": args.n,
        "tokens": int(sum(prompt.lengths)),
        "seconds": round(float(np.median(times)), 3),
        # flex: the compiling first call already ran this prompt, so ru_maxrss holds its peak: not measured
        "peak_mb_above_model": None if compile_s is not None else round((peak - base) / 1024, 1),
        "scores": [float(x) for x in scores],
        **({"first_call_s_with_compile": compile_s} if compile_s is not None else {}),
    }


def _max_diff(a: Any, b: Any) -> float:
    """The largest absolute difference of two score vectors."""
    import numpy as np

    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def cost(args: argparse.Namespace) -> dict[str, Any]:

    rows = []
    for n in args.sizes:
        got = {}
        for variant in args.variants:
            if variant == "masked" and n > args.masked_max:
                continue
            cmd = [sys.executable, __file__, "_cost_one", "--variant", variant, "--n", str(n)]
            cmd += ["--doc-tokens", str(args.doc_tokens), "--repeats", str(args.repeats), "--model", args.model]
            cmd += ["--threads", str(args.threads), "--store", args.store, "--dataset", args.dataset]
            cmd += ["--layer", str(args.layer)] if args.layer is not None else []
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            if res.returncode != 0:
                raise SystemExit(res.stderr[-3000:])
            r = json.loads(res.stdout.strip().splitlines()[-1])
            got[variant] = r
            print(
                f"n={n:4d} {variant:8s} {r['tokens']:6d} tok {r['seconds']:8.2f}s peak +{r['peak_mb_above_model']} MB",
                file=sys.stderr,
            )
        row: dict[str, Any] = {"n": n, "tokens": got["full"]["tokens"] if "full" in got else None}
        for v, r in got.items():
            row[f"{v}_s"] = r["seconds"]
            row[f"{v}_peak_mb"] = r["peak_mb_above_model"]
        if "full" in got and "blocked" in got:
            row["speedup_blocked_vs_full"] = round(got["full"]["seconds"] / got["blocked"]["seconds"], 2)
        if "flex" in got:
            row["flex_first_call_s"] = got["flex"]["first_call_s_with_compile"]
            if "full" in got:
                row["speedup_flex_vs_full"] = round(got["full"]["seconds"] / got["flex"]["seconds"], 2)
            ref = got.get("masked") or got.get("blocked")
            if ref is not None:
                row["flex_max_abs_diff"] = _max_diff(ref["scores"], got["flex"]["scores"])
        if "masked" in got and "blocked" in got:
            row["blocked_equals_masked_max_abs_diff"] = _max_diff(got["masked"]["scores"], got["blocked"]["scores"])
        rows.append(row)
    if args.update and RESULTS.is_file():  # replace the measured cells of earlier rows, keep the others
        old = {r["n"]: r for r in json.loads(RESULTS.read_text("utf-8")).get("cost", {}).get("rows", [])}
        for r in rows:
            old[r["n"]] = {**old.get(r["n"], {}), **r, "rerun": True}
        rows = [old[n] for n in sorted(old)]
    res = {
        "machine": machine_info(["torch", "transformers"]),
        "load_before": load(),
        "model": args.model,
        "layer": args.layer,
        "doc_tokens": args.doc_tokens,
        "threads": args.threads,
        "repeats": args.repeats,
        "rows": rows,
    }
    _merge("cost", res)
    return res


def _top_from_input_position(input_idx: Any, output_idx: Any, depth: int) -> list[int]:
    """For each input position, how many queries' reranked top document sat there in the input (candidate rows)."""
    import numpy as np

    inp, top = np.asarray(input_idx), np.asarray(output_idx)[:, 0]
    came_from = [int(np.flatnonzero(inp[k] == top[k])[0]) for k in range(len(top))]
    return np.bincount(came_from, minlength=depth).tolist()


# -- quality -------------------------------------------------------------------------------------------------
def quality(args: argparse.Namespace) -> dict[str, Any]:

    from ragopt.data.splits import split_queries
    from ragopt.evaluation import evaluate
    from ragopt.evaluation.run import sample_queries
    from ragopt.pipeline_io import load_pipeline
    from ragopt.rerankers.blockrank import calibrate_layers
    from ragopt.store import ArtifactStore
    from ragopt.types import Batch

    ds = _dataset(args.dataset)
    store = ArtifactStore(args.store)
    queries = sample_queries(ds.queries_for("test"), args.queries, seed=args.seed)
    qrels = ds.qrels("test")
    calib_ids, held_ids = split_queries(queries.ids, 0.5, args.seed)
    bm25 = load_pipeline("bm25").set_params(**{"stages.0.top_k": 100})
    bm25.fit(ds.corpus, store)
    base = bm25.search(queries)
    st = _stage(
        args,
        depth=args.depth,
        max_doc_tokens=args.doc_tokens,
        query_tokens=args.query_tokens,
        permutations=args.permutations,
        labels=not args.no_labels,
    )
    st.fit(base.corpus, store)
    pos = {q: i for i, q in enumerate(base.queries.ids)}

    def part(ids):
        rows = [pos[q] for q in ids]
        return Batch(base.queries[rows], base.corpus, base.doc_idx[rows], base.scores[rows])

    t0 = time.perf_counter()
    cal = calibrate_layers(st, part(calib_ids), qrels, metric=args.metric)
    t1 = time.perf_counter()
    held_curve = calibrate_layers(st, part(held_ids), qrels, metric=args.metric, order_check=False)
    t2 = time.perf_counter()
    held = part(held_ids)
    chosen = st.clone(layer=cal.best_layer).fit(base.corpus, store)
    out = chosen.transform(Batch(held.queries, held.corpus, held.doc_idx, held.scores))
    hq = {q: qrels[q] for q in held.queries.ids}
    metrics = ("p@1", "ndcg@10")
    a = evaluate(held.cut(args.depth).to_run(), hq, metrics).metrics
    b = evaluate(out.cut(args.depth).to_run(), hq, metrics).metrics
    oracle = max(row[args.metric] for row in held_curve.curve)
    res = {
        "machine": machine_info(["torch", "transformers"]),
        "load_before": load(),
        "model": args.model,
        "dataset": args.dataset,
        "queries": len(queries),
        "calibration_queries": len(calib_ids),
        "heldout_queries": len(held_ids),
        "depth": args.depth,
        "doc_tokens": args.doc_tokens,
        "query_tokens": args.query_tokens,
        "permutations": args.permutations,
        "labels": not args.no_labels,
        "metric": args.metric,
        "chosen_layer": cal.best_layer,
        "bm25": a,
        "blockrank": b,
        # label bias shows as a top document that keeps coming from one input position (BM25's rank)
        "top_from_bm25_rank": _top_from_input_position(held.doc_idx, out.doc_idx, args.depth),
        # calibrate_layers' own diagnostic at the layer it picked (calibration half)
        "calibration_positions": {
            "top_from_position": cal.top_from_position,
            "top_relevant_from_position": cal.top_relevant_from_position,
            "gold_at_position": cal.gold_at_position,
        },
        "calibration_label_bias": cal.label_bias,
        # one order: the chosen layer again with the candidates reversed (same top document? metrics?)
        "calibration_order_agreement": cal.order_agreement,
        "calibration_reversed_order": cal.reversed_order,
        "calibration_order_bias": cal.order_bias,
        "heldout_best_layer_in_hindsight": {"layer": held_curve.best_layer, args.metric: oracle},
        "curve_calibration": cal.curve,
        "curve_heldout": held_curve.curve,
        "seconds_per_query_all_layers": round((t2 - t0) / len(queries), 2),
        "seconds_calibration": round(t1 - t0, 1),
        "counts": {k: v for k, v in out.stats.counts.items() if k.startswith("blockrank")},
    }
    print(
        f"{args.model}: layer {cal.best_layer} (calibration); held-out {len(held_ids)} queries: "
        f"BM25 P@1 {a['p@1']:.3f} nDCG@10 {a['ndcg@10']:.3f} -> blockrank P@1 {b['p@1']:.3f} "
        f"nDCG@10 {b['ndcg@10']:.3f}",
        file=sys.stderr,
    )
    # nq-open-oracle-dev rows stay keyed by the model alone, as before; other sets by model and set
    key = args.model if args.dataset == "nq-open-oracle-dev" else f"{args.model} on {args.dataset}"
    # runs other than the first protocol's (depth 20, labels, one order) keep their own rows
    key += "".join(
        f" {part}"
        for part, on in (
            (f"depth{args.depth}", args.depth != 20),
            (f"permutations{args.permutations}", args.permutations != 1),
            ("no_labels", args.no_labels),
        )
        if on
    )
    _merge("quality", res, key=key)
    return res


# -- scoring variants ----------------------------------------------------------------------------------------
def variants(args: argparse.Namespace) -> dict[str, Any]:
    """On the calibration half of ``quality`` (same sample, split and BM25 top ``--depth``): one all-layer pass per
    query and layout (sparse / full attention), then every aggregation x query rows (all, last 1, last 4) read from
    the same attention; the best layer of each by nDCG@10."""
    import itertools

    import numpy as np

    from ragopt.data.splits import split_queries
    from ragopt.evaluation.run import sample_queries
    from ragopt.kernels.blockrank import block_scores, ndcg_at_k, precision_at_1
    from ragopt.pipeline_io import load_pipeline
    from ragopt.store import ArtifactStore

    ds = _dataset(args.dataset)
    store = ArtifactStore(args.store)
    queries = sample_queries(ds.queries_for("test"), args.queries, seed=args.seed)
    calib, _ = split_queries(queries.ids, 0.5, args.seed)
    qrels = ds.qrels("test")
    bm25 = load_pipeline("bm25").set_params(**{"stages.0.top_k": 100})
    bm25.fit(ds.corpus, store)
    pos = {q: i for i, q in enumerate(queries.ids)}
    base = bm25.search(queries[[pos[q] for q in calib]])
    out: dict[str, Any] = {}
    for sparse in (True, False):
        st = _stage(args, sparse=sparse, depth=args.depth, max_doc_tokens=args.doc_tokens, kv_cache_mb=0)
        layers = list(range(st.n_layers(st.model()[0])))
        cand, prompts = st.prompts(base)
        acc: dict[tuple, list] = {}
        for qid, h, p in zip(base.queries.ids, cand, prompts):
            rel = np.array([qrels[qid].get(base.corpus.doc_ids[i], 0) for i in h], float)
            gains = [float(g) for g in qrels[qid].values() if g > 0]
            att = st.attend(p, layers)
            for agg, rows, layer in itertools.product(("sum", "mean", "max"), (0, 1, 4), layers):
                a = att[layer].numpy()
                s = block_scores(a[:, -rows:] if rows else a, p.lengths, agg, "docs").mean(0)
                acc.setdefault((agg, rows, layer), []).append((precision_at_1(s, rel), ndcg_at_k(s, rel, 10, gains)))
        for agg, rows in itertools.product(("sum", "mean", "max"), (0, 1, 4)):
            curve = [(layer, *np.mean(acc[(agg, rows, layer)], axis=0)) for layer in layers]
            best = max(curve, key=lambda r: r[2])
            key = f"sparse={sparse} aggregation={agg} query_tokens={rows}"
            out[key] = {"layer": int(best[0]), "p@1": float(best[1]), "ndcg@10": float(best[2])}
            print(f"{key}: {out[key]}", file=sys.stderr, flush=True)
    _merge("variants", {"model": args.model, "queries": len(calib), "depth": args.depth, "best": out}, key=args.model)
    return out


# -- fine-tuning ---------------------------------------------------------------------------------------------
def finetune(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) SmolLM2 with the auxiliary loss (``--aux-weight``) and without it (0), then score the
    artifact's held-out queries (a seeded sample of ``--queries``) with the zero-shot model and both fine-tuned
    ones at the trained layer, BM25 top ``--depth`` candidates, the training layout."""
    import numpy as np
    import torch

    from ragopt.evaluation import evaluate
    from ragopt.evaluation.run import sample_queries
    from ragopt.llm.transformers_backend import TransformersLLM
    from ragopt.pipeline_io import load_pipeline
    from ragopt.rerankers.blockrank import BlockRankReranker
    from ragopt.store import ArtifactStore
    from ragopt.training.blockrank import heldout_query_ids, train_blockrank
    from ragopt.types import Batch

    torch.set_num_threads(args.threads)
    store = ArtifactStore(args.store)
    ds = _dataset(args.dataset)
    common = dict(steps=args.steps, n_docs=args.n_docs, max_doc_tokens=args.doc_tokens, layer=args.layer, seed=0)
    common["query_tokens"] = args.query_tokens
    arts = {}
    for name, weight, lora in (
        ("aux", args.aux_weight, False),
        ("lm_only", 0.0, False),
        ("aux_lora", args.aux_weight, True),
    ):
        if name not in args.variants:
            continue
        t0 = time.perf_counter()
        arts[name] = train_blockrank(
            args.model,
            str(DATA / args.dataset),
            aux_weight=weight,
            lora=lora,
            **({"lr": args.lora_lr} if lora else {}),  # the others keep the recipe's default
            store=store,
            progress=True,
            **common,
        )
        print(f"{name}: {arts[name].path} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    info = {k: json.loads((a.path / "training.json").read_text()) for k, a in arts.items()}
    first = next(iter(arts.values()))
    layer = json.loads((first.path / "training.json").read_text())["layer"]
    held = heldout_query_ids(first.path)
    all_q = ds.queries_for("test")
    pos = {q: i for i, q in enumerate(all_q.ids)}
    queries = sample_queries(all_q[[pos[q] for q in held]], args.queries, seed=1)
    qrels = {q: ds.qrels("test")[q] for q in queries.ids}
    bm25 = load_pipeline("bm25").set_params(**{"stages.0.top_k": 100})
    bm25.fit(ds.corpus, store)
    base = bm25.search(queries)
    metrics = ("p@1", "ndcg@10")
    res: dict[str, Any] = {"bm25": evaluate(base.cut(args.depth).to_run(), qrels, metrics).metrics}
    models = {"zero_shot": args.model, **{f"finetuned_{k}": str(a.path / "model") for k, a in arts.items()}}
    for name, model in models.items():
        llm = TransformersLLM(model=model, device="cpu").use_store(store)
        st = BlockRankReranker(
            llm=llm, layer=layer, depth=args.depth, max_doc_tokens=args.doc_tokens, query_tokens=args.query_tokens
        )
        st.fit(base.corpus, store)
        t0 = time.perf_counter()
        out = st.transform(Batch(base.queries, base.corpus, base.doc_idx, base.scores))
        res[name] = evaluate(out.cut(args.depth).to_run(), qrels, metrics).metrics
        res[name]["seconds_per_query"] = round((time.perf_counter() - t0) / len(queries), 2)
        print(f"{name}: {res[name]}", file=sys.stderr)
    if args.ce_model:  # the trained cross-encoder on the same candidates; it must not have seen these queries
        from ragopt.errors import ConfigError
        from ragopt.rerankers.cross_encoder import CrossEncoderReranker
        from ragopt.training import heldout_query_ids as ce_heldout

        seen = sorted(set(queries.ids) - set(ce_heldout(args.ce_model)))
        if seen:
            raise ConfigError("--ce-model", f"trained on {len(seen)} of the scored queries (e.g. {seen[0]})")
        ce = CrossEncoderReranker(model=args.ce_model, depth=args.depth, device="cpu").fit(base.corpus, store)
        t0 = time.perf_counter()
        out = ce.transform(Batch(base.queries, base.corpus, base.doc_idx, base.scores))
        res["cross_encoder"] = evaluate(out.cut(args.depth).to_run(), qrels, metrics).metrics
        res["cross_encoder"]["seconds_per_query"] = round((time.perf_counter() - t0) / len(queries), 2)
        print(f"cross_encoder: {res['cross_encoder']}", file=sys.stderr)
    out_res = {
        "machine": machine_info(["torch", "transformers"]),
        "load_before": load(),
        "model": args.model,
        "dataset": args.dataset,
        "layer": layer,
        "steps": args.steps,
        "n_docs": args.n_docs,
        "doc_tokens": args.doc_tokens,
        "aux_weight": args.aux_weight,
        "lora_lr": args.lora_lr if "aux_lora" in args.variants else None,
        "ce_model": args.ce_model,
        "query_tokens": args.query_tokens,
        "depth": args.depth,
        "heldout_queries_scored": len(queries),
        "train_seconds": {k: v["train_seconds"] for k, v in info.items()},
        "train_attention_p1": {
            k: [v["train_attention_p1_first_20"], v["train_attention_p1_last_20"]] for k, v in info.items()
        },
        # progressive validation: attention P@1 on each step's (not yet trained on) query, mean per 50 steps
        "train_attention_p1_per_50_steps": {
            k: [round(float(np.mean(h[i : i + 50])), 3) for i in range(0, len(h), 50)]
            for k, v in info.items()
            if (h := v.get("train_attention_hit"))
        },
        "results": res,
    }
    key = f"layer{layer}_query_tokens{args.query_tokens}"
    if args.dataset != "nq-open-oracle-dev":  # the first rows (SmolLM2 on nq-open-oracle-dev) keep their keys
        key = f"{args.dataset} {key}"
    if args.model != "smollm2-135m-instruct":
        key = f"{args.model} {key}"
    if args.steps != 100 and args.dataset == "nq-open-oracle-dev":  # longer runs beside the 100-step rows
        key = f"{key} steps{args.steps}"
    if args.n_docs != 4:  # every stored row trained on 4-passage prompts
        key = f"{key} ndocs{args.n_docs}"
    old = json.loads(RESULTS.read_text("utf-8")).get("finetune", {}).get(key) if RESULTS.is_file() else None
    settings = ("steps", "n_docs", "doc_tokens", "aux_weight", "depth", "heldout_queries_scored")
    if old and all(old.get(k) == out_res[k] for k in settings):
        # one variant run now keeps the other variant's earlier figures (same settings, same scored queries)
        for field in ("results", "train_seconds", "train_attention_p1"):
            out_res[field] = {**old.get(field, {}), **out_res[field]}
    _merge("finetune", out_res, key=key)
    return out_res


# -- tables --------------------------------------------------------------------------------------------------
def order(args: argparse.Namespace) -> dict[str, Any]:
    """Does a BlockRank score depend on the order of the candidates? Only through the labels ``[1]..[n]``
    (a document block's positions do not depend on the others): score BM25's top ``--depth`` of the 20 held-out
    queries of a ``finetune`` artifact in BM25's order, reversed and in three seeded shuffles, zero-shot and
    with the artifact's model, and count from which input position each query's top document came."""
    import numpy as np
    import torch

    from ragopt.evaluation import evaluate
    from ragopt.evaluation.run import sample_queries
    from ragopt.llm.transformers_backend import TransformersLLM
    from ragopt.pipeline_io import load_pipeline
    from ragopt.rerankers.blockrank import BlockRankReranker
    from ragopt.store import ArtifactStore
    from ragopt.training.blockrank import heldout_query_ids
    from ragopt.types import Batch

    torch.set_num_threads(args.threads)
    store = ArtifactStore(args.store)
    ds = _dataset(args.dataset)
    art = Path(args.artifact)
    info = json.loads((art / "training.json").read_text("utf-8"))
    spec = json.loads((art / "manifest.json").read_text("utf-8"))["spec"]
    layer = info["layer"] if args.layer is None else args.layer
    held = heldout_query_ids(art)
    all_q = ds.queries_for("test")
    pos = {q: i for i, q in enumerate(all_q.ids)}
    queries = sample_queries(all_q[[pos[q] for q in held]], args.queries, seed=1)  # as finetune scores them
    qrels = {q: ds.qrels("test")[q] for q in queries.ids}
    bm25 = load_pipeline("bm25").set_params(**{"stages.0.top_k": 100})
    bm25.fit(ds.corpus, store)
    base = bm25.search(queries).cut(args.depth)
    idx, sc = np.asarray(base.doc_idx), np.asarray(base.scores)
    n, d = idx.shape
    rng = np.random.default_rng(0)
    orders = {"bm25": np.tile(np.arange(d), (n, 1)), "reversed": np.tile(np.arange(d)[::-1], (n, 1))}
    for s in range(3):
        orders[f"shuffled{s}"] = np.stack([rng.permutation(d) for _ in range(n)])
    orders = {k: v for k, v in orders.items() if k in args.orders}
    res: dict[str, Any] = {}
    models = [("zero_shot", args.model)] + ([] if args.zero_shot_only else [("finetuned", str(art / "model"))])
    for name, model in models:
        llm = TransformersLLM(model=model, device="cpu").use_store(store)
        kw = dict(layer=layer, depth=args.depth, max_doc_tokens=args.doc_tokens, query_tokens=args.query_tokens)
        # without labels nothing in the prompt depends on the order: one run stands for every order (zero-shot
        # only: a checkpoint trained with labels refuses a stage without them, its layout)
        if name == "zero_shot" and args.permutations == 1:
            plain = BlockRankReranker(llm=llm, labels=False, **kw).fit(base.corpus, store)
            out = plain.transform(Batch(base.queries, base.corpus, idx, sc))
            m = evaluate(out.cut(args.depth).to_run(), qrels, ("p@1", "ndcg@10")).metrics
            res[f"{name} no_labels"] = {k: round(float(v), 3) for k, v in m.items()}
            print(name, "no_labels", res[f"{name} no_labels"], file=sys.stderr, flush=True)
        st = BlockRankReranker(llm=llm, permutations=args.permutations, **kw).fit(base.corpus, store)
        for oname, o in orders.items():
            i2, s2 = np.take_along_axis(idx, o, 1), np.take_along_axis(sc, o, 1)
            out = st.transform(Batch(base.queries, base.corpus, i2, s2))
            m = evaluate(out.cut(args.depth).to_run(), qrels, ("p@1", "ndcg@10")).metrics
            res[f"{name} {oname}"] = {
                **{k: round(float(v), 3) for k, v in m.items()},
                "top_from_input_position": _top_from_input_position(i2, out.doc_idx, d),
            }
            print(name, oname, res[f"{name} {oname}"], file=sys.stderr, flush=True)
    out_res = {
        "machine": machine_info(["torch", "transformers"]),
        "artifact": art.name,
        "model": args.model,
        "layer": layer,
        "query_tokens": args.query_tokens,
        "trained_n_docs": spec["negatives"]["n_docs"],
        "depth": args.depth,
        "doc_tokens": args.doc_tokens,
        "permutations": args.permutations,
        "queries": n,
        "results": res,
    }
    key = f"layer{layer}_query_tokens{args.query_tokens} {art.name}"
    if args.zero_shot_only:  # the artifact gives only the held-out queries (the seeded split of its dataset)
        key = (
            f"{args.model} layer{layer}_query_tokens{args.query_tokens} zero-shot on the held-out queries of {art.name}"
        )
    _merge("order", out_res, key=key if args.permutations == 1 else f"{key} permutations{args.permutations}")
    return out_res


def tables(args: argparse.Namespace) -> None:
    data = json.loads(RESULTS.read_text("utf-8"))
    c = data.get("cost")
    if c:
        print(f"model {c['model']}, layer {c['layer']}, {c['doc_tokens']} tokens/doc, {c['threads']} thread(s)\n")
        print(
            "| n | tokens | full s | masked s | blocked s | flex s | full / blocked | full / flex | flex first call s "
            "| full MB | masked MB | blocked MB | flex MB | blocked - masked | flex - sparse |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in c["rows"]:
            g = lambda k: "-" if r.get(k) is None else r[k]
            e = lambda k: "-" if r.get(k) is None else f"{r[k]:.1e}"
            print(
                f"| {r['n']} | {g('tokens')} | {g('full_s')} | {g('masked_s')} | {g('blocked_s')} | {g('flex_s')} | "
                f"{g('speedup_blocked_vs_full')} | {g('speedup_flex_vs_full')} | {g('flex_first_call_s')} | "
                f"{g('full_peak_mb')} | {g('masked_peak_mb')} | {g('blocked_peak_mb')} | {g('flex_peak_mb')} | "
                f"{e('blocked_equals_masked_max_abs_diff')} | {e('flex_max_abs_diff')} |"
            )
    gc = data.get("gpu_cost")
    if gc:  # benchmarks/blockrank_gpu.py: a random model of a real size on a GPU
        print(
            f"\nGPU: {gc['device_name']}, {gc['arch']} shapes (random weights), layer {gc['layer']}, {gc['dtype']}, "
            f"{gc['doc_tokens']} tokens/doc, median of {gc['repeats']}"
            + (f"; stopped: {gc['stopped']}" if gc.get("stopped") else "")
            + "\n"
        )
        cols = ["full", "masked", "blocked", "flex"]
        print(
            "| n | tokens | "
            + " | ".join(f"{c} s" for c in cols)
            + " | full / blocked | full / flex | flex first call s | "
            + " | ".join(f"{c} GB" for c in cols)
            + " |"
        )
        print("|---" * (5 + 2 * len(cols)) + "|")
        for r in gc["rows"]:
            g = lambda k: "-" if r.get(k) is None else r[k]
            print(
                f"| {r['n']} | {g('tokens')} | "
                + " | ".join(str(g(f"{c}_s")) if f"{c}_error" not in r else "error" for c in cols)
                + f" | {g('full_over_blocked')} | {g('full_over_flex')} | {g('flex_first_call_s')} | "
                + " | ".join(str(g(f"{c}_peak_gb")) for c in cols)
                + " |"
            )
    for model, q in data.get("quality", {}).items():
        print(
            f"\n{model} ({q.get('dataset', 'nq-open-oracle-dev')}): {q['heldout_queries']} held-out queries, "
            f"depth {q['depth']}, {q.get('permutations', 1)} order(s), labels {q.get('labels', True)}, "
            f"layer {q['chosen_layer']}"
        )
        if q.get("top_from_bm25_rank"):
            print(f"held-out tops by BM25 rank: {q['top_from_bm25_rank']}")
        print("| | P@1 | nDCG@10 |\n|---|---|---|")
        print(f"| BM25 | {q['bm25']['p@1']:.3f} | {q['bm25']['ndcg@10']:.3f} |")
        print(f"| BM25 >> blockrank | {q['blockrank']['p@1']:.3f} | {q['blockrank']['ndcg@10']:.3f} |")
        print(
            "\n| layer | P@1 (calib) | nDCG@10 (calib) | P@1 (held-out) | nDCG@10 (held-out) |\n|---|---|---|---|---|"
        )
        for a, b in zip(q["curve_calibration"], q["curve_heldout"]):
            print(f"| {a['layer']} | {a['p@1']:.3f} | {a['ndcg@10']:.3f} | {b['p@1']:.3f} | {b['ndcg@10']:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="smollm2-135m-instruct")
    common.add_argument("--dataset", default="nq-open-oracle-dev")
    common.add_argument("--store", default=str(ROOT / "indexes"))
    common.add_argument("--threads", type=int, default=1)
    common.add_argument("--layer", type=int, default=None)
    c = sub.add_parser("cost", parents=[common])
    c.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100, 200])
    c.add_argument("--variants", nargs="+", default=["full", "masked", "blocked"])
    c.add_argument("--masked-max", type=int, default=100, help="largest n for the masked variant (T x T mask)")
    c.add_argument("--doc-tokens", type=int, default=32)
    c.add_argument("--repeats", type=int, default=1)
    c.add_argument("--update", action="store_true", help="merge these sizes into the stored rows")
    one = sub.add_parser("_cost_one", parents=[common])
    one.add_argument("--variant", required=True)
    one.add_argument("--n", type=int, required=True)
    one.add_argument("--doc-tokens", type=int, default=32)
    one.add_argument("--repeats", type=int, default=1)
    q = sub.add_parser("quality", parents=[common])
    q.add_argument("--queries", type=int, default=40)
    q.add_argument("--depth", type=int, default=20)
    q.add_argument("--doc-tokens", type=int, default=64)
    q.add_argument("--query-tokens", type=int, default=1)
    q.add_argument("--metric", default="ndcg@10", choices=["p@1", "ndcg@10"])
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--permutations", type=int, default=1, help="the stage's permutations (orders averaged)")
    q.add_argument("--no-labels", action="store_true", help="candidates without [i] labels (order-free prompt)")
    v = sub.add_parser("variants", parents=[common])
    v.add_argument("--queries", type=int, default=40)
    v.add_argument("--depth", type=int, default=20)
    v.add_argument("--doc-tokens", type=int, default=64)
    v.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("finetune", parents=[common])
    f.add_argument("--steps", type=int, default=100)
    f.add_argument("--n-docs", type=int, default=5)
    f.add_argument("--doc-tokens", type=int, default=32)
    f.add_argument("--aux-weight", type=float, default=0.1)
    f.add_argument("--queries", type=int, default=30)
    f.add_argument("--depth", type=int, default=10)
    f.add_argument("--query-tokens", type=int, default=1)
    f.add_argument(
        "--variants",
        nargs="+",
        default=["aux", "lm_only"],
        choices=["aux", "lm_only", "aux_lora"],
        help="aux: with the InfoNCE loss; lm_only: without it; aux_lora: with it, through rank-8 LoRA adapters",
    )
    f.add_argument("--lora-lr", type=float, default=2e-4, help="learning rate of the aux_lora variant")
    f.add_argument(
        "--ce-model",
        default=None,
        help="also score a trained cross-encoder artifact (one that never saw these queries)",
    )
    o = sub.add_parser("order", parents=[common], help="scores vs the order (labels) of the candidates")
    o.add_argument("--artifact", required=True, help="a blockrank artifact written by finetune")
    o.add_argument("--queries", type=int, default=20)
    o.add_argument("--depth", type=int, default=10)
    o.add_argument("--doc-tokens", type=int, default=24)
    o.add_argument("--query-tokens", type=int, default=1)
    o.add_argument("--permutations", type=int, default=1, help="the stage's permutations (orders averaged)")
    o.add_argument(
        "--zero-shot-only",
        action="store_true",
        help="score --model only (with --layer: any model and layer on the artifact's held-out queries)",
    )
    o.add_argument(
        "--orders",
        nargs="+",
        default=["bm25", "reversed", "shuffled0", "shuffled1", "shuffled2"],
        choices=["bm25", "reversed", "shuffled0", "shuffled1", "shuffled2"],
    )
    sub.add_parser("tables")
    args = p.parse_args()
    if args.cmd == "_cost_one":
        print(json.dumps(cost_one(args)))
    elif args.cmd == "cost":
        cost(args)
    elif args.cmd == "quality":
        quality(args)
    elif args.cmd == "variants":
        variants(args)
    elif args.cmd == "finetune":
        finetune(args)
    elif args.cmd == "order":
        order(args)
    else:
        tables(args)


if __name__ == "__main__":
    main()
