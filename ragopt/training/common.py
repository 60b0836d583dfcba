"""What every training recipe shares (``ragopt train cross-encoder``, ``bi-encoder``, ``blockrank``).

- the seeded query split (:func:`training_split`) whose held-out ids each artifact stores, and the hash of the
  training judgments its key names;
- hard negatives mined by a ragopt pipeline (:func:`mine_groups`, :func:`mine_or_fail`);
- argument checks (:func:`check_recipe_args`), the artifact spec's split fields (:meth:`TrainingSplit.spec`);
- the AdamW parameter groups (:func:`adamw`) and the update side of the loop (:class:`TrainSteps`: warm-up schedule,
  clipped steps, per-step curves, progress bar); loading the base model with a clear error (:func:`load_base`);
- the record written beside the model (:func:`write_training_record`, :func:`run_info`) and read back
  (:func:`read_heldout_ids`); the judged queries of a split (:func:`judged_queries`) that evaluations use.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragopt._progress import progress_enabled
from ragopt.data import load_dataset
from ragopt.data.splits import split_queries
from ragopt.encoders.models import load_error, resolve_device
from ragopt.errors import ConfigError, DataError
from ragopt.pipeline import Stage, run_batched
from ragopt.pipeline_io import load_pipeline
from ragopt.types import Batch, Queries, check_seed

__all__ = [
    "TrainingSplit",
    "training_split",
    "judged_queries",
    "mine_groups",
    "mine_or_fail",
    "check_recipe_args",
    "adamw",
    "TrainSteps",
    "load_base",
    "run_info",
    "write_training_record",
    "read_heldout_ids",
]


def as_dataset(dataset: Any):
    """A Dataset, loaded when given a name or a folder."""
    return load_dataset(dataset) if isinstance(dataset, (str, Path)) else dataset


def as_pipeline(pipeline: Any):
    """A fresh pipeline: a clone of a Stage, or loaded from a name, a YAML file or a config."""
    if isinstance(pipeline, Stage):
        return pipeline.clone()
    return load_pipeline(pipeline)


def _judgments_hash(ids: Sequence[str], texts: Sequence[str], qrels: dict) -> str:
    h = hashlib.sha256()
    for q, t in zip(ids, texts):
        h.update(json.dumps([q, t, sorted(qrels.get(q, {}).items())], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()[:24]


@dataclass
class TrainingSplit:
    """The judged queries of a dataset's split, cut into training and held-out ids (seeded), with the hash
    of the training judgments that an artifact's key names."""

    dataset: Any
    train_ids: list[str]
    held_ids: list[str]
    judgments: str

    def spec(self, split: str, train_fraction: float, max_queries: int | None, seed: int) -> dict[str, Any]:
        """The fields of an artifact's spec that name its data and split (every recipe keys them alike)."""
        return {
            "corpus": self.dataset.corpus.fingerprint,
            "train_queries": self.judgments,
            "split": split,
            "train_fraction": train_fraction,
            "max_queries": max_queries,
            "seed": seed,
        }


def training_split(dataset: Any, split: str, train_fraction: float, seed: int, max_queries: int | None):
    """The seeded split every training recipe uses (:func:`ragopt.data.splits.split_queries`): the held-out
    queries are the complement of ``train_fraction``; ``max_queries`` caps the training queries (a seeded sample)."""
    ds = as_dataset(dataset)
    queries = ds.queries_for(split)
    qrels = ds.qrels(split)
    if len(queries) < 2:
        raise DataError(f"{ds.name} [{split}] has {len(queries)} judged queries; need at least 2 to train and hold out")
    train_ids, held_ids = split_queries(queries.ids, 1.0 - train_fraction, seed)
    if max_queries is not None and max_queries < len(train_ids):
        keep = set(np.random.default_rng([seed, 3]).permutation(sorted(train_ids))[:max_queries].tolist())
        train_ids = [q for q in train_ids if q in keep]
    pos = {q: i for i, q in enumerate(queries.ids)}
    judgments = _judgments_hash(train_ids, [queries.texts[pos[q]] for q in train_ids], qrels)
    return TrainingSplit(ds, list(train_ids), list(held_ids), judgments)


def judged_queries(ds: Any, split: str, query_ids: Sequence[str] | None = None) -> tuple[Queries, dict]:
    """The judged queries of ``ds``'s ``split`` (only ``query_ids``, in the dataset's order, if given: an id that
    is not judged there is refused) and their qrels."""
    queries = ds.queries_for(split)
    qrels = ds.qrels(split)
    if query_ids is not None:
        keep = set(query_ids)
        unknown = keep - set(queries.ids)
        if unknown:
            raise DataError(
                f"{len(unknown)} query ids are not judged in {ds.name} [{split}] (e.g. {sorted(unknown)[:3]})"
            )
        queries = queries[[i for i, q in enumerate(queries.ids) if q in keep]]
        qrels = {q: qrels[q] for q in queries.ids}
    return queries, qrels


