"""Fine-tune a causal LM for the ``blockrank`` reranker: language-model loss on the relevant document's id plus an
auxiliary InfoNCE loss on query-to-block attention (Gupta et al., "Scalable In-context Ranking with Generative
Models", 2025).

:func:`train_blockrank` splits the judged queries of a split into training and held-out queries (seeded,
:func:`ragopt.data.splits.split_queries`), mines hard negatives for each training query from a pipeline's top
``negatives_depth`` candidates (:func:`ragopt.training.common.mine_groups`: judged-relevant documents
excluded, drawn seeded), and trains for ``steps`` steps, one prompt a step: the relevant document and
``n_docs - 1`` negatives in a seeded random order, laid out in blocks exactly as the stage lays them out
(block-sparse mask, position ids), followed by the answer ``<id>]``. The loss is

    L = CE(answer tokens) + aux_weight * InfoNCE(scores / temperature, relevant block)

with ``scores`` the query block's attention at ``layer`` renormalised over document tokens and summed per block
(:meth:`BlockRankReranker.forward_with_answer`). AdamW, linear warm-up and decay, gradient clipping at 1.0; full
fine-tuning, or LoRA adapters (``lora=True``, needs ``peft``; merged into the weights when saved).

The result is a ``blockrank-llm`` artifact keyed by everything that shapes it: ``model/`` (weights and tokenizer
that ``TransformersLLM(model=<artifact>/model)`` loads, with ``blockrank.json``: the block layout the stage
checks, the layer trained), ``heldout_queries.txt``, ``train_queries.txt``, ``training.json`` (loss curves, time).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragopt._imports import require
from ragopt.llm.transformers_backend import TransformersLLM
from ragopt.rerankers.blockrank import LAYOUT_FILE, BlockRankReranker
from ragopt.store import ArtifactStore
from ragopt.training.common import (
    TrainSteps,
    as_pipeline,
    check_recipe_args,
    mine_or_fail,
    read_heldout_ids,
    run_info,
    training_split,
    write_training_record,
)

__all__ = ["train_blockrank", "heldout_query_ids", "FORMAT_VERSION", "KIND"]

FORMAT_VERSION = 1
KIND = "blockrank-llm"


def heldout_query_ids(artifact: str | Path) -> list[str]:
    """The query ids a trained blockrank model never saw (its ``heldout_queries.txt``)."""
    return read_heldout_ids(artifact, "blockrank")


def train_blockrank(
    base_model: str = "smollm2-135m-instruct",
    dataset: Any = "nq-open-oracle-dev",
    split: str = "test",
    train_fraction: float = 0.6,
    seed: int = 0,
    negatives_pipeline: Any = "bm25",
    n_docs: int = 5,
    negatives_depth: int = 30,
    steps: int = 100,
    lr: float = 2e-5,
    warmup_ratio: float = 0.1,
    aux_weight: float = 0.1,
    temperature: float = 0.05,
    layer: int | None = None,
    max_doc_tokens: int = 32,
    max_queries: int | None = None,
    lora: bool = False,
    store: Any = None,
    progress: bool | None = None,
    rebuild: bool = False,
    **stage_params: Any,
):
    """Fine-tune ``base_model`` (a packaged alias, a model folder or a hub id of a supported family) for the
    blockrank stage; return the ``blockrank-llm`` Artifact (reused when one with the same spec exists).
    ``stage_params`` set the block layout (``sparse``, ``query_position``, ``chat``, ``query_tokens``, ...):
    the stage that loads the model must use the same layout (checked)."""
    check_recipe_args(
        train_fraction,
        max_queries,
        at_least={
            "steps": (steps, 1),
            "n_docs": (n_docs, 2),
            "negatives_depth": (negatives_depth, 1),
            "aux_weight": (aux_weight, 0),
        },
        positive={"lr": lr, "temperature": temperature},
        seed=seed,
        negatives=("n_docs", n_docs, n_docs - 1, negatives_depth),
    )
    if lora:
        require("peft", "llm", "LoRA fine-tuning (lora=True)")
    store = store if store is not None else ArtifactStore()
    llm = TransformersLLM(model=base_model, device="cpu").use_store(store)
    stage = BlockRankReranker(llm=llm, layer=layer, max_doc_tokens=max_doc_tokens, **stage_params)
    stage.validate()
    ts = training_split(dataset, split, train_fraction, seed, max_queries)
    neg_pipe = as_pipeline(negatives_pipeline)
    spec = {
        "base_model": llm.fingerprint(),
        **ts.spec(split, train_fraction, max_queries, seed),
        "negatives": {"pipeline": neg_pipe.to_config(), "n_docs": n_docs, "depth": negatives_depth},
        "stage": {k: v for k, v in stage.to_config().items() if k not in ("llm", "type")},
        "train": {
            "steps": steps,
            "lr": lr,
            "warmup_ratio": warmup_ratio,
            "aux_weight": aux_weight,
            "temperature": temperature,
            "lora": lora,
        },
    }

    def build(out: Path) -> dict[str, Any]:
        import torch
        from transformers import set_seed

        t0 = time.perf_counter()
        groups, counts = mine_or_fail(
            ts,
            split,
            neg_pipe,
            n_docs - 1,
            negatives_depth,
            seed,
            stage.with_title,
            store,
            progress,
            need_negatives=True,
        )
        t_mine = time.perf_counter()
        base, tok = stage.model()
        set_seed(seed)
        torch.manual_seed(seed)
        model = copy.deepcopy(base)  # the loaded model is shared within the process: train a copy
        if lora:
            peft = require("peft", "llm", "LoRA fine-tuning (lora=True)")
            cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
            model = peft.get_peft_model(model, cfg)
        n_layer = stage.chosen_layer(base)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        rng = np.random.default_rng([seed, 17])
        order = rng.permutation(len(groups))
        with TrainSteps(model, opt, steps, warmup_ratio, "train blockrank", progress, shown=("lm", "aux")) as loop:
            for step in range(steps):
                q, positive, negatives = groups[order[step % len(groups)]]
                texts = [positive, *negatives[: n_docs - 1]]
                perm = rng.permutation(len(texts))
                gold = int(np.where(perm == 0)[0][0])
                prompt = stage.build_prompt(tok, q, stage.doc_token_ids(tok, [texts[i] for i in perm]))
                answer = list(tok(f"{gold + 1}]", add_special_tokens=False)["input_ids"])
                logits, scores = stage.forward_with_answer(model, prompt, answer, n_layer)
                lm = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(answer, device=logits.device))
                target = torch.tensor([gold], device=scores.device)
                aux = torch.nn.functional.cross_entropy((scores / temperature)[None], target)
                hit = float(int(torch.argmax(scores.detach())) == gold)
                loop.step(lm + aux_weight * aux, lm=float(lm.detach()), aux=float(aux.detach()), hit=hit)
        lm_losses, aux_losses, hits = (loop.curves.get(k, []) for k in ("lm", "aux", "hit"))
        if lora:
            model = model.merge_and_unload()
        t_train = time.perf_counter()
        model.save_pretrained(out / "model")
        tok.save_pretrained(out / "model")
        layout = {
            "layout": stage.layout(),
            "layer": n_layer,
            "base_model": base_model,
            "template": stage.template_version,
        }
        (out / "model" / LAYOUT_FILE).write_text(json.dumps(layout, indent=1), "utf-8")
        info = run_info(
            ts,
            base_model,
            counts,
            (t0, t_mine, t_train),
            layer=n_layer,
            steps=steps,
            train_attention_p1_first_20=round(float(np.mean(hits[:20])), 3),
            train_attention_p1_last_20=round(float(np.mean(hits[-20:])), 3),
            # 1 where the layer's attention ranked the gold block first, measured before that step's update on a
            # query the model had not trained on yet (while steps <= training queries): a progressive validation
            train_attention_hit=[int(h) for h in hits],
            lm_loss=[round(x, 4) for x in lm_losses],
            aux_loss=[round(x, 4) for x in aux_losses],
        )
        return write_training_record(
            out, ts.held_ids, ts.train_ids, info, ("lm_loss", "aux_loss", "train_attention_hit")
        )

    return store.get_or_create(KIND, spec, FORMAT_VERSION, build, rebuild=rebuild)
