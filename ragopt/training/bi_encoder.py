"""Fine-tune the dense retriever's encoder (a sentence-transformers bi-encoder) on a BEIR-layout dataset's queries.

:func:`train_bi_encoder` uses the seeded query split and the hard-negative mining every recipe shares
(:func:`ragopt.training.common.training_split`, :func:`~ragopt.training.common.mine_groups`) and
trains with the contrastive loss of dense-retriever fine-tuning (sentence-transformers'
``MultipleNegativesRankingLoss``, DPR's in-batch negatives): each step encodes ``batch_size`` queries, their
positives and their mined hard negatives; a query's logits are the scaled cosine similarities to every passage of
the step, and the loss is the cross-entropy of its own positive. Passages of the step that are judged relevant to
the query (another positive of the same query, or a tool that serves two queries of the step: small corpora repeat
documents often) are masked out of its softmax instead of being pushed away. AdamW, linear warm-up then decay,
gradient clipping at 1.0; seeded throughout (initialisation, dropout, data order, negatives).

The result is a ``bi-encoder`` artifact keyed by everything that shapes it: ``model/`` (a SentenceTransformer
folder: ``encoder: {type: sentence_transformer, model: <artifact>/model}`` in a ``dense`` stage),
``heldout_queries.txt`` (the query ids it never saw: evaluate on these), ``train_queries.txt`` and
``training.json`` (loss curve, counts, time). Written atomically: Ctrl-C leaves nothing half-written.
:func:`compare_encoders` evaluates a dense stage with the base encoder against one with the trained encoder on a
query subset (e.g. the held-out queries).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragopt._imports import require
from ragopt.encoders.models import model_fingerprint, resolve_model
from ragopt.store import ArtifactStore
from ragopt.training.common import (
    TrainSteps,
    adamw,
    as_dataset,
    as_pipeline,
    check_recipe_args,
    judged_queries,
    load_base,
    mine_or_fail,
    read_heldout_ids,
    run_info,
    training_split,
    write_training_record,
)

__all__ = ["train_bi_encoder", "compare_encoders", "heldout_query_ids", "FORMAT_VERSION"]

FORMAT_VERSION = 1
KIND = "bi-encoder"


def heldout_query_ids(artifact: str | Path) -> list[str]:
    """The query ids a trained bi-encoder never saw (its ``heldout_queries.txt``)."""
    return read_heldout_ids(artifact, "bi-encoder")


def contrastive_loss(q: Any, p: Any, scale: float, masked: Any) -> Any:
    """In-batch contrastive loss: ``q`` (B, d) and ``p`` (P, d) L2-normalised, query ``i``'s positive is passage
    ``i``; ``masked`` (B, P) bool marks passages left out of a query's softmax (judged relevant to it, not its
    own positive)."""
    import torch

    logits = scale * q @ p.T
    logits = logits.masked_fill(masked, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


def _fit(model: Any, groups: list[tuple[str, str, list[str]]], recipe: dict[str, Any], progress: bool | None):
    """Fine-tune ``model`` (a SentenceTransformer) on ``groups``; returns the loss history."""
    import torch

    relevant: dict[str, set[str]] = {}
    for q, p, _ in groups:
        relevant.setdefault(q, set()).add(p)
    device = model.device
    opt = adamw(model.named_parameters(), recipe["lr"])
    per_step = recipe["batch_size"]
    steps_per_epoch = (len(groups) + per_step - 1) // per_step
    total = steps_per_epoch * recipe["epochs"]
    rng = np.random.default_rng([recipe["seed"], 13])

    prepare = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers >= 6 / before

    def embed(texts: list[str]) -> Any:
        feats = {k: v.to(device) if hasattr(v, "to") else v for k, v in prepare(texts).items()}
        return torch.nn.functional.normalize(model(feats)["sentence_embedding"], dim=-1)

    n_masked = 0
    with TrainSteps(model, opt, total, recipe["warmup_ratio"], "train bi-encoder", progress) as steps:
        for _ in range(recipe["epochs"]):
            order = rng.permutation(len(groups))
            for start in range(0, len(order), per_step):
                step = [groups[i] for i in order[start : start + per_step]]
                queries = [q for q, _, _ in step]
                passages = [p for _, p, _ in step] + [n for _, _, negs in step for n in negs]
                masked = torch.tensor(
                    [
                        [j != i and passages[j] in relevant[q] for j in range(len(passages))]
                        for i, q in enumerate(queries)
                    ],
                    device=device,
                )
                n_masked += int(masked.sum())
                value = contrastive_loss(embed(queries), embed(passages), recipe["scale"], masked)
                steps.step(value, loss=float(value.detach()))
    losses = steps.curves.get("loss", [])
    return {"steps": len(losses), "masked_in_batch_positives": n_masked, "loss": [round(x, 5) for x in losses]}


def train_bi_encoder(
    base_model: str,
    dataset: Any,
    split: str = "test",
    train_fraction: float = 0.6,
    seed: int = 0,
    negatives_pipeline: Any = "bm25",
    negatives_per_query: int = 1,
    negatives_depth: int = 30,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    scale: float = 20.0,
    max_length: int = 128,
    max_queries: int | None = None,
    warmup_ratio: float = 0.1,
    with_title: bool = True,
    device: str = "auto",
    store: Any = None,
    progress: bool | None = None,
    rebuild: bool = False,
):
    """Fine-tune a bi-encoder from ``base_model`` (a sentence-transformers model: hub id, folder, or the packaged
    alias all-MiniLM-L6-v2) on the training share of ``dataset``'s ``split`` queries; return the ``bi-encoder``
    Artifact (reused when one with the same spec exists). ``max_queries`` caps the training queries (a seeded
    sample); the held-out queries stay the complement of the ``train_fraction`` split either way."""
    check_recipe_args(
        train_fraction,
        max_queries,
        at_least={
            "epochs": (epochs, 1),
            "batch_size": (batch_size, 2),
            "max_length": (max_length, 8),
            "negatives_per_query": (negatives_per_query, 0),
            "negatives_depth": (negatives_depth, 1),
        },
        positive={"lr": lr, "scale": scale},
        seed=seed,
        negatives=("negatives_per_query", negatives_per_query, negatives_per_query, negatives_depth),
    )
    identity, local = resolve_model(base_model, "base_model")
    store = store if store is not None else ArtifactStore()
    ts = training_split(dataset, split, train_fraction, seed, max_queries)
    neg_pipe = as_pipeline(negatives_pipeline)
    recipe = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "scale": scale,
        "max_length": max_length,
        "warmup_ratio": warmup_ratio,
        "with_title": with_title,
        "seed": seed,
    }
    spec = {
        "base_model": identity if local is None else None,
        "base_fingerprint": model_fingerprint(local) if local is not None else None,
        **ts.spec(split, train_fraction, max_queries, seed),
        "negatives": {"pipeline": neg_pipe.to_config(), "per_query": negatives_per_query, "depth": negatives_depth},
        "train": {k: v for k, v in recipe.items() if k != "seed"},
    }

    def build(out: Path) -> dict[str, Any]:
        SentenceTransformer = require("sentence_transformers", "dense", "training a bi-encoder").SentenceTransformer
        t0 = time.perf_counter()
        groups, counts = mine_or_fail(  # negatives_per_query=0: in-batch negatives only
            ts, split, neg_pipe, negatives_per_query, negatives_depth, seed, with_title, store, progress
        )
        t_mine = time.perf_counter()
        model, dev = load_base(SentenceTransformer, base_model, identity, local, device, seed)
        model.max_seq_length = max_length
        history = _fit(model, groups, recipe, progress)
        t_train = time.perf_counter()
        model.save(str(out / "model"))
        info = run_info(ts, base_model, counts, (t0, t_mine, t_train), device=dev, **history)
        return write_training_record(out, ts.held_ids, ts.train_ids, info, ("loss",))

    return store.get_or_create(KIND, spec, FORMAT_VERSION, build, rebuild=rebuild)


def dense_pipeline(model: str, top_k: int = 100, with_title: bool = True) -> Any:
    """``pipelines/dense.yaml`` with ``model`` as its encoder and ``top_k`` candidates."""
    from ragopt.pipeline_io import load_pipeline

    return load_pipeline("dense").set_params(
        **{"stages.0.encoder.model": str(model), "stages.0.top_k": top_k, "stages.0.with_title": with_title}
    )


def compare_encoders(
    base_model: str,
    trained: str | Path,
    dataset: Any,
    split: str = "test",
    query_ids: Sequence[str] | None = None,
    metrics: Sequence[str] = ("ndcg@10", "recall@100"),
    store: Any = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Dense retrieval with ``base_model`` vs with ``trained`` (a ``bi-encoder`` artifact or a model folder) on the
    judged queries of ``split`` (only ``query_ids`` if given)."""
    from ragopt.evaluation import evaluate
    from ragopt.pipeline import run_batched
    from ragopt.types import Batch

    ds = as_dataset(dataset)
    queries, qrels = judged_queries(ds, split, query_ids)
    trained = Path(trained)
    model_dir = trained / "model" if (trained / "model").is_dir() else trained
    out: dict[str, Any] = {"dataset": ds.name, "split": split, "n_queries": len(queries)}
    for name, model in (("base", base_model), ("trained", str(model_dir))):
        pipe = dense_pipeline(model)
        pipe.fit(ds.corpus, store, progress=progress)
        run = run_batched(pipe, Batch(queries), batch_size=1000, progress=progress).to_run()
        res = evaluate(run, qrels, metrics)
        out[name] = res.metrics
        out.setdefault("per_query", {})[name] = res.per_query
    out["gain"] = {m: out["trained"][m] - out["base"][m] for m in out["base"]}
    return out
