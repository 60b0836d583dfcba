"""The ``blockrank`` stage: configuration and checks, prompt layout, which prefill runs (:mod:`.prefill` has them),
decode mode and scoring. The package docstring (:mod:`ragopt.rerankers.blockrank`) describes what it computes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt._imports import optional, require
from ragopt.config import param
from ragopt.errors import ConfigError, StageError
from ragopt.kernels.blockrank import block_scores, candidates_that_fit, max_position
from ragopt.kernels.topk import splice_head
from ragopt.llm.stage import LLMStage
from ragopt.llm.transformers_backend import TransformersLLM
from ragopt.registry import register
from ragopt.rerankers.blockrank import prefill
from ragopt.rerankers.blockrank.attention import Capture
from ragopt.rerankers.blockrank.prefill import BlockPrompt, KVReuse, Pattern
from ragopt.types import Batch, Corpus, Stats

#: config.model_type -> what it covers
SUPPORTED_FAMILIES = {"llama": "Llama, SmolLM2", "mistral": "Mistral", "qwen2": "Qwen2, Qwen2.5, Qwen2.5-Coder"}
LAYOUT_FILE = "blockrank.json"
TEMPLATE_VERSION = 1
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


def mean_heads(per_head: np.ndarray, heads: Sequence[int] | None) -> np.ndarray:
    """Per-candidate scores from per-head scores ``(H, n)``: the mean over ``heads`` (None: every head)."""
    return per_head[list(heads)].mean(axis=0) if heads else per_head.mean(axis=0)


@register("blockrank")
class BlockRankReranker(LLMStage):
    """Rerank the top ``depth`` candidates by query-to-block attention in one prompt (see the package docstring)."""

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
        return prefill.n_layers(model)

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

    def doc_token_ids(self, tok: Any, texts: Sequence[str]) -> list[list[int]]:
        enc = tok([" " + t for t in texts], add_special_tokens=False)["input_ids"] if texts else []
        return [list(ids[: self.max_doc_tokens]) for ids in enc]

    def build_prompt(self, tok: Any, query: str, doc_tokens: Sequence[Sequence[int]]) -> BlockPrompt:
        """The blocks of one query's prompt over documents given as token ids (``doc_token_ids``)."""
        head, tail = self._frame(tok, query)
        # a plain prompt opens with the special tokens the weights declare (GGUF: add_bos_token), a chat with none
        instr = (
            list(tok(head, add_special_tokens=False)["input_ids"])
            if self.chat
            else self.llm.encode_plain(head, eos=False)
        )
        blocks = [instr]
        for i, ids in enumerate(doc_tokens):
            label = f"\n[{i + 1}]" if self.labels else "\n"
            blocks.append(list(tok(label, add_special_tokens=False)["input_ids"]) + list(ids))
        blocks.append(list(tok(tail, add_special_tokens=False)["input_ids"]))
        return BlockPrompt(blocks)

    def check_context(self, model: Any, prompts: Sequence[BlockPrompt], qids: Sequence[str]) -> None:
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

    # -- forward passes (:mod:`.prefill`) --------------------------------------------------------------------
    def pattern(self) -> Pattern:
        return Pattern(self.sparse, self.query_position)

    def _reuse(self) -> KVReuse:
        return KVReuse(self.llm.fingerprint(), self.kv_cache_mb, self.doc_batch_size)

    def attend(self, prompt: BlockPrompt, layers: Sequence[int], stats: Stats | None = None) -> dict[int, Any]:
        """Attention ``(H, R, K)`` of the query block's last ``R`` rows over all keys at each of ``layers``."""
        model, _ = self.model()
        rows = prompt.lengths[-1] if self.query_tokens == 0 else min(self.query_tokens, prompt.lengths[-1])
        cap = Capture(frozenset(layers), rows)
        if self.sparse and self.prefill == "blocked":
            prefill.blocked(model, prompt, self.pattern(), self._reuse(), cap, max(layers), stats)
        elif self.prefill == "flex":
            prefill.flex(model, prompt, self.pattern(), cap, max(layers))
        else:
            prefill.masked(model, prompt, self.pattern(), cap, max(layers))
        return {layer: cap.out[layer] for layer in layers}

    def forward_with_answer(
        self, model: Any, prompt: BlockPrompt, answer: Sequence[int], layer: int
    ) -> tuple[Any, Any]:
        """Training forward with this stage's layout, ``query_tokens`` and ``heads``: :func:`.prefill.with_answer`."""
        return prefill.with_answer(model, prompt, self.pattern(), answer, layer, self.query_tokens, self.heads)

    def decode(self, prompt: BlockPrompt, stats: Stats | None = None) -> str:
        """Greedy continuation (``decode_tokens``) after the prefill: the query block's answer."""
        model, tok = self.model()
        if self.sparse and self.prefill == "blocked":
            out, cache = prefill.blocked(model, prompt, self.pattern(), self._reuse(), None, None, stats)
        else:
            out, cache = prefill.masked(model, prompt, self.pattern(), None, None)
        new = prefill.greedy(model, tok, prompt, self.pattern(), out, cache, self.decode_tokens)
        return tok.decode(new, skip_special_tokens=True)

    # -- scoring -------------------------------------------------------------------------------------------
    def head_scores(
        self, prompt: BlockPrompt, layers: Sequence[int], stats: Stats | None = None
    ) -> dict[int, np.ndarray]:
        """Per-head document scores ``(H, n)`` at each of ``layers``."""
        attn = self.attend(prompt, layers, stats)
        return {
            layer: block_scores(a.numpy(), prompt.lengths, self.aggregation, self.normalize)
            for layer, a in attn.items()
        }

    def scores(self, prompt: BlockPrompt, stats: Stats | None = None) -> np.ndarray:
        """Relevance of each document of ``prompt`` (attention mode)."""
        return self.set_scores([(np.arange(len(prompt.blocks) - 2), prompt)], stats)

    def set_scores(self, prompts: Sequence[tuple[np.ndarray, BlockPrompt]], stats: Stats | None = None) -> np.ndarray:
        """Relevance of each of a query's candidates, over its prompts in several orders (:meth:`prompt_sets`)."""
        model, _ = self.model()
        layer = self.chosen_layer(model)
        per_head = self.set_head_scores(prompts, [layer], stats)[layer]
        return mean_heads(per_head, self.heads)

    def orders(self, n: int) -> list[np.ndarray]:
        """The orders a query's ``n`` candidates are scored in (``order[j]``: the candidate at label ``j + 1``): the
        given one, then cyclic shifts spread evenly, ``min(permutations, n)`` in all."""
        k = max(1, min(self.permutations, n))
        return [np.roll(np.arange(n), -round(j * n / k)) for j in range(k)]

    def prompt_sets(
        self, batch: Batch, orders: Callable[[int], list[np.ndarray]] | None = None
    ) -> tuple[list[list[int]], list[list[tuple[np.ndarray, BlockPrompt]]]]:
        """Every query's reranked candidates (corpus rows) and its prompts, one per order of :meth:`orders` (or of
        ``orders(n)``), all checked against the context."""
        if batch.doc_idx is None:
            raise StageError("blockrank: the batch has no candidates; put a retriever before it")
        model, tok = self.model()
        n, width = batch.doc_idx.shape
        depth = min(self.depth, width)
        heads = [[int(i) for i in batch.doc_idx[r, :depth] if i >= 0] for r in range(n)]
        rows = sorted({i for h in heads for i in h})
        toks = dict(zip(rows, self.doc_token_ids(tok, [batch.corpus.text(i, self.with_title) for i in rows])))
        sets = [
            [(o, self.build_prompt(tok, q, [toks[h[j]] for j in o])) for o in (orders or self.orders)(len(h))]
            for q, h in zip(batch.queries.texts, heads)
        ]
        for ps, qid in zip(sets, batch.queries.ids):
            self.check_context(model, [p for _, p in ps], [qid] * len(ps))
        return heads, sets

    def prompts(self, batch: Batch) -> tuple[list[list[int]], list[BlockPrompt]]:
        """Every query's reranked candidates (corpus rows) and its prompt in the given order."""
        heads, sets = self.prompt_sets(batch)
        return heads, [ps[0][1] for ps in sets]

    def set_head_scores(
        self, prompts: Sequence[tuple[np.ndarray, BlockPrompt]], layers: Sequence[int], stats: Stats | None = None
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

    def _decoded_order(self, prompt: BlockPrompt, n: int, stats: Stats) -> list[int]:
        text = self.decode(prompt, stats)
        m = re.search(r"\d+", text)
        pick = int(m.group()) - 1 if m else -1
        if not 0 <= pick < n:
            stats.add("blockrank_unparseable", 1)
            return list(range(n))
        return [pick] + [i for i in range(n) if i != pick]