def adamw(named_parameters: Any, lr: float) -> Any:
    """AdamW with weight decay 0.01, none on biases and LayerNorm weights (the usual BERT fine-tuning groups)."""
    import torch

    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    params = list(named_parameters)
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in params if not any(k in n for k in no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in params if any(k in n for k in no_decay)], "weight_decay": 0.0},
        ],
        lr=lr,
    )


class TrainSteps:
    """The update side of every recipe's training loop, as a context manager around it.

    On entry ``module`` goes to training mode; each :meth:`step` backpropagates the objective, clips the gradients to
    norm 1, steps the optimiser and the linear warm-up/decay schedule (``warmup_ratio`` of ``total`` steps), clears
    the gradients, and appends the step's named values to :attr:`curves`; the progress bar (when ``progress`` is on)
    shows the running mean over the last 20 steps of the curves named in ``shown``. On exit, normally or not, the
    bar closes and ``module`` goes back to evaluation mode."""

    def __init__(
        self,
        module: Any,
        opt: Any,
        total: int,
        warmup_ratio: float,
        desc: str,
        progress: bool | None,
        shown: Sequence[str] = ("loss",),
    ) -> None:
        from transformers import get_linear_schedule_with_warmup

        self.module, self.opt, self.shown = module, opt, tuple(shown)
        self.sched = get_linear_schedule_with_warmup(opt, int(round(warmup_ratio * total)), total)
        self.curves: dict[str, list[float]] = {}
        self.bar = None
        if progress_enabled(progress):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)

    def __enter__(self) -> TrainSteps:
        self.module.train()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        self.module.eval()

    def step(self, objective: Any, /, **values: float) -> None:
        import torch

        objective.backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad()
        for name, value in values.items():
            self.curves.setdefault(name, []).append(value)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{np.mean(self.curves[k][-20:]):.3f}" for k in self.shown})


def write_training_record(
    out: Path, held_ids: Sequence[str], train_ids: Sequence[str], info: dict[str, Any], curves: Sequence[str]
) -> dict[str, Any]:
    """Every recipe's record beside its model: ``heldout_queries.txt``, ``train_queries.txt`` and
    ``training.json`` (``info``); returns ``info`` without its ``curves`` (per-step lists) for the manifest."""
    (out / "heldout_queries.txt").write_text("".join(f"{q}\n" for q in held_ids), "utf-8")
    (out / "train_queries.txt").write_text("".join(f"{q}\n" for q in train_ids), "utf-8")
    (out / "training.json").write_text(json.dumps(info, indent=1), "utf-8")
    return {k: v for k, v in info.items() if k not in curves}


def read_heldout_ids(artifact: str | Path, recipe: str) -> list[str]:
    """The query ids a model trained by ``ragopt train <recipe>`` never saw (its ``heldout_queries.txt``)."""
    path = Path(artifact) / "heldout_queries.txt"
    if not path.is_file():
        raise DataError(f"{path}: missing; {artifact} is not a `ragopt train {recipe}` artifact")
    return [line for line in path.read_text("utf-8").splitlines() if line]


def mine_groups(
    dataset: Any,
    query_ids: Sequence[str],
    split: str = "test",
    pipeline: Any = "bm25",
    negatives_per_query: int = 4,
    negatives_depth: int = 30,
    seed: int = 0,
    with_title: bool = True,
    store: Any = None,
    progress: bool | None = None,
) -> tuple[list[tuple[str, str, list[str]]], dict]:
    """Training groups ``(query, positive passage, [negative passages])``: one per judged-relevant document of
    each query, with negatives drawn (seeded, without replacement) from the pipeline's top
    ``negatives_depth`` candidates that are not judged relevant. Returns the groups and counts."""
    ds = as_dataset(dataset)
    qrels = ds.qrels(split)
    all_q = ds.queries_for(split)
    pos = {q: i for i, q in enumerate(all_q.ids)}
    missing = [q for q in query_ids if q not in pos]
    if missing:
        raise DataError(f"{len(missing)} training query ids are not judged in {ds.name} [{split}] (e.g. {missing[:3]})")
    queries = Queries(list(query_ids), [all_q.texts[pos[q]] for q in query_ids])
    pipe = as_pipeline(pipeline)
    pipe.fit(ds.corpus, store, progress=progress)
    batch = run_batched(pipe, Batch(queries), batch_size=1000, progress=progress)
    batch = batch.cut(negatives_depth)
    corpus, doc_ids = ds.corpus, batch.corpus.doc_ids
    rng = np.random.default_rng([seed, 7])
    groups: list[tuple[str, str, list[str]]] = []
    n_neg = n_skipped = 0
    for r, (qid, text) in enumerate(zip(queries.ids, queries.texts)):
        rel = {d for d, g in qrels[qid].items() if g > 0 and d in corpus}
        if not rel:
            n_skipped += 1
            continue
        seen: set[str] = set()
        cands = []
        for i in batch.doc_idx[r]:
            if i < 0 or doc_ids[i] in rel or doc_ids[i] in seen:
                continue
            seen.add(doc_ids[i])
            cands.append(int(i))
        take = sorted(rng.choice(len(cands), size=min(negatives_per_query, len(cands)), replace=False).tolist())
        negatives = [batch.corpus.text(cands[j], with_title) for j in take]
        for d in sorted(rel):
            groups.append((text, corpus.text(corpus.index_of(d), with_title), negatives))
            n_neg += len(negatives)
    return groups, {
        "n_queries": len(queries) - n_skipped,
        "n_skipped_queries": n_skipped,
        "n_positives": len(groups),
        "n_negatives": n_neg,
        "n_pairs": len(groups) + n_neg,
    }


