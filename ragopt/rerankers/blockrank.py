"""BlockRank: in-context ranking read from query-to-document attention, with block-sparse attention (Gupta et al.,
"Scalable In-context Ranking with Generative Models", 2025).

One prompt per query holds an instruction block, one block per candidate (``[i] title text``, cut to
``max_doc_tokens``) and a query block (the question, the end of the chat turn and the assistant's ``[``). With
``sparse`` on, a document block attends to the instruction and causally to itself only, the query block to
everything; documents get position ids that start right after the instruction whatever the other documents are
(:mod:`ragopt.kernels.blockrank` has the pattern, the positions and the scoring, in numpy). So a document block's
keys and values depend on the instruction and itself only: they are computed once per (model, instruction,
block) and kept in a process-wide memory cache of ``kv_cache_mb`` (reused across queries, depths and trials).

Relevance (``mode: attention``) is the attention of the query block's last ``query_tokens`` tokens (default 1: the
``[`` the answer id would follow; 0: all of them) to each document block at ``layer``, from ``heads`` (all by default), renormalised over document tokens and
aggregated over a block by ``aggregation`` (sum: the paper's). No decoding, and no layer after ``layer`` runs.
``mode: decode`` generates the id of the best document after the same prefill (for comparison): that document goes
first, the others keep their order.

Three prefills give the same numbers (tested): ``masked`` runs the whole prompt in one forward pass with a 4D mask
(its cost is that of full attention: SDPA over a dense mask skips no work), ``blocked`` runs the instruction once,
then the document blocks in batches over the instruction's key/value cache, then the query over all blocks'
keys and values: cost linear in the number of documents. ``flex`` is one pass like ``masked`` through torch's
FlexAttention with a block mask of the pattern (built from block ids tile by tile, never as a T x T mask): tiles
of query-key pairs (``FLEX_TILE``: 32 x 32 on the CPU) that the pattern leaves out are skipped, so its attention
cost grows with the allowed pairs, not with the square of the prompt; it is compiled
(``torch.compile``; on the CPU with a C++ compiler, for static shapes, so a prompt is padded to a multiple of
``FLEX_PAD`` tokens that nothing real attends to) and gives the same numbers within float rounding (tested).
``sparse: false`` is plain causal attention over the same tokens (the full-attention baseline).

The chosen layer's attention is computed from the query and key states the model hands its attention function
(post-RoPE, exactly as eager attention computes it), through a transformers attention function registered as
``ragopt_blockrank`` that wraps SDPA (or eager): no ``output_attentions``, no attention matrices of other layers.
Supported families: Llama (SmolLM2, Llama 2/3), Mistral, Qwen2 (Qwen2.5, Qwen2.5-Coder).

Bad input fails before any scoring: another model family, a layer or head out of range, a prompt whose positions
exceed the model's context (the message says how many candidates fit), a checkpoint trained with another block
layout (``blockrank.json`` next to the weights, written by ``ragopt train blockrank``).

Counters: ``blockrank_queries``, ``blockrank_reranked``, ``blockrank_prompt_tokens``, ``blockrank_attention_pairs``
(query-key pairs the pattern allows: the attention cost), ``blockrank_docs_encoded`` and ``blockrank_kv_hits``
(blocked prefill), ``blockrank_unparseable`` (decode mode); seconds under ``blockrank``.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt._imports import optional, require
from ragopt.config import param
from ragopt.errors import ConfigError, StageError
from ragopt.kernels.blockrank import (
    allowed_mask,
    block_ids,
    block_scores,
    candidates_that_fit,
    max_position,
    ndcg_at_k,
    position_ids,
    precision_at_1,
    tile_pattern,
)
from ragopt.kernels.topk import splice_head
from ragopt.llm.stage import LLMStage
from ragopt.llm.transformers_backend import TransformersLLM
from ragopt.registry import register
from ragopt.types import Batch, Corpus, Stats

__all__ = [
    "BlockRankReranker",
    "SUPPORTED_FAMILIES",
    "LAYOUT_FILE",
    "LayerCalibration",
    "calibrate_layers",
    "attention_pairs",
]

#: config.model_type -> what it covers
SUPPORTED_FAMILIES = {"llama": "Llama, SmolLM2", "mistral": "Mistral", "qwen2": "Qwen2, Qwen2.5, Qwen2.5-Coder"}
LAYOUT_FILE = "blockrank.json"
TEMPLATE_VERSION = 1
_ATTN = "ragopt_blockrank"
_SEP = "\x00BLOCK\x00"
INSTRUCTION = (
    "You will be given a list of passages, each marked with an ID in square brackets, and then a question. "
    "Find the passage that best answers the question."
)
QUESTION = "Question: {query}\nWhich passage best answers the question? Answer with its ID."
_COUNTERS = (
    "blockrank_queries",
    "blockrank_reranked",
    "blockrank_prompt_tokens",
    "blockrank_attention_pairs",
    "blockrank_docs_encoded",
    "blockrank_kv_hits",
    "blockrank_unparseable",
)


def attention_pairs(lengths: Sequence[int], sparse: bool) -> int:
    """Query-key pairs the attention pattern allows (the number of True in ``allowed_mask``), by formula."""
    lengths = [int(n) for n in lengths]
    t = sum(lengths)
    if not sparse:
        return t * (t + 1) // 2
    l0, docs, lq = lengths[0], lengths[1:-1], lengths[-1]
    return l0 * (l0 + 1) // 2 + sum(n * l0 + n * (n + 1) // 2 for n in docs) + lq * (t - lq) + lq * (lq + 1) // 2


# -- the attention function: SDPA / eager plus a capture of chosen layers' attention ------------------------------
class _Stop(Exception):
    """Raised after the last layer needed: the rest of the forward pass is skipped."""


@dataclass
class _Capture:
    layers: frozenset[int]
    rows: int  # the last `rows` query positions of the pass
    base: str = "sdpa"
    allowed_rows: Any = None  # bool (rows, keys) mask of the captured rows when the pass runs without a mask
    block_mask: Any = None  # a FlexAttention BlockMask: every layer's attention runs through flex_attention
    pad: int = 0  # padding tokens at the end of the pass (flex), left out of the captured rows and keys
    out: dict[int, Any] = field(default_factory=dict)


_LOCAL = threading.local()
_MODEL_LOCK = threading.RLock()
_REGISTERED = False
#: the flex prefill pads a prompt to a multiple of this many tokens: the compiled kernel is specialised to a length
FLEX_PAD = 256
#: FlexAttention's tile (query and key tokens) by device type: on the CPU 32 skips more of the pattern's empty
#: area than the default 128 and ran 1.9x faster a layer (SmolLM2, 100 documents of 36 tokens, benchmarks/
#: BLOCKRANK.md); elsewhere the kernel's default, which its GPU code is written for
FLEX_TILE = {"cpu": 32}
_FLEX: dict[str, Any] = {}


def _flex_attention() -> Any:
    """torch's ``flex_attention``, compiled once per process (uncompiled it is a dense reference, no faster than
    SDPA). Shapes are static (the CPU's inductor backend fails on dynamic ones here), so each padded length is one
    compilation; the recompile limit is raised to 64 for that."""
    fn = _FLEX.get("fn")
    if fn is None:
        import torch
        import torch._dynamo
        from torch.nn.attention.flex_attention import flex_attention

        cfg = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if isinstance(getattr(cfg, name, None), int):
                setattr(cfg, name, max(getattr(cfg, name), 64))
        fn = _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    return fn


def flex_block_mask(lengths: Sequence[int], pad: int, sparse: bool, device: Any) -> Any:
    """FlexAttention's ``BlockMask`` of the pattern over ``lengths`` + ``pad`` tokens, built from the tile pattern
    (:func:`ragopt.kernels.blockrank.tile_pattern`, ``O(tiles^2)``) instead of by evaluating the mask at every
    token pair as ``create_block_mask`` does (0.66 s a prompt at 200 documents on the CPU); the token mask
    (:func:`flex_mask_mod`) is applied inside the tiles that are neither empty nor wholly allowed. Same mask as
    ``create_block_mask`` gives (tested)."""
    import torch
    from torch.nn.attention.flex_attention import BlockMask

    tile = FLEX_TILE.get(torch.device(device).type, 128)
    some, every = tile_pattern(lengths, pad, sparse, tile)

    def kv_blocks(grid: np.ndarray) -> tuple[Any, Any]:  # per query tile: how many key tiles, which first
        order = np.argsort(~grid, axis=1, kind="stable")
        num = torch.as_tensor(grid.sum(axis=1), dtype=torch.int32, device=device)
        return num[None, None], torch.as_tensor(order, dtype=torch.int32, device=device)[None, None]

    t = int(sum(lengths)) + int(pad)
    block = torch.as_tensor(block_ids(lengths, pad), device=device)
    return BlockMask.from_kv_blocks(
        *kv_blocks(some & ~every),
        *kv_blocks(every),
        BLOCK_SIZE=tile,
        mask_mod=flex_mask_mod(block, len(lengths) - 1, sparse),
        seq_lengths=(t, t),
    )


def flex_mask_mod(block: Any, query_block: int, sparse: bool) -> Callable[..., Any]:
    """FlexAttention's ``mask_mod`` of the pattern over tokens of ``block`` (a tensor of
    :func:`ragopt.kernels.blockrank.block_ids`; the padding block is seen by no real token):
    causal; with ``sparse``, a token also needs the key in its own block, in the instruction (block 0), or to be
    a token of ``query_block`` (the last real block: ``len(lengths) - 1``, whether or not padding follows it).
    Equals :func:`ragopt.kernels.blockrank.allowed_mask` on the real tokens (tested)."""

    def causal(b: Any, h: Any, q: Any, k: Any) -> Any:
        return k <= q

    def blocks(b: Any, h: Any, q: Any, k: Any) -> Any:
        bq, bk = block[q], block[k]
        return (k <= q) & ((bq == bk) | (bk == 0) | (bq == query_block))

    return blocks if sparse else causal


def _causal_rows(rows: int, t: int) -> Any:
    """The causal mask of the last ``rows`` of ``t`` tokens (bool, ``(rows, t)``)."""
    import torch

    return torch.ones((rows, t), dtype=torch.bool).tril(t - rows)


def _attention(module, query, key, value, attention_mask, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    cap: _Capture | None = getattr(_LOCAL, "capture", None)
    base = cap.base if cap is not None else "sdpa"
    mask = attention_mask
    if cap is not None and cap.block_mask is not None:
        scale = kwargs.get("scaling", module.scaling)
        gqa = key.shape[1] != query.shape[1]
        o = _flex_attention()(query, key, value, block_mask=cap.block_mask, scale=scale, enable_gqa=gqa)
        out = (o.transpose(1, 2).contiguous(), None)
    elif base == "eager":
        if mask is None and query.shape[2] > 1:  # eager has no is_causal: spell the causal mask out
            q_len, k_len = query.shape[2], key.shape[2]
            mask = torch.ones((q_len, k_len), dtype=torch.bool, device=query.device).tril(k_len - q_len)[None, None]
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                ~mask, torch.finfo(query.dtype).min
            )
        out = eager_attention_forward(module, query, key, value, mask, **kwargs)
    else:
        out = sdpa_attention_forward(module, query, key, value, mask, **kwargs)
    if cap is not None and getattr(module, "layer_idx", None) in cap.layers:
        end = query.shape[2] - cap.pad
        r = min(cap.rows, end)
        q = query[:, :, end - r : end, :].float()
        k = key[:, :, : key.shape[2] - cap.pad].float()
        if k.shape[1] != q.shape[1]:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        logits = torch.matmul(q, k.transpose(-1, -2)) * kwargs.get("scaling", module.scaling)
        if attention_mask is not None:
            rows = attention_mask[..., -r:, :]
            allowed = rows if rows.dtype == torch.bool else rows > torch.finfo(rows.dtype).min / 2
        elif cap.allowed_rows is not None:
            allowed = cap.allowed_rows[-r:].to(q.device)[None, None]
        else:
            allowed = None
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        cap.out[module.layer_idx] = torch.softmax(logits, dim=-1)[0].cpu()
    return out


def _register_attention() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(_ATTN, _attention)
    _REGISTERED = True


@contextmanager
def _hooked(model: Any, capture: _Capture | None, stop_after: int | None) -> Iterator[None]:
    """Route the model's attention through :func:`_attention` (capturing ``capture``), stop after ``stop_after``."""
    _register_attention()
    layers = _decoder(model).layers
    handle = None
    if stop_after is not None and stop_after + 1 < len(layers):

        def stop(*_a: Any) -> None:
            raise _Stop

        handle = layers[stop_after].register_forward_hook(stop)
    with _MODEL_LOCK:
        old = model.config._attn_implementation
        base = "eager" if old == "eager" else "sdpa"
        if capture is not None:
            capture.base = base
        model.config._attn_implementation = _ATTN
        _LOCAL.capture = capture if capture is not None else _Capture(frozenset(), 0, base)
        try:
            yield
        except _Stop:
            pass
        finally:
            _LOCAL.capture = None
            model.config._attn_implementation = old
            if handle is not None:
                handle.remove()


