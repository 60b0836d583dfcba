"""BlockRank's side of the model: the attention function it routes a model's layers through (SDPA or eager, or
FlexAttention with a block mask, plus a capture of the chosen layers' attention), the hooks that install it and
stop the forward pass after the last layer needed, key/value cache helpers, and the process-wide cache of
document blocks' keys and values. The stage (:mod:`.stage`) decides what runs; this module knows transformers."""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragopt.kernels.blockrank import block_ids, tile_pattern

#: the name the attention function is registered under in transformers' AttentionInterface
_ATTN = "ragopt_blockrank"


# -- the attention function: SDPA / eager plus a capture of chosen layers' attention ------------------------------
class _Stop(Exception):
    """Raised after the last layer needed: the rest of the forward pass is skipped."""


@dataclass
class Capture:
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


def compiled_flex_attention() -> Any:
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


def causal_rows(rows: int, t: int) -> Any:
    """The causal mask of the last ``rows`` of ``t`` tokens (bool, ``(rows, t)``)."""
    import torch

    return torch.ones((rows, t), dtype=torch.bool).tril(t - rows)


def _attention(module, query, key, value, attention_mask, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    cap: Capture | None = getattr(_LOCAL, "capture", None)
    base = cap.base if cap is not None else "sdpa"
    mask = attention_mask
    if cap is not None and cap.block_mask is not None:
        scale = kwargs.get("scaling", module.scaling)
        gqa = key.shape[1] != query.shape[1]
        o = compiled_flex_attention()(query, key, value, block_mask=cap.block_mask, scale=scale, enable_gqa=gqa)
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
def hooked(model: Any, capture: Capture | None, stop_after: int | None) -> Iterator[None]:
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
        _LOCAL.capture = capture if capture is not None else Capture(frozenset(), 0, base)
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


def cache_kw(model: Any) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_cache(kv: list[tuple[Any, Any]] | None = None) -> Any:
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(kv or []):
        cache.update(k, v, i)
    return cache


def cache_kv(cache: Any, upto: int) -> list[tuple[Any, Any]]:
    return [(cache.layers[i].keys, cache.layers[i].values) for i in range(upto + 1)]


# -- a process-wide cache of document blocks' keys and values --------------------------------------------------
class KVCache:
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


KV_CACHE = KVCache()