def mine_or_fail(
    ts: TrainingSplit,
    split: str,
    pipeline: Any,
    negatives_per_query: int,
    negatives_depth: int,
    seed: int,
    with_title: bool,
    store: Any,
    progress: bool | None,
    need_negatives: bool = False,
) -> tuple[list[tuple[str, str, list[str]]], dict]:
    """:func:`mine_groups` over the split's training queries; a clear error when no group can be trained on
    (no training query has a judged-relevant document, or with ``need_negatives`` none has a negative)."""
    groups, counts = mine_groups(
        ts.dataset,
        ts.train_ids,
        split,
        pipeline,
        negatives_per_query,
        negatives_depth,
        seed,
        with_title,
        store,
        progress,
    )
    if need_negatives:
        groups = [g for g in groups if g[2]]
    if not groups:
        what = "prompts" if need_negatives else "pairs"
        raise DataError(
            f"no training {what}: none of the {len(ts.train_ids)} training queries of {ts.dataset.name} [{split}] "
            "has a judged-relevant document" + (" and a mined negative" if need_negatives else "")
        )
    return groups, counts


def check_recipe_args(
    train_fraction: float,
    max_queries: int | None,
    at_least: Mapping[str, tuple[float, float]] = (),
    positive: Mapping[str, float] = (),
    seed: int = 0,
    negatives: tuple[str, int, int, int] | None = None,
) -> None:
    """The checks every recipe makes before any work: ``train_fraction`` in (0, 1), ``max_queries`` >= 1 when set,
    each ``at_least[name] = (value, low)`` finite and >= low, each ``positive[name]`` a finite number > 0 (an infinite
    learning rate made the artifact's spec unhashable: a traceback), ``seed`` in 0..2**32 - 1 (what numpy's and
    torch's generators take: -1 was a traceback); ``negatives = (option, its value, negatives it asks for,
    negatives_depth)``: the depth must hold that many candidates (with fewer, every training group was short and
    the run went on: 218 negatives for 973 queries where n_docs 5 asked for 4 each); the error names the
    parameter."""
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError("train_fraction", f"must be in (0, 1), got {train_fraction}")
    if max_queries is not None and max_queries < 1:
        raise ConfigError("max_queries", f"must be >= 1, got {max_queries}")
    for name, (value, low) in dict(at_least).items():
        if not math.isfinite(value):  # NaN passed `< low`, then made the artifact's spec unhashable (a traceback)
            raise ConfigError(name, f"must be a finite number >= {low}, got {value}")
        if value < low:
            raise ConfigError(name, f"must be >= {low}, got {value}")
    for name, value in dict(positive).items():
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(name, f"must be a finite number > 0, got {value}")
    if negatives is not None:
        option, value, wanted, depth = negatives
        if depth < wanted:
            raise ConfigError(
                "negatives_depth",
                f"{depth} candidates cannot give the {wanted} negatives per query that {option} {value} asks for: "
                f"raise negatives_depth to at least {wanted} or lower {option}",
            )
    check_seed(seed)


def load_base(
    factory: Callable[..., Any],
    base_model: str,
    identity: str,
    local: Path | None,
    device: str,
    seed: int,
    **kwargs: Any,
) -> tuple[Any, str]:
    """Seed torch and transformers, resolve ``device``, and load the base model with ``factory(source, device=...,
    **kwargs)`` (a SentenceTransformer or CrossEncoder class; ``identity``/``local`` from ``resolve_model``).
    A model that cannot be loaded gets the error that names ``base_model``. Returns the model and the device."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    torch.manual_seed(seed)
    dev = resolve_device(device)
    source = str(local) if local is not None else identity
    try:
        return factory(source, device=dev, **kwargs), dev
    except Exception as e:
        raise load_error(base_model, e, path="base_model") from e


def run_info(
    ts: TrainingSplit,
    base_model: str,
    counts: Mapping[str, Any],
    times: tuple[float, float, float],
    **fields: Any,
) -> dict[str, Any]:
    """The ``training.json`` record every recipe writes: dataset, base model, recipe ``fields``, mining counts,
    mining and training seconds (``times`` = start, end of mining, end of training), query counts."""
    t0, t_mine, t_train = times
    return {
        "dataset": ts.dataset.name,
        "base_model": base_model,
        **counts,
        "mine_seconds": round(t_mine - t0, 2),
        "train_seconds": round(t_train - t_mine, 2),
        "n_train_queries": len(ts.train_ids),
        "n_heldout_queries": len(ts.held_ids),
        **fields,
    }
