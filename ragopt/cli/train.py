"""``ragopt train MODEL``: train a model that a pipeline stage loads (``cross-encoder``, ``bi-encoder``, ``blockrank``)."""

from __future__ import annotations

import argparse

from ragopt.cli import _options as opts
from ragopt.cli._output import Output

#: options that pick one of a few values: (flag, choices, help)
_CHOICES = (
    (
        "--loss",
        ("listwise", "bce"),
        "listwise: softmax cross-entropy over each query's positive and negatives (default); "
        "bce: pointwise binary cross-entropy",
    ),
    (
        "--trainer",
        ("ragopt", "sentence-transformers"),
        "ragopt: the built-in loop (default); sentence-transformers: its CrossEncoderTrainer "
        "with the same loss and schedule (needs accelerate)",
    ),
    ("--device", ("auto", "cpu", "cuda", "mps"), "training device (default: auto)"),
)
#: train_cross_encoder's keyword arguments that are options of the same name
_TRAIN_ARGS = [
    "split",
    "train_fraction",
    "seed",
    "negatives_pipeline",
    "negatives_per_query",
    "negatives_depth",
    "epochs",
    "batch_size",
    "lr",
    "loss",
    "max_length",
    "max_queries",
    "device",
    "rebuild",
    "trainer",
]


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a model a pipeline stage loads (a cross-encoder reranker, a dense encoder, a blockrank LLM)",
        description="Train models for pipeline stages. `ragopt train cross-encoder` fine-tunes "
        "a cross-encoder for the cross_encoder reranker.",
    )
    models = p.add_subparsers(dest="model_kind", metavar="MODEL", required=True)
    t = models.add_parser(
        "cross-encoder",
        help="fine-tune a cross-encoder on a dataset's training queries",
        description="Fine-tune a cross-encoder from an encoder (hub id, folder, or the packaged "
        "all-MiniLM-L6-v2) on a seeded share of a dataset's judged queries, with hard "
        "negatives from a pipeline's top candidates. Prints the artifact path (use it "
        "as `model:` of the cross_encoder reranker) and the file of held-out query "
        "ids (queries the model never saw). The same settings reuse the artifact.",
        epilog=f"{opts.EPILOG_DATASET} {opts.EPILOG_PIPELINE}",
    )
    t.add_argument(
        "--base",
        default="all-MiniLM-L6-v2",
        metavar="MODEL",
        help="encoder to start from: hub id, model folder, or all-MiniLM-L6-v2 (default; packaged)",
    )
    opts.add_dataset(t, help="dataset folder (BEIR layout) or name")
    opts.add_split(t, help="qrels split whose judged queries are used (default: test)")
    t.add_argument(
        "--train-fraction",
        type=float,
        default=0.6,
        help="share of the judged queries trained on; the rest are held out (default: 0.6)",
    )
    t.add_argument("--max-queries", type=int, metavar="N", help="train on at most N of the training queries")
    t.add_argument(
        "--negatives-pipeline",
        default="bm25",
        metavar="PIPELINE",
        help="pipeline whose top candidates give hard negatives (default: bm25)",
    )
    t.add_argument("--negatives-per-query", type=int, default=4, help="negatives per query (default: 4)")
    t.add_argument(
        "--negatives-depth",
        type=int,
        default=30,
        help="negatives are drawn from this many top candidates (default: 30)",
    )
    t.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    t.add_argument("--batch-size", type=int, default=16, help="pairs per training step (default: 16)")
    t.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: 1e-4)")
    t.add_argument("--max-length", type=int, default=256, help="max tokens of query + passage (default: 256)")
    t.add_argument("--seed", type=int, default=0, help="seed of the query split, negatives and training (default: 0)")
    for flag, choices, text in _CHOICES:  # the first choice is the default
        t.add_argument(flag, choices=choices, default=choices[0], help=text)
    t.add_argument(
        "--evaluate",
        action="store_true",
        help="then compare the first stage alone with first stage >> cross-encoder on the held-out "
        "queries (nDCG@10, recall@100)",
    )
    t.add_argument("--eval-depth", type=int, default=100, help="candidates reranked by --evaluate (default: 100)")
    opts.add_index_dir(t)
    opts.add_rebuild(t, help="train again even if a matching artifact exists")
    opts.add_progress(t)
    opts.add_json(t)
    t.set_defaults(handler=run_cross_encoder)
    _register_bi_encoder(models)
    _register_blockrank(models)


