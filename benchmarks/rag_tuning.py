"""RAG tuning benchmark: the AutoRAG-HP experiment on our data, and stage reuse across the generation boundary.

1. **Grid** (``grid``): every configuration of retriever (BM25 | dense MiniLM | RRF of both) x context size
   (1, 2, 3 passages) x passage order (best first | best at the edges) x extractive compression (1.0, 0.75,
   0.5, 0.25) = 72 configurations of ``configs/quickstart.yaml``'s pipeline (SmolLM2-135M-Instruct generating) is
   evaluated once on a seeded sample of nq-open-oracle-dev questions (passages cut to 128 tokens): token F1 per query, and the LLM calls
   each cell really made (the LLM cache serves a prompt met before). The table is written to
   ``benchmarks/results/rag_grid_<model>.json`` as it grows, and a rerun resumes it.
2. **Replay** (``replay``): every tuner runs against that table through the ask/tell API users call, for
   ``--seeds`` seeds. Evaluating a configuration the run has not met costs one LLM call per tuning question
   (a repeat is free: the LLM cache); the figure is the LLM calls a tuner spends until its best-so-far is
   within 1% (and 2%) of the grid's best, against the grid's own cost (72 x questions). AutoRAG-HP's headline:
   within 1% with about 20% of the grid's calls.
   Tuners that evaluate a whole configuration per trial are replayed so; the bandits are also replayed as
   AutoRAG-HP runs them (``hiermab@b4``): one pull is a configuration on a random mini-batch of questions.
3. **Online** (``online``): a stream of questions (drawn with replacement from the table's questions) arrives in
   batches; each batch is one pull of a bandit over the configurations (reward: the batch's mean F1, read from
   the per-query table), against the best fixed configuration in hindsight and random choice: cumulative
   regret per batch.
4. **Reuse** (``reuse``): 30 random trials over the BM25 half of the space with stage reuse and LLM cache (from an
   empty store) vs the same configurations with nothing reused: wall time and LLM calls, identical metrics per
   trial.

    python benchmarks/rag_tuning.py grid [--limit 20]          # build / resume the table (SmolLM2, CPU)
    python benchmarks/rag_tuning.py grid --grid small --model qwen2.5-coder-1.5b-instruct --backend llama_cpp
    python benchmarks/rag_tuning.py replay [--seeds 10]        # seconds, from the table
    python benchmarks/rag_tuning.py online [--batch-size 4]
    python benchmarks/rag_tuning.py reuse [--trials 30 --limit 10]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import copy
import itertools
import json
import math
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "quickstart.yaml"
METRIC = "f1"
TUNERS = ("random", "tpe", "greedy", "hiermab", "hiermab_ts")

GRID = {
    "retriever": ["bm25", "dense", "hybrid"],
    "context_k": [1, 2, 3],
    "order": ["score", "edges"],
    "compression": [1.0, 0.75, 0.5, 0.25],
}
#: a smaller grid for models that are slow on the CPU (Qwen2.5-Coder-1.5B): 3 x 2 x 2 x 2 = 24 configurations
GRIDS = {
    "full": dict(GRID),
    "small": {
        "retriever": ["bm25", "dense", "hybrid"],
        "context_k": [1, 3],
        "order": ["score", "edges"],
        "compression": [1.0, 0.5],
    },
}
GRID_NAME = "full"


def set_grid(name: str) -> None:
    """Use the grid ``name`` (``--grid``) for the table, its space and its file names."""
    global GRID, GRID_NAME
    GRID, GRID_NAME = dict(GRIDS[name]), name


def tag(model: str) -> str:
    """The results files' suffix: the model, and the grid when it is not the full one."""
    return model if GRID_NAME == "full" else f"{model}_{GRID_NAME}"


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def study_config(limit: int, seed: int, model: str, backend: str = "transformers"):
    """The quickstart's RAG pipeline and space with the grid's choices, every question tuned on; ``backend``
    llama_cpp runs the generator's GGUF through llama.cpp (one thread, no mmap)."""
    import yaml

    from ragopt.tuning.study import StudyConfig

    d = yaml.safe_load(CONFIG.read_text())
    d["queries"] = {"limit": limit, "seed": seed}
    d["holdout"] = {"fraction": 0.0}
    d["pipeline"][1]["llm"]["model"] = model
    if backend == "llama_cpp":
        d["pipeline"][1]["llm"] = {"type": "llama_cpp", "model": model, "n_threads": 1, "mmap": False}
    d["pipeline"][1]["passage_max_tokens"] = 128  # nq passages are about 100 words: this trims only the longest
    for p in d["space"]:
        if p["name"] == "compression":
            p["choices"] = GRID["compression"]
        if p["name"] == "context_k":
            p["choices"] = GRID["context_k"]
        if p["name"] == "order":
            p["choices"] = GRID["order"]
    d["study"] = "rag-grid"
    return StudyConfig.from_dict(d, source=str(CONFIG), base_dir=CONFIG.parent)


