"""Pairwise ranking prompting (PRP): exactness and comparison counts of the ranking methods, and reranking quality
and cost on real queries.

``exact`` (fast, no model): every method over ``n`` items (n = 10, 20, 50, 100) with an oracle comparator (a
consistent total order), from random initial orders and from the best and the worst one: whether allpair and
full heap sort reproduce the oracle's order and the top-k methods fix the oracle's top k (k = 10), and the
comparisons asked (min / median / max over the initial orders) against the theory (:func:`comparison_bounds`),
the distinct pairs among them and the rounds (LLM round trips for one query).

``quality`` (an LLM on the CPU): BM25 (the bm25 pipeline's settings) top 100 on a seeded sample of
nq-open-oracle-dev's judged queries; BM25 alone vs BM25 >> PRP (each method, over BM25's top ``--depth``) vs
BM25 >> cross-encoder (``--ce-model``, a trained artifact; skipped without one): nDCG@10 and P@1, and per query the
comparisons, the prompts and prompt tokens they need (whether the LLM cache served them or not), the consistency
rate of the model's judgements over the two passage orders, unparseable answers, the prompts actually run and
the seconds. Every prompt is kept in the store's LLM call cache, so a rerun (or another method over the same
candidates) costs only what is new.

``speed``: comparisons per second judged in one batched call vs one at a time, in scoring and generation mode
(cache off), on pairs of BM25 candidates (``--modes``; none: skip). With the transformers backend it also times
score mode with the prompts' shared token heads read once (``share_prefix``, the default) against reading every
prompt in full, both batched, alternating ``--repeats`` times (medians), and the forward tokens each way.

Each merges its section into ``benchmarks/results/prp.json`` (quality and speed keyed by model); ``tables``
prints the markdown tables of ``benchmarks/PRP.md``.

    python benchmarks/prp.py exact [--sizes 10 20 50 100] [--k 10] [--orders 20]
    python benchmarks/prp.py quality [--model smollm2-135m-instruct] [--queries 5] [--depth 10] [--top-k 3]
                                     [--methods allpair heap bubble sliding] [--mode score] [--inconsistent tie]
                                     [--ce-model PATH]
    python benchmarks/prp.py speed [--model smollm2-135m-instruct] [--pairs 8] [--modes score generate] [--repeats 3]
    python benchmarks/prp.py tables
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmark this checkout, installed or not
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "prp.json"
DATA = ROOT.parent / "shared" / "data"

from benchmarks._common import load, machine_info, make_llm, merge_result, model_key
from ragopt.kernels.prp import comparison_bounds, rank

# name on the command line -> (method, sort)
VARIANTS = {
    "allpair": ("allpair", "heap"),
    "heap": ("sorting", "heap"),
    "bubble": ("sorting", "bubble"),
    "sliding": ("sliding", "heap"),
}


def _merge(section: str, value: Any, key: str | None = None) -> None:
    merge_result(RESULTS, section, value, key)


# -- exact ---------------------------------------------------------------------------------------------------
def _oracle(n: int, start: str | int):
    """The true rank of every item given the initial order ``start`` (best, worst or a seed) and its comparator."""
    true = list(range(n))
    if start == "worst":
        true.reverse()
    elif start != "best":
        random.Random(start).shuffle(true)
    return sorted(range(n), key=lambda i: true[i]), (lambda i, j: 1.0 if true[i] < true[j] else 0.0)


def exact(args: argparse.Namespace) -> dict[str, Any]:
    starts: list[str | int] = ["best", "worst", *range(args.orders)]
    rows = []
    for n in args.sizes:
        for name, (method, sort) in VARIANTS.items():
            k = n if method == "allpair" else min(args.k, n)
            counts, distinct, rounds, ok = [], [], [], True
            for start in starts:
                ideal, cmp = _oracle(n, start)
                r = rank(n, cmp, method, k, sort)
                ok &= r.order[:k] == ideal[:k] and sorted(r.order) == list(range(n))
                counts.append(r.comparisons)
                distinct.append(r.distinct)
                rounds.append(r.rounds)
            low, high = comparison_bounds(method, n, k, sort)
            full = rank(n, _oracle(n, 0)[1], "sorting", n, "heap") if name == "heap" else None
            row = {
                "n": n,
                "method": name,
                "k": k,
                "exact": ok,
                "comparisons_min": min(counts),
                "comparisons_median": statistics.median(counts),
                "comparisons_max": max(counts),
                "theory_min": low,
                "theory_max": high,
                "within_theory": low <= min(counts) <= max(counts) <= high,
                "distinct_median": statistics.median(distinct),
                "rounds_median": statistics.median(rounds),
                "rounds_max": max(rounds),
                "initial_orders": len(starts),
            }
            if full is not None:
                row["full_heap_sort_exact"] = full.order == _oracle(n, 0)[0]
                row["full_heap_sort_comparisons"] = full.comparisons
            rows.append(row)
            print(
                f"n={n:4d} {name:8s} k={k:3d} exact={ok} comparisons {min(counts)}..{max(counts)} "
                f"(theory {low}..{high}) distinct~{row['distinct_median']} rounds~{row['rounds_median']}",
                file=sys.stderr,
            )
    res = {"machine": machine_info([]), "k": args.k, "rows": rows}
    _merge("exact", res)
    return res


# -- quality -------------------------------------------------------------------------------------------------
def _setup(args: argparse.Namespace, with_llm: bool = True):
    """Dataset, store, the sampled queries, BM25's top 100 for them, and the LLM (None without ``with_llm``)."""
    from ragopt.data import load_dataset
    from ragopt.evaluation.run import sample_queries
    from ragopt.pipeline_io import load_pipeline
    from ragopt.store import ArtifactStore

    if args.threads and args.backend == "transformers":
        import torch

        torch.set_num_threads(args.threads)
    path = DATA / args.dataset
    ds = load_dataset(str(path) if path.is_dir() else args.dataset)
    store = ArtifactStore(args.store)
    queries = ds.queries_for("test")
    if getattr(args, "heldout_of", None):  # only queries a trained model never saw (its heldout_queries.txt)
        from ragopt.training import heldout_query_ids

        pos = {q: i for i, q in enumerate(queries.ids)}  # in the file's order, as blockrank.py finetune samples
        held = heldout_query_ids(args.heldout_of)
        keep = [pos[q] for q in held if q in pos]
        if not keep:
            raise SystemExit(
                f"--heldout-of {args.heldout_of}: none of its {len(held)} held-out query ids is a judged test query "
                f"of {args.dataset} (was it trained on another dataset?)"
            )
        queries = queries[keep]
    queries = sample_queries(queries, args.queries, seed=args.seed)
    bm25 = load_pipeline("bm25").set_params(**{"stages.0.top_k": 100})
    bm25.fit(ds.corpus, store)
    base = bm25.search(queries)
    llm = make_llm(args.model, store, args.backend, args.threads, args.batch_size) if with_llm else None
    return ds, store, queries, base, llm


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from ragopt.evaluation import evaluate
    from ragopt.rerankers.prp import PRPReranker
    from ragopt.types import Batch

    # without --methods only BM25 and the cross-encoder are scored: no LLM to load
    ds, store, queries, base, llm = _setup(args, with_llm=bool(args.methods))
    all_qrels = ds.qrels("test")
    qrels = {q: all_qrels[q] for q in queries.ids}
    nq = len(queries)

    def fresh() -> Batch:
        return Batch(base.queries, base.corpus, base.doc_idx, base.scores)

    def metrics(batch: Batch) -> dict[str, float]:
        return {k: round(v, 4) for k, v in evaluate(batch.to_run(), qrels, ["ndcg@10", "P@1"]).metrics.items()}

    res: dict[str, Any] = {
        "machine": machine_info(["torch", "transformers"]),
        "load_before": load(),
        "dataset": ds.name,
        "n_queries": nq,
        "seed": args.seed,
        "queries_from": f"held-out queries of {args.heldout_of}" if args.heldout_of else "all judged queries",
        "model": model_key(args.model, args.backend) if args.methods else None,
        "settings": {
            "depth": args.depth,
            "top_k": args.top_k,
            "mode": args.mode,
            "both_orders": True,
            "inconsistent": args.inconsistent,
            "passage_max_tokens": args.passage_max_tokens,
            "template": args.template,
            "first_stage": "bm25 (pipelines/bm25.yaml) top 100",
        },
        "rows": {"bm25": {"metrics": metrics(base)}},
    }
    print(f"{nq} queries; bm25: {res['rows']['bm25']['metrics']}", file=sys.stderr)
    for name in args.methods:
        method, sort = VARIANTS[name]
        st = PRPReranker(
            llm=llm,
            method=method,
            sort=sort,
            depth=args.depth,
            top_k=args.top_k,
            mode=args.mode,
            inconsistent=args.inconsistent,
            passage_max_tokens=args.passage_max_tokens,
            template=BIAS_TEMPLATES[args.template][0],
            labels=BIAS_TEMPLATES[args.template][1],
        ).fit(ds.corpus, store)
        t0 = time.perf_counter()
        out = st.transform(fresh())
        secs = time.perf_counter() - t0
        again = st.transform(fresh())  # determinism (served by the cache)
        c = out.stats.counts
        per_prompt = 2 if args.mode == "score" else 1
        comps = max(1, c["prp_comparisons"])
        row = {
            "metrics": metrics(out),
            "comparisons_per_query": c["prp_comparisons"] / nq,
            "prompts_per_query": c["prp_prompts"] / nq,
            "prompt_tokens_per_query": c["prp_prompt_tokens"] / nq,
            "consistency_rate": round(1 - c["prp_inconsistent"] / comps, 4),
            "unparseable": c["prp_unparseable"],
            "prompts_run": c["llm_calls"] // per_prompt,
            "prompt_tokens_run": c["prompt_tokens"] // per_prompt,
            "rounds": c["prp_rounds"],
            "seconds": round(secs, 2),
            "seconds_per_prompt_run": round(secs / ran, 3) if (ran := c["llm_calls"] // per_prompt) else None,
            "deterministic": again.doc_idx.tolist() == out.doc_idx.tolist(),
            "changed_top1": int((out.doc_idx[:, 0] != base.doc_idx[:, 0]).sum()),
        }
        res["rows"][f"prp-{name}"] = row
        print(f"prp-{name}: {row}", file=sys.stderr)
    if args.ce_model:  # the same candidates as PRP (BM25's top depth), and BM25's top 100
        from ragopt.rerankers.cross_encoder import CrossEncoderReranker
        from ragopt.training import heldout_query_ids

        held = set(heldout_query_ids(args.ce_model))
        for depth in dict.fromkeys((args.depth, 100)):
            ce = CrossEncoderReranker(model=args.ce_model, depth=depth, device="cpu").fit(ds.corpus, store)
            t0 = time.perf_counter()
            out = ce.transform(fresh())
            res["rows"][f"cross-encoder@{depth}"] = {
                "metrics": metrics(out),
                "model": args.ce_model,
                "depth": depth,
                "queries_outside_its_heldout": sum(q not in held for q in queries.ids),
                "pairs_per_query": (out.stats.counts["ce_pairs"] + out.stats.counts["ce_cache_hits"]) / nq,
                "pairs_scored": out.stats.counts["ce_pairs"],  # the rest came from the pair cache
                "seconds": round(time.perf_counter() - t0, 2),
                "changed_top1": int((out.doc_idx[:, 0] != base.doc_idx[:, 0]).sum()),
            }
            print(f"cross-encoder@{depth}: {res['rows'][f'cross-encoder@{depth}']}", file=sys.stderr)
    else:
        res["rows"]["cross-encoder"] = {"skipped": "no --ce-model (train one: benchmarks/rerank.py quality)"}
    res["load_after"] = load()
    _merge(
        "quality",
        res,
        key=f"{model_key(args.model, args.backend) if args.methods else 'no-llm'} n={nq} depth={args.depth} k={args.top_k} {args.mode} {args.inconsistent}"
        + ("" if args.template == "pairwise" else f" {args.template}")
        + (" heldout" if args.heldout_of else "")
        + ("" if ds.name == "nq-open-oracle-dev" else f" {ds.name}"),
    )
    return res


# -- bias ----------------------------------------------------------------------------------------------------
#: prompt variants tried against position bias: (template, labels) of the stage (``pairwise`` is the built-in
#: template). The label fields render as the text the A/B variants always had, so their cached prompts stay valid.
BIAS_TEMPLATES: dict[str, tuple[str, str]] = {
    "pairwise": ("pairwise", "A/B"),
    # the query after both passages, next to the question the label answers
    "query_last": (
        'Passage {label_a}: "{passage_a}"\n\nPassage {label_b}: "{passage_b}"\n\nQuery: "{query}"\n\n'
        "Which passage, {label_a} or {label_b}, is more relevant to the query? "
        "Answer with one {label_kind}, {label_a} or {label_b}:",
        "A/B",
    ),
    # nq's queries are questions: ask which passage answers it, and say that the order means nothing
    "answers": (
        'Question: "{query}"\n\nPassage {label_a}: "{passage_a}"\n\nPassage {label_b}: "{passage_b}"\n\n'
        "The passages are in random order. Which passage contains the answer to the question? "
        "Answer with one {label_kind}, {label_a} or {label_b}:",
        "A/B",
    ),
}
# the same prompts with other labels: numbers, and two letters with no order between them
for _name, (_tpl, _) in list(BIAS_TEMPLATES.items()):
    BIAS_TEMPLATES[f"{_name}_12"] = (_tpl, "1/2")
    BIAS_TEMPLATES[f"{_name}_xz"] = (_tpl, "X/Z")


def bias(args: argparse.Namespace) -> dict[str, Any]:
    """Position bias and pairwise accuracy of prompt variants on hard pairs: for each seeded query, its gold
    passage against BM25's best-ranked passage that is not gold, asked in both orders (one prompt per order,
    score mode). Per variant: mean P(first wins), the consistency rate (both orders prefer the same passage),
    and the share of pairs the gold passage wins under the paper's rule (consistent and right) and under
    ``inconsistent: mean``."""
    from ragopt.rerankers.prp import PRPReranker
    from ragopt.types import Stats

    ds, store, queries, base, llm = _setup(args)
    qrels = ds.qrels("test")
    pairs = []  # (query text, gold row, negative row)
    for r, q in enumerate(queries.ids):
        gold = {ds.corpus.index_of(d) for d, g in qrels[q].items() if g > 0}
        neg = next(int(i) for i in base.doc_idx[r] if int(i) not in gold)
        pairs.append((queries.texts[r], min(gold), neg))
    res: dict[str, Any] = {
        "machine": machine_info(["torch", "transformers", "llama-cpp-python"]),
        "load_before": load(),
        "model": model_key(args.model, args.backend),
        "n_pairs": len(pairs),
        "seed": args.seed,
        "pairs": "gold passage vs BM25's best-ranked non-gold passage (top 100), nq-open-oracle-dev",
        "templates": {},
    }
    texts: dict[int, str] = {}  # the cut passages: the same for every template (same tokenizer and length)
    for name in args.templates:
        template, labels = BIAS_TEMPLATES[name]
        st = PRPReranker(
            llm=llm,
            template=template,
            labels=labels,
            both_orders=False,
            passage_max_tokens=args.passage_max_tokens,
        ).fit(ds.corpus, store)
        texts = texts or st.passage_texts(ds.corpus, {r for _, g, n in pairs for r in (g, n)})
        stats = Stats()
        t0 = time.perf_counter()
        triples = [t for q, g, n in pairs for t in ((q, texts[g], texts[n]), (q, texts[n], texts[g]))]
        p = st.judge(triples, stats)  # P(first passage wins), one order per triple
        secs = time.perf_counter() - t0
        gold_first, gold_second = p[0::2], [1 - x for x in p[1::2]]  # P(gold wins) in each order
        consistent = [(a - 0.5) * (b - 0.5) > 0 for a, b in zip(gold_first, gold_second)]
        row = {
            "mean_p_first": round(statistics.mean(p), 4),
            "share_first_preferred": round(sum(x > 0.5 for x in p) / len(p), 4),
            "consistency_rate": round(sum(consistent) / len(pairs), 4),
            "gold_wins_tie_rule": round(sum(c and a > 0.5 for c, a in zip(consistent, gold_first)) / len(pairs), 4),
            "gold_wins_mean_rule": round(
                sum((a + b) / 2 > 0.5 for a, b in zip(gold_first, gold_second)) / len(pairs), 4
            ),
            "prompts_run": stats.counts.get("llm_calls", 0) // 2,
            "seconds": round(secs, 1),
            "p_gold_wins": [[round(a, 4), round(b, 4)] for a, b in zip(gold_first, gold_second)],
        }
        res["templates"][name] = {"template": template, "labels": labels, **row}
        print(f"{name}: { ({k: v for k, v in row.items() if k != 'p_gold_wins'}) }", file=sys.stderr, flush=True)
    res["load_after"] = load()
    key = f"{model_key(args.model, args.backend)} n={len(pairs)}"
    earlier = json.loads(RESULTS.read_text("utf-8")).get("bias", {}).get(key, {}) if RESULTS.is_file() else {}
    for name, row in earlier.get("templates", {}).items():  # keep variants not rerun, and real timings
        now = res["templates"].get(name)
        if now is None or (now["prompts_run"] == 0 and row.get("prompts_run")):
            res["templates"][name] = row
    _merge("bias", res, key=key)
    return res


# -- speed ---------------------------------------------------------------------------------------------------
def speed(args: argparse.Namespace) -> dict[str, Any]:
    from ragopt.rerankers.prp import PRPReranker

    ds, store, queries, base, llm = _setup(args)
    # transformers: one forward pass per batch vs one prompt at a time; llama.cpp (one prompt at a time anyway):
    # reusing the KV cache of the prompt head shared with the previous prompt vs reading every prompt in full
    other = {"prefix_cache": False} if args.backend == "llama_cpp" else {"batch_size": 1}
    single_llm = llm.clone(**other).use_store(store)
    triples, rows = [], set()
    for r in range(len(queries)):
        rows.update(int(i) for i in base.doc_idx[r, : args.pairs + 1])
    probe = PRPReranker(llm=llm, passage_max_tokens=args.passage_max_tokens, cache=False).fit(ds.corpus, store)
    texts = probe.passage_texts(ds.corpus, rows)
    for r in range(len(queries)):
        cand = [int(i) for i in base.doc_idx[r, : args.pairs + 1]]
        triples += [(queries.texts[r], texts[a], texts[b]) for a, b in zip(cand, cand[1:])]
    triples = triples[: args.pairs]
    res: dict[str, Any] = {
        "machine": machine_info(["torch", "transformers"]),
        "load_before": load(),
        "model": model_key(args.model, args.backend),
        "comparisons": len(triples),
        "both_orders": True,
        "passage_max_tokens": args.passage_max_tokens,
        "batch_size": args.batch_size,
        "compared": "prefix KV reuse vs none" if args.backend == "llama_cpp" else "batched vs one at a time",
        "modes": {},
    }
    for mode in args.modes:
        batched = PRPReranker(llm=llm, mode=mode, passage_max_tokens=args.passage_max_tokens, cache=False).fit(
            ds.corpus, store
        )
        single = PRPReranker(llm=single_llm, mode=mode, passage_max_tokens=args.passage_max_tokens, cache=False).fit(
            ds.corpus, store
        )
        t0 = time.perf_counter()
        pb = batched.judge(triples)
        t1 = time.perf_counter()
        ps = [single.judge([t])[0] for t in triples]
        t2 = time.perf_counter()
        res["modes"][mode] = {
            "batched_per_s": round(len(triples) / (t1 - t0), 3),
            "one_at_a_time_per_s": round(len(triples) / (t2 - t1), 3),
            "speedup": round((t2 - t1) / (t1 - t0), 2),
            "max_abs_diff": round(max(abs(a - b) for a, b in zip(pb, ps)), 6),
        }
        print(f"{mode}: {res['modes'][mode]}", file=sys.stderr)
    if args.backend == "transformers" and args.repeats > 0:
        res["shared_prefix"] = _shared_prefix_speed(args, llm, store, ds, triples)
    res["load_after"] = load()
    if not args.modes:  # keep the batched-vs-one figures already recorded for this model
        old = (
            json.loads(RESULTS.read_text("utf-8")).get("speed", {}).get(model_key(args.model, args.backend))
            if RESULTS.is_file()
            else None
        )
        if old:
            res = {**old, "shared_prefix": res.get("shared_prefix")}
    _merge("speed", res, key=model_key(args.model, args.backend))
    return res


def _shared_prefix_speed(args: argparse.Namespace, llm: Any, store: Any, ds: Any, triples: list) -> dict[str, Any]:
    """Score mode, batched both ways: shared heads read once vs every prompt read in full (medians of repeats)."""
    from ragopt.rerankers.prp import PRPReranker

    plain_llm = llm.clone(share_prefix=False).use_store(store)
    shared_llm = llm.clone(share_prefix=True).use_store(store)
    stages = {
        name: PRPReranker(llm=m, mode="score", passage_max_tokens=args.passage_max_tokens, cache=False).fit(
            ds.corpus, store
        )
        for name, m in (("shared", shared_llm), ("plain", plain_llm))
    }
    # forward tokens: the distinct rows score() reads (both labels share one row), and what sharing leaves of them
    prompts = [stages["shared"].prompt(q, x, y) for q, a, b in triples for x, y in ((a, b), (b, a))]
    rows = {tuple(shared_llm.encode(p)): 1 for p in prompts}
    groups = shared_llm._prefix_groups(rows)
    full = sum(len(r) for r in rows)
    saved = sum(head * (len(g) - 1) for g, head in groups)
    times: dict[str, list[float]] = {"shared": [], "plain": []}
    probs: dict[str, list[float]] = {}
    loads = [load()]
    for _ in range(args.repeats):
        for name in ("shared", "plain"):
            t0 = time.perf_counter()
            probs[name] = stages[name].judge(triples)
            times[name].append(time.perf_counter() - t0)
        loads.append(load())
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "compared": f"score mode, batch_size {llm.batch_size} both: shared heads read once vs every prompt in full",
        "repeats": args.repeats,
        "threads": args.threads or None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "prompts": len(prompts),
        "forward_tokens_plain": full,
        "forward_tokens_shared": full - saved,
        "groups": [{"rows": len(g), "head_tokens": head} for g, head in groups],
        "seconds_shared": [round(t, 2) for t in times["shared"]],
        "seconds_plain": [round(t, 2) for t in times["plain"]],
        "shared_per_s": round(len(triples) / med["shared"], 3),
        "plain_per_s": round(len(triples) / med["plain"], 3),
        "speedup": round(med["plain"] / med["shared"], 2),
        "max_abs_diff": round(max(abs(a - b) for a, b in zip(probs["shared"], probs["plain"])), 6),
        "load": loads,
    }
    print(f"shared prefix: {out}", file=sys.stderr)
    return out