def _decoder(model: Any) -> Any:
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def _cache_kw(model: Any) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _new_cache(kv: list[tuple[Any, Any]] | None = None) -> Any:
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(kv or []):
        cache.update(k, v, i)
    return cache


def _cache_kv(cache: Any, upto: int) -> list[tuple[Any, Any]]:
    return [(cache.layers[i].keys, cache.layers[i].values) for i in range(upto + 1)]


# -- a process-wide cache of document blocks' keys and values --------------------------------------------------
class _KVCache:
    def __init__(self) -> None:
        self.items: OrderedDict[tuple, list[tuple[Any, Any]]] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    @staticmethod
    def _size(kv: list[tuple[Any, Any]]) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)

    def get(self, key: tuple, upto: int) -> list[tuple[Any, Any]] | None:
        with self.lock:
            kv = self.items.get(key)
            if kv is None or len(kv) <= upto:
                return None
            self.items.move_to_end(key)
            return kv[: upto + 1]

    def put(self, key: tuple, kv: list[tuple[Any, Any]], budget: int) -> None:
        size = self._size(kv)
        if size > budget:
            return
        with self.lock:
            old = self.items.pop(key, None)
            if old is not None:
                self.bytes -= self._size(old)
            self.items[key] = kv
            self.bytes += size
            while self.bytes > budget and self.items:
                _, ev = self.items.popitem(last=False)
                self.bytes -= self._size(ev)


