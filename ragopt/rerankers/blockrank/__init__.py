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

Modules: :mod:`.stage` (the stage: checks, prompt, scoring), :mod:`.prefill` (the forward passes: the three
prefills, greedy decoding, the training forward), :mod:`.attention` (the attention function, hooks and key/value
caches they run the model through), :mod:`.calibration` (:func:`calibrate_layers`).

Counters: ``blockrank_queries``, ``blockrank_reranked``, ``blockrank_prompt_tokens``, ``blockrank_attention_pairs``
(query-key pairs the pattern allows: the attention cost), ``blockrank_docs_encoded`` and ``blockrank_kv_hits``
(blocked prefill), ``blockrank_unparseable`` (decode mode); seconds under ``blockrank``.
"""

from ragopt.rerankers.blockrank.attention import FLEX_PAD, FLEX_TILE, flex_block_mask, flex_mask_mod
from ragopt.rerankers.blockrank.calibration import (
    LayerCalibration,
    calibrate_layers,
    label_bias,
    order_bias,
    position_counts,
)
from ragopt.rerankers.blockrank.stage import (
    INSTRUCTION,
    LAYOUT_FILE,
    QUESTION,
    SUPPORTED_FAMILIES,
    TEMPLATE_VERSION,
    BlockRankReranker,
    attention_pairs,
)

__all__ = [
    "BlockRankReranker",
    "SUPPORTED_FAMILIES",
    "LAYOUT_FILE",
    "TEMPLATE_VERSION",
    "INSTRUCTION",
    "QUESTION",
    "LayerCalibration",
    "calibrate_layers",
    "label_bias",
    "order_bias",
    "position_counts",
    "attention_pairs",
    "FLEX_PAD",
    "FLEX_TILE",
    "flex_block_mask",
    "flex_mask_mod",
]