def key_of(params: Mapping[str, Any]) -> str:
    return json.dumps({k: params[k] for k in GRID}, sort_keys=True)


def grid_points() -> list[dict[str, Any]]:
    return [dict(zip(GRID, combo)) for combo in itertools.product(*GRID.values())]


# -- 1. grid -------------------------------------------------------------------------------------------------
def build_grid(args) -> dict[str, Any]:
    from ragopt.store import ArtifactStore
    from ragopt.tuning.study import PipelineObjective

    path = RESULTS / f"rag_grid_{tag(args.model)}.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    if table.get("limit") not in (None, args.limit) or table.get("seed") not in (None, args.seed):
        raise SystemExit(f"{path} was built with another sample (limit {table.get('limit')}); move it away first")
    cells = table.setdefault("cells", {})
    cfg = study_config(args.limit, args.seed, args.model, args.backend)
    store = ArtifactStore(Path(args.store))
    obj = PipelineObjective(cfg, store=store)
    table.update(
        {
            "dataset": cfg.dataset,
            "model": args.model,
            "backend": args.backend,
            "metric": METRIC,
            "limit": args.limit,
            "seed": args.seed,
            "n_queries": len(obj.tune_queries),
            "grid": GRID,
            "machine": _machine(),
        }
    )
    todo = [p for p in grid_points() if key_of(p) not in cells]
    print(f"[grid] {len(cells)} cells done, {len(todo)} to go ({len(obj.tune_queries)} questions)", flush=True)
    for i, params in enumerate(todo):
        t0 = time.perf_counter()
        ev = obj.evaluate(obj.config_for(params))
        dt = time.perf_counter() - t0
        cells[key_of(params)] = {
            "params": params,
            "value": ev["metrics"][METRIC],
            "metrics": ev["metrics"],
            "per_query": ev["per_query"][METRIC],
            "llm_calls": ev["costs"].get("llm_calls", 0),
            "llm_cache_hits": ev["costs"].get("llm_cache_hits", 0),
            "prompt_tokens": ev["costs"].get("generate_prompt_tokens", 0),
            "seconds": round(dt, 2),
        }
        print(
            f"[grid] {len(cells):>2}/{len(grid_points())} {key_of(params)}  {METRIC} "
            f"{ev['metrics'][METRIC]:.4f}  llm_calls {cells[key_of(params)]['llm_calls']:>3}  {dt:.1f}s",
            flush=True,
        )
        if i % 4 == 3 or i == len(todo) - 1:
            _save(path, table)
    _save(path, table)
    return table


def _save(path: Path, table: Mapping[str, Any]) -> None:
    from ragopt._io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(table, indent=1))


def load_grid(model: str) -> dict[str, Any]:
    path = RESULTS / f"rag_grid_{tag(model)}.json"
    full = RESULTS / f"rag_grid_{model}.json"
    if not path.exists() and GRID_NAME != "full" and full.exists():
        # a smaller grid is a subset of the full one: read its cells from the full table (same questions)
        table = json.loads(full.read_text())
        keys = {key_of(p) for p in grid_points()}
        table["cells"] = {k: c for k, c in table["cells"].items() if k in keys}
        table["derived_from"] = full.name
    elif not path.exists():
        raise SystemExit(f"no table at {path}: run `python benchmarks/rag_tuning.py grid` first")
    else:
        table = json.loads(path.read_text())
    missing = [p for p in grid_points() if key_of(p) not in table["cells"]]
    if missing:
        raise SystemExit(f"{path} lacks {len(missing)} cells: finish it with `grid`")
    return table


