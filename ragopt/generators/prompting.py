"""Prompt building for RAG generation: templates, context order, packing under a token budget, extractive
compression, and answer extraction. Pure functions over strings; the :mod:`ragopt.generators.generate` stage
wires them to the candidate lists and an LLM.

Notation: a query's *candidates* are passages ranked best first; ``context_k`` of them are *packed* into the
prompt, each cut to ``passage_max_tokens``, all of them within ``max_prompt_tokens`` together with the
template and the question. ``count`` is the backend's token counter (exact where it has the tokenizer).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ragopt.data.chunking import split_sentences
from ragopt.errors import ConfigError, StageError, check_template_fields, unknown_template_error
from ragopt.llm.stage import truncate_to_tokens

__all__ = [
    "TEMPLATES",
    "Template",
    "resolve_template",
    "order_passages",
    "compress_passage",
    "pack_context",
    "render",
    "render_plain",
    "extract_answer",
    "ORDERS",
    "TEMPLATE_VERSION",
]

Count = Callable[[Sequence[str]], list[int]]
ORDERS = ("score", "reversed", "edges")
#: bumped when a built-in template's wording changes (it is part of the generator's output key)
TEMPLATE_VERSION = 1
FIELDS = frozenset({"question", "context", "n_passages"})

_SHORT = (
    "Answer the question with a short answer taken from the passages: a name, a number, a date or a few "
    "words. Do not write a sentence."
)
_CLOSED = "Answer the question with a short answer: a name, a number, a date or a few words. Do not write a sentence."
# generic worked examples (not from any evaluation set) that show the answer format to small models
_SHOTS = (
    (
        "[1] The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889 for the World's Fair.",
        "when was the eiffel tower completed",
        "1889",
    ),
    (
        "[1] Mount Kilimanjaro is a dormant volcano in Tanzania. It is the highest mountain in Africa.",
        "what is the highest mountain in africa",
        "Mount Kilimanjaro",
    ),
)


@dataclass(frozen=True)
class Template:
    """A chat template: ``system`` text, optional worked examples (context, question, answer) and the
    ``user`` message with ``{question}``, ``{context}`` (and optionally ``{n_passages}``) fields."""

    system: str
    user: str
    shots: tuple[tuple[str, str, str], ...] = ()

    def fields(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.user) if f is not None}


TEMPLATES: dict[str, Template] = {
    "qa": Template(_SHORT, "Passages:\n{context}\n\nQuestion: {question}\nShort answer:"),
    "qa_fewshot": Template(_SHORT, "Passages:\n{context}\n\nQuestion: {question}\nShort answer:", _SHOTS),
    "closed_book": Template(_CLOSED, "Question: {question}\nShort answer:"),
    "closed_book_fewshot": Template(
        _CLOSED, "Question: {question}\nShort answer:", tuple(("", q, a) for _, q, a in _SHOTS)
    ),
}


def resolve_template(template: str, system: str | None, path: str = "template") -> Template:
    """A built-in template by name, or a user template (a string with ``{question}`` and usually ``{context}``);
    unknown fields, bad braces or a missing ``{question}`` are a :class:`ConfigError` naming ``path``."""
    if template in TEMPLATES:
        t = TEMPLATES[template]
        return Template(system, t.user, t.shots) if system is not None else t
    if "{" not in template:
        raise unknown_template_error(path, template, TEMPLATES, "{question} and {context}")
    check_template_fields(path, template, required=["question"], optional=sorted(FIELDS - {"question"}))
    return Template(system if system is not None else "", template)


def order_passages(n: int, order: str) -> list[int]:
    """Positions in the prompt of the ``n`` best passages (0 = best): ``score`` best first, ``reversed`` best
    last (next to the question), ``edges`` best at both ends and the weakest in the middle ("Lost in the
    Middle": 1st, 3rd, 5th, ... then ..., 6th, 4th, 2nd)."""
    if order == "score":
        return list(range(n))
    if order == "reversed":
        return list(range(n))[::-1]
    if order == "edges":
        return list(range(0, n, 2)) + list(range(1, n, 2))[::-1]
    raise ConfigError("order", f"must be one of {list(ORDERS)}, got {order!r}")


_WORD = re.compile(r"\w+", re.UNICODE)


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2}


