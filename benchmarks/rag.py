"""RAG benchmark on nq-open-oracle-dev: answer quality by context configuration, generate-stage throughput,
and LLM-judge agreement with EM / containment.

    OMP_NUM_THREADS=1 RAGOPT_INDEX_DIR=/work/ragbench-store python benchmarks/rag.py quality \
        --model smollm2-135m-instruct --queries 100 --configs closed,gold,bm25@1,bm25@3,bm25@3e
    python benchmarks/rag.py throughput --prompts 16 --repeats 3
    python benchmarks/rag.py judge --queries 100 --judge-model qwen2.5-coder-1.5b-instruct

Config names: ``closed`` (closed-book, ``closed_book_fewshot``), ``gold`` (the qrels' gold passage only),
``<retriever>@<k>`` (bm25 / dense / hybrid top-k, best first) and ``<retriever>@<k>e`` (best at the edges).
Every LLM call goes through the persistent call cache in the artifact store (``RAGOPT_INDEX_DIR``), so a rerun
resumes where the last one stopped; each config's figures are written to ``benchmarks/results/rag.json`` as soon
as it finishes (atomically), under ``quality.<model>.<n queries>.<config>``. ``seconds`` is the wall time of
this run (cache hits included: see ``llm_calls`` / ``llm_cache_hits``); a config answered entirely from the
cache keeps the timing of the run that generated it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, machine_info, med, model_key, store
from _common import make_llm as _make_llm

from ragopt.data import load_dataset
from ragopt.evaluation import evaluate_answers
from ragopt.evaluation.run import sample_queries
from ragopt.store import ArtifactStore
from ragopt.types import Batch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "rag.json"
DATA = Path(os.environ.get("RAGOPT_DATA", "/work/shared/data")) / "nq-open-oracle-dev"
PACKAGES = ("torch", "transformers", "gguf", "llama-cpp-python", "bm25s", "sentence-transformers", "faiss-cpu")
RETRIEVERS = ("bm25", "dense", "hybrid")
KS = (1, 3, 5, 10)
ANSWER_METRICS = ["em", "f1", "contains"]
CTX_METRICS = ["ctx_recall", "answer_in_ctx"]


def all_configs() -> list[str]:
    out = ["closed", "gold"]
    for r in RETRIEVERS:
        for k in KS:
            out.append(f"{r}@{k}")
            if k >= 3:
                out.append(f"{r}@{k}e")
    return out


def parse_config(name: str) -> tuple[str, int, str]:
    """``(source, context_k, order)``: source is closed / gold / a retriever."""
    if name == "closed":
        return "closed", 0, "score"
    if name == "gold":
        return "gold", 1, "score"
    r, _, k = name.partition("@")
    order = "edges" if k.endswith("e") else "score"
    k = k.rstrip("e")
    if r not in RETRIEVERS or not k.isdigit():
        raise SystemExit(f"unknown config {name!r}; known: {', '.join(all_configs())}")
    return r, int(k), order


# -- results file ------------------------------------------------------------------------------
def read_results() -> dict:
    if OUT.is_file():
        return json.loads(OUT.read_text())
    return {}


def write_part(update) -> None:
    """Re-read the results, apply ``update(data)`` and write atomically (another section may have written)."""
    data = read_results()
    update(data)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, OUT)


# -- shared pieces -----------------------------------------------------------------------------
def dataset():
    return load_dataset(str(DATA))


def make_llm(model: str, batch_size: int = 8, backend: str = "transformers", threads: int | None = None):
    return _make_llm(model, store(), backend, threads, batch_size)


def gold_batch(ds, queries) -> Batch:
    qrels = ds.qrels("test")
    idx = np.array([[ds.corpus.index_of(next(iter(qrels[q])))] for q in queries.ids], np.int64)
    return Batch(queries, ds.corpus, idx, np.ones(idx.shape, np.float32))


def retrieved_batch(ds, queries, retriever: str, st: ArtifactStore, depth: int = 10) -> Batch:
    """The retriever's top ``depth`` for ``queries`` (its indexes are built once into the store)."""
    from ragopt.pipeline_io import load_pipeline

    pipe = load_pipeline(retriever)
    pipe.fit(ds.corpus, st)
    out = pipe.transform(Batch(queries))
    return Batch(queries, ds.corpus, out.doc_idx[:, :depth].copy(), out.scores[:, :depth].copy())


