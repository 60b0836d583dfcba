"""Scale: a faiss IVF-PQ index over 1M synthetic 384-d vectors, ragopt's `faiss_ivfpq` against raw faiss with the
same parameters, side by side in one run.

The vectors stand in for a corpus' embeddings (encoding 1M passages would take hours on these cores): a Gaussian
mixture of `--centres` components in `--latent` (32) dimensions, mapped to 384-d by a fixed random matrix, plus
small isotropic noise, L2-normalised (seeded), written as one `.npy` the way the embeddings artifact is; queries come
from the same distribution (another seed); the exact top-10 of each query (numpy, chunked matrix products) is the
truth for recall@10. (A first run used a mixture directly in 384-d with noise larger than the centres: every
query's neighbours were nearly equidistant and IVF-PQ's recall@10 was 0.30 for both systems.)

- build (a fresh process each, `--build-repeats` times, alternating): ragopt `FaissIVFPQ(nlist, m, nbits,
  train_size, seed=0).build(vectors, dir)` given the memory-mapped `.npy` (what `DenseRetriever` passes it), and raw
  faiss: `np.load` of the whole array, `IndexIVFPQ(IndexFlatIP(d), d, nlist, m, nbits, METRIC_INNER_PRODUCT)` with the
  same seeded training sample and k-means settings (`cp.seed`, `cp.spherical`, `pq.cp.seed`), `train`, one `add` of
  all rows, `write_index`. Reported: wall seconds, peak RSS above the process' RSS before the step (VmHWM after
  `echo 5 > /proc/self/clear_refs`), and the peak of anonymous memory (RssAnon, sampled every 10 ms): a memory map's
  pages count in RSS but are page cache the kernel can drop, RssAnon is what the process itself holds.
- search (one process, faiss at `--threads`): ragopt's index loaded in memory and memory-mapped (`mmap: true`), and
  the raw index, each queried with all `--queries` in one batch, `--repeats` interleaved rounds; QPS from the median,
  paired ratio (median of per-round ratios); single-query latency (median over the queries, systems alternating);
  recall@10 against the exact top-10 at each `--nprobe`; whether ragopt returns the same ids as raw faiss.
- load + one search (a fresh process each): peak RSS and RssAnon above the baseline, for the three.

Run: `python benchmarks/scale.py` (about 10 min on 2 cores shared at load 6-10; `--n 200000` for a quick look). The data and
indexes go to `--work` (default: a temp folder; pass one to reuse the vectors across runs). Results:
`benchmarks/results/scale.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT, load, machine_info, med

MIB = 1 << 20


# -- memory -----------------------------------------------------------------------------------------------------
def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) * 1024
    return out


class PeakMemory:
    """Peak RSS (VmHWM after a reset) and sampled peak RssAnon of this process during a block, above the values
    just before it."""

    def __enter__(self) -> PeakMemory:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        s = _status()
        self.rss0, self.anon0, self.anon_peak = s["VmRSS"], s["RssAnon"], s["RssAnon"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.anon_peak = max(self.anon_peak, _status()["RssAnon"])

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        s = _status()
        self.anon_peak = max(self.anon_peak, s["RssAnon"])
        self.peak_rss_mib = round((s["VmHWM"] - self.rss0) / MIB, 1)
        self.peak_anon_mib = round((self.anon_peak - self.anon0) / MIB, 1)
        self.kept_anon_mib = round((s["RssAnon"] - self.anon0) / MIB, 1)


# -- data -------------------------------------------------------------------------------------------------------
def _mixture(
    n: int, centres: np.ndarray, proj: np.ndarray, args, seed: int, out: np.ndarray | None = None
) -> np.ndarray:
    """``n`` vectors: a point of a Gaussian mixture in ``latent`` dimensions (``centres``, spread ``spread``) mapped
    to ``dim`` by the fixed random matrix ``proj``, plus isotropic ``noise``, L2-normalised. Real embeddings vary
    along far fewer directions than they have coordinates; uniform noise in 384-d has no near neighbours to find."""
    rng = np.random.default_rng(seed)
    latent, d = proj.shape
    out = np.empty((n, d), np.float32) if out is None else out
    step = 65536
    for s in range(0, n, step):
        e = min(n, s + step)
        z = centres[rng.integers(0, len(centres), e - s)] + args.spread * rng.standard_normal(
            (e - s, latent), np.float32
        )
        x = z @ proj + args.noise * rng.standard_normal((e - s, d), np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def make_data(work: Path, args) -> dict:
    """Vectors (a .npy on disk), queries and the exact top-10; reused when the same parameters made them."""
    tag = f"n{args.n}-d{args.dim}-l{args.latent}-c{args.centres}-s{args.spread}-z{args.noise}-q{args.queries}"
    vec_path, q_path, truth_path = work / f"vectors-{tag}.npy", work / f"queries-{tag}.npy", work / f"truth-{tag}.npy"
    if not truth_path.is_file():
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((args.centres, args.latent), np.float32)
        proj = (rng.standard_normal((args.latent, args.dim)) / np.sqrt(args.latent)).astype(np.float32)
        mm = np.lib.format.open_memmap(vec_path, mode="w+", dtype=np.float32, shape=(args.n, args.dim))
        _mixture(args.n, centres, proj, args, 2, mm)
        mm.flush()
        del mm
        q = _mixture(args.queries, centres, proj, args, 1)
        np.save(q_path, q)
        x = np.load(vec_path, mmap_mode="r")
        best_s = np.full((args.queries, 10), -np.inf, np.float32)
        best_i = np.full((args.queries, 10), -1, np.int64)
        for s in range(0, args.n, 65536):
            sc = q @ np.asarray(x[s : s + 65536]).T
            top = np.argpartition(-sc, 10, axis=1)[:, :10]
            cand_s = np.concatenate([best_s, np.take_along_axis(sc, top, 1)], axis=1)
            cand_i = np.concatenate([best_i, top + s], axis=1)
            keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :10]
            best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
        np.save(truth_path, best_i)
        print(
            f"data: {args.n} x {args.dim} written and exact top-10 computed in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
    return {"vectors": str(vec_path), "queries": str(q_path), "truth": str(truth_path)}


# -- workers (fresh processes) ----------------------------------------------------------------------------------
def _ragopt_index(args, **kw):
    from ragopt.indexes.faiss_index import FaissIVFPQIndex

    return FaissIVFPQIndex(
        nlist=args.nlist, m=args.m, nbits=args.nbits, train_size=args.train_size, seed=0, use_gpu=False, **kw
    )


def _raw_build(faiss, x: np.ndarray, args) -> object:
    """Raw faiss with the parameters ragopt uses: the same seeded sample, spherical k-means, seeds."""
    n, d = x.shape
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, args.nlist, args.m, args.nbits, faiss.METRIC_INNER_PRODUCT)
    index.pq.cp.seed = 0
    index.cp.seed = 0
    index.cp.spherical = True
    rng = np.random.default_rng(0)
    sample = x[np.sort(rng.choice(n, args.train_size, replace=False))] if args.train_size < n else x
    index.train(np.ascontiguousarray(sample))
    index.add(x)
    return index


def _build_figures(secs: float, mem: PeakMemory, out_dir: Path) -> dict:
    """A build's seconds, peak memory (of the ``PeakMemory`` block around it) and the size of the index it wrote."""
    return {
        "seconds": round(secs, 2),
        "peak_rss_mib": mem.peak_rss_mib,
        "peak_anon_mib": mem.peak_anon_mib,
        "disk_mib": round((out_dir / "index.faiss").stat().st_size / MIB, 1),
    }


