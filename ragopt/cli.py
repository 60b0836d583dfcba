"""The ``ragopt`` command line: index, search, eval, compare, and listings.

Every command that takes ``--json`` prints exactly one JSON object on stdout and nothing else: logs,
progress bars and anything a backend (Java, bm25s) writes go to stderr. Errors print one line
``ragopt: error: ...`` on stderr and exit with status 2; Ctrl-C exits with 130 and leaves the artifact
store as it was (artifacts are written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

EPILOG_DATASET = ("DATASET is a folder in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or a "
                  "name looked up in $RAGOPT_DATA_PATH, ../shared/data and the user cache "
                  "(`ragopt datasets` lists them).")
EPILOG_PIPELINE = ("PIPELINE is a name (`ragopt pipelines` lists them, e.g. bm25) or a path to a pipeline YAML.")


def _add_common(p: argparse.ArgumentParser, split: bool = True) -> None:
    p.add_argument("--dataset", "-d", required=True, metavar="DATASET",
                   help="dataset folder (BEIR layout) or name, e.g. scifact")
    p.add_argument("--pipeline", "-p", default="bm25", metavar="PIPELINE",
                   help="pipeline name or YAML path (default: bm25)")
    if split:
        p.add_argument("--split", default="test", help="qrels split: qrels/<split>.tsv (default: test)")
    p.add_argument("--index-dir", metavar="DIR",
                   help="artifact store root (default: $RAGOPT_INDEX_DIR or ./indexes)")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild the pipeline's indexes even if a matching one exists (replaces it atomically)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a pipeline parameter by dotted path, e.g. --set stages.0.k1=1.2 "
                        "(VALUE is parsed as YAML); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they go to stderr, on a terminal)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")


def build_parser() -> argparse.ArgumentParser:
    from ragopt import __version__

    parser = argparse.ArgumentParser(
        prog="ragopt", description="Build, evaluate and tune retrieval and RAG pipelines.",
        epilog="Run `ragopt COMMAND --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"ragopt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("index", help="build (or reuse) the indexes a pipeline needs for a dataset",
                       description="Fit a pipeline on a dataset's corpus: build its indexes in the artifact "
                                   "store, or reuse matching ones.",
                       epilog=f"{EPILOG_DATASET} {EPILOG_PIPELINE}")
    _add_common(p, split=False)

    p = sub.add_parser("search", help="run a pipeline on queries and print or save the ranking",
                       description="Search with a pipeline: ad-hoc queries (--query), a queries file, or a "
                                   "dataset split. Writes a TREC run with --output.",
                       epilog=f"{EPILOG_DATASET} {EPILOG_PIPELINE}")
    _add_common(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--query", "-q", action="append", metavar="TEXT",
                   help="a query text (repeatable); default: the dataset's judged queries of --split")
    g.add_argument("--queries", metavar="FILE",
                   help="queries file: JSONL with _id and text, or TSV 'id<TAB>text'")
    p.add_argument("-k", type=int, default=10, help="results per query to print / save (default: 10)")
    p.add_argument("--output", "-o", metavar="RUN", help="write a TREC run file (qid Q0 docid rank score tag)")
    p.add_argument("--tag", default="ragopt", help="run tag of the TREC run file (default: ragopt)")

    p = sub.add_parser("eval", help="evaluate a pipeline on a dataset split",
                       description="Fit a pipeline, run it on the split's judged queries and report "
                                   "retrieval metrics with trec_eval semantics.",
                       epilog=f"{EPILOG_DATASET} {EPILOG_PIPELINE} Metrics: ndcg@k, recall@k, mrr@k, map, "
                              "map@k, p@k.")
    _add_common(p)
    p.add_argument("--metrics", "-m", default="ndcg@10,recall@100,mrr@10,map",
                   help="comma-separated metrics (default: ndcg@10,recall@100,mrr@10,map)")
    p.add_argument("--per-query", metavar="FILE", help="write per-query metric values as JSON to FILE")
    p.add_argument("--save-run", metavar="RUN", help="also write the ranking as a TREC run file")
    p.add_argument("--aggregate", choices=("max", "sum", "first"), default="max",
                   help="how passage scores become document scores for chunked corpora (default: max)")

    p = sub.add_parser("compare", help="paired significance test between two TREC runs",
                       description="Evaluate two TREC run files on a dataset split and test whether their "
                                   "per-query values differ (paired t-test, randomization or Wilcoxon).",
                       epilog=EPILOG_DATASET)
    p.add_argument("run_a", help="baseline TREC run file")
    p.add_argument("run_b", help="TREC run file to compare against the baseline")
    p.add_argument("--dataset", "-d", required=True, help="dataset folder or name (for its qrels)")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--metric", default="ndcg@10", help="metric to compare (default: ndcg@10)")
    p.add_argument("--test", choices=("t", "randomization", "wilcoxon"), default="t",
                   help="paired test (default: t)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomization test (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")

    p = sub.add_parser("tune", help="tune a pipeline: run (or resume, or join) a study",
                       description="Run a tuning study from a config (dataset, pipeline template, search space, "
                                   "objective, tuner, budget). Trials are stored in an Optuna storage: rerun the "
                                   "same command to resume; run it on several machines against one database "
                                   "URL to share the study. The best pipeline is exported as a YAML that "
                                   "`ragopt eval --pipeline` accepts, and reported on held-out queries.",
                       epilog="Tuners: tpe, random, grid, cmaes, nsga2 (Optuna); greedy (models first), "
                              "greedy_pipeline (pipeline order); hiermab (UCB1), hiermab_ts (Thompson).")
    p.add_argument("config", metavar="CONFIG.yaml", help="study config, e.g. configs/quickstart.yaml")
    p.add_argument("--dataset", "-d", metavar="DATASET", help="override the config's dataset (folder or name)")
    p.add_argument("--tuner", help="override the config's tuner")
    p.add_argument("--trials", type=int, help="total finished trials the study should reach (default: config)")
    p.add_argument("--timeout", type=float, metavar="S", help="stop starting new trials after S seconds")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage URL (default: sqlite file studies.db in the artifact store); e.g. "
                        "postgresql://user:pass@host/db to share a study between workers")
    p.add_argument("--study", metavar="NAME", help="study name (default: the config's `study`)")
    p.add_argument("--seed", type=int, help="tuner seed (default: config)")
    p.add_argument("--index-dir", metavar="DIR",
                   help="artifact store root (default: $RAGOPT_INDEX_DIR or ./indexes)")
    p.add_argument("--out", metavar="DIR", help="where to write best_pipeline.yaml and summary.json "
                                                "(default: <index-dir>/studies/<study>)")
    p.add_argument("--no-reuse", action="store_true",
                   help="disable stage reuse (every trial rebuilds its indexes and reruns every stage)")
    p.add_argument("--heartbeat", type=int, default=10, metavar="S",
                   help="worker heartbeat in seconds; a worker silent for 3x this is presumed dead and its "
                        "trial re-queued (default: 10; 0 disables)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")

    p = sub.add_parser("report", help="write an HTML report of a study",
                       description="Write a self-contained HTML report of a study: optimisation history, "
                                   "parameter importances, Pareto front, cost per stage, all trials.")
    p.add_argument("study", metavar="STUDY", help="study name")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: the artifact store's studies.db)")
    p.add_argument("--index-dir", metavar="DIR", help="artifact store root (default: $RAGOPT_INDEX_DIR or ./indexes)")
    p.add_argument("--out", "-o", metavar="FILE", help="output HTML file (default: <study>_report.html)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")

    p = sub.add_parser("train", help="train a model a pipeline stage loads (a cross-encoder reranker)",
                       description="Train models for pipeline stages. `ragopt train cross-encoder` fine-tunes a "
                                   "cross-encoder for the cross_encoder reranker.")
    tsub = p.add_subparsers(dest="model_kind", metavar="MODEL")
    tsub.required = True
    t = tsub.add_parser("cross-encoder", help="fine-tune a cross-encoder on a dataset's training queries",
                        description="Fine-tune a cross-encoder from an encoder (hub id, folder, or the packaged "
                                    "all-MiniLM-L6-v2) on a seeded share of a dataset's judged queries, with hard "
                                    "negatives from a pipeline's top candidates. Prints the artifact path (use it "
                                    "as `model:` of the cross_encoder reranker) and the file of held-out query "
                                    "ids (queries the model never saw). The same settings reuse the artifact.",
                        epilog=f"{EPILOG_DATASET} {EPILOG_PIPELINE}")
    t.add_argument("--base", default="all-MiniLM-L6-v2", metavar="MODEL",
                   help="encoder to start from: hub id, model folder, or all-MiniLM-L6-v2 (default; packaged)")
    t.add_argument("--dataset", "-d", required=True, metavar="DATASET", help="dataset folder (BEIR layout) or name")
    t.add_argument("--split", default="test", help="qrels split whose judged queries are used (default: test)")
    t.add_argument("--train-fraction", type=float, default=0.6,
                   help="share of the judged queries trained on; the rest are held out (default: 0.6)")
    t.add_argument("--max-queries", type=int, metavar="N", help="train on at most N of the training queries")
    t.add_argument("--negatives-pipeline", default="bm25", metavar="PIPELINE",
                   help="pipeline whose top candidates give hard negatives (default: bm25)")
    t.add_argument("--negatives-per-query", type=int, default=4, help="negatives per query (default: 4)")
    t.add_argument("--negatives-depth", type=int, default=30,
                   help="negatives are drawn from this many top candidates (default: 30)")
    t.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    t.add_argument("--batch-size", type=int, default=16, help="pairs per training step (default: 16)")
    t.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: 1e-4)")
    t.add_argument("--loss", choices=("listwise", "bce"), default="listwise",
                   help="listwise: softmax cross-entropy over each query's positive and negatives (default); "
                        "bce: pointwise binary cross-entropy")
    t.add_argument("--max-length", type=int, default=256, help="max tokens of query + passage (default: 256)")
    t.add_argument("--trainer", choices=("ragopt", "sentence-transformers"), default="ragopt",
                   help="ragopt: the built-in loop (default); sentence-transformers: its CrossEncoderTrainer "
                        "with the same loss and schedule (needs accelerate)")
    t.add_argument("--seed", type=int, default=0, help="seed of the query split, negatives and training (default: 0)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="training device (default: auto)")
    t.add_argument("--evaluate", action="store_true",
                   help="then compare the first stage alone with first stage >> cross-encoder on the held-out "
                        "queries (nDCG@10, recall@100)")
    t.add_argument("--eval-depth", type=int, default=100, help="candidates reranked by --evaluate (default: 100)")
    t.add_argument("--index-dir", metavar="DIR",
                   help="artifact store root (default: $RAGOPT_INDEX_DIR or ./indexes)")
    t.add_argument("--rebuild", action="store_true", help="train again even if a matching artifact exists")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (they go to stderr, on a terminal)")
    t.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")

    p = sub.add_parser("serve-mcp", help="serve tool retrieval over the Model Context Protocol (RAG-MCP)",
                       description="Serve an MCP server whose search_tools(query, k) returns the k tools that best fit "
                                   "a task (name, description, input schema, score), from a tools JSONL file or from "
                                   "the tools of upstream MCP servers; with --servers it is also a gateway: "
                                   "call_tool(name, arguments) validates the arguments and forwards the call.",
                       epilog="Streamable HTTP is served at /mcp on 127.0.0.1 unless --host says otherwise; set a "
                              "bearer token with --token or $RAGOPT_MCP_TOKEN.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--tools", metavar="PATH", help="tools JSONL ({name, description, input_schema}) or a dataset "
                                                   "folder with tools.jsonl")
    g.add_argument("--servers", metavar="CONFIG.yaml", help="upstream MCP servers (stdio commands or HTTP URLs); "
                                                            "enables call_tool")
    p.add_argument("--pipeline", "-p", metavar="PIPELINE",
                   help="retrieval pipeline name or YAML (default: the servers config's, else tools)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a pipeline parameter, e.g. --set stages.0.k1=1.2; repeatable")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="default: stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000; 0 picks a free one)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' over HTTP (default: $RAGOPT_MCP_TOKEN)")
    p.add_argument("--max-k", type=int, default=50, help="largest k a search may ask for (default: 50)")
    p.add_argument("--max-query-chars", type=int, default=2000, help="longest query accepted (default: 2000)")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20,
                   help="largest HTTP request body accepted (default: 1 MiB)")
    p.add_argument("--text-params", choices=("none", "names", "descriptions"),
                   help="index tool parameters by name, with their descriptions, or not at all (--tools; "
                        "default: descriptions)")
    p.add_argument("--split-names", action="store_true",
                   help="also index the words of identifier-style tool names (get_weather -> get weather)")
    p.add_argument("--index-dir", metavar="DIR", help="artifact store root (default: $RAGOPT_INDEX_DIR or ./indexes)")
    p.add_argument("--ready-file", metavar="FILE", help="HTTP: write {url, port, pid} as JSON to FILE once listening")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))

    p = sub.add_parser("datasets", help="list the datasets found on the search path")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p = sub.add_parser("pipelines", help="list the named pipelines")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p = sub.add_parser("components", help="list registered component types and their parameters")
    p.add_argument("name", nargs="?", help="show the parameters of one component type")
    return parser


@contextmanager
def _stdout_reserved_for_json(enabled: bool) -> Iterator[Any]:
    """With --json, point file descriptor 1 at stderr (so Java and C libraries cannot pollute stdout)
    and hand back a stream on the real stdout for the single JSON object."""
    if not enabled:
        yield sys.stdout
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(saved, "w", encoding="utf-8")
    try:
        yield real
    finally:
        real.flush()
        os.dup2(real.fileno(), 1)
        real.close()


def _load_pipeline(args: argparse.Namespace):
    import yaml

    from ragopt.errors import ConfigError
    from ragopt.pipeline_io import load_pipeline

    pipe = load_pipeline(args.pipeline)
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError("--set", f"expected PATH=VALUE, got {item!r}")
        pipe.set_params(**{key.strip(): yaml.safe_load(raw)})
    return pipe


def _store(args: argparse.Namespace):
    from ragopt.store import ArtifactStore

    return ArtifactStore(args.index_dir) if args.index_dir else ArtifactStore()


def _progress(args: argparse.Namespace) -> bool | None:
    return False if getattr(args, "no_progress", False) else None


def _emit(out, args: argparse.Namespace, obj: dict, text: str) -> None:
    if args.json:
        out.write(json.dumps(obj, indent=None, default=_json_default) + "\n")
    else:
        out.write(text.rstrip("\n") + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cmd_index(args: argparse.Namespace, out) -> int:
    import time

    from ragopt.data import load_dataset

    pipe = _load_pipeline(args)
    ds = load_dataset(args.dataset)
    t0 = time.perf_counter()
    pipe.fit(ds.corpus, _store(args), rebuild=args.rebuild, progress=_progress(args))
    from ragopt.pipeline import stages_of

    arts = [a for s in stages_of(pipe) for a in s._state.get("artifacts", [])]
    obj = {"dataset": ds.name, "n_docs": len(ds.corpus), "fingerprint": ds.corpus.fingerprint,
           "artifacts": arts, "seconds": round(time.perf_counter() - t0, 3)}
    lines = [f"{ds.name}: {len(ds.corpus)} documents, fingerprint {ds.corpus.fingerprint[:12]}"]
    lines += [f"  {'built ' if a['created'] else 'reused'} {a['kind']}: {a['path']}" for a in arts]
    lines.append(f"  {obj['seconds']:.2f}s")
    _emit(out, args, obj, "\n".join(lines))
    return 0


def _read_queries_file(path: str):
    from ragopt.data import load_queries
    from ragopt.errors import DataError
    from ragopt.types import Queries

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: queries file not found")
    if p.suffix in (".jsonl", ".gz"):
        return load_queries(p)
    ids, texts = [], []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            qid, sep, text = line.partition("\t")
            if not sep:
                raise DataError(f"{p}:{n}: expected 'id<TAB>text'")
            ids.append(qid)
            texts.append(text)
    return Queries(ids, texts)


def cmd_search(args: argparse.Namespace, out) -> int:
    from ragopt.data import load_dataset
    from ragopt.errors import ConfigError
    from ragopt.pipeline import run_batched
    from ragopt.types import Batch, Queries

    if args.k < 1:
        raise ConfigError("-k", f"must be >= 1, got {args.k}")
    pipe = _load_pipeline(args)
    ds = load_dataset(args.dataset)
    if args.query:
        if any(not q.strip() for q in args.query):
            raise ConfigError("--query", "empty query text")
        queries = Queries([str(i + 1) for i in range(len(args.query))], args.query)
    elif args.queries:
        queries = _read_queries_file(args.queries)
    else:
        queries = ds.queries_for(args.split)
    pipe.fit(ds.corpus, _store(args), rebuild=args.rebuild, progress=_progress(args))
    batch = run_batched(pipe, Batch(queries), batch_size=1000, progress=_progress(args))
    batch = batch.cut(args.k)
    if args.output:
        from ragopt.evaluation import write_run

        write_run(batch.to_run(), args.output, tag=args.tag)
    results = []
    for r, (qid, text) in enumerate(zip(queries.ids, queries.texts)):
        hits = [{"rank": j + 1, "id": d, "score": s, "title": ds.corpus.titles[int(i)]}
                for j, ((d, s), i) in enumerate(zip(batch.ranked(r), batch.doc_idx[r]))]
        results.append({"query_id": qid, "query": text, "hits": hits})
    lines = []
    for res in results[:50]:
        lines.append(f"[{res['query_id']}] {res['query']}")
        for h in res["hits"]:
            lines.append(f"  {h['rank']:>3}. {h['score']:8.3f}  {h['id']}  {h['title'][:80]}")
    if len(results) > 50:
        lines.append(f"... {len(results) - 50} more queries (use --output or --json)")
    if args.output:
        lines.append(f"run written to {args.output}")
    _emit(out, args, {"results": results, "n_queries": len(results), "output": args.output,
                      "stats": batch.stats.to_dict()}, "\n".join(lines))
    return 0


def cmd_eval(args: argparse.Namespace, out) -> int:
    from ragopt.evaluation.run import evaluate_pipeline

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    pipe = _load_pipeline(args)
    report = evaluate_pipeline(pipe, args.dataset, split=args.split, metrics=metrics, store=_store(args),
                               progress=_progress(args), rebuild=args.rebuild, aggregate=args.aggregate)
    if args.per_query:
        from ragopt._io import atomic_write_text

        atomic_write_text(args.per_query, json.dumps(report.per_query, indent=1))
    if args.save_run:
        from ragopt.evaluation import write_run

        write_run(report.batch.to_run(aggregate=args.aggregate), args.save_run)
    lines = [f"{report.dataset} [{report.split}] {report.n_queries} queries, pipeline {args.pipeline}"]
    lines += [f"  {k:<12} {v:.4f}" for k, v in report.metrics.items()]
    t = report.timings
    lines.append(f"  fit {t['fit_s']:.2f}s, search {t['search_s']:.2f}s ({t['qps']:.0f} q/s), "
                 f"total {t['total_s']:.2f}s")
    for a in report.artifacts:
        lines.append(f"  {'built ' if a['created'] else 'reused'} {a['kind']}: {a['path']}")
    _emit(out, args, report.to_dict(), "\n".join(lines))
    return 0


def cmd_compare(args: argparse.Namespace, out) -> int:
    from ragopt.data import load_dataset
    from ragopt.evaluation import evaluate, paired_test, read_run

    ds = load_dataset(args.dataset)
    qrels = ds.qrels(args.split)
    a = evaluate(read_run(args.run_a), qrels, [args.metric])
    b = evaluate(read_run(args.run_b), qrels, [args.metric])
    res = paired_test(a, b, metric=args.metric, test=args.test, seed=args.seed)
    obj = {"metric": res.metric, "mean_a": res.mean_a, "mean_b": res.mean_b, "diff": res.diff,
           "p_value": res.p_value, "test": res.test, "n": res.n, "significant": res.significant}
    text = (f"{res.metric}: A {res.mean_a:.4f}  B {res.mean_b:.4f}  diff {res.diff:+.4f}  "
            f"p={res.p_value:.4g} ({res.test}, n={res.n}){'  significant' if res.significant else ''}")
    _emit(out, args, obj, text)
    return 0


def cmd_tune(args: argparse.Namespace, out) -> int:
    from ragopt.tuning.study import StudyConfig, run_study

    cfg = StudyConfig.load(args.config)
    if args.dataset:
        cfg.dataset = args.dataset
    res = run_study(cfg, storage=args.storage, study_name=args.study, store=_store(args), n_trials=args.trials,
                    timeout=args.timeout, tuner=args.tuner, seed=args.seed, reuse=not args.no_reuse,
                    progress=_progress(args), out_dir=args.out, heartbeat=args.heartbeat or None)
    obj = res.to_dict()
    m = cfg.objective.metrics
    lines = [f"study {res.study_name}: {res.n_complete} complete, {res.n_failed} failed trials "
             f"({res.seconds:.1f}s); storage {res.storage}"]
    if res.best_params:
        lines.append(f"best {m}: {res.best_value}")
        lines += [f"  {k} = {v}" for k, v in res.best_params.items()]
        if res.heldout:
            h = res.heldout
            for metric in h["best"]:
                lines.append(f"held-out ({h['n_queries']} queries) {metric}: best {h['best'][metric]:.4f} vs "
                             f"baseline {h['baseline'][metric]:.4f} ({h['gain'][metric]:+.4f})")
        lines.append(f"best pipeline: {res.best_pipeline}  (ragopt eval --pipeline {res.best_pipeline})")
    _emit(out, args, obj, "\n".join(lines))
    return 0


def cmd_report(args: argparse.Namespace, out) -> int:
    from ragopt.tuning.report import write_report
    from ragopt.tuning.study import default_storage

    storage = args.storage or default_storage(_store(args))
    path = write_report(args.study, storage, args.out or f"{args.study}_report.html")
    _emit(out, args, {"report": str(path), "study": args.study, "storage": storage}, f"report written to {path}")
    return 0


def cmd_train(args: argparse.Namespace, out) -> int:
    from ragopt.training.cross_encoder import compare_reranking, train_cross_encoder

    store = _store(args)
    art = train_cross_encoder(args.base, args.dataset, split=args.split, train_fraction=args.train_fraction,
                              seed=args.seed, negatives_pipeline=args.negatives_pipeline,
                              negatives_per_query=args.negatives_per_query, negatives_depth=args.negatives_depth,
                              epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss,
                              max_length=args.max_length, max_queries=args.max_queries, device=args.device,
                              store=store, progress=_progress(args), rebuild=args.rebuild, trainer=args.trainer)
    m = art.manifest
    heldout = art.path / "heldout_queries.txt"
    obj = {"artifact": str(art.path), "created": art.created, "heldout_queries": str(heldout),
           "n_train_queries": m.get("n_train_queries"), "n_heldout_queries": m.get("n_heldout_queries"),
           "n_pairs": m.get("n_pairs"), "train_seconds": m.get("train_seconds"), "device": m.get("device")}
    lines = [f"{'trained' if art.created else 'reused'} cross-encoder: {art.path}",
             f"  {m.get('n_train_queries')} training queries, {m.get('n_pairs')} pairs, "
             f"{m.get('train_seconds')}s on {m.get('device')}",
             f"  held-out query ids ({m.get('n_heldout_queries')}): {heldout}",
             f"  use it: ragopt eval -p bm25_ce -d {args.dataset} --set stages.1.model={art.path}"]
    if args.evaluate:
        from ragopt.training.cross_encoder import heldout_query_ids

        res = compare_reranking(art.path, args.dataset, split=args.split, query_ids=heldout_query_ids(art.path),
                                depth=args.eval_depth, metrics=("ndcg@10", "recall@100"), store=store,
                                progress=_progress(args))
        res.pop("per_query")
        obj["evaluation"] = res
        lines.append(f"  held-out ({res['n_queries']} queries), first stage vs >> cross-encoder top {args.eval_depth}:")
        lines += [f"    {k:<12} {res['first_stage'][k]:.4f} -> {res['reranked'][k]:.4f} ({res['gain'][k]:+.4f})"
                  for k in res["first_stage"]]
    _emit(out, args, obj, "\n".join(lines))
    return 0


def cmd_datasets(args: argparse.Namespace, out) -> int:
    from ragopt.data import dataset_search_path

    found = {}
    for d in dataset_search_path():
        if d.is_dir():
            for sub in sorted(d.iterdir()):
                if (sub / "corpus.jsonl").is_file() and sub.name not in found:
                    found[sub.name] = str(sub)
    text = "\n".join(f"{k:<24} {v}" for k, v in found.items()) or "no datasets found"
    text += "\nsearch path: " + os.pathsep.join(str(d) for d in dataset_search_path())
    _emit(out, args, {"datasets": found, "search_path": [str(d) for d in dataset_search_path()]}, text)
    return 0


def cmd_pipelines(args: argparse.Namespace, out) -> int:
    from ragopt.pipeline_io import list_pipelines, read_yaml

    found = list_pipelines()
    rows = {}
    for name, path in found.items():
        try:
            desc = (read_yaml(path) or {}).get("description", "")
        except Exception as e:  # a broken file is listed with its error, not fatal here
            desc = f"(unreadable: {e})"
        rows[name] = {"path": str(path), "description": " ".join(str(desc).split())}
    text = "\n".join(f"{k:<16} {v['description'][:100]}" for k, v in rows.items()) or "no pipelines found"
    _emit(out, args, {"pipelines": rows}, text)
    return 0


def cmd_components(args: argparse.Namespace, out) -> int:
    import dataclasses

    from ragopt.registry import available, resolve

    names = [args.name] if args.name else available()
    lines = []
    for name in names:
        cls = resolve(name)
        lines.append(f"{name}: {(cls.__doc__ or '').strip().splitlines()[0] if cls.__doc__ else ''}")
        if args.name:
            for f in dataclasses.fields(cls):
                default = f.default if f.default is not dataclasses.MISSING else "(required)"
                lines.append(f"  {f.name} = {default!r}  {f.metadata.get('doc', '')}")
    out.write("\n".join(lines) + "\n")
    return 0


def cmd_serve_mcp(args: argparse.Namespace, out) -> int:
    import dataclasses

    from ragopt.errors import ConfigError

    for name in ("max_k", "max_query_chars", "max_request_bytes"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", "must be >= 1")
    # stdio: stdout is the MCP channel, so nothing may reach file descriptor 1 before the SDK claims it
    with _stdout_reserved_for_json(args.transport == "stdio"):
        from ragopt.mcp.catalog import TextTemplate
        from ragopt.mcp.service import Limits, ToolService
        from ragopt.mcp.upstream import load_gateway_config

        gateway = load_gateway_config(args.servers) if args.servers else None
        args.pipeline = args.pipeline or (gateway.pipeline if gateway else None) or "tools"
        template = gateway.text if gateway else TextTemplate()
        if args.text_params:
            template = dataclasses.replace(template, params=args.text_params)
        if args.split_names:
            template = dataclasses.replace(template, split_name=True)
        limits = Limits(max_k=args.max_k, default_k=min(5, args.max_k), max_query_chars=args.max_query_chars,
                        max_request_bytes=args.max_request_bytes)
        service = ToolService(_load_pipeline(args), tools=args.tools, gateway=gateway, template=template,
                              store=_store(args), limits=limits)
    from ragopt.mcp.server import serve

    serve(service, transport=args.transport, host=args.host, port=args.port, token=args.token,
          log_level=args.log_level, ready_file=args.ready_file)
    return 0


COMMANDS = {"index": cmd_index, "search": cmd_search, "eval": cmd_eval, "compare": cmd_compare,
            "tune": cmd_tune, "report": cmd_report, "train": cmd_train, "serve-mcp": cmd_serve_mcp,
            "datasets": cmd_datasets, "pipelines": cmd_pipelines, "components": cmd_components}


def main(argv: Sequence[str] | None = None) -> int:
    from ragopt.errors import RagoptError

    parser = build_parser()
    args = parser.parse_args(argv)
    json_mode = bool(getattr(args, "json", False))
    try:
        with _stdout_reserved_for_json(json_mode) as out:
            return COMMANDS[args.command](args, out)
    except RagoptError as e:
        print(f"ragopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ragopt: interrupted; finished artifacts are intact, partial ones were discarded", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
