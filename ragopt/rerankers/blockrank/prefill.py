"""BlockRank's forward passes over one prompt: the three prefills (``masked``, ``blocked``, ``flex``; the same numbers,
tested), greedy decoding after a prefill, and the training forward that also returns the attention scores. Each
takes the model, the prompt's blocks and their attention pattern (:class:`Pattern`); the stage
(:mod:`.stage`) decides which runs and what the scores are. The attention function, hooks and key/value caches
they run the model through are in :mod:`.attention`; the pattern and positions, in numpy, in
:mod:`ragopt.kernels.blockrank`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragopt.errors import StageError, first_line
from ragopt.kernels.blockrank import allowed_mask, block_starts, position_ids
from ragopt.rerankers.blockrank.attention import (
    FLEX_PAD,
    KV_CACHE,
    Capture,
    cache_kv,
    cache_kw,
    causal_rows,
    flex_block_mask,
    hooked,
    new_cache,
)
from ragopt.types import Stats


@dataclass
class BlockPrompt:
    """Token ids of one query's blocks: instruction, documents, query."""

    blocks: list[list[int]]

    @property
    def lengths(self) -> list[int]:
        return [len(b) for b in self.blocks]

    @property
    def ids(self) -> list[int]:
        return [t for b in self.blocks for t in b]


@dataclass(frozen=True)
class Pattern:
    """How a prompt's blocks attend and are positioned (the stage's ``sparse`` and ``query_position``)."""

    sparse: bool
    query_position: str = "after_longest"

    def positions(self, lengths: Sequence[int]) -> np.ndarray:
        return position_ids(lengths, self.sparse, self.query_position)


def n_layers(model: Any) -> int:
    """The decoder layers of ``model`` (its config's ``num_hidden_layers``)."""
    return int(model.config.num_hidden_layers)


def flex(model: Any, prompt: BlockPrompt, pattern: Pattern, cap: Capture, upto: int) -> None:
    """One forward pass through FlexAttention (attention mode), the prompt padded to a multiple of FLEX_PAD."""
    import torch

    lengths = prompt.lengths
    t = sum(lengths)
    pad = -t % FLEX_PAD
    dev = model.device
    pos = pattern.positions(lengths)
    pos = np.concatenate([pos, np.full(pad, pos[-1], dtype=pos.dtype)])
    ids = torch.tensor([prompt.ids + [0] * pad], dtype=torch.long, device=dev)
    cap.block_mask = flex_block_mask(lengths, pad, pattern.sparse, dev)
    cap.pad = pad
    cap.allowed_rows = causal_rows(cap.rows, t)  # query rows see every token before them, sparse or not
    kw = {"input_ids": ids, "position_ids": torch.as_tensor(pos, device=dev)[None], "attention_mask": None}
    try:
        with torch.inference_mode(), hooked(model, cap, upto):
            model(**kw, use_cache=False, logits_to_keep=1)
    except Exception as e:  # torch.compile's failures (no C++ compiler, a backend bug) come from these modules
        if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise
        raise StageError(
            f"blockrank: prefill flex could not compile FlexAttention on {dev} ({first_line(e)}); "
            "use prefill: blocked (same scores, linear cost)"
        ) from None


def masked(model: Any, prompt: BlockPrompt, pattern: Pattern, cap: Capture | None, upto: int | None) -> Any:
    """One forward pass over the whole prompt (the 4D mask with sparse on; plain causal attention off). With
    ``upto`` None (decoding), every layer runs and ``(output, cache)`` is returned."""
    import torch

    lengths = prompt.lengths
    ids = torch.tensor([prompt.ids], dtype=torch.long, device=model.device)
    pos = torch.as_tensor(pattern.positions(lengths), device=model.device)[None]
    mask = None
    if pattern.sparse:
        mask = torch.as_tensor(allowed_mask(lengths, True), device=model.device)[None, None]
    elif cap is not None:
        cap.allowed_rows = causal_rows(cap.rows, sum(lengths))
    kw = {"input_ids": ids, "position_ids": pos, "attention_mask": mask, "logits_to_keep": 1}
    cache = new_cache() if upto is None else None
    if cache is not None:
        kw[cache_kw(model)] = cache
    with torch.inference_mode(), hooked(model, cap, upto):
        out = model(**kw, use_cache=cache is not None)
    return (out, cache) if upto is None else None


@dataclass(frozen=True)
class KVReuse:
    """What the blocked prefill needs to reuse blocks' keys and values: the model's identity (the cache key), the
    memory the document blocks may take (0: not kept) and how many document blocks run per forward pass."""

    ident: str
    kv_cache_mb: int
    doc_batch_size: int


