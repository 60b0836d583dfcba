"""Fine-tune a cross-encoder on a BEIR-layout dataset's queries, with hard negatives mined by a ragopt pipeline.

:func:`train_cross_encoder` splits the judged queries of a split into training and held-out queries (a
seeded split, :func:`ragopt.data.splits.split_queries`), mines negatives for each training query from the
top ``negatives_depth`` candidates of a pipeline (judged-relevant documents excluded; ``negatives_per_query``
drawn at random among them, seeded), and fine-tunes ``CrossEncoder(base_model, num_labels=1)`` on groups of
(query, positive, negatives). The default ``listwise`` loss is the cross-entropy of the positive under a
softmax over its group's logits; ``bce`` is pointwise binary cross-entropy (the loss of sentence-transformers'
``CrossEncoder.fit``). AdamW, linear warm-up then decay, gradient clipping at 1.0. Two trainers run the same
recipe: ``trainer="ragopt"`` (the default; a plain loop, no extra dependencies, the one the published figures
were measured with) and ``trainer="sentence-transformers"`` (sentence-transformers' ``CrossEncoderTrainer``,
which needs ``accelerate``, with its ``MultipleNegativesRankingLoss`` set to the listwise loss above: raw
logits, scale 1, hard negatives only, or its ``BinaryCrossEntropyLoss``). Seeded throughout: classifier
initialisation, dropout, data order, negatives.

The result is a ``cross-encoder`` artifact keyed by everything that shapes it (base model fingerprint,
corpus fingerprint, training queries and their judgments, the query split, the negatives pipeline config,
hyperparameters): ``model/`` (a CrossEncoder folder, which the ``cross_encoder`` reranker loads given the
artifact path), ``heldout_queries.txt`` (the query ids it never saw: evaluate on these),
``train_queries.txt`` and ``training.json`` (loss curve, counts, time). Written atomically: Ctrl-C leaves
nothing half-written. :func:`compare_reranking` evaluates first stage alone vs first stage >> reranker on
a query subset (e.g. the held-out queries).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragopt._imports import require
from ragopt._progress import progress_enabled
from ragopt.encoders.models import model_fingerprint, resolve_model
from ragopt.errors import ConfigError
from ragopt.evaluation import evaluate
from ragopt.pipeline import Stage, run_batched
from ragopt.rerankers.cross_encoder import CrossEncoderReranker
from ragopt.store import ArtifactStore
from ragopt.training.common import (
    TrainSteps,
    adamw,
    as_dataset,
    as_pipeline,
    check_recipe_args,
    judged_queries,
    load_base,
    mine_groups,
    mine_or_fail,
    read_heldout_ids,
    run_info,
    training_split,
    write_training_record,
)
from ragopt.types import Batch

__all__ = ["train_cross_encoder", "compare_reranking", "heldout_query_ids", "mine_groups", "FORMAT_VERSION"]

FORMAT_VERSION = 1
KIND = "cross-encoder"


def heldout_query_ids(artifact: str | Path) -> list[str]:
    """The query ids a trained cross-encoder never saw (its ``heldout_queries.txt``)."""
    return read_heldout_ids(artifact, "cross-encoder")


@dataclass(frozen=True)
class _Recipe:
    """The training hyperparameters both trainers follow."""

    loss: str
    epochs: int
    batch_size: int
    lr: float
    warmup_ratio: float
    seed: int
    max_length: int


def _fit(
    model: Any, groups: list[tuple[str, str, list[str]]], recipe: _Recipe, progress: bool | None
) -> dict[str, Any]:
    """Fine-tune ``model`` (a CrossEncoder) on ``groups``; returns the loss history.

    ``listwise``: each step takes ``batch_size // group size`` groups; the loss is the cross-entropy of the
    positive under a softmax over its group's logits (the "localised contrastive" loss of rerankers trained
    on hard negatives). ``bce``: the groups' (query, passage, 0/1) pairs shuffled into steps of ``batch_size``
    pairs, binary cross-entropy on the logits."""
    import torch

    net, tok = model.model, model.tokenizer
    device = next(net.parameters()).device
    opt = adamw(net.named_parameters(), recipe.lr)
    if recipe.loss == "bce":
        units = [[(q, p, 1.0)] + [(q, n, 0.0) for n in negs] for q, p, negs in groups]
        units = [[pair] for unit in units for pair in unit]  # single pairs, shuffled freely
        per_step = recipe.batch_size
    else:
        units = [[(q, p, 1.0)] + [(q, n, 0.0) for n in negs] for q, p, negs in groups]
        per_step = max(1, recipe.batch_size // max(len(u) for u in units))
    steps_per_epoch = (len(units) + per_step - 1) // per_step
    total = steps_per_epoch * recipe.epochs
    rng = np.random.default_rng([recipe.seed, 11])
    with TrainSteps(net, opt, total, recipe.warmup_ratio, "train cross-encoder", progress) as steps:
        for _ in range(recipe.epochs):
            order = rng.permutation(len(units))
            for start in range(0, len(order), per_step):
                step = [units[i] for i in order[start : start + per_step]]
                rows = [pair for unit in step for pair in unit]
                feats = tok(
                    [q for q, _, _ in rows],
                    [p for _, p, _ in rows],
                    padding=True,
                    truncation="longest_first",
                    max_length=recipe.max_length,
                    return_tensors="pt",
                ).to(device)
                logits = net(**feats).logits.view(-1).float()
                if recipe.loss == "bce":
                    labels = torch.tensor([y for _, _, y in rows], dtype=torch.float32, device=device)
                    value = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
                else:
                    parts, at = [], 0
                    for unit in step:  # the positive is first in its group
                        parts.append(-torch.log_softmax(logits[at : at + len(unit)], dim=0)[0])
                        at += len(unit)
                    value = torch.stack(parts).mean()
                steps.step(value, loss=float(value.detach()))
    losses = steps.curves.get("loss", [])
    return {"steps": len(losses), "loss": [round(x, 5) for x in losses]}


def st_listwise_loss(model: Any) -> Any:
    """sentence-transformers' ``MultipleNegativesRankingLoss`` reduced to the listwise loss of :func:`_fit`:
    columns (query, positive, negative_1, ...), raw logits, scale 1, no in-batch negatives."""
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    class HardNegativesOnly(MultipleNegativesRankingLoss):
        def get_in_batch_negatives(self, anchors, candidates):
            return iter(())

    return HardNegativesOnly(model, num_negatives=None, scale=1.0, activation_fn=None)


def _fit_sentence_transformers(
    model: Any, groups: list[tuple[str, str, list[str]]], recipe: _Recipe, progress: bool | None, workdir: Path
) -> dict[str, Any]:
    """The same recipe through sentence-transformers' ``CrossEncoderTrainer``.

    listwise: one row per group (query, positive, negative_1..negative_n; a group with fewer negatives than
    the widest repeats its own), ``groups per step = batch_size // group size`` as in the ragopt loop;
    ``MultipleNegativesRankingLoss`` without in-batch negatives, activation or scale is then the softmax
    cross-entropy of the positive over its group. bce: (query, passage, label) rows, ``batch_size`` a step."""
    what = "trainer 'sentence-transformers'"
    require("accelerate", "rerank", what)  # the Trainer needs it; say so before building anything
    Dataset = require("datasets", "rerank", what).Dataset
    st_ce = require("sentence_transformers.cross_encoder", "rerank", what)
    CrossEncoderTrainer, CrossEncoderTrainingArguments = st_ce.CrossEncoderTrainer, st_ce.CrossEncoderTrainingArguments
    BinaryCrossEntropyLoss = st_ce.losses.BinaryCrossEntropyLoss
    from transformers import TrainerCallback

    if recipe.loss == "bce":
        rows = {"query": [], "passage": [], "label": []}
        for q, p, negs in groups:
            for text, y in [(p, 1.0)] + [(n, 0.0) for n in negs]:
                rows["query"].append(q)
                rows["passage"].append(text)
                rows["label"].append(y)
        per_step, st_loss = recipe.batch_size, BinaryCrossEntropyLoss(model)
    else:
        groups = [g for g in groups if g[2]]  # a group without negatives has a zero loss
        width = max(len(g[2]) for g in groups)
        rows = {"query": [g[0] for g in groups], "positive": [g[1] for g in groups]}
        for j in range(width):
            rows[f"negative_{j + 1}"] = [g[2][j % len(g[2])] for g in groups]
        per_step = max(1, recipe.batch_size // (width + 1))
        st_loss = st_listwise_loss(model)
    losses: list[float] = []

    class _Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    args = CrossEncoderTrainingArguments(
        output_dir=str(workdir),
        num_train_epochs=recipe.epochs,
        per_device_train_batch_size=per_step,
        learning_rate=recipe.lr,
        warmup_ratio=recipe.warmup_ratio,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        seed=recipe.seed,
        data_seed=recipe.seed,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=not progress_enabled(progress),
        dataloader_num_workers=0,
        dataloader_pin_memory=str(model.device).startswith("cuda"),
    )
    trainer = CrossEncoderTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=st_loss, callbacks=[_Record()]
    )
    trainer.train()
    model.model.eval()
    return {"steps": int(trainer.state.global_step), "loss": [round(x, 5) for x in losses]}


def train_cross_encoder(
    base_model: str,
    dataset: Any,
    split: str = "test",
    train_fraction: float = 0.6,
    seed: int = 0,
    negatives_pipeline: Any = "bm25",
    negatives_per_query: int = 4,
    negatives_depth: int = 30,
    epochs: int = 3,
    batch_size: int = 16,
    lr: float = 1e-4,
    max_length: int = 256,
    max_queries: int | None = None,
    warmup_ratio: float = 0.1,
    loss: str = "listwise",
    with_title: bool = True,
    device: str = "auto",
    store: Any = None,
    progress: bool | None = None,
    rebuild: bool = False,
    trainer: str = "ragopt",
):
    """Fine-tune a cross-encoder from ``base_model`` (any encoder: hub id, folder, alias all-MiniLM-L6-v2) on
    the training share of ``dataset``'s ``split`` queries; return the ``cross-encoder`` Artifact (reused when
    one with the same spec exists). ``max_queries`` caps the training queries (a seeded sample); the
    held-out queries stay the complement of the ``train_fraction`` split either way."""
    check_recipe_args(
        train_fraction,
        max_queries,
        at_least={
            "epochs": (epochs, 1),
            "batch_size": (batch_size, 1),
            "max_length": (max_length, 8),
            "negatives_per_query": (negatives_per_query, 1),
            "negatives_depth": (negatives_depth, 1),
        },
        positive={"lr": lr},
        seed=seed,
        negatives=("negatives_per_query", negatives_per_query, negatives_per_query, negatives_depth),
    )
    if loss not in ("listwise", "bce"):
        raise ConfigError("loss", f"must be 'listwise' or 'bce', got {loss!r}")
    if trainer not in ("ragopt", "sentence-transformers"):
        raise ConfigError("trainer", f"must be 'ragopt' or 'sentence-transformers', got {trainer!r}")
    identity, local = resolve_model(base_model, "base_model")
    store = store if store is not None else ArtifactStore()
    ts = training_split(dataset, split, train_fraction, seed, max_queries)
    neg_pipe = as_pipeline(negatives_pipeline)
    spec = {
        "base_model": identity if local is None else None,
        "base_fingerprint": model_fingerprint(local) if local is not None else None,
        **ts.spec(split, train_fraction, max_queries, seed),
        "negatives": {"pipeline": neg_pipe.to_config(), "per_query": negatives_per_query, "depth": negatives_depth},
        "train": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "max_length": max_length,
            "warmup_ratio": warmup_ratio,
            "with_title": with_title,
            "loss": loss,
        },
    }
    if trainer != "ragopt":  # keys of artifacts trained by the ragopt loop stay as they were
        spec["train"]["trainer"] = trainer

    def build(out: Path) -> dict[str, Any]:
        CrossEncoder = require("sentence_transformers", "rerank", "training a cross-encoder").CrossEncoder
        t0 = time.perf_counter()
        groups, counts = mine_or_fail(
            ts, split, neg_pipe, negatives_per_query, negatives_depth, seed, with_title, store, progress
        )
        t_mine = time.perf_counter()
        model, dev = load_base(
            CrossEncoder, base_model, identity, local, device, seed, num_labels=1, max_length=max_length
        )
        recipe = _Recipe(loss, epochs, batch_size, lr, warmup_ratio, seed, max_length)
        if trainer == "sentence-transformers":
            history = _fit_sentence_transformers(model, groups, recipe, progress, out / ".trainer")
            import shutil

            shutil.rmtree(out / ".trainer", ignore_errors=True)
        else:
            history = _fit(model, groups, recipe, progress)
        t_train = time.perf_counter()
        model.save(str(out / "model"))
        info = run_info(ts, base_model, counts, (t0, t_mine, t_train), device=dev, trainer=trainer, **history)
        return write_training_record(out, ts.held_ids, ts.train_ids, info, ("loss",))

    return store.get_or_create(KIND, spec, FORMAT_VERSION, build, rebuild=rebuild)


def compare_reranking(
    reranker: Any,
    dataset: Any,
    split: str = "test",
    query_ids: Sequence[str] | None = None,
    first_stage: Any = "bm25",
    depth: int = 100,
    metrics: Sequence[str] = ("ndcg@10",),
    store: Any = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Metrics of ``first_stage`` alone and of ``first_stage >> reranker`` (rescoring its top ``depth``) on
    the judged queries of ``split`` (only ``query_ids`` if given), computed from one first-stage run.

    ``reranker`` is a Stage or a cross-encoder model / artifact path (a ``cross_encoder`` stage is made)."""
    ds = as_dataset(dataset)
    queries, qrels = judged_queries(ds, split, query_ids)
    if not isinstance(reranker, Stage):
        reranker = CrossEncoderReranker(model=str(reranker), depth=depth)
    first = as_pipeline(first_stage)
    first.fit(ds.corpus, store, progress=progress)
    reranker.fit(first.prepare_corpus(ds.corpus), store, progress=progress)
    t0 = time.perf_counter()
    base = run_batched(first, Batch(queries), batch_size=1000, progress=progress)
    t1 = time.perf_counter()
    reranked = reranker.transform(Batch(base.queries, base.corpus, base.doc_idx, base.scores))
    t2 = time.perf_counter()
    a = evaluate(base.to_run(), qrels, metrics)
    b = evaluate(reranked.to_run(), qrels, metrics)
    return {
        "dataset": ds.name,
        "split": split,
        "n_queries": len(queries),
        "depth": getattr(reranker, "depth", depth),
        "first_stage": a.metrics,
        "reranked": b.metrics,
        "gain": {m: b.metrics[m] - a.metrics[m] for m in a.metrics},
        "per_query": {"first_stage": a.per_query, "reranked": b.per_query},
        "stats": reranked.stats.to_dict(),
        "seconds": {"first_stage": round(t1 - t0, 3), "rerank": round(t2 - t1, 3)},
    }