def _register_bi_encoder(models: argparse._SubParsersAction) -> None:
    b = models.add_parser(
        "bi-encoder",
        help="fine-tune the dense retriever's encoder on a dataset's training queries",
        description="Fine-tune a sentence-transformers encoder (hub id, folder, or the packaged all-MiniLM-L6-v2) "
        "with in-batch and mined hard negatives (contrastive loss; passages judged relevant to a query are left "
        "out of its softmax) on a seeded share of a dataset's judged queries. Prints the artifact; use "
        "`encoder: {type: sentence_transformer, model: <artifact>/model}` in a dense stage.",
        epilog=f"{opts.EPILOG_DATASET} {opts.EPILOG_PIPELINE}",
    )
    b.add_argument("--base", default="all-MiniLM-L6-v2", metavar="MODEL", help="encoder to start from")
    opts.add_dataset(b, help="dataset folder (BEIR layout) or name")
    opts.add_split(b, help="qrels split whose judged queries are used (default: test)")
    for flag, typ, default, text in (
        ("--train-fraction", float, 0.6, "share of judged queries trained on; the rest are held out"),
        ("--max-queries", int, None, "train on at most N of the training queries"),
        ("--negatives-pipeline", str, "bm25", "pipeline whose top candidates give hard negatives"),
        ("--negatives-per-query", int, 1, "mined hard negatives per positive (0: in-batch negatives only)"),
        ("--negatives-depth", int, 30, "negatives are drawn from this many top candidates"),
        ("--epochs", int, 1, "training epochs"),
        ("--batch-size", int, 32, "queries per step (each with its positive and negatives)"),
        ("--lr", float, 2e-5, "peak learning rate"),
        ("--scale", float, 20.0, "inverse temperature of the cosine similarities"),
        ("--max-length", int, 128, "max tokens of a query or passage"),
        ("--seed", int, 0, "seed of the split, negatives and training"),
    ):
        b.add_argument(flag, type=typ, default=default, help=f"{text} (default: {default})")
    b.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="training device")
    b.add_argument(
        "--evaluate",
        action="store_true",
        help="then compare dense retrieval with the base and the trained encoder on the held-out queries "
        "(nDCG@10, recall@100)",
    )
    opts.add_index_dir(b)
    opts.add_rebuild(b, help="train again even if a matching artifact exists")
    opts.add_progress(b)
    opts.add_json(b)
    b.set_defaults(handler=run_bi_encoder)


def run_bi_encoder(args: argparse.Namespace) -> Output:
    from ragopt.training.bi_encoder import compare_encoders, heldout_query_ids, train_bi_encoder

    store = opts.store(args)
    names = ("split", "train_fraction", "max_queries", "negatives_pipeline", "negatives_per_query")
    names += ("negatives_depth", "epochs", "batch_size", "lr", "scale", "max_length", "seed", "device", "rebuild")
    art = train_bi_encoder(
        args.base, args.dataset, store=store, progress=opts.progress(args), **{k: getattr(args, k) for k in names}
    )
    m = art.manifest
    obj = {"artifact": str(art.path), "model": str(art.path / "model"), "created": art.created}
    obj.update({k: m.get(k) for k in ("steps", "n_train_queries", "n_heldout_queries", "n_pairs", "train_seconds")})
    lines = [
        f"{'trained' if art.created else 'reused'} bi-encoder: {art.path / 'model'}",
        f"  {m.get('n_train_queries')} training queries, {m.get('steps')} steps, {m.get('train_seconds')}s",
        f"  held-out query ids ({m.get('n_heldout_queries')}): {art.path / 'heldout_queries.txt'}",
    ]
    if args.evaluate:
        res = compare_encoders(
            args.base,
            art.path,
            args.dataset,
            split=args.split,
            query_ids=heldout_query_ids(art.path),
            store=store,
            progress=opts.progress(args),
        )
        res.pop("per_query")
        obj["evaluation"] = res
        lines.append(f"  held-out ({res['n_queries']} queries), dense with the base vs the trained encoder:")
        lines += [
            f"    {k:<12} {res['base'][k]:.4f} -> {res['trained'][k]:.4f} ({res['gain'][k]:+.4f})" for k in res["base"]
        ]
    return Output("\n".join(lines), obj)