_KV = _KVCache()


@dataclass
class _Prompt:
    """Token ids of one query's blocks: instruction, documents, query."""

    blocks: list[list[int]]

    @property
    def lengths(self) -> list[int]:
        return [len(b) for b in self.blocks]

    @property
    def ids(self) -> list[int]:
        return [t for b in self.blocks for t in b]


@register("blockrank")
class BlockRankReranker(LLMStage):
    """Rerank the top ``depth`` candidates by query-to-block attention in one prompt (see the module docstring)."""

    template_version: ClassVar[int] = TEMPLATE_VERSION

    requires: ClassVar[frozenset[str]] = frozenset({"queries", "candidates"})
    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    cache_ignore: ClassVar[tuple[str, ...]] = ("cache", "doc_batch_size", "kv_cache_mb", "prefill")
    #: what a configuration asks for (replayed when the stage cache serves the output); the KV-cache counters
    #: (documents encoded, reused) are paid work and are not
    work_counters: ClassVar[tuple[str, ...]] = (
        "blockrank_queries",
        "blockrank_reranked",
        "blockrank_prompt_tokens",
        "blockrank_attention_pairs",
        "blockrank_unparseable",
    )

    mode: Literal["attention", "decode"] = param(
        "attention", doc="attention: query-to-block attention at `layer` (no decoding); decode: generate the best id"
    )
    layer: int | None = param(None, doc="decoder layer whose attention scores (0-based); null: the middle one", ge=0)
    heads: list[int] | None = param(None, doc="attention heads averaged (0-based); null: all heads of the layer")
    aggregation: Literal["sum", "mean", "max"] = param(
        "sum", doc="how a block's token attentions make its score (sum: the paper's)"
    )
    normalize: Literal["docs", "all"] = param(
        "docs", doc="docs: renormalise attention over document tokens (the paper's); all: the model's probabilities"
    )
    query_tokens: int = param(
        1, doc="query-block tokens whose attention counts, the last ones (1: the '[' before the id); 0: all", ge=0
    )
    depth: int = param(20, doc="candidates reranked per query (one prompt); the rest keep their order below", ge=1)
    max_doc_tokens: int = param(128, doc="tokens kept of each candidate's text", ge=1)
    sparse: bool = param(True, doc="block-sparse attention (documents see the instruction and themselves only)")
    prefill: Literal["blocked", "masked", "flex"] = param(
        "blocked",
        doc="blocked: documents run over the instruction's KV cache, then the query over all (linear cost); "
        "masked: one pass with a 4D mask (same numbers, full cost); flex: one pass through FlexAttention with a "
        "block mask (masked tiles skipped; compiled, needs torch >= 2.5; decode mode prefills as masked)",
    )
    query_position: Literal["after_longest", "after_all"] = param(
        "after_longest",
        doc="where the query block's positions start with sparse on: after the instruction plus the longest "
        "document (order-free) or plus all documents (as in a sequential prompt)",
    )
    query_in_instruction: bool = param(
        False,
        doc="also state the question in the instruction (the paper's prompt): documents are read knowing it, but "
        "their keys and values can no longer be reused across queries",
    )
    labels: bool = param(True, doc="mark each document with its id [1], [2], ... (needed by decode mode)")
    permutations: int = param(
        1,
        doc="attention mode: score each query's candidates in this many orders (the given one, then cyclic shifts "
        "spread over the list) and average each document's score: the labels' pull ([1] and [n] draw attention "
        "whatever they mark) evens out; costs that many prefills; at most the number of candidates is used",
        ge=1,
    )
    chat: bool = param(True, doc="lay the prompt out in the model's chat template (false: plain text)")
    with_title: bool = param(True, doc="candidate text is title + text (BEIR convention)")
    decode_tokens: int = param(4, doc="decode mode: tokens generated", ge=1)
    doc_batch_size: int = param(16, doc="document blocks per forward pass in the blocked prefill", ge=1)
    kv_cache_mb: int = param(256, doc="memory for document blocks' keys/values reused across queries; 0: off", ge=0)

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        if not isinstance(self.llm, TransformersLLM):
            raise ConfigError(
                f"{at}llm",
                f"blockrank reads attention inside the model: it needs a 'transformers' backend, got "
                f"{self.llm.describe()}",
            )
        if self.mode == "decode" and not self.labels:
            raise ConfigError(f"{at}labels", "decode mode generates a document id: labels must be on")
        if self.mode == "decode" and self.permutations > 1:
            raise ConfigError(f"{at}permutations", "decode mode reads one generated id: permutations must be 1")
        if self.heads is not None and (not self.heads or any(h < 0 for h in self.heads)):
            raise ConfigError(f"{at}heads", f"expected a non-empty list of head indices >= 0, got {self.heads}")

    def layout(self) -> dict[str, Any]:
        """What a checkpoint trained for this stage must agree on (saved as ``blockrank.json`` by training)."""
        return {
            "template_version": TEMPLATE_VERSION,
            "chat": self.chat,
            "labels": self.labels,
            "sparse": self.sparse,
            "query_position": self.query_position if self.sparse else None,
            "query_in_instruction": self.query_in_instruction,
        }

    # -- model ---------------------------------------------------------------------------------------------
    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._checked: bool = False

    def model(self) -> tuple[Any, Any]:
        """``(model, tokenizer)``, checked: family, layer, heads, checkpoint layout."""
        require("torch", "llm", "the blockrank reranker")
        self.validate()
        if self.prefill == "flex" and optional("torch.nn.attention.flex_attention") is None:
            import torch

            raise ConfigError("prefill", f"flex needs FlexAttention (torch >= 2.5), this is torch {torch.__version__}")
        model, tok = self.llm.load()
        if not self._checked:
            self.check_model(model)
            self._checked = True
        return model, tok

    def check_model(self, model: Any) -> None:
        cfg = model.config
        family = getattr(cfg, "model_type", None)
        if family not in SUPPORTED_FAMILIES:
            raise ConfigError(
                "llm",
                f"model family {family!r} ({type(model).__name__}) cannot take the BlockRank block pattern here; "
                f"supported: {', '.join(f'{k} ({v})' for k, v in SUPPORTED_FAMILIES.items())}",
            )
        n = self.n_layers(model)
        if self.layer is not None and not 0 <= self.layer < n:
            raise ConfigError(
                "layer", f"layer {self.layer} is out of range: {self.llm.describe()} has {n} layers (0..{n - 1})"
            )
        h = cfg.num_attention_heads
        bad = [x for x in self.heads or [] if not 0 <= x < h]
        if bad:
            raise ConfigError("heads", f"heads {bad} are out of range: the model has {h} attention heads (0..{h - 1})")
        res = self.llm.resolved()
        if res.local and not res.gguf_file:
            path = Path(res.source) / LAYOUT_FILE
            if path.is_file():
                trained = json.loads(path.read_text("utf-8")).get("layout", {})
                mine = self.layout()
                diff = sorted(k for k in set(trained) | set(mine) if trained.get(k) != mine.get(k))
                if diff:
                    raise ConfigError(
                        "llm",
                        f"checkpoint {res.source} was trained with another block layout ({path.name}): "
                        + ", ".join(f"{k}: trained {trained.get(k)!r}, stage {mine.get(k)!r}" for k in diff),
                    )

    @staticmethod
    def n_layers(model: Any) -> int:
        return int(model.config.num_hidden_layers)

    def chosen_layer(self, model: Any) -> int:
        return self.layer if self.layer is not None else self.n_layers(model) // 2

    def fit(self, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None):
        super().fit(corpus, store, rebuild=rebuild, progress=progress)
        self.model()
        return self

    # -- prompt --------------------------------------------------------------------------------------------
    def _frame(self, tok: Any, query: str) -> tuple[str, str]:
        """The text before the documents (instruction) and after them (query block)."""
        instr = INSTRUCTION + (f"\nQuestion: {query}" if self.query_in_instruction else "") + "\n\nPassages:"
        question = "\n\n" + QUESTION.format(query=query)
        if not self.chat:
            return instr, question + "\nAnswer: ["
        if not getattr(tok, "chat_template", None):
            raise ConfigError("chat", f"{self.llm.describe()} has no chat template: set chat: false")
        text = tok.apply_chat_template(
            [{"role": "user", "content": instr + _SEP + question}], tokenize=False, add_generation_prompt=True
        )
        head, tail = text.split(_SEP)
        return head, tail + "["

    def _doc_ids(self, tok: Any, texts: Sequence[str]) -> list[list[int]]:
        enc = tok([" " + t for t in texts], add_special_tokens=False)["input_ids"] if texts else []
        return [list(ids[: self.max_doc_tokens]) for ids in enc]

    def build_prompt(self, tok: Any, query: str, doc_tokens: Sequence[Sequence[int]]) -> _Prompt:
        """The blocks of one query's prompt over documents given as token ids (``_doc_ids``)."""
        head, tail = self._frame(tok, query)
        instr = list(tok(head, add_special_tokens=not self.chat)["input_ids"])
        blocks = [instr]
        for i, ids in enumerate(doc_tokens):
            label = f"\n[{i + 1}]" if self.labels else "\n"
            blocks.append(list(tok(label, add_special_tokens=False)["input_ids"]) + list(ids))
        blocks.append(list(tok(tail, add_special_tokens=False)["input_ids"]))
        return _Prompt(blocks)

    def check_context(self, model: Any, prompts: Sequence[_Prompt], qids: Sequence[str]) -> None:
        limit = getattr(model.config, "max_position_embeddings", None)
        if not limit:
            return
        for p, qid in zip(prompts, qids):
            top = max_position(p.lengths, self.sparse, self.query_position)
            if top >= limit:
                fit = candidates_that_fit(p.lengths, limit, self.sparse, self.query_position)
                raise StageError(
                    f"blockrank: the prompt of query {qid!r} ({len(p.blocks) - 2} candidates, {sum(p.lengths)} "
                    f"tokens) needs positions up to {top}, beyond the context of {self.llm.describe()} ({limit}); "
                    f"{fit} of its candidates fit (at max_doc_tokens={self.max_doc_tokens}): lower depth or "
                    "max_doc_tokens"
                )

    # -- forward passes ------------------------------------------------------------------------------------
    def attend(self, prompt: _Prompt, layers: Sequence[int], stats: Stats | None = None) -> dict[int, Any]:
        """Attention ``(H, R, K)`` of the query block's last ``R`` rows over all keys at each of ``layers``."""
        model, _ = self.model()
        rows = prompt.lengths[-1] if self.query_tokens == 0 else min(self.query_tokens, prompt.lengths[-1])
        cap = _Capture(frozenset(layers), rows)
        if self.sparse and self.prefill == "blocked":
            self._blocked(model, prompt, cap, max(layers), stats)
        elif self.prefill == "flex":
            self._flex(model, prompt, cap, max(layers))
        else:
            self._masked(model, prompt, cap, max(layers))
        return {layer: cap.out[layer] for layer in layers}

    def _flex(self, model: Any, prompt: _Prompt, cap: _Capture, upto: int) -> None:
        """One forward pass through FlexAttention (attention mode), the prompt padded to a multiple of FLEX_PAD."""
        import torch

        lengths = prompt.lengths
        t = sum(lengths)
        pad = -t % FLEX_PAD
        dev = model.device
        pos = position_ids(lengths, self.sparse, self.query_position)
        pos = np.concatenate([pos, np.full(pad, pos[-1], dtype=pos.dtype)])
        ids = torch.tensor([prompt.ids + [0] * pad], dtype=torch.long, device=dev)
        cap.block_mask = flex_block_mask(lengths, pad, self.sparse, dev)
        cap.pad = pad
        cap.allowed_rows = _causal_rows(cap.rows, t)  # query rows see every token before them, sparse or not
        kw = {"input_ids": ids, "position_ids": torch.as_tensor(pos, device=dev)[None], "attention_mask": None}
        try:
            with torch.inference_mode(), _hooked(model, cap, upto):
                model(**kw, use_cache=False, logits_to_keep=1)
        except Exception as e:  # torch.compile's failures (no C++ compiler, a backend bug) come from these modules
            if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            raise StageError(
                f"blockrank: prefill flex could not compile FlexAttention on {dev} ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0][:300]}); use prefill: blocked (same scores, linear cost)"
            ) from None

    def _masked(self, model: Any, prompt: _Prompt, cap: _Capture | None, upto: int | None) -> Any:
        """One forward pass over the whole prompt (the 4D mask with sparse on; plain causal attention off)."""
        import torch

        lengths = prompt.lengths
        ids = torch.tensor([prompt.ids], dtype=torch.long, device=model.device)
        pos = torch.as_tensor(position_ids(lengths, self.sparse, self.query_position), device=model.device)[None]
        mask = None
        if self.sparse:
            mask = torch.as_tensor(allowed_mask(lengths, True), device=model.device)[None, None]
        elif cap is not None:
            t = sum(lengths)
            cap.allowed_rows = _causal_rows(cap.rows, t)
        kw = {"input_ids": ids, "position_ids": pos, "attention_mask": mask, "logits_to_keep": 1}
        cache = _new_cache() if upto is None else None
        if cache is not None:
            kw[_cache_kw(model)] = cache
        out = None
        with torch.inference_mode(), _hooked(model, cap, upto):
            out = model(**kw, use_cache=cache is not None)
        return (out, cache) if upto is None else None

    def _blocked(self, model: Any, prompt: _Prompt, cap: _Capture | None, upto: int | None, stats: Stats | None) -> Any:
        """Instruction, then the documents over its KV cache (batched), then the query over every block's KV."""
        import torch

        ck = _cache_kw(model)
        dev = model.device
        last = upto if upto is not None else self.n_layers(model) - 1
        instr, docs, query = prompt.blocks[0], prompt.blocks[1:-1], prompt.blocks[-1]
        l0 = len(instr)
        ident = self.llm.fingerprint()
        ikey = (ident, "instr", tuple(instr))
        ikv = _KV.get(ikey, last)
        if ikv is None:
            cache = _new_cache()
            with torch.inference_mode(), _hooked(model, None, last):
                model(
                    input_ids=torch.tensor([instr], device=dev),
                    position_ids=torch.arange(l0, device=dev)[None],
                    attention_mask=None,
                    use_cache=True,
                    logits_to_keep=1,
                    **{ck: cache},
                )
            ikv = _cache_kv(cache, last)
            _KV.put(ikey, ikv, self.kv_cache_mb << 20)
        doc_kv: list[list[tuple[Any, Any]] | None] = []
        todo = []
        for j, d in enumerate(docs):
            kv = _KV.get((ident, tuple(instr), tuple(d)), last) if self.kv_cache_mb else None
            doc_kv.append(kv)
            if kv is None:
                todo.append(j)
        if stats is not None:
            stats.add("blockrank_docs_encoded", len(todo))
            stats.add("blockrank_kv_hits", len(docs) - len(todo))
        for s in range(0, len(todo), self.doc_batch_size):
            group = todo[s : s + self.doc_batch_size]
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
            cache = _new_cache(
                [(k.expand(b, -1, -1, -1).contiguous(), v.expand(b, -1, -1, -1).contiguous()) for k, v in ikv]
            )
            with torch.inference_mode(), _hooked(model, None, last):
                model(
                    input_ids=ids.to(dev),
                    position_ids=(l0 + torch.arange(width, device=dev))[None].expand(b, -1),
                    attention_mask=allowed.to(dev),
                    use_cache=True,
                    logits_to_keep=1,
                    **{ck: cache},
                )
            for r, j in enumerate(group):
                n = len(docs[j])
                kv = [
                    (k[r : r + 1, :, l0 : l0 + n].clone(), v[r : r + 1, :, l0 : l0 + n].clone())
                    for k, v in _cache_kv(cache, last)
                ]
                doc_kv[j] = kv
                if self.kv_cache_mb:
                    _KV.put((ident, tuple(instr), tuple(docs[j])), kv, self.kv_cache_mb << 20)
        cache = _new_cache()  # every block's keys/values, one copy per layer (the per-document pieces go)
        for i in range(last + 1):
            cache.update(
                torch.cat([ikv[i][0]] + [kv[i][0] for kv in doc_kv], dim=2),  # type: ignore[index]
                torch.cat([ikv[i][1]] + [kv[i][1] for kv in doc_kv], dim=2),  # type: ignore[index]
                i,
            )
        t_prefix = int(cache.layers[0].keys.shape[2])
        del doc_kv, ikv
        lq = len(query)
        pos = position_ids(prompt.lengths, True, self.query_position)[-lq:]
        mask = torch.ones((1, 1, lq, t_prefix + lq), dtype=torch.bool)
        mask[..., t_prefix:] = torch.ones((lq, lq), dtype=torch.bool).tril()
        with torch.inference_mode(), _hooked(model, cap, upto):
            out = model(
                input_ids=torch.tensor([query], device=dev),
                position_ids=torch.as_tensor(pos, device=dev)[None],
                attention_mask=mask.to(dev),
                use_cache=True,
                logits_to_keep=1,
                **{ck: cache},
            )
        return (out, cache) if upto is None else None

    def forward_with_answer(self, model: Any, prompt: _Prompt, answer: Sequence[int], layer: int) -> tuple[Any, Any]:
        """Training forward (gradients on): the prompt followed by ``answer`` tokens (part of the query block) in
        one masked pass over all layers. Returns the logits that predict each answer token ``(len(answer), V)``
        and the per-document scores ``(n,)`` of the query block's rows (before the answer) at ``layer``: attention
        renormalised over document tokens, summed over a block, averaged over rows and heads (the stage's
        ``heads``, ``query_tokens``; the paper's signal for its auxiliary InfoNCE loss)."""
        import torch

        from ragopt.kernels.blockrank import block_starts

        lengths = prompt.lengths
        lq, la = lengths[-1], len(answer)
        full = [*lengths[:-1], lq + la]
        ids = torch.tensor([prompt.ids + list(answer)], device=model.device)
        pos = torch.as_tensor(position_ids(full, self.sparse, self.query_position), device=model.device)[None]
        t = sum(full)
        mask = torch.as_tensor(allowed_mask(full, self.sparse), device=model.device)[None, None]
        cap = _Capture(frozenset([layer]), lq + la)
        out = None
        with _hooked(model, cap, None):
            out = model(input_ids=ids, position_ids=pos, attention_mask=mask, logits_to_keep=la + 1, use_cache=False)
        logits = out.logits[0, :la]
        probs = cap.out[layer][:, :lq]  # (H, lq, t): the query block's rows, before the answer
        if self.query_tokens:
            probs = probs[:, -self.query_tokens :]
        if self.heads:
            probs = probs[self.heads]
        starts = block_starts(lengths)
        lo, hi = int(starts[1]), int(starts[-2])
        docs = probs[..., lo:hi]
        docs = docs / docs.sum(-1, keepdim=True).clamp_min(1e-30)
        seg = torch.as_tensor(np.repeat(np.arange(len(lengths) - 2), lengths[1:-1]), device=docs.device)
        per_doc = torch.zeros((*docs.shape[:2], len(lengths) - 2), dtype=docs.dtype, device=docs.device)
        per_doc = per_doc.index_add(2, seg, docs)
        _ = t
        return logits, per_doc.mean(dim=(0, 1))

    def decode(self, prompt: _Prompt, stats: Stats | None = None) -> str:
        """Greedy continuation (``decode_tokens``) after the prefill: the query block's answer."""
        import torch

        model, tok = self.model()
        if self.sparse and self.prefill == "blocked":
            out, cache = self._blocked(model, prompt, None, None, stats)
        else:
            out, cache = self._masked(model, prompt, None, None)
        pos = int(position_ids(prompt.lengths, self.sparse, self.query_position)[-1])
        total = sum(prompt.lengths)
        ck = _cache_kw(model)
        new: list[int] = []
        logits = out.logits[0, -1]
        eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        with torch.inference_mode():
            for step in range(self.decode_tokens):
                t = int(torch.argmax(logits))
                if t in eos:
                    break
                new.append(t)
                if step + 1 == self.decode_tokens:
                    break
                pos += 1
                mask = torch.ones((1, 1, 1, total + len(new)), dtype=torch.bool, device=model.device)
                with _hooked(model, None, None):
                    out = model(
                        input_ids=torch.tensor([[t]], device=model.device),
                        position_ids=torch.tensor([[pos]], device=model.device),
                        attention_mask=mask,
                        use_cache=True,
                        logits_to_keep=1,
                        **{ck: cache},
                    )
                logits = out.logits[0, -1]
        return tok.decode(new, skip_special_tokens=True)

    # -- scoring -------------------------------------------------------------------------------------------
    def head_scores(self, prompt: _Prompt, layers: Sequence[int], stats: Stats | None = None) -> dict[int, np.ndarray]:
        """Per-head document scores ``(H, n)`` at each of ``layers``."""
        attn = self.attend(prompt, layers, stats)
        return {
            layer: block_scores(a.numpy(), prompt.lengths, self.aggregation, self.normalize)
            for layer, a in attn.items()
        }

    def scores(self, prompt: _Prompt, stats: Stats | None = None) -> np.ndarray:
        """Relevance of each document of ``prompt`` (attention mode)."""
        return self.set_scores([(np.arange(len(prompt.blocks) - 2), prompt)], stats)

    def set_scores(self, prompts: Sequence[tuple[np.ndarray, _Prompt]], stats: Stats | None = None) -> np.ndarray:
        """Relevance of each of a query's candidates, over its prompts in several orders (:meth:`prompt_sets`)."""
        model, _ = self.model()
        layer = self.chosen_layer(model)
        per_head = self.set_head_scores(prompts, [layer], stats)[layer]
        return _mean_heads(per_head, self.heads)

    def orders(self, n: int) -> list[np.ndarray]:
        """The orders a query's ``n`` candidates are scored in (``order[j]``: the candidate at label ``j + 1``): the
        given one, then cyclic shifts spread evenly, ``min(permutations, n)`` in all."""
        k = max(1, min(self.permutations, n))
        return [np.roll(np.arange(n), -round(j * n / k)) for j in range(k)]

    def prompt_sets(
        self, batch: Batch, orders: Callable[[int], list[np.ndarray]] | None = None
    ) -> tuple[list[list[int]], list[list[tuple[np.ndarray, _Prompt]]]]:
        """Every query's reranked candidates (corpus rows) and its prompts, one per order of :meth:`orders` (or of
        ``orders(n)``), all checked against the context."""
        if batch.doc_idx is None:
            raise StageError("blockrank: the batch has no candidates; put a retriever before it")
        model, tok = self.model()
        n, width = batch.doc_idx.shape
        depth = min(self.depth, width)
        heads = [[int(i) for i in batch.doc_idx[r, :depth] if i >= 0] for r in range(n)]
        rows = sorted({i for h in heads for i in h})
        toks = dict(zip(rows, self._doc_ids(tok, [batch.corpus.text(i, self.with_title) for i in rows])))
        sets = [
            [(o, self.build_prompt(tok, q, [toks[h[j]] for j in o])) for o in (orders or self.orders)(len(h))]
            for q, h in zip(batch.queries.texts, heads)
        ]
        for ps, qid in zip(sets, batch.queries.ids):
            self.check_context(model, [p for _, p in ps], [qid] * len(ps))
        return heads, sets

    def prompts(self, batch: Batch) -> tuple[list[list[int]], list[_Prompt]]:
        """Every query's reranked candidates (corpus rows) and its prompt in the given order."""
        heads, sets = self.prompt_sets(batch)
        return heads, [ps[0][1] for ps in sets]

    def set_head_scores(
        self, prompts: Sequence[tuple[np.ndarray, _Prompt]], layers: Sequence[int], stats: Stats | None = None
    ) -> dict[int, np.ndarray]:
        """Per-head scores ``(H, n)`` of a query's candidates (in their given order) at each of ``layers``, the mean
        over the prompts of :meth:`prompt_sets`."""
        out: dict[int, np.ndarray] = {}
        dtype: Any = np.float32
        for order, p in prompts:
            for layer, hs in self.head_scores(p, layers, stats).items():
                acc = out.setdefault(layer, np.zeros(hs.shape, dtype=np.float64))
                acc[:, order] += hs  # the score at label j belongs to candidate order[j]
                dtype = hs.dtype
        return {layer: (acc / len(prompts)).astype(dtype) for layer, acc in out.items()}

    def transform(self, batch: Batch) -> Batch:
        stats = batch.stats
        for key in _COUNTERS:
            stats.add(key, 0)
        heads, sets = self.prompt_sets(batch)  # every check before any scoring
        n, width = batch.doc_idx.shape
        depth = min(self.depth, width)
        head_idx = np.full((n, depth), -1, np.int64)
        head_scores = np.full((n, depth), -np.inf, np.float32)
        with stats.timer("blockrank"):
            for r, (h, ps) in enumerate(zip(heads, sets)):
                if not h:
                    continue
                stats.add("blockrank_queries", 1)
                stats.add("blockrank_reranked", len(h))
                for _, p in ps:
                    stats.add("blockrank_prompt_tokens", sum(p.lengths))
                    stats.add("blockrank_attention_pairs", attention_pairs(p.lengths, self.sparse))
                if self.mode == "decode":
                    order = self._decoded_order(ps[0][1], len(h), stats)
                    s = np.arange(len(h), 0, -1, dtype=np.float32)
                else:
                    sc = self.set_scores(ps, stats)
                    order = np.argsort(-sc, kind="stable")
                    s = sc[order].astype(np.float32)
                head_idx[r, : len(h)] = [h[o] for o in order]
                head_scores[r, : len(h)] = s
        if width == depth:
            return batch.with_candidates(head_idx, head_scores, batch.corpus)
        idx, sc = splice_head(head_idx, head_scores, batch.doc_idx[:, depth:], batch.scores[:, depth:])
        return batch.with_candidates(idx, sc, batch.corpus)

    def _decoded_order(self, prompt: _Prompt, n: int, stats: Stats) -> list[int]:
        text = self.decode(prompt, stats)
        m = re.search(r"\d+", text)
        pick = int(m.group()) - 1 if m else -1
        if not 0 <= pick < n:
            stats.add("blockrank_unparseable", 1)
            return list(range(n))
        return [pick] + [i for i in range(n) if i != pick]