def worker(args) -> dict:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    paths = json.loads(args.paths)
    out_dir = Path(args.worker_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.worker == "build-ragopt":
        index = _ragopt_index(args)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            x = np.load(paths["vectors"], mmap_mode="r", allow_pickle=False)
            extra = index.build(x, out_dir)
            secs = time.perf_counter() - t0
        return {**_build_figures(secs, mem, out_dir), "manifest": extra}
    if args.worker == "build-raw":
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            x = np.load(paths["vectors"], allow_pickle=False)
            index = _raw_build(faiss, x, args)
            faiss.write_index(index, str(out_dir / "index.faiss"))
            secs = time.perf_counter() - t0
        return _build_figures(secs, mem, out_dir)
    q = np.load(paths["queries"])
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        if args.worker == "load-raw":
            index = faiss.read_index(str(out_dir / "index.faiss"))
            index.nprobe = args.nprobe[0]
            search = lambda x: index.search(x, 10)
        else:
            index = _ragopt_index(args, nprobe=args.nprobe[0], mmap=args.worker == "load-ragopt-mmap")
            index.load(out_dir, q.shape[1])
            search = lambda x: index.search(x, 10)
        load_s = time.perf_counter() - t0
        search(q[:1])
    return {
        "load_seconds": round(load_s, 3),
        "peak_rss_mib": mem.peak_rss_mib,
        "peak_anon_mib": mem.peak_anon_mib,
        "kept_anon_mib": mem.kept_anon_mib,
    }


def run_worker(kind: str, args, paths: dict, where: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--worker-dir",
        str(where),
        "--paths",
        json.dumps(paths),
        *args.passthrough,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{kind}: {res}  load {load()}", file=sys.stderr)
    return res


# -- search, side by side -----------------------------------------------------------------------------------------
def search_section(args, paths: dict, dirs: dict) -> dict:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    q = np.load(paths["queries"])
    truth = np.load(paths["truth"])
    systems = {
        "raw faiss IndexIVFPQ": None,
        "ragopt faiss_ivfpq": _ragopt_index(args),
        "ragopt faiss_ivfpq mmap": _ragopt_index(args, mmap=True),
    }
    raw = faiss.read_index(str(dirs["raw"] / "index.faiss"))
    for name, index in systems.items():
        if index is not None:
            index.load(dirs["ragopt"], q.shape[1])
    out = {}
    for nprobe in args.nprobe:
        raw.nprobe = nprobe
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        calls = {}
        for name, index in systems.items():
            if index is None:
                calls[name] = lambda x: raw.search(x, 10, params=params)[::-1]
            else:
                index.nprobe = nprobe
                calls[name] = lambda x, index=index: index.search(x, 10)
        ids = {name: f(q)[0] for name, f in calls.items()}
        recall = {
            name: float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(v, truth)])) for name, v in ids.items()
        }
        same = {name: bool(np.array_equal(v, ids["raw faiss IndexIVFPQ"])) for name, v in ids.items()}
        names = list(calls)
        batch = {n: [] for n in names}
        for r in range(args.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                calls[name](q)
                batch[name].append(time.perf_counter() - t0)
        single = {n: [] for n in names}
        for i in range(min(len(q), args.single_queries)):
            for name in names if i % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                calls[name](q[i : i + 1])
                single[name].append(time.perf_counter() - t0)
        raw_t = batch["raw faiss IndexIVFPQ"]
        rows = {}
        for name in names:
            paired = med([rt / t for rt, t in zip(raw_t, batch[name])])
            rows[name] = {
                "recall@10": round(recall[name], 4),
                "same_ids_as_raw": same[name],
                "qps": round(len(q) / med(batch[name]), 1),
                "x_raw_qps": round(med(raw_t) / med(batch[name]), 3),
                "x_raw_qps_paired": round(paired, 3),
                "single_query_ms": round(1000 * med(single[name]), 3),
                "batch_seconds": [round(t, 4) for t in batch[name]],
            }
        out[f"nprobe={nprobe}"] = rows
        print(
            f"search nprobe={nprobe}: "
            + "; ".join(
                f"{n}: R@10 {v['recall@10']} QPS {v['qps']} (x{v['x_raw_qps_paired']}) 1q {v['single_query_ms']} ms"
                for n, v in rows.items()
            )
            + f"  load {load()}",
            file=sys.stderr,
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--latent", type=int, default=32, help="dimensions the synthetic vectors vary along")
    p.add_argument("--centres", type=int, default=4096, help="mixture components (in the latent space)")
    p.add_argument("--spread", type=float, default=0.5, help="standard deviation around a centre (latent)")
    p.add_argument("--noise", type=float, default=0.02, help="isotropic noise per coordinate (384-d)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--m", type=int, default=48)
    p.add_argument("--nbits", type=int, default=8)
    p.add_argument("--train-size", type=int, default=65536)
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--build-repeats", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--single-queries", type=int, default=300)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-dir", help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    args.passthrough = [
        "--n",
        str(args.n),
        "--dim",
        str(args.dim),
        "--nlist",
        str(args.nlist),
        "--m",
        str(args.m),
        "--nbits",
        str(args.nbits),
        "--train-size",
        str(args.train_size),
        "--threads",
        str(args.threads),
        "--nprobe",
        *map(str, args.nprobe),
    ]
    t_start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="ragopt-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine_info(["faiss-cpu", "numpy"]),
        "load_start": load(),
        "params": {
            k: v
            for k, v in vars(args).items()
            if k not in ("worker", "worker_dir", "paths", "passthrough", "work", "out")
        },
    }
    paths = make_data(work, args)
    result["load_after_data"] = load()
    dirs = {"ragopt": work / "ragopt-ivfpq", "raw": work / "raw-ivfpq"}
    builds = {"ragopt": [], "raw": []}
    for r in range(args.build_repeats):
        for sysname in ("ragopt", "raw") if r % 2 == 0 else ("raw", "ragopt"):
            builds[sysname].append(run_worker(f"build-{sysname}", args, paths, dirs[sysname]))
    result["build"] = builds
    result["load_after_build"] = load()
    result["search"] = search_section(args, paths, dirs)
    result["load_after_search"] = load()
    result["load_and_search_memory"] = {
        kind: run_worker(kind, args, paths, dirs["raw" if kind == "load-raw" else "ragopt"])
        for kind in ("load-ragopt", "load-ragopt-mmap", "load-raw")
    }
    result["vectors_mib"] = round(args.n * args.dim * 4 / MIB, 1)
    result["load_end"] = load()
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['seconds']} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