# -- tables --------------------------------------------------------------------------------------------------
def tables(args: argparse.Namespace) -> None:
    data = json.loads(RESULTS.read_text("utf-8"))
    ex = data.get("exact")
    if ex:
        print(
            "| n | method | k | exact | comparisons min / median / max | theory | distinct (median) | "
            "rounds (median) |\n|---|---|---|---|---|---|---|---|"
        )
        for r in ex["rows"]:
            theory = (
                str(r["theory_min"]) if r["theory_min"] == r["theory_max"] else f"{r['theory_min']}..{r['theory_max']}"
            )
            print(
                f"| {r['n']} | {r['method']} | {r['k']} | {'yes' if r['exact'] else 'NO'} | "
                f"{r['comparisons_min']} / {r['comparisons_median']:g} / {r['comparisons_max']} | {theory} | "
                f"{r['distinct_median']:g} | {r['rounds_median']:g} |"
            )
    for key, q in data.get("quality", {}).items():
        print(
            f"\n{key} ({q['n_queries']} queries)\n\n| pipeline | nDCG@10 | P@1 | comparisons/q | prompts/q | "
            f"prompt tokens/q | consistency | unparseable | s/prompt |\n|---|---|---|---|---|---|---|---|---|"
        )
        for name, r in q["rows"].items():
            if "skipped" in r:
                print(f"| {name} | not run: {r['skipped']} | | | | | | | |")
                continue
            m = r["metrics"]
            extra = (
                f"{r['comparisons_per_query']:g} | {r['prompts_per_query']:g} | "
                f"{r['prompt_tokens_per_query']:.0f} | {r['consistency_rate']:.2f} | {r['unparseable']} | "
                f"{r['seconds_per_prompt_run'] or '-'}"
                if "comparisons_per_query" in r
                else " | | | | | "
            )
            print(f"| {name} | {m['ndcg@10']:.4f} | {m['p@1']:.4f} | {extra} |")
    for model, s in data.get("speed", {}).items():
        print(
            f"\nspeed, {model}, {s['comparisons']} comparisons (both orders)\n\n| mode | batched /s | one at a time /s "
            f"| speed-up |\n|---|---|---|---|"
        )
        for mode, r in s["modes"].items():
            print(f"| {mode} | {r['batched_per_s']} | {r['one_at_a_time_per_s']} | {r['speedup']} |")
        sp = s.get("shared_prefix")
        if sp:
            print(
                f"\nshared prefix, {model}, {s['comparisons']} comparisons ({sp['prompts']} prompts), score mode, "
                f"median of {sp['repeats']}\n\n| path | comparisons/s | forward tokens | seconds (runs) |\n|---|---|---|---|\n"
                f"| plain (every prompt in full) | {sp['plain_per_s']} | {sp['forward_tokens_plain']} | "
                f"{', '.join(map(str, sp['seconds_plain']))} |\n"
                f"| shared heads read once | {sp['shared_per_s']} | {sp['forward_tokens_shared']} | "
                f"{', '.join(map(str, sp['seconds_shared']))} |\n\nspeed-up {sp['speedup']}, largest difference "
                f"{sp['max_abs_diff']}, load {sp['load'][0]} .. {sp['load'][-1]}"
            )