def blocked(
    model: Any,
    prompt: BlockPrompt,
    pattern: Pattern,
    reuse: KVReuse,
    cap: Capture | None,
    upto: int | None,
    stats: Stats | None,
) -> Any:
    """Instruction, then the documents over its KV cache (batched), then the query over every block's KV (sparse
    patterns only). With ``upto`` None (decoding), every layer runs and ``(output, cache)`` is returned."""
    import torch

    last = upto if upto is not None else n_layers(model) - 1
    instr, docs, query = prompt.blocks[0], prompt.blocks[1:-1], prompt.blocks[-1]
    ikv = _instruction_kv(model, instr, reuse, last)
    doc_kv = _document_kv(model, instr, docs, ikv, reuse, last, stats)
    cache = new_cache()  # every block's keys/values, one copy per layer (the per-document pieces go)
    for i in range(last + 1):
        cache.update(
            torch.cat([ikv[i][0]] + [kv[i][0] for kv in doc_kv], dim=2),
            torch.cat([ikv[i][1]] + [kv[i][1] for kv in doc_kv], dim=2),
            i,
        )
    t_prefix = int(cache.layers[0].keys.shape[2])
    del doc_kv, ikv
    lq = len(query)
    dev = model.device
    pos = pattern.positions(prompt.lengths)[-lq:]
    mask = torch.ones((1, 1, lq, t_prefix + lq), dtype=torch.bool)
    mask[..., t_prefix:] = torch.ones((lq, lq), dtype=torch.bool).tril()
    with torch.inference_mode(), hooked(model, cap, upto):
        out = model(
            input_ids=torch.tensor([query], device=dev),
            position_ids=torch.as_tensor(pos, device=dev)[None],
            attention_mask=mask.to(dev),
            use_cache=True,
            logits_to_keep=1,
            **{cache_kw(model): cache},
        )
    return (out, cache) if upto is None else None


def _instruction_kv(model: Any, instr: list[int], reuse: KVReuse, last: int) -> list[tuple[Any, Any]]:
    """The instruction block's keys and values at layers ``0..last`` (kept in the process-wide cache)."""
    import torch

    key = (reuse.ident, "instr", tuple(instr))
    ikv = KV_CACHE.get(key, last)
    if ikv is not None:
        return ikv
    dev = model.device
    cache = new_cache()
    with torch.inference_mode(), hooked(model, None, last):
        model(
            input_ids=torch.tensor([instr], device=dev),
            position_ids=torch.arange(len(instr), device=dev)[None],
            attention_mask=None,
            use_cache=True,
            logits_to_keep=1,
            **{cache_kw(model): cache},
        )
    ikv = cache_kv(cache, last)
    KV_CACHE.put(key, ikv, reuse.kv_cache_mb << 20)
    return ikv


def _document_kv(
    model: Any,
    instr: list[int],
    docs: Sequence[list[int]],
    ikv: list[tuple[Any, Any]],
    reuse: KVReuse,
    last: int,
    stats: Stats | None,
) -> list[list[tuple[Any, Any]]]:
    """Each document block's keys and values over the instruction's, at layers ``0..last``: from the cache, the rest
    computed ``doc_batch_size`` blocks per pass (right-padded; every row sees the instruction and its own block)."""
    import torch

    dev = model.device
    l0 = len(instr)
    doc_kv: list[list[tuple[Any, Any]] | None] = []
    todo = []
    for j, d in enumerate(docs):
        kv = KV_CACHE.get((reuse.ident, tuple(instr), tuple(d)), last) if reuse.kv_cache_mb else None
        doc_kv.append(kv)
        if kv is None:
            todo.append(j)
    if stats is not None:
        stats.add("blockrank_docs_encoded", len(todo))
        stats.add("blockrank_kv_hits", len(docs) - len(todo))
    for s in range(0, len(todo), reuse.doc_batch_size):
        group = todo[s : s + reuse.doc_batch_size]
        width = max(len(docs[j]) for j in group)
        b = len(group)
        ids = torch.zeros((b, width), dtype=torch.long)
        allowed = torch.zeros((b, 1, width, l0 + width), dtype=torch.bool)
        allowed[..., :l0] = True  # every row (padding included) sees the instruction: no empty softmax
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        for r, j in enumerate(group):
            n = len(docs[j])
            ids[r, :n] = torch.tensor(docs[j])
            allowed[r, 0, :, l0 : l0 + n] = causal[:, :n]
        cache = new_cache(
            [(k.expand(b, -1, -1, -1).contiguous(), v.expand(b, -1, -1, -1).contiguous()) for k, v in ikv]
        )
        with torch.inference_mode(), hooked(model, None, last):
            model(
                input_ids=ids.to(dev),
                position_ids=(l0 + torch.arange(width, device=dev))[None].expand(b, -1),
                attention_mask=allowed.to(dev),
                use_cache=True,
                logits_to_keep=1,
                **{cache_kw(model): cache},
            )
        for r, j in enumerate(group):
            n = len(docs[j])
            kv = [
                (k[r : r + 1, :, l0 : l0 + n].clone(), v[r : r + 1, :, l0 : l0 + n].clone())
                for k, v in cache_kv(cache, last)
            ]
            doc_kv[j] = kv
            if reuse.kv_cache_mb:
                KV_CACHE.put((reuse.ident, tuple(instr), tuple(docs[j])), kv, reuse.kv_cache_mb << 20)
    return doc_kv  # type: ignore[return-value]  # every entry is filled above


