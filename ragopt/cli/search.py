"""``ragopt search``: run a pipeline on queries and print or save the ranking."""

from __future__ import annotations

import argparse

from ragopt.cli import _options as opts
from ragopt.cli._output import Output

MAX_PRINTED = 50  # queries printed as text; --json and --output have them all


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "search",
        help="run a pipeline on queries and print or save the ranking",
        description="Search with a pipeline: ad-hoc queries (--query), a queries file, or a "
        "dataset split. Writes a TREC run with --output.",
        epilog=f"{opts.EPILOG_DATASET} {opts.EPILOG_PIPELINE}",
    )
    opts.add_pipeline_run(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--query",
        "-q",
        action="append",
        metavar="TEXT",
        help="a query text (repeatable); default: the dataset's judged queries of --split",
    )
    g.add_argument("--queries", metavar="FILE", help="queries file: JSONL with _id and text, or TSV 'id<TAB>text'")
    p.add_argument("-k", type=int, default=10, help="results per query to print / save (default: 10)")
    p.add_argument("--output", "-o", metavar="RUN", help="write a TREC run file (qid Q0 docid rank score tag)")
    p.add_argument("--tag", default="ragopt", help="run tag of the TREC run file (default: ragopt)")
    p.add_argument(
        "--generate",
        action="store_true",
        help="also answer each query with an LLM from the top "
        "candidates (adds a generate stage unless the pipeline ends with one)",
    )
    p.add_argument(
        "--llm",
        metavar="MODEL",
        default="smollm2-135m-instruct",
        help="model of the added generate stage: a packaged alias, a hub id, a YAML backend config file, or an "
        "inline one such as '{type: openai, model: NAME, base_url: URL}' (default: smollm2-135m-instruct)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt.data import load_dataset, read_queries_file
    from ragopt.errors import ConfigError
    from ragopt.evaluation import write_run
    from ragopt.evaluation.run import run_pipeline
    from ragopt.types import Queries

    if args.k < 1:
        raise ConfigError("-k", f"must be >= 1, got {args.k}")
    pipe = opts.load_pipeline(args)
    if args.generate and "answers" not in pipe.provides:
        from ragopt.generators import Generator

        pipe = pipe >> Generator(llm=opts.llm_backend(args.llm, "--llm"))
    ds = load_dataset(args.dataset)
    if args.query:
        if any(not q.strip() for q in args.query):
            raise ConfigError("--query", "empty query text")
        queries = Queries([str(i + 1) for i in range(len(args.query))], args.query)
    elif args.queries:
        queries = read_queries_file(args.queries)
    else:
        queries = ds.queries_for(args.split)
    batch = run_pipeline(
        pipe, ds, queries=queries, store=opts.store(args), progress=opts.progress(args), rebuild=args.rebuild
    ).cut(args.k)
    if args.output:
        write_run(batch.to_run(), args.output, tag=args.tag)
    results = []
    for r, (qid, text) in enumerate(zip(queries.ids, queries.texts, strict=True)):
        hits = [
            {"rank": j + 1, "id": d, "score": s, "title": ds.corpus.titles[int(i)]}
            for j, ((d, s), i) in enumerate(zip(batch.ranked(r), batch.doc_idx[r], strict=False))
        ]
        results.append(
            {
                "query_id": qid,
                "query": text,
                "hits": hits,
                **({"answer": batch.answers[r]} if batch.answers is not None else {}),
            }
        )
    lines = []
    for res in results[:MAX_PRINTED]:
        lines.append(f"[{res['query_id']}] {res['query']}")
        if "answer" in res:
            lines.append(f"  answer: {res['answer']}")
        lines += [f"  {h['rank']:>3}. {h['score']:8.3f}  {h['id']}  {h['title'][:80]}" for h in res["hits"]]
    if len(results) > MAX_PRINTED:
        lines.append(f"... {len(results) - MAX_PRINTED} more queries (use --output or --json)")
    if args.output:
        lines.append(f"run written to {args.output}")
    return Output(
        "\n".join(lines),
        {"results": results, "n_queries": len(results), "output": args.output, "stats": batch.stats.to_dict()},
    )