# -- layer selection -----------------------------------------------------------------------------------------------
@dataclass
class LayerCalibration:
    """Per-layer quality of the attention signal on labelled queries, the best layer and (optionally) head set."""

    metric: str
    best_layer: int
    best_heads: list[int] | None
    curve: list[dict[str, float]]  # one row per layer: layer, p@1, ndcg@10
    head_curve: list[dict[str, float]]  # at the best layer: heads kept (best single heads first), p@1, ndcg@10
    n_queries: int
    #: at the best layer and heads: for each input position (label ``[i + 1]``), how many queries' top-scored
    #: candidate sat there, and how many queries' first relevant candidate did. Tops that pile up on one position
    #: whatever the relevance read the labels, not the documents
    top_from_position: list[int] = field(default_factory=list)
    gold_at_position: list[int] = field(default_factory=list)
    top_relevant_from_position: list[int] = field(default_factory=list)  # of top_from_position, the relevant ones
    #: set when the tops look label-driven (see :func:`label_bias`); also issued as a warning
    label_bias: str | None = None
    #: one order only (``permutations`` 1): the best layer and heads scored again with every query's candidates
    #: reversed. ``reversed_order``: its p@1 and nDCG@10; ``order_agreement``: the share of queries whose top
    #: candidate is the same document in both orders (a layer that reads the documents keeps it)
    reversed_order: dict[str, float] | None = None
    order_agreement: float | None = None
    #: set when the top candidate changes with the order for most queries (see :func:`order_bias`); also a warning
    order_bias: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "best_layer": self.best_layer,
            "best_heads": self.best_heads,
            "n_queries": self.n_queries,
            "curve": self.curve,
            "head_curve": self.head_curve,
            "top_from_position": self.top_from_position,
            "gold_at_position": self.gold_at_position,
            "top_relevant_from_position": self.top_relevant_from_position,
            "label_bias": self.label_bias,
            "reversed_order": self.reversed_order,
            "order_agreement": self.order_agreement,
            "order_bias": self.order_bias,
        }