def sub(batch: Batch, rows: list[int]) -> Batch:
    if batch.doc_idx is None:
        return Batch(batch.queries[rows])
    return Batch(batch.queries[rows], batch.corpus, batch.doc_idx[rows], batch.scores[rows])


def fresh(batch: Batch) -> Batch:
    """The same batch with its own Stats (a stage's output shares its input's Stats, so counts accumulate)."""
    return Batch(batch.queries, batch.corpus, batch.doc_idx, batch.scores)


def generator(llm, context_k: int, order: str = "score", cache: bool = True, **kw):
    from ragopt.generators import Generator

    template = "closed_book_fewshot" if context_k == 0 else "qa_fewshot"
    return Generator(llm=llm, context_k=context_k, order=order, template=template, cache=cache, **kw)


def contexts_of(ds, queries, rows_per_query):
    ids = ds.corpus.doc_ids
    return {q: [(ids[r], ds.corpus.text(r)) for r in rows] for q, rows in zip(queries.ids, rows_per_query)}


# -- quality -----------------------------------------------------------------------------------
def cmd_quality(args) -> None:
    ds, st = dataset(), store()
    queries = sample_queries(ds.queries_for("test"), args.queries, seed=args.seed)
    n = len(queries)
    configs = args.configs.split(",") if args.configs else all_configs()
    llm = make_llm(args.model, backend=args.backend, threads=args.threads)
    t0 = time.perf_counter()
    llm.load()
    load_s = time.perf_counter() - t0
    print(f"{model_key(args.model, args.backend)}: loaded in {load_s:.1f} s", flush=True)
    qrels = ds.qrels("test")
    qrels = {q: qrels[q] for q in queries.ids if q in qrels}
    retrieved: dict[str, Batch] = {}
    key = f"{n}q_seed{args.seed}"

    state: dict[str, dict[str, Any]] = {}
    for name in configs:
        source, k, order = parse_config(name)
        if source in RETRIEVERS and source not in retrieved:
            t = time.perf_counter()
            retrieved[source] = retrieved_batch(ds, queries, source, st)
            print(f"  {source}: retrieved in {time.perf_counter() - t:.1f} s", flush=True)
        base = (
            Batch(queries) if source == "closed" else gold_batch(ds, queries) if source == "gold" else retrieved[source]
        )
        gen = generator(llm, k, order).fit(ds.corpus, st)
        state[name] = {"base": base, "gen": gen, "answers": [], "rows": [], "seconds": 0.0}
        state[name].update(calls=0, hits=0, ctoks=0)

    def step(name: str, s: int) -> None:
        """Generate the answers of queries s .. s+chunk for one config, accumulating its counts and time."""
        c_state = state[name]
        t = time.perf_counter()
        out = c_state["gen"].transform(sub(c_state["base"], list(range(s, min(n, s + args.chunk)))))
        c_state["seconds"] += time.perf_counter() - t
        c_state["answers"] += out.answers
        c_state["rows"] += out.contexts
        c = out.stats.counts
        c_state["calls"] += c.get("llm_calls", 0)
        c_state["hits"] += c.get("llm_cache_hits", 0)
        c_state["ctoks"] += c.get("completion_tokens", 0)
        print(
            f"  {name}: {len(c_state['answers'])}/{n} in {c_state['seconds']:.1f} s "
            f"(calls {c_state['calls']}, hits {c_state['hits']})",
            flush=True,
        )

    if args.interleave:  # query by query through every config: consecutive prompts share a prefix (llama.cpp's KV)
        for s in range(0, n, args.chunk):
            for name in configs:
                step(name, s)
    for name in configs:
        if not args.interleave:
            for s in range(0, n, args.chunk):
                step(name, s)
        source, k, order = parse_config(name)
        c_state = state[name]
        base, gen, answers, rows_all = c_state["base"], c_state["gen"], c_state["answers"], c_state["rows"]
        calls, hits, ctoks, seconds = c_state["calls"], c_state["hits"], c_state["ctoks"], c_state["seconds"]
        # prompt tokens per query: the tokens the model reads (chat-free plain prompts + special tokens)
        prompts, _, dropped = gen.prompts(base)
        ptok = [len(llm.encode(p)) for p in prompts]
        preds = dict(zip(queries.ids, answers))
        metrics = ANSWER_METRICS + (CTX_METRICS if k > 0 else [])
        res = evaluate_answers(
            preds, ds.answers, metrics, contexts=contexts_of(ds, queries, rows_all) if k > 0 else None, qrels=qrels
        )
        entry: dict[str, Any] = {
            "config": {
                "source": source,
                "context_k": k,
                "order": order,
                "template": gen.template,
                "chat": gen.chat,
                "max_new_tokens": gen.max_new_tokens,
                "passage_max_tokens": gen.passage_max_tokens,
                "max_prompt_tokens": gen.max_prompt_tokens,
            },
            "n_queries": n,
            "n_scored": res.n_scored,
            "metrics": {m: round(v, 4) for m, v in res.metrics.items()},
            "prompt_tokens_per_query": round(float(np.mean(ptok)), 1),
            "prompt_tokens_max": int(max(ptok)),
            "context_passages_per_query": round(sum(len(r) for r in rows_all) / n, 2),
            "context_dropped": int(dropped),
            "completion_tokens_fresh": int(ctoks),
            "llm_calls": int(calls),
            "llm_cache_hits": int(hits),
            "seconds": round(seconds, 2),
            "seconds_per_fresh_call": round(seconds / calls, 3) if calls else None,
            "load": load(),
            "interleaved_with": [c for c in configs if c != name] if args.interleave else None,
            "answers": preds,
            "per_query": {
                m: {q: v for q, v in res.per_query[m].items()} for m in ("em", "contains") if m in res.per_query
            },
        }
        print(f"  {name}: {entry['metrics']} ptok/q {entry['prompt_tokens_per_query']} {seconds:.1f} s", flush=True)

        def update(data, entry=entry, name=name):
            q = data.setdefault("quality", {})
            m = q.setdefault(model_key(args.model, args.backend), {})
            m.setdefault("machine", {}).update(machine_info(PACKAGES))
            m["machine"]["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
            m["machine"]["llama_cpp_threads"] = args.threads
            m["machine"]["model_load_seconds"] = round(load_s, 1)
            runs = m.setdefault(key, {})
            old = runs.get(name)
            if old and entry["llm_calls"] == 0 and old.get("llm_calls"):  # all from cache: keep the real timing
                for f in (
                    "seconds",
                    "seconds_per_fresh_call",
                    "llm_calls",
                    "llm_cache_hits",
                    "completion_tokens_fresh",
                    "load",
                ):
                    entry[f] = old.get(f)
                entry["timing_from_earlier_run"] = True
            runs[name] = entry

        write_part(update)


# -- throughput --------------------------------------------------------------------------------
def cmd_throughput(args) -> None:
    from ragopt.llm.base import GenerationParams
    from ragopt.llm.cache import CachedLLM

    ds, st = dataset(), store()
    queries = sample_queries(ds.queries_for("test"), args.prompts, seed=args.seed + 1)
    llm8 = make_llm(args.model, batch_size=8)
    llm1 = make_llm(args.model, batch_size=1)  # the same loaded weights (models are shared per process)
    llm8.load()
    llm1.load()
    base = retrieved_batch(ds, queries, "bm25", st) if args.context == "bm25" else gold_batch(ds, queries)
    k = args.k if args.context == "bm25" else 1
    stage = generator(llm8, k, cache=False).fit(ds.corpus, st)
    prompts, _, _ = stage.prompts(base)
    params = GenerationParams(max_new_tokens=stage.max_new_tokens, stop=("\n",))
    ptoks = sum(len(llm8.encode(p)) for p in prompts)

    def run_stage():
        t = time.perf_counter()
        out = stage.transform(fresh(base))
        return time.perf_counter() - t, out.stats.counts["completion_tokens"], out.answers

    def run_direct(llm):
        def f():
            t = time.perf_counter()
            comps = llm.generate(prompts, params)
            return time.perf_counter() - t, sum(c.completion_tokens for c in comps), [c.text for c in comps]

        return f

    variants = {"stage_batch8": run_stage, "direct_batch8": run_direct(llm8), "direct_batch1": run_direct(llm1)}
    run_direct(llm8)()  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {v: [] for v in variants}
    toks: dict[str, list[int]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v, f in variants.items():
            s, ct, _ = f()
            times[v].append(s)
            toks[v].append(ct)
            print(f"  repeat {r} {v}: {s:.2f} s, {ct} completion tokens", flush=True)

    # cache-hit path: fill the cache once, then time answering the same batch from it
    cached_stage = generator(llm8, k, cache=True).fit(ds.corpus, st)
    cached_stage.transform(base)
    client = CachedLLM(llm8, store=st)
    hit_stage, hit_client = [], []
    for _ in range(max(3, args.repeats)):
        t = time.perf_counter()
        out = cached_stage.transform(fresh(base))
        hit_stage.append(time.perf_counter() - t)
        assert out.stats.counts.get("llm_calls", 0) == 0
        t = time.perf_counter()
        got = client.generate(prompts, params)
        hit_client.append(time.perf_counter() - t)
        assert all(c.cached for c in got)
    n = len(prompts)
    res = {
        v: {
            "median_s": round(med(times[v]), 3),
            "runs_s": [round(x, 3) for x in times[v]],
            "completion_tokens": toks[v][0],
            "completion_tok_per_s": round(toks[v][0] / med(times[v]), 2),
            "total_tok_per_s": round((toks[v][0] + ptoks) / med(times[v]), 1),
        }
        for v in variants
    }
    out = {
        "machine": {**machine_info(PACKAGES), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load": load()},
        "model": args.model,
        "n_prompts": n,
        "context": f"{args.context} top-{k}",
        "prompt_tokens": ptoks,
        "max_new_tokens": stage.max_new_tokens,
        "repeats": args.repeats,
        "variants": res,
        "stage_vs_direct": round(med(times["direct_batch8"]) / med(times["stage_batch8"]), 3),
        "batch8_vs_batch1_speedup": round(med(times["direct_batch1"]) / med(times["direct_batch8"]), 3),
        "same_completion_tokens_stage_direct": toks["stage_batch8"][0] == toks["direct_batch8"][0],
        "cache_hit": {
            "stage_s_per_prompt": round(med(hit_stage) / n, 5),
            "client_s_per_prompt": round(med(hit_client) / n, 5),
            "stage_runs_s": [round(x, 4) for x in hit_stage],
            "note": "stage: prompt building (tokenising, packing) + cache lookup; client: "
            "CachedLLM.generate lookup only",
        },
    }
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1), flush=True)
    write_part(lambda data: data.__setitem__("throughput", out))


# -- judge -------------------------------------------------------------------------------------
def kappa(a: list[float], b: list[float]) -> float:
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return float("nan") if pe == 1 else (po - pe) / (1 - pe)


JUDGE_NAMES = {"correctness": "judge_correctness", "faithfulness": "faithfulness", "relevance": "answer_relevance"}


def run_holding(model_runs: dict, config: str, qids, prefer: str | None = None, field: str = "answers"):
    """The ``config`` entry of the first quality run of a model (``prefer``'s key first) whose ``field`` (answers,
    or per-query EM) covers every query of ``qids``, or None. Seeded samples are nested (the 40-sample is inside
    the 100-sample), so a larger run holds a smaller sample's answers."""
    need = set(qids)
    for _, runs in sorted(model_runs.items(), key=lambda kv: kv[0] != prefer):
        entry = runs.get(config) if isinstance(runs, dict) else None
        if not entry:
            continue
        have = entry["answers"] if field == "answers" else entry["per_query"]["em"]
        if need <= set(have):
            return entry
    return None


def judged_samples(args):
    """``(queries, src, preds, questions, golds, contexts)`` of ``args.answer_model``'s ``args.config`` answers on
    the seeded sample (``src``: the quality run they come from); the context of the ``gold`` config is the gold
    passage (what the answering model read)."""
    ds = dataset()
    queries = sample_queries(ds.queries_for("test"), args.queries, seed=args.seed)
    q_all = read_results().get("quality", {}).get(args.answer_model, {})
    seeded = {k: v for k, v in q_all.items() if k.endswith(f"_seed{args.seed}")}
    src = run_holding(seeded, args.config, queries.ids, prefer=f"{len(queries)}q_seed{args.seed}")
    if src is None:
        raise SystemExit(
            f"run `quality --model {args.answer_model} --queries {len(queries)} --configs {args.config}` first"
        )
    preds = {q: src["answers"][q] for q in queries.ids}
    questions = dict(zip(queries.ids, queries.texts))
    golds = {q: list(ds.answers[q]) for q in queries.ids}
    contexts = None
    if args.config == "gold":
        gb = gold_batch(ds, queries)
        contexts = {
            q: [(ds.corpus.ids[int(i)], ds.corpus.texts[int(i)]) for i in gb.doc_idx[r]]
            for r, q in enumerate(queries.ids)
        }
    return queries, src, preds, questions, golds, contexts


def cmd_judge(args) -> None:
    from ragopt.evaluation.judge import LLMJudge, evaluate_judged
    from ragopt.types import Stats

    queries, src, preds, questions, golds, contexts = judged_samples(args)
    n = len(queries)
    metrics = [JUDGE_NAMES[m.strip()] for m in args.metrics.split(",")]
    if contexts is None and "faithfulness" in metrics:
        raise SystemExit("faithfulness is judged on the gold config only (its context is the gold passage)")
    if args.export:
        with open(args.export, "w") as f:
            for q in queries.ids:
                row = {"qid": q, "question": questions[q], "answer": preds[q], "golds": golds[q]}
                row["contexts"] = [t for _, t in contexts[q]] if contexts else []
                f.write(json.dumps(row) + "\n")
        print(f"exported {n} samples to {args.export}")
    jl = make_llm(args.judge_model, backend=args.backend, threads=args.threads)
    t0 = time.perf_counter()
    jl.load()
    load_s = time.perf_counter() - t0
    judge = LLMJudge(jl, mode="score", store=store())
    # chunks of 8 queries fill the call cache (an interrupted run resumes); the last pass reads it all back
    t = time.perf_counter()
    fresh = 0
    for s in range(0, n, 8):
        part = {q: preds[q] for q in queries.ids[s : s + 8]}
        stt = Stats()
        evaluate_judged(judge, metrics, part, questions, golds, contexts, stats=stt)
        fresh += stt.counts.get("llm_calls", 0)
        print(f"  judged {min(n, s + 8)}/{n} in {time.perf_counter() - t:.1f} s", flush=True)
    warm_s = time.perf_counter() - t
    after = Stats()
    res = evaluate_judged(judge, metrics, preds, questions, golds, contexts, stats=after)
    out: dict[str, Any] = {
        "machine": {**machine_info(PACKAGES), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load": load()},
        "answers_by": args.answer_model,
        "config": args.config,
        "judge": judge.describe(),
        "backend": args.backend,
        "n_queries": n,
        "judge_load_seconds": round(load_s, 1),
        "judge_seconds": round(warm_s, 1),
        "judge_fresh_calls": fresh,
        "evaluate_judged_fresh_calls": after.counts.get("llm_calls", 0),
        "evaluate_judged_cache_hits": after.counts.get("llm_cache_hits", 0),
    }
    for m in metrics:
        verdict = res.per_query[m]
        qids = [q for q in queries.ids if q in verdict]
        out[m] = {
            "mean": round(res.metrics[m], 4),
            "ci95": [round(x, 4) for x in res.ci[m]],
            "n_judged": len(qids),
            "p_yes": {q: round(p, 4) for q, p in res.confidence[m].items()},
            "verdicts": {q: verdict[q] for q in qids},
        }
        if m == "judge_correctness":
            j = [verdict[q] for q in qids]
            out[m]["agreement"] = {}
            for ref_m in ("em", "contains"):
                ref = [float(src["per_query"][ref_m][q]) for q in qids]
                out[m][ref_m] = round(sum(ref) / len(ref), 4)
                out[m]["agreement"][ref_m] = agreement(j, ref)
    brief = {k: v for k, v in out.items() if k != "machine"}
    for m in metrics:
        brief[m] = {k: v for k, v in out[m].items() if k not in ("p_yes", "verdicts")}
    print(json.dumps(brief, indent=1))
    write_part(lambda data: data.__setitem__(args.key, out))


def agreement(a: list[float], b: list[float]) -> dict[str, Any]:
    """Percent agreement, Cohen's kappa and the 2x2 table of two 0/1 verdict lists."""
    return {
        "percent": round(100 * sum(x == y for x, y in zip(a, b)) / len(a), 1),
        "cohen_kappa": round(kappa(a, b), 3),
        "yes_yes": sum(1 for x, y in zip(a, b) if x == 1 and y == 1),
        "yes_no": sum(1 for x, y in zip(a, b) if x == 1 and y == 0),
        "no_yes": sum(1 for x, y in zip(a, b) if x == 0 and y == 1),
        "no_no": sum(1 for x, y in zip(a, b) if x == 0 and y == 0),
    }


def auc(scores: list[float], labels: list[float]) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half); None without both."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def cmd_ragas_compare(args) -> None:
    """ragas' scores (``rag_ragas.py``) beside ragopt's judgements of the same samples by the same judge model."""
    ours = read_results().get(args.key)
    theirs = json.loads(Path(args.ragas).read_text())
    if not ours:
        raise SystemExit(f"no {args.key!r} in {OUT}: run `rag.py judge ... --key {args.key}` first")
    src = read_results()["quality"][ours["answers_by"]]
    judged = set(ours["judge_correctness"]["verdicts"]) if "judge_correctness" in ours else set()
    ref = run_holding(src, ours["config"], judged, field="per_query")  # the answer metrics of every judged query
    if ref is None:
        raise SystemExit(f"no quality run of {ours['answers_by']} {ours['config']} holds the judged queries")
    pairs = {
        "faithfulness": "faithfulness",
        "answer_correctness": "judge_correctness",
        "answer_relevancy": "answer_relevance",
    }
    out: dict[str, Any] = {"ragas_version": theirs.get("ragas_version"), "judge": theirs.get("model"), "metrics": {}}
    for rm, om in pairs.items():
        r = theirs.get("metrics", {}).get(rm)
        if not r or om not in ours:
            continue
        qids = [q for q, v in r["per_query"].items() if v is not None and q in ours[om]["verdicts"]]
        rs = [r["per_query"][q] for q in qids]
        os_ = [float(ours[om]["verdicts"][q]) for q in qids]
        row: dict[str, Any] = {
            "ragopt_metric": om,
            "n_samples": len(r["per_query"]),
            "n_ragas_failed": r["n_failed"],
            "n_compared": len(qids),
            "ragas_mean": round(sum(rs) / len(rs), 4) if rs else None,
            "ragopt_mean_same_samples": round(sum(os_) / len(os_), 4) if os_ else None,
            "ragas_seconds": r["seconds"],
        }
        if qids:
            row["agreement_ragas_at_0.5"] = agreement(os_, [float(x >= 0.5) for x in rs])
            row["auc_ragas_score_for_ragopt_verdict"] = auc(rs, os_)
            if rm == "answer_correctness":
                for m in ("em", "contains"):
                    lab = [float(ref["per_query"][m][q]) for q in qids]
                    row[f"auc_ragas_for_{m}"] = auc(rs, lab)
                    row[f"agreement_ragas_at_0.5_vs_{m}"] = agreement(lab, [float(x >= 0.5) for x in rs])
                    row[f"agreement_ragopt_vs_{m}"] = agreement(os_, lab)
        out["metrics"][rm] = row
    print(json.dumps(out, indent=1))
    write_part(lambda data: data.__setitem__("judge_vs_ragas", out))


def cmd_serve(args) -> None:
    """Serve ``--model`` (through the call cache) on an OpenAI-compatible endpoint until interrupted, so an
    outside tool (ragas) asks the same judge model; the base URL goes to ``--url-file``."""
    from ragopt.llm.cache import CachedLLM
    from ragopt.testing.openai_server import OpenAITestServer

    llm = make_llm(args.model, backend=args.backend, threads=args.threads)
    llm.load()
    client = CachedLLM(llm, store=store())
    with OpenAITestServer(client, model_name=args.model, default_max_tokens=args.max_tokens) as server:
        Path(args.url_file).write_text(server.base_url + "\n")
        print(f"serving {args.model} at {server.base_url}", flush=True)
        try:
            while True:
                time.sleep(60)
                print(f"  {len(server.requests)} requests", flush=True)
        except KeyboardInterrupt:
            pass


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subs = ap.add_subparsers(dest="cmd", required=True)
    q = subs.add_parser("quality")
    q.add_argument("--model", default="smollm2-135m-instruct")
    q.add_argument("--queries", type=int, default=100)
    q.add_argument("--configs", default=None, help=f"comma-separated subset of: {','.join(all_configs())}")
    q.add_argument("--chunk", type=int, default=8, help="queries per generate call (results cached per call)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--backend", choices=("transformers", "llama_cpp"), default="transformers")
    q.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its own)")
    q.add_argument(
        "--interleave",
        action="store_true",
        help="run the configs chunk by chunk in turn (with --chunk 1, consecutive llama.cpp prompts share their "
        "prefix, e.g. bm25@5 then bm25@10, and the shared part is read once)",
    )
    t = subs.add_parser("throughput")
    t.add_argument("--model", default="smollm2-135m-instruct")
    t.add_argument("--prompts", type=int, default=16)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--context", choices=("gold", "bm25"), default="gold")
    t.add_argument("--k", type=int, default=3)
    t.add_argument("--seed", type=int, default=0)
    j = subs.add_parser("judge")
    j.add_argument("--answer-model", default="smollm2-135m-instruct")
    j.add_argument("--judge-model", default="qwen2.5-coder-1.5b-instruct")
    j.add_argument("--config", default="gold")
    j.add_argument("--metrics", default="correctness", help="comma-separated: correctness,faithfulness,relevance")
    j.add_argument("--backend", choices=("transformers", "llama_cpp"), default="transformers")
    j.add_argument("--threads", type=int, default=None)
    j.add_argument("--export", default=None, help="also write the judged samples as JSON lines (for ragas)")
    j.add_argument("--key", default="judge", help="results key")
    j.add_argument("--queries", type=int, default=100)
    j.add_argument("--seed", type=int, default=0)
    v = subs.add_parser("serve")
    v.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    v.add_argument("--backend", choices=("transformers", "llama_cpp"), default="llama_cpp")
    v.add_argument("--threads", type=int, default=None)
    v.add_argument("--max-tokens", type=int, default=512, help="completion limit when a request sets none")
    v.add_argument("--url-file", default="/tmp/ragopt-serve-url")
    c = subs.add_parser("ragas-compare")
    c.add_argument("--ragas", default=str(ROOT / "benchmarks" / "results" / "rag_ragas.json"))
    c.add_argument("--key", default="judge_llama_cpp", help="results key of the ragopt judge run")
    args = ap.parse_args(argv)
    cmds = {"quality": cmd_quality, "throughput": cmd_throughput, "judge": cmd_judge, "serve": cmd_serve}
    cmds["ragas-compare"] = cmd_ragas_compare
    cmds[args.cmd](args)


if __name__ == "__main__":
    main()