# -- 2. replay -----------------------------------------------------------------------------------------------
def grid_space():
    from ragopt.tuning.space import SearchSpace

    return SearchSpace.from_list(
        [
            {"name": "retriever", "path": "stages.0.type", "choices": GRID["retriever"], "group": "retriever"},
            {"name": "context_k", "path": "stages.1.context_k", "choices": GRID["context_k"], "group": "context"},
            {"name": "order", "path": "stages.1.order", "choices": GRID["order"], "group": "context"},
            {"name": "compression", "path": "stages.1.compression", "choices": GRID["compression"], "group": "comp"},
        ]
    )


TEMPLATE = {"retriever": "bm25", "context_k": 3, "order": "score", "compression": 1.0}


def replay_one(
    name: str, values: Mapping[str, float], n_queries: int, seed: int, budget: int, **options: Any
) -> dict[str, Any]:
    """One tuner run against the table: LLM calls spent (distinct configurations x questions) and best so far;
    for the ``llm`` tuner also its own proposal calls (``options``: its ``llm`` and ``store``)."""
    from ragopt.tuning.tuners import make_tuner

    tuner = make_tuner(name, grid_space(), seed=seed, defaults=dict(TEMPLATE), **options)
    optimum = max(values.values())
    seen: set[str] = set()
    best, trace = -math.inf, []
    for _ in range(budget):
        params = tuner.ask()
        k = key_of(params)
        seen.add(k)
        best = max(best, values[k])
        trace.append((len(seen) * n_queries, best))
        if best >= optimum or len(seen) == len(values):
            break
        try:
            tuner.tell(params, values[k])
        except RuntimeError as e:  # optuna's GridSampler stops after its last point
            if "Study.stop" not in str(e):
                raise
    out = {"tuner": name, "seed": seed, "trace": trace, "trials": len(trace)}
    if name == "llm":
        out["proposer"] = {"counts": dict(tuner.counts), "rejections": dict(tuner.rejections), **tuner.llm_stats}
        print(f"[replay] llm seed {seed}: {len(trace)} asks, {tuner.counts}, best {best:.4f}", flush=True)
    return out