def position_counts(per_query: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[list[int], list[int], list[int]]:
    """Over queries given as (scores, relevance) in input order: how many tops came from each position, how many
    of those tops were relevant, and at which position each query's first relevant candidate sat."""
    n = max((len(s) for s, _ in per_query), default=0)
    top, hit, gold = np.zeros(n, int), np.zeros(n, int), np.zeros(n, int)
    for s, rel in per_query:
        t = int(np.argmax(s))
        top[t] += 1
        hit[t] += int(rel[t] > 0)
        if np.any(rel > 0):
            gold[int(np.argmax(rel > 0))] += 1
    return top.tolist(), hit.tolist(), gold.tolist()


def label_bias(top: Sequence[int], hit: Sequence[int], min_queries: int = 6) -> str | None:
    """A description of the likely label bias in ``top``/``hit`` (from :func:`position_counts`), or None: one input
    position gives the top candidate for at least half of the queries, and for fewer than half of those it is
    relevant. A layer that reads the documents puts its tops where the relevant candidates are; one that reads the
    labels puts them on one label (SmolLM2's layer 20: ``[1]`` or ``[10]`` for every query, whatever the order).
    In the first stage's order a bias to ``[1]`` that agrees with a strong first stage passes this check: only
    ``permutations`` (every candidate at every label) or ``labels: false`` rule a bias out."""
    n = sum(top)
    if n < min_queries:
        return None
    p = int(np.argmax(top))
    if 2 * top[p] < n or 2 * hit[p] >= top[p]:
        return None
    return (
        f"the top candidate sat at input position {p + 1} (label [{p + 1}]) for {top[p]} of {n} queries and was "
        f"relevant for {hit[p]} of them: the signal may follow the labels, not the documents; calibrate with "
        "permutations equal to depth (every candidate under every label) or labels: false"
    )


def order_bias(same: int, n: int, min_queries: int = 6) -> str | None:
    """A description of the likely order bias when the top candidate stayed the same document for only ``same`` of
    ``n`` queries once their candidates were reversed, or None. Relevance belongs to a document, not to where it
    sits: a layer that reads the documents keeps its top whatever the order, one that reads the positions or the
    labels moves it with them. Fires when the top changed for more than half of the queries. Unlike
    :func:`label_bias`, it also sees a pull to ``[1]`` that agrees with a strong first stage (SmolLM2's layer 20 on
    nq: ``[1]`` first for 20 of 20 queries, relevant for 16)."""
    if n < min_queries or 2 * same >= n:
        return None
    return (
        f"the top candidate changed for {n - same} of {n} queries when their candidates were reversed: the signal "
        "follows where the documents sit more than what they say; calibrate with permutations equal to depth "
        "(every candidate at every position)"
    )


def _mean_heads(per_head: np.ndarray, heads: Sequence[int] | None) -> np.ndarray:
    """Per-candidate scores from per-head scores ``(H, n)``: the mean over ``heads`` (None: every head)."""
    return per_head[list(heads)].mean(axis=0) if heads else per_head.mean(axis=0)


def _metrics(per_query: list[tuple[np.ndarray, np.ndarray, list[float]]]) -> dict[str, float]:
    p1 = [precision_at_1(s, rel) for s, rel, _ in per_query]
    nd = [ndcg_at_k(s, rel, 10, gains) for s, rel, gains in per_query]
    return {"p@1": float(np.mean(p1)), "ndcg@10": float(np.mean(nd))}


def calibrate_layers(
    stage: BlockRankReranker,
    batch: Batch,
    qrels: dict[str, dict[str, int]],
    metric: Literal["p@1", "ndcg@10"] = "ndcg@10",
    layers: Sequence[int] | None = None,
    select_heads: bool = False,
    order_check: bool = True,
) -> LayerCalibration:
    """Score every layer's attention signal (the stage's prompt, aggregation, normalisation) on ``batch``'s
    judged queries (first-stage candidates; queries without a judgment are skipped); pick the layer with the best
    mean ``metric`` (ties: the earlier layer). With ``select_heads``, rank the best layer's heads by their own
    metric and keep the best prefix of that ranking.

    With one order (``permutations`` 1) and ``order_check``, the chosen layer and heads are scored once more with
    each query's candidates reversed (one more prefill a query, to that layer only): a layer picked for agreeing
    with the first stage's order, not for reading the documents, shows there (:func:`order_bias`)."""
    if metric not in ("p@1", "ndcg@10"):
        raise ConfigError("metric", f"must be 'p@1' or 'ndcg@10', got {metric!r}")
    model, _ = stage.model()
    n_layers = stage.n_layers(model)
    layers = list(range(n_layers)) if layers is None else sorted(set(layers))
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise ConfigError("layers", f"layers {bad} out of range: the model has {n_layers} (0..{n_layers - 1})")
    cand, sets = stage.prompt_sets(batch)  # in as many orders as the stage scores (permutations)
    doc_ids = batch.corpus.doc_ids
    per_layer: dict[int, list[tuple[np.ndarray, np.ndarray, list[float]]]] = {x: [] for x in layers}
    judged_rows: list[int] = []
    for r, (qid, h, ps) in enumerate(zip(batch.queries.ids, cand, sets)):
        judged = qrels.get(qid)
        if not judged or not h:
            continue
        judged_rows.append(r)
        rel = np.array([judged.get(doc_ids[i], 0) for i in h], dtype=np.float64)
        gains = [float(g) for g in judged.values() if g > 0]
        for layer, hs in stage.set_head_scores(ps, layers, batch.stats).items():
            per_layer[layer].append((hs, rel, gains))
    n_q = len(judged_rows)
    if n_q == 0:
        raise StageError("calibrate_layers: none of the batch's queries has a judgment in qrels")

    def summary(layer: int, heads: list[int] | None) -> dict[str, float]:
        rows = [(_mean_heads(hs, heads), rel, g) for hs, rel, g in per_layer[layer]]
        return _metrics(rows)

    curve = [{"layer": x, **summary(x, None)} for x in layers]
    best = max(curve, key=lambda row: (row[metric], -row["layer"]))
    best_layer = int(best["layer"])
    head_curve: list[dict[str, Any]] = []
    best_heads = None
    if select_heads:
        n_heads = per_layer[best_layer][0][0].shape[0]
        single = sorted(range(n_heads), key=lambda k: -summary(best_layer, [k])[metric])
        for m in range(1, n_heads + 1):
            head_curve.append({"heads": single[:m], **summary(best_layer, single[:m])})
        top = max(head_curve, key=lambda row: (row[metric], -len(row["heads"])))
        best_heads = sorted(top["heads"]) if len(top["heads"]) < n_heads else None
    at_best = [(_mean_heads(hs, best_heads), rel) for hs, rel, _ in per_layer[best_layer]]
    tops, hits, golds = position_counts(at_best)
    bias = label_bias(tops, hits) if stage.labels and stage.permutations == 1 else None
    if bias:
        warnings.warn(f"calibrate_layers: layer {best_layer}: {bias}", UserWarning, stacklevel=2)
    reversed_order = agreement = moved = None
    if order_check and stage.permutations == 1:
        _, back = stage.prompt_sets(batch, orders=lambda n: [np.arange(n)[::-1]])
        rows, same = [], 0
        for r, (s_given, rel), (_, _, gains) in zip(judged_rows, at_best, per_layer[best_layer]):
            s_back = _mean_heads(stage.set_head_scores(back[r], [best_layer], batch.stats)[best_layer], best_heads)
            same += int(np.argmax(s_back) == np.argmax(s_given))  # both in the given order of candidates
            rows.append((s_back, rel, gains))
        reversed_order, agreement, moved = _metrics(rows), same / n_q, order_bias(same, n_q)
        if moved:
            warnings.warn(f"calibrate_layers: layer {best_layer}: {moved}", UserWarning, stacklevel=2)
    return LayerCalibration(
        metric,
        best_layer,
        best_heads,
        curve,
        head_curve,
        n_q,
        top_from_position=tops,
        gold_at_position=golds,
        top_relevant_from_position=hits,
        label_bias=bias,
        reversed_order=reversed_order,
        order_agreement=agreement,
        order_bias=moved,
    )
