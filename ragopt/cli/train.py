"""``ragopt train MODEL``: train a model that a pipeline stage loads (``cross-encoder``, ``bi-encoder``, ``blockrank``)."""

from __future__ import annotations

import argparse

from ragopt.cli import _options as opts
from ragopt.cli._output import Output

#: options every recipe takes: (flag, type, default, help); the flag's dest is the recipe's keyword argument
_COMMON = (
    ("--train-fraction", float, 0.6, "share of the judged queries trained on; the rest are held out"),
    ("--max-queries", int, None, "train on at most N of the training queries"),
    ("--negatives-pipeline", str, "bm25", "pipeline whose top candidates give hard negatives"),
    ("--negatives-depth", int, 30, "negatives are drawn from this many top candidates"),
    ("--seed", int, 0, "seed of the query split, negatives and training"),
)
_DEVICE = ("--device", ("auto", "cpu", "cuda", "mps"), "training device")
#: each recipe's own options: (flag, type, default, help), then (flag, choices, help) with the first choice default
_CROSS_ENCODER = (
    ("--negatives-per-query", int, 4, "mined negatives per positive"),
    ("--epochs", int, 3, "training epochs"),
    ("--batch-size", int, 16, "pairs per training step"),
    ("--lr", float, 1e-4, "peak learning rate"),
    ("--max-length", int, 256, "max tokens of query + passage"),
)
_CROSS_ENCODER_CHOICES = (
    (
        "--loss",
        ("listwise", "bce"),
        "listwise: softmax cross-entropy over each query's positive and negatives; bce: pointwise binary cross-entropy",
    ),
    (
        "--trainer",
        ("ragopt", "sentence-transformers"),
        "ragopt: the built-in loop; sentence-transformers: its CrossEncoderTrainer "
        "with the same loss and schedule (needs accelerate)",
    ),
    _DEVICE,
)
_BI_ENCODER = (
    ("--negatives-per-query", int, 1, "mined hard negatives per positive (0: in-batch negatives only)"),
    ("--epochs", int, 1, "training epochs"),
    ("--batch-size", int, 32, "queries per step (each with its positive and negatives)"),
    ("--lr", float, 2e-5, "peak learning rate"),
    ("--scale", float, 20.0, "inverse temperature of the cosine similarities"),
    ("--max-length", int, 128, "max tokens of a query or passage"),
)
_BLOCKRANK = (
    ("--n-docs", int, 5, "documents per training prompt (1 relevant + hard negatives)"),
    ("--steps", int, 100, "training steps (one prompt each)"),
    ("--lr", float, 2e-5, "peak learning rate"),
    ("--aux-weight", float, 0.1, "lambda: weight of the attention InfoNCE loss (0: LM loss only)"),
    ("--temperature", float, 0.05, "temperature of the InfoNCE loss"),
    ("--layer", int, None, "layer whose attention the auxiliary loss trains (default: the middle one)"),
    ("--max-doc-tokens", int, 32, "tokens kept of each document"),
)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _add_recipe(
    models: argparse._SubParsersAction,
    name: str,
    help: str,
    description: str,
    base: tuple[str, str],
    options: tuple = (),
    choices: tuple = (),
    switches: tuple = (),
) -> argparse.ArgumentParser:
    """The parser of ``ragopt train NAME``: --base, dataset and split, the options every recipe takes, its own
    ``options``, ``choices`` and on/off ``switches``; records the recipe's keyword arguments (``recipe_args``) for
    :func:`_recipe_kwargs`."""
    p = models.add_parser(
        name, help=help, description=description, epilog=f"{opts.EPILOG_DATASET} {opts.EPILOG_PIPELINE}"
    )
    p.add_argument("--base", default=base[0], metavar="MODEL", help=f"{base[1]} (default: {base[0]})")
    opts.add_dataset(p, help="dataset folder (BEIR layout) or name")
    opts.add_split(p, help="qrels split whose judged queries are used (default: test)")
    names = []
    for flag, typ, default, text in (*_COMMON, *options):
        shown = "" if default is None or "default" in text else f" (default: {default})"
        metavar = {int: "N", float: "X"}.get(typ, "PIPELINE")
        p.add_argument(flag, type=typ, default=default, metavar=metavar, help=text + shown)
        names.append(_dest(flag))
    for flag, values, text in choices:
        p.add_argument(flag, choices=values, default=values[0], help=f"{text} (default: {values[0]})")
        names.append(_dest(flag))
    for flag, text in switches:  # on/off settings: (flag, help)
        p.add_argument(flag, action="store_true", help=text)
        names.append(_dest(flag))
    p.set_defaults(recipe_args=(*names, "rebuild"))
    return p


def _finish(p: argparse.ArgumentParser, handler) -> None:
    opts.add_index_dir(p)
    opts.add_rebuild(p, help="train again even if a matching artifact exists")
    opts.add_progress(p)
    opts.add_json(p)
    p.set_defaults(handler=handler)