def _register_blockrank(models: argparse._SubParsersAction) -> None:
    b = models.add_parser(
        "blockrank",
        help="fine-tune a causal LM for the blockrank reranker",
        description="Fine-tune a causal LM (packaged alias, folder or hub id; Llama/SmolLM2, Mistral, Qwen2) for "
        "the blockrank reranker: LM loss on the relevant document's id plus InfoNCE on query-to-block attention "
        "at --layer, hard negatives from a pipeline, a seeded query split. Prints the artifact; use "
        "`llm: {type: transformers, model: <artifact>/model}` in the blockrank stage.",
        epilog=f"{opts.EPILOG_DATASET} {opts.EPILOG_PIPELINE}",
    )
    b.add_argument("--base", default="smollm2-135m-instruct", metavar="MODEL", help="model to start from")
    opts.add_dataset(b, help="dataset folder (BEIR layout) or name")
    opts.add_split(b, help="qrels split whose judged queries are used (default: test)")
    for flag, typ, default, text in (
        ("--train-fraction", float, 0.6, "share of judged queries trained on; the rest are held out"),
        ("--max-queries", int, None, "train on at most N of the training queries"),
        ("--negatives-pipeline", str, "bm25", "pipeline whose top candidates give hard negatives"),
        ("--negatives-depth", int, 30, "negatives are drawn from this many top candidates"),
        ("--n-docs", int, 5, "documents per training prompt (1 relevant + hard negatives)"),
        ("--steps", int, 100, "training steps (one prompt each)"),
        ("--lr", float, 2e-5, "peak learning rate"),
        ("--aux-weight", float, 0.1, "lambda: weight of the attention InfoNCE loss (0: LM loss only)"),
        ("--temperature", float, 0.05, "temperature of the InfoNCE loss"),
        ("--layer", int, None, "layer whose attention the auxiliary loss trains (default: the middle one)"),
        ("--max-doc-tokens", int, 32, "tokens kept of each document"),
        ("--seed", int, 0, "seed of the split, negatives, document order and training"),
    ):
        b.add_argument(flag, type=typ, default=default, help=f"{text} (default: {default})")
    b.add_argument("--lora", action="store_true", help="train LoRA adapters (needs peft), merged when saved")
    opts.add_index_dir(b)
    opts.add_rebuild(b, help="train again even if a matching artifact exists")
    opts.add_progress(b)
    opts.add_json(b)
    b.set_defaults(handler=run_blockrank)


def run_blockrank(args: argparse.Namespace) -> Output:
    from ragopt.training.blockrank import train_blockrank

    names = ("split", "train_fraction", "max_queries", "negatives_pipeline", "negatives_depth", "n_docs", "steps")
    names += ("lr", "aux_weight", "temperature", "layer", "max_doc_tokens", "seed", "lora", "rebuild")
    art = train_blockrank(
        args.base,
        args.dataset,
        store=opts.store(args),
        progress=opts.progress(args),
        **{k: getattr(args, k) for k in names},
    )
    m = art.manifest
    obj = {"artifact": str(art.path), "model": str(art.path / "model"), "created": art.created}
    obj.update({k: m.get(k) for k in ("layer", "steps", "n_train_queries", "n_heldout_queries", "train_seconds")})
    text = (
        f"{'trained' if art.created else 'reused'} blockrank model: {art.path / 'model'}\n"
        f"  layer {m.get('layer')}, {m.get('steps')} steps, {m.get('n_train_queries')} training queries, "
        f"{m.get('train_seconds')}s\n  held-out query ids: {art.path / 'heldout_queries.txt'}"
    )
    return Output(text, obj)


def run_cross_encoder(args: argparse.Namespace) -> Output:
    from ragopt.training.cross_encoder import compare_reranking, heldout_query_ids, train_cross_encoder

    store = opts.store(args)
    art = train_cross_encoder(
        args.base,
        args.dataset,
        store=store,
        progress=opts.progress(args),
        **{k: getattr(args, k) for k in _TRAIN_ARGS},
    )
    m = art.manifest
    heldout = art.path / "heldout_queries.txt"
    obj = {
        "artifact": str(art.path),
        "created": art.created,
        "heldout_queries": str(heldout),
        "n_train_queries": m.get("n_train_queries"),
        "n_heldout_queries": m.get("n_heldout_queries"),
        "n_pairs": m.get("n_pairs"),
        "train_seconds": m.get("train_seconds"),
        "device": m.get("device"),
    }
    lines = [
        f"{'trained' if art.created else 'reused'} cross-encoder: {art.path}",
        f"  {m.get('n_train_queries')} training queries, {m.get('n_pairs')} pairs, "
        f"{m.get('train_seconds')}s on {m.get('device')}",
        f"  held-out query ids ({m.get('n_heldout_queries')}): {heldout}",
        f"  use it: ragopt eval -p bm25_ce -d {args.dataset} --set stages.1.model={art.path}",
    ]
    if args.evaluate:
        res = compare_reranking(
            art.path,
            args.dataset,
            split=args.split,
            query_ids=heldout_query_ids(art.path),
            depth=args.eval_depth,
            metrics=("ndcg@10", "recall@100"),
            store=store,
            progress=opts.progress(args),
        )
        res.pop("per_query")
        obj["evaluation"] = res
        lines.append(f"  held-out ({res['n_queries']} queries), first stage vs >> cross-encoder top {args.eval_depth}:")
        lines += [
            f"    {k:<12} {res['first_stage'][k]:.4f} -> {res['reranked'][k]:.4f} ({res['gain'][k]:+.4f})"
            for k in res["first_stage"]
        ]
    return Output("\n".join(lines), obj)