def replay_batched(
    name: str, cells: Mapping[str, Any], values: Mapping[str, float], seed: int, batch: int, budget_calls: int
) -> dict[str, Any]:
    """AutoRAG-HP's setting: one pull evaluates a configuration on a random mini-batch of ``batch`` tuning
    questions (reward: their mean F1); a (configuration, question) pair met before costs nothing (the LLM
    cache). The recommendation after each pull is the bandit's incumbent (best mean reward over its pulls, what
    an online study serves); the trace follows its *true* value on all tuning questions against the LLM calls
    spent."""
    from ragopt.tuning.tuners import make_tuner

    tuner = make_tuner(name, grid_space(), seed=seed, defaults=dict(TEMPLATE), online=True)
    rng = random.Random(seed)
    qids = sorted(next(iter(cells.values()))["per_query"])
    paid: set[tuple[str, str]] = set()
    trace = []
    for _ in range(4 * budget_calls // max(batch, 1)):  # pulls on paid pairs are free: cap the pulls too
        if len(paid) >= budget_calls:
            break
        params = tuner.ask()
        k = key_of(params)
        qs = rng.sample(qids, min(batch, len(qids)))
        per_query = cells[k]["per_query"]
        paid.update((k, q) for q in qs)
        reward = statistics.fmean(per_query[q] for q in qs)
        tuner.tell(params, reward)
        trace.append((len(paid), values[key_of(tuner.incumbent())]))  # what an online study would serve
    return {"tuner": f"{name}@b{batch}", "seed": seed, "trace": trace, "trials": len(trace)}


def llm_tuner_options(args) -> dict[str, Any]:
    """The ``llm`` tuner's proposer: ``--tuner-llm`` on ``--tuner-backend`` (llama.cpp: one thread, no mmap),
    its calls cached in the store."""
    cfg: dict[str, Any] = {"type": args.tuner_backend, "model": args.tuner_llm}
    if args.tuner_backend == "llama_cpp":
        cfg.update(n_threads=1, mmap=False)
    return {
        "llm": cfg,
        "store": args.store,
        "task": "maximise answer F1 of a RAG pipeline on nq questions",
        "retries": args.tuner_retries,
    }


def calls_to_stay(trace: list[tuple[int, float]], target: float) -> float:
    """LLM calls after which the trace is at or above ``target`` and stays there to its end."""
    out = math.inf
    for c, v in reversed(trace):
        if v < target:
            break
        out = c
    return out


def replay(args) -> dict[str, Any]:
    table = load_grid(args.model)
    values = {k: c["value"] for k, c in table["cells"].items()}
    n_q = table["n_queries"]
    grid_calls = len(values) * n_q
    optimum = max(values.values())
    best_key = max(values, key=values.get)
    tuners = list(args.tuners)
    out: dict[str, Any] = {
        "dataset": table["dataset"],
        "model": table["model"],
        "metric": METRIC,
        "n_queries": n_q,
        "grid": GRID_NAME,
        "table": table.get("derived_from") or f"rag_grid_{tag(args.model)}.json",
        "grid_size": len(values),
        "grid_llm_calls": grid_calls,
        "grid_llm_calls_made": sum(c["llm_calls"] for c in table["cells"].values()),
        "optimum": optimum,
        "optimum_params": table["cells"][best_key]["params"],
        "n_within_1pct": sum(v >= 0.99 * optimum for v in values.values()),
        "n_within_2pct": sum(v >= 0.98 * optimum for v in values.values()),
        "template": values[key_of(TEMPLATE)],
        "seeds": args.seeds,
        "tuners": {},
    }
    names = tuners + [f"{t}@b{args.batch_size}" for t in tuners if t.startswith("hiermab")]
    for name in names:
        if "@b" in name:
            base, b = name.split("@b")
            runs = [
                replay_batched(base, table["cells"], values, s, int(b), budget_calls=grid_calls)
                for s in range(args.seeds)
            ]
        else:
            opts = llm_tuner_options(args) if name == "llm" else {}
            runs = [replay_one(name, values, n_q, s, budget=10 * len(values), **opts) for s in range(args.seeds)]
        row: dict[str, Any] = {"seeds": args.seeds}
        if name == "llm":  # what proposing cost: the tuner's own LLM calls (answers' calls are counted below)
            props = [r["proposer"] for r in runs]
            row["proposer"] = {
                "model": args.tuner_llm,
                "backend": args.tuner_backend,
                "retries": args.tuner_retries,
                "asks": sum(r["trials"] for r in runs),
                "llm_calls": sum(p.get("llm_calls", 0) for p in props),
                "llm_cache_hits": sum(p.get("llm_cache_hits", 0) for p in props),
                "prompt_tokens": sum(p.get("prompt_tokens", 0) for p in props),
                **{k: sum(p["counts"][k] for p in props) for k in props[0]["counts"]},
                "rejections": {
                    k: sum(p["rejections"].get(k, 0) for p in props)
                    for k in {k for p in props for k in p["rejections"]}
                },
            }
        for label, frac in (("to_1pct", 0.01), ("to_2pct", 0.02)):
            # reached = the trace gets there and stays there (a batched recommendation may move away again)
            calls = [calls_to_stay(r["trace"], (1 - frac) * optimum) for r in runs]
            med = statistics.median(calls)
            row[label] = {
                "median_llm_calls": med,
                "median_pct_of_grid": round(100 * med / grid_calls, 1) if math.isfinite(med) else None,
                "per_seed": [c if math.isfinite(c) else None for c in calls],
            }
        row["target_met"] = bool(row["to_1pct"]["median_pct_of_grid"] is not None) and (
            row["to_1pct"]["median_pct_of_grid"] <= 20.0
        )
        out["tuners"][name] = row
        print(
            f"[replay] {name:>11}: to 1% {row['to_1pct']['median_llm_calls']} calls "
            f"({row['to_1pct']['median_pct_of_grid']}% of grid), to 2% {row['to_2pct']['median_llm_calls']}",
            flush=True,
        )
    path = RESULTS / f"rag_tuning_replay_{tag(args.model)}.json"
    if path.is_file():  # keep the other tuners' rows of a replay of the same table
        old = json.loads(path.read_text())
        if (old.get("grid_size"), old.get("optimum")) == (len(values), optimum):
            for row in old["tuners"].values():
                row.setdefault("seeds", old.get("seeds"))
            out["tuners"] = {**{k: v for k, v in old["tuners"].items() if k not in out["tuners"]}, **out["tuners"]}
            out["seeds"] = sorted({row["seeds"] for row in out["tuners"].values()})
    rnd = out["tuners"].get("random", {}).get("to_1pct", {}).get("median_llm_calls")
    for name, row in out["tuners"].items():
        row["fewer_calls_than_random"] = rnd is not None and row["to_1pct"]["median_llm_calls"] < rnd
    out["machine"] = _machine()
    _save(path, out)
    return out


# -- 3. online -----------------------------------------------------------------------------------------------
def online(args) -> dict[str, Any]:
    """Each batch of questions is one pull (:class:`ragopt.tuning.online.OnlineTuner` over the hierarchical
    bandit); reward = the batch's mean F1 under the pulled configuration, read from the per-query table; a
    (configuration, question) pair met before costs no LLM call. Regret against the best fixed configuration in
    hindsight; beside it uniform random choice per batch."""
    from ragopt.tuning.online import BatchResult, OnlineTuner
    from ragopt.tuning.tuners import make_tuner

    table = load_grid(args.model)
    cells = table["cells"]
    qids = sorted(next(iter(cells.values()))["per_query"])
    keys = list(cells)
    policies = {
        "hiermab": ("hiermab", None),
        "hiermab_budget": ("hiermab", args.stream // 4),  # explore with a quarter of the stream's calls
        "hiermab_ts": ("hiermab_ts", None),
        "random": (None, None),
        "fixed_best": (None, None),
    }
    results: dict[str, Any] = {
        "batch_size": args.batch_size,
        "seeds": args.seeds,
        "stream": args.stream,
        "stream_note": "questions drawn with replacement from the table's questions (a bootstrap stream)",
        "budget_llm_calls": {k: v[1] for k, v in policies.items() if v[1] is not None},
        "policies": {},
    }
    curves: dict[str, list[list[float]]] = {p: [] for p in policies}
    served_value: dict[str, list[float]] = {p: [] for p in policies}
    for seed in range(args.seeds):
        rng = random.Random(seed)
        stream = [rng.choice(qids) for _ in range(args.stream)]
        batches = [stream[i : i + args.batch_size] for i in range(0, len(stream), args.batch_size)]
        best_fixed = max(keys, key=lambda k: sum(cells[k]["per_query"][q] for q in stream))
        for policy, (tuner_name, budget) in policies.items():
            if tuner_name is not None:
                paid: set[tuple[str, str]] = set()

                def evaluate(params, batch, paid=paid):
                    k = key_of(params)
                    new = [q for q in batch if (k, q) not in paid]
                    paid.update((k, q) for q in batch)
                    return BatchResult([cells[k]["per_query"][q] for q in batch], llm_calls=len(new))

                tuner = make_tuner(tuner_name, grid_space(), seed=seed, defaults=dict(TEMPLATE), online=True)
                ref = cells[best_fixed]["params"]
                online = OnlineTuner(tuner, evaluate, budget_llm_calls=budget, reference=ref)
                online.run(batches)
                by_batch: dict[int, float] = {}
                for rec in online.records:
                    by_batch[rec["batch"]] = rec["cum_regret"]
                regret = [by_batch[i] for i in range(len(batches))]
                served_value[policy].append(cells[key_of(online.best)]["value"])
            else:
                regret, cum = [], 0.0
                for b in batches:
                    k = best_fixed if policy == "fixed_best" else rng.choice(keys)
                    reward = statistics.fmean(cells[k]["per_query"][q] for q in b)
                    best_reward = statistics.fmean(cells[best_fixed]["per_query"][q] for q in b)
                    cum += (best_reward - reward) * len(b)
                    regret.append(cum)
            curves[policy].append(regret)
    for policy, rs in curves.items():
        final = [r[-1] for r in rs]
        row = {
            "final_cumulative_regret_median": round(statistics.median(final), 3),
            "final_cumulative_regret_per_seed": [round(x, 3) for x in final],
            "mean_regret_per_question": round(statistics.median(final) / args.stream, 4),
            "median_curve": [round(statistics.median(c), 3) for c in zip(*rs)],
        }
        if served_value[policy]:
            row["served_config_true_f1_median"] = round(statistics.median(served_value[policy]), 4)
        results["policies"][policy] = row
        print(
            f"[online] {policy:>14}: cumulative regret (F1 x questions) median {statistics.median(final):.2f} "
            f"({row['mean_regret_per_question']:.4f} per question)"
        )
    results["grid_optimum"] = max(c["value"] for c in cells.values())
    results["n_questions"] = len(qids)
    results["machine"] = _machine()
    _save(RESULTS / f"rag_tuning_online_{tag(args.model)}.json", results)
    return results


# -- 4. reuse ------------------------------------------------------------------------------------------------
def reuse(args) -> dict[str, Any]:
    """A random study with reuse (stage outputs, fitted stages, LLM cache) vs the same trials with none."""
    from ragopt.store import ArtifactStore
    from ragopt.tuning.study import PipelineObjective

    cfg = study_config(args.limit, args.seed, args.model)
    rng = random.Random(0)
    # BM25 only: with reuse off every dense trial would re-encode the corpus, which is the retrieval benchmark's
    # (benchmarks/tuning.py) point; this one is about the generation boundary
    points = [rng.choice([p for p in grid_points() if p["retriever"] == "bm25"]) for _ in range(args.trials)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ragopt-rag-reuse-") as tmp:
        with_reuse = PipelineObjective(copy.deepcopy(cfg), store=ArtifactStore(Path(tmp) / "store"))
        without = PipelineObjective(copy.deepcopy(cfg), reuse=False)
        for i, p in enumerate(points):
            pc = with_reuse.config_for(p)
            t0 = time.perf_counter()
            a = with_reuse.evaluate(pc)
            ta = time.perf_counter() - t0
            t0 = time.perf_counter()
            b = without.evaluate(pc)
            tb = time.perf_counter() - t0
            rows.append(
                {
                    "trial": i,
                    "params": p,
                    "f1_reuse": a["metrics"][METRIC],
                    "f1_no_reuse": b["metrics"][METRIC],
                    "identical": a["metrics"] == b["metrics"],
                    "seconds_reuse": round(ta, 3),
                    "seconds_no_reuse": round(tb, 3),
                    "llm_calls_reuse": a["costs"].get("llm_calls", 0),
                    "llm_calls_no_reuse": b["costs"].get("llm_calls", 0),
                }
            )
            print(
                f"[reuse] {i:>2} {key_of(p)} reuse {ta:6.1f}s {rows[-1]['llm_calls_reuse']:>3} calls | "
                f"none {tb:6.1f}s {rows[-1]['llm_calls_no_reuse']:>3} calls | same={rows[-1]['identical']}",
                flush=True,
            )
    out = {
        "trials": len(rows),
        "n_queries": cfg.query_limit,
        "seconds_reuse": round(sum(r["seconds_reuse"] for r in rows), 1),
        "seconds_no_reuse": round(sum(r["seconds_no_reuse"] for r in rows), 1),
        "llm_calls_reuse": sum(r["llm_calls_reuse"] for r in rows),
        "llm_calls_no_reuse": sum(r["llm_calls_no_reuse"] for r in rows),
        "identical_metrics": all(r["identical"] for r in rows),
        "machine": _machine(),
        "per_trial": rows,
    }
    out["time_ratio"] = round(out["seconds_no_reuse"] / max(out["seconds_reuse"], 1e-9), 2)
    _save(RESULTS / f"rag_tuning_reuse_{args.model}.json", out)
    print(json.dumps({k: v for k, v in out.items() if k != "per_trial"}, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["grid", "replay", "online", "reuse"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--limit", type=int, default=20, help="questions sampled from the dataset")
    ap.add_argument("--grid", default="full", choices=list(GRIDS), help="full: 72 configurations; small: 24")
    ap.add_argument(
        "--backend", default="transformers", choices=["transformers", "llama_cpp"], help="grid: the generator's"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tuners", nargs="+", default=list(TUNERS))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--stream", type=int, default=600, help="online: questions in the stream (drawn with replacement)")
    ap.add_argument("--store", default=str(ROOT / "indexes"))
    ap.add_argument("--tuner-llm", default="smollm2-135m-instruct", help="replay: the llm tuner's proposer")
    ap.add_argument("--tuner-backend", default="llama_cpp", choices=["llama_cpp", "transformers"])
    ap.add_argument(
        "--tuner-retries", type=int, default=1, help="replay: the llm tuner's follow-ups after a rejected answer"
    )
    args = ap.parse_args(argv)
    set_grid(args.grid)
    {"grid": build_grid, "replay": replay, "online": online, "reuse": reuse}[args.what](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