def greedy(
    model: Any, tok: Any, prompt: BlockPrompt, pattern: Pattern, out: Any, cache: Any, max_tokens: int
) -> list[int]:
    """Greedy continuation of a prefill (``out``, ``cache``: what :func:`masked` or :func:`blocked` returned with
    ``upto`` None): at most ``max_tokens`` token ids, stopping at the end-of-sequence token."""
    import torch

    dev = model.device
    pos = int(pattern.positions(prompt.lengths)[-1])
    total = sum(prompt.lengths)
    ck = cache_kw(model)
    new: list[int] = []
    logits = out.logits[0, -1]
    eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    with torch.inference_mode():
        for step in range(max_tokens):
            t = int(torch.argmax(logits))
            if t in eos:
                break
            new.append(t)
            if step + 1 == max_tokens:
                break
            pos += 1
            mask = torch.ones((1, 1, 1, total + len(new)), dtype=torch.bool, device=dev)
            with hooked(model, None, None):
                out = model(
                    input_ids=torch.tensor([[t]], device=dev),
                    position_ids=torch.tensor([[pos]], device=dev),
                    attention_mask=mask,
                    use_cache=True,
                    logits_to_keep=1,
                    **{ck: cache},
                )
            logits = out.logits[0, -1]
    return new


def with_answer(
    model: Any,
    prompt: BlockPrompt,
    pattern: Pattern,
    answer: Sequence[int],
    layer: int,
    query_tokens: int,
    heads: Sequence[int] | None,
) -> tuple[Any, Any]:
    """Training forward (gradients on): the prompt followed by ``answer`` tokens (part of the query block) in one
    masked pass over all layers. Returns the logits that predict each answer token ``(len(answer), V)`` and the
    per-document scores ``(n,)`` of the query block's rows (before the answer) at ``layer``: attention renormalised
    over document tokens, summed over a block, averaged over rows (the last ``query_tokens``; 0: all) and ``heads``
    (None: all; the paper's signal for its auxiliary InfoNCE loss)."""
    import torch

    lengths = prompt.lengths
    lq, la = lengths[-1], len(answer)
    full = [*lengths[:-1], lq + la]
    ids = torch.tensor([prompt.ids + list(answer)], device=model.device)
    pos = torch.as_tensor(pattern.positions(full), device=model.device)[None]
    mask = torch.as_tensor(allowed_mask(full, pattern.sparse), device=model.device)[None, None]
    cap = Capture(frozenset([layer]), lq + la)
    with hooked(model, cap, None):
        out = model(input_ids=ids, position_ids=pos, attention_mask=mask, logits_to_keep=la + 1, use_cache=False)
    logits = out.logits[0, :la]
    probs = cap.out[layer][:, :lq]  # (H, lq, t): the query block's rows, before the answer
    if query_tokens:
        probs = probs[:, -query_tokens:]
    if heads:
        probs = probs[list(heads)]
    starts = block_starts(lengths)
    lo, hi = int(starts[1]), int(starts[-2])
    docs = probs[..., lo:hi]
    docs = docs / docs.sum(-1, keepdim=True).clamp_min(1e-30)
    seg = torch.as_tensor(np.repeat(np.arange(len(lengths) - 2), lengths[1:-1]), device=docs.device)
    per_doc = torch.zeros((*docs.shape[:2], len(lengths) - 2), dtype=docs.dtype, device=docs.device)
    per_doc = per_doc.index_add(2, seg, docs)
    return logits, per_doc.mean(dim=(0, 1))