def _recipe_kwargs(args: argparse.Namespace) -> dict:
    """The recipe's keyword arguments, as the command line set them."""
    return {k: getattr(args, k) for k in args.recipe_args}


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a model a pipeline stage loads (a cross-encoder reranker, a dense encoder, a blockrank LLM)",
        description="Train models for pipeline stages: `ragopt train cross-encoder` for the cross_encoder reranker, "
        "`bi-encoder` for the dense retriever's encoder, `blockrank` for the blockrank reranker's LLM.",
    )
    models = p.add_subparsers(dest="model_kind", metavar="MODEL", required=True)
    t = _add_recipe(
        models,
        "cross-encoder",
        help="fine-tune a cross-encoder on a dataset's training queries",
        description="Fine-tune a cross-encoder from an encoder (hub id, folder, or the packaged "
        "all-MiniLM-L6-v2) on a seeded share of a dataset's judged queries, with hard "
        "negatives from a pipeline's top candidates. Prints the artifact path (use it "
        "as `model:` of the cross_encoder reranker) and the file of held-out query "
        "ids (queries the model never saw). The same settings reuse the artifact.",
        base=("all-MiniLM-L6-v2", "encoder to start from: hub id, model folder, or the packaged all-MiniLM-L6-v2"),
        options=_CROSS_ENCODER,
        choices=_CROSS_ENCODER_CHOICES,
    )
    t.add_argument(
        "--evaluate",
        action="store_true",
        help="then compare the first stage alone with first stage >> cross-encoder on the held-out "
        "queries (nDCG@10, recall@100)",
    )
    t.add_argument("--eval-depth", type=int, metavar="N", help="candidates reranked by --evaluate (default: 100)")
    _finish(t, run_cross_encoder)

    b = _add_recipe(
        models,
        "bi-encoder",
        help="fine-tune the dense retriever's encoder on a dataset's training queries",
        description="Fine-tune a sentence-transformers encoder (hub id, folder, or the packaged all-MiniLM-L6-v2) "
        "with in-batch and mined hard negatives (contrastive loss; passages judged relevant to a query are left "
        "out of its softmax) on a seeded share of a dataset's judged queries. Prints the artifact; use "
        "`encoder: {type: sentence_transformer, model: <artifact>/model}` in a dense stage.",
        base=("all-MiniLM-L6-v2", "encoder to start from"),
        options=_BI_ENCODER,
        choices=(_DEVICE,),
    )
    b.add_argument(
        "--evaluate",
        action="store_true",
        help="then compare dense retrieval with the base and the trained encoder on the held-out queries "
        "(nDCG@10, recall@100)",
    )
    _finish(b, run_bi_encoder)

    r = _add_recipe(
        models,
        "blockrank",
        help="fine-tune a causal LM for the blockrank reranker",
        description="Fine-tune a causal LM (packaged alias, folder or hub id; Llama/SmolLM2, Mistral, Qwen2) for "
        "the blockrank reranker: LM loss on the relevant document's id plus InfoNCE on query-to-block attention "
        "at --layer, hard negatives from a pipeline, a seeded query split. Prints the artifact; use "
        "`llm: {type: transformers, model: <artifact>/model}` in the blockrank stage.",
        base=("smollm2-135m-instruct", "model to start from"),
        options=_BLOCKRANK,
        switches=(("--lora", "train LoRA adapters (needs peft), merged when saved"),),
    )
    _finish(r, run_blockrank)


def run_bi_encoder(args: argparse.Namespace) -> Output:
    from ragopt.training.bi_encoder import compare_encoders, heldout_query_ids, train_bi_encoder

    store = opts.store(args)
    art = train_bi_encoder(
        args.base, args.dataset, split=args.split, store=store, progress=opts.progress(args), **_recipe_kwargs(args)
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


def run_blockrank(args: argparse.Namespace) -> Output:
    from ragopt.training.blockrank import train_blockrank

    art = train_blockrank(
        args.base,
        args.dataset,
        split=args.split,
        store=opts.store(args),
        progress=opts.progress(args),
        **_recipe_kwargs(args),
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
    from ragopt.errors import ConfigError
    from ragopt.training.cross_encoder import compare_reranking, heldout_query_ids, train_cross_encoder

    # checked before training: a bad --eval-depth surfaced only after the whole training run
    if args.eval_depth is not None and not args.evaluate:
        raise ConfigError("--eval-depth", "--eval-depth needs --evaluate")
    depth = 100 if args.eval_depth is None else args.eval_depth
    if depth < 1:
        raise ConfigError("--eval-depth", f"must be >= 1, got {depth}")
    store = opts.store(args)
    art = train_cross_encoder(
        args.base,
        args.dataset,
        split=args.split,
        store=store,
        progress=opts.progress(args),
        **_recipe_kwargs(args),
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
            depth=depth,
            metrics=("ndcg@10", "recall@100"),
            store=store,
            progress=opts.progress(args),
        )
        res.pop("per_query")
        obj["evaluation"] = res
        lines.append(f"  held-out ({res['n_queries']} queries), first stage vs >> cross-encoder top {depth}:")
        lines += [
            f"    {k:<12} {res['first_stage'][k]:.4f} -> {res['reranked'][k]:.4f} ({res['gain'][k]:+.4f})"
            for k in res["first_stage"]
        ]
    return Output("\n".join(lines), obj)