def main(argv: list[str] | None = None) -> None:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS, help="the JSON results file each command merges into")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("exact")
    e.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100])
    e.add_argument("--k", type=int, default=10, help="top k fixed by sorting / passes of sliding")
    e.add_argument("--orders", type=int, default=20, help="random initial orders (plus the best and the worst)")
    for name in ("quality", "speed", "bias"):
        p = sub.add_parser(name)
        p.add_argument("--model", default="smollm2-135m-instruct", help="packaged alias, model folder or hub id")
        p.add_argument("--queries", type=int, default=5 if name == "quality" else 2)
        p.add_argument("--dataset", default="nq-open-oracle-dev")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--passage-max-tokens", type=int, default=128)
        p.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass")
        p.add_argument("--threads", type=int, default=0, help="torch / llama.cpp threads (0: the default)")
        p.add_argument("--backend", choices=("transformers", "llama_cpp"), default="transformers")
        p.add_argument("--store", type=Path, default=Path(os.environ.get("RAGOPT_INDEX_DIR", ROOT / "indexes")))
    q = sub.choices["quality"]
    q.add_argument("--depth", type=int, default=10)
    q.add_argument("--top-k", type=int, default=3, help="sorting: the top fixed; sliding: the passes")
    q.add_argument("--methods", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), help="none: BM25 and CE")
    q.add_argument("--mode", default="score", choices=["score", "generate"])
    q.add_argument("--inconsistent", default="tie", choices=["tie", "mean"], help="the stage's inconsistent parameter")
    q.add_argument("--ce-model", default=None, help="a trained cross-encoder artifact (ragopt train cross-encoder)")
    q.add_argument(
        "--heldout-of",
        default=None,
        metavar="ARTIFACT",
        help="sample only queries this trained artifact never saw (e.g. the --ce-model, so that PRP and the "
        "cross-encoder are compared on unseen queries)",
    )
    sub.choices["speed"].add_argument("--pairs", type=int, default=8, help="comparisons judged")
    sub.choices["speed"].add_argument(
        "--modes", nargs="*", default=["score", "generate"], choices=["score", "generate"], help="batched vs one"
    )
    sub.choices["speed"].add_argument("--repeats", type=int, default=3, help="shared-prefix timing repeats (0: skip)")
    sub.choices["bias"].add_argument(
        "--templates", nargs="+", default=["pairwise", "query_last", "answers"], choices=list(BIAS_TEMPLATES)
    )
    q.add_argument("--template", default="pairwise", choices=list(BIAS_TEMPLATES), help="the stage's prompt")
    sub.add_parser("tables")
    args = ap.parse_args(argv)
    RESULTS = args.out
    {"exact": exact, "quality": quality, "speed": speed, "bias": bias, "tables": tables}[args.cmd](args)


if __name__ == "__main__":
    main()
