"""The ``generate`` stage: answers from an LLM, prompted with the question and the top candidates.

For each query: the first ``context_k`` candidates (best first) are compressed (extractive, ``compression`` of
their sentences kept), cut to ``passage_max_tokens``, and packed while the whole prompt (template, question,
passages) stays within ``max_prompt_tokens``; the weakest are dropped first. They go into the prompt in
``order`` (``score``, ``reversed``, ``edges``), the template renders a chat, and the LLM's completion, reduced
by ``answer_style``, is the answer. ``context_k: 0`` is closed-book (no retriever needed).

Every LLM call goes through the persistent call cache (:class:`ragopt.llm.CachedLLM`), so a prompt asked
before (in another trial, another order of the same passages excepted) costs nothing; the batch's
:class:`~ragopt.types.Stats` count ``llm_calls``, ``prompt_tokens``, ``completion_tokens``, ``llm_cache_hits``,
``generated_answers``, ``generate_prompt_tokens`` (all prompts' tokens, cached or not), ``context_passages``
and ``context_dropped`` (passages that did not fit the budget).
The packed passages' corpus rows go into ``batch.contexts`` for context metrics (``ctx_recall``, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from ragopt.config import param
from ragopt.errors import ConfigError, StageError
from ragopt.generators.prompting import (
    ORDERS,
    TEMPLATE_VERSION,
    extract_answer,
    pack_context,
    render,
    render_plain,
    resolve_template,
)
from ragopt.llm.base import GenerationParams
from ragopt.llm.stage import LLMStage, default_llm
from ragopt.registry import register
from ragopt.types import Batch

__all__ = ["Generator", "default_llm"]


@register("generate")
class Generator(LLMStage):
    """Generate an answer per query from the top candidates (see the module docstring)."""

    template_version: ClassVar[int] = TEMPLATE_VERSION

    provides: ClassVar[frozenset[str]] = frozenset({"answers"})
    cache_outputs: ClassVar[bool] = False  # answers are served by the LLM call cache instead

    template: str = param(
        "qa_fewshot",
        doc="built-in (qa, qa_fewshot, closed_book, closed_book_fewshot) or a "
        "text with {question}, {context} and optionally {n_passages}",
    )
    system: str | None = param(None, doc="system message (default: the built-in template's)")
    context_k: int = param(5, doc="candidates offered to the prompt, best first (0: closed-book)", ge=0)
    order: Literal["score", "reversed", "edges"] = param(
        "score", doc="passage order in the prompt: best first, best last, or best at the edges"
    )
    compression: float = param(
        1.0,
        doc="fraction of each passage's sentences kept, those closest to the question (1: no compression)",
        gt=0.0,
        le=1.0,
    )
    passage_max_tokens: int = param(256, doc="tokens kept of each passage", ge=1)
    max_prompt_tokens: int = param(2048, doc="budget of the whole prompt: template, question and passages", ge=16)
    max_new_tokens: int = param(32, doc="tokens generated at most per answer", ge=1)
    answer_style: Literal["raw", "first_line", "short"] = param(
        "short", doc="raw completion, its first line, or that line without 'Answer:' / quotes / final period"
    )
    with_title: bool = param(True, doc="prefix passages with their document titles")
    chat: bool = param(
        False,
        doc="send chat messages (the model's chat template); false: one plain-text prompt "
        "ending where the answer begins (completion style, worked examples inline: "
        "on nq gold passages SmolLM2 went from EM 0 to 0.25 with it)",
    )

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        resolve_template(self.template, self.system, f"{at}template")
        if self.order not in ORDERS:
            raise ConfigError(f"{at}order", f"must be one of {list(ORDERS)}")

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"queries", "candidates"}) if self.context_k > 0 else frozenset({"queries"})

    def prompts(self, batch: Batch) -> tuple[list[Any], list[list[int]], int]:
        """The chat prompt of every query, the corpus rows packed into each, and the passages dropped."""
        template = resolve_template(self.template, self.system)
        client = self.client()
        count = client.count_tokens
        if self.context_k > 0 and batch.doc_idx is None:
            raise StageError(
                "generate: context_k > 0 needs candidates; put a retriever before it "
                "(or set context_k: 0 for closed-book answers)"
            )
        prompts, rows, dropped = [], [], 0
        for r, (qid, question) in enumerate(zip(batch.queries.ids, batch.queries.texts)):
            if not question or not question.strip():
                raise StageError(f"generate: query {qid!r} is empty")
            bare = count([_text(render(template, question, []))])[0]
            budget = self.max_prompt_tokens - bare
            if budget < 0:
                raise StageError(
                    f"generate: the prompt budget max_prompt_tokens={self.max_prompt_tokens} is smaller "
                    f"than the template and question of query {qid!r} alone ({bare} tokens)"
                )
            cand_rows: list[int] = []
            texts: list[str] = []
            if self.context_k > 0:
                cand_rows = [int(i) for i in batch.doc_idx[r] if i >= 0]
                texts = [batch.corpus.text(i, self.with_title) for i in cand_rows]
            pos, packed = pack_context(
                texts,
                question,
                context_k=self.context_k,
                order=self.order,
                budget=budget,
                passage_max_tokens=self.passage_max_tokens,
                compression=self.compression,
                count=count,
            )
            dropped += min(self.context_k, len(texts)) - len(pos)
            prompts.append(
                render(template, question, packed) if self.chat else render_plain(template, question, packed)
            )
            rows.append([cand_rows[p] for p in pos])
        return prompts, rows, dropped

    def transform(self, batch: Batch) -> Batch:
        if len(batch) == 0:
            return dataclasses.replace(batch, answers=[], contexts=[])
        prompts, rows, dropped = self.prompts(batch)
        # a short answer is one line: stop there (plain prompts) or at the end of the reply's first paragraph (chats)
        stop = () if self.answer_style == "raw" else ("\n\n",) if self.chat else ("\n",)
        params = GenerationParams(max_new_tokens=self.max_new_tokens, stop=stop)
        completions = self.client().generate(prompts, params, stats=batch.stats)
        batch.stats.add("generated_answers", len(completions))
        # every prompt's size, paid or served by the cache: what a prompt budget per query is about
        batch.stats.add("generate_prompt_tokens", sum(c.prompt_tokens for c in completions))
        batch.stats.add("context_passages", sum(len(r) for r in rows))
        batch.stats.add("context_dropped", dropped)
        answers = [extract_answer(c.text, self.answer_style) for c in completions]
        return dataclasses.replace(batch, answers=answers, contexts=rows)


def _text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)