def compress_passage(text: str, question: str, ratio: float) -> str:
    """Extractive compression: keep the sentences that share the most terms with the question, about ``ratio``
    of the passage's sentences (at least one), in their original order. ``ratio >= 1`` keeps everything."""
    if ratio >= 1.0 or not text:
        return text
    spans = split_sentences(text)
    if len(spans) <= 1:
        return text
    q = _terms(question)
    sents = [text[a:b] for a, b in spans]
    keep = max(1, round(ratio * len(sents)))
    # overlap with the question (ties: earlier first), normalised lightly by length so long sentences don't win
    score = [len(_terms(s) & q) / (1 + len(_terms(s))) ** 0.5 for s in sents]
    chosen = sorted(sorted(range(len(sents)), key=lambda i: (-score[i], i))[:keep])
    return " ".join(sents[i].strip() for i in chosen)


def pack_context(
    passages: Sequence[str],
    question: str,
    *,
    context_k: int,
    order: str,
    budget: int,
    passage_max_tokens: int,
    compression: float,
    count: Count,
) -> tuple[list[int], list[str]]:
    """Choose and prepare the passages of one prompt: the first ``context_k`` candidates (best first), each
    compressed then cut to ``passage_max_tokens``, dropping the weakest while their tokens exceed ``budget``;
    returns their candidate positions in prompt order and their texts."""
    chosen = list(range(min(context_k, len(passages))))
    texts = [
        truncate_to_tokens(compress_passage(passages[i], question, compression), passage_max_tokens, count)
        for i in chosen
    ]
    sizes = count([f"[{j + 1}] {t}\n" for j, t in enumerate(texts)]) if texts else []
    while chosen and sum(sizes) > budget:
        chosen.pop(), texts.pop(), sizes.pop()
    pos = order_passages(len(chosen), order)
    return [chosen[p] for p in pos], [texts[p] for p in pos]


def render_plain(template: Template, question: str, passages: Sequence[str]) -> str:
    """One prompt as plain text for completion-style prompting (no chat template): the system text, the worked
    examples each followed by its answer, then the question, ending where the answer begins."""
    msgs = render(template, question, passages)
    parts = []
    for m in msgs:
        if m["role"] == "assistant":
            parts[-1] = parts[-1] + " " + m["content"]
        else:
            parts.append(m["content"])
    return "\n\n".join(parts)


def render(template: Template, question: str, passages: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages of one prompt."""
    context = "\n".join(f"[{j + 1}] {t}" for j, t in enumerate(passages))
    msgs = [{"role": "system", "content": template.system}] if template.system else []
    for ctx, q, a in template.shots:
        msgs.append({"role": "user", "content": template.user.format(question=q, context=ctx, n_passages=1)})
        msgs.append({"role": "assistant", "content": a})
    msgs.append(
        {"role": "user", "content": template.user.format(question=question, context=context, n_passages=len(passages))}
    )
    return msgs


_LEAD = re.compile(r"^\s*(?:short\s+answer|final\s+answer|answer|a)\s*[:\-]\s*", re.I)
_THE_ANSWER = re.compile(r"^\s*the\s+(?:short\s+)?answer\s+is\s*:?\s*", re.I)


def extract_answer(text: str, style: Literal["raw", "first_line", "short"] = "short") -> str:
    """The answer in a completion: ``raw`` as generated (stripped), ``first_line`` its first non-empty line,
    ``short`` that line without a leading "Answer:" / "The answer is", wrapping quotes or a final period."""
    text = text.strip()
    if style == "raw":
        return text
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if style == "first_line":
        return line
    if style != "short":
        raise StageError(f"unknown answer style {style!r}")
    line = _THE_ANSWER.sub("", _LEAD.sub("", line))
    line = line.strip().strip("\"'`*").strip()
    if line.endswith(".") and not re.search(r"\b[A-Z]\.$", line):  # keep "U.S." style abbreviations
        line = line[:-1].rstrip()
    return line
