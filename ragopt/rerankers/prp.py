"""Pairwise ranking prompting (PRP): an LLM compares candidates two at a time and a ranking is built from its
judgements (Qin et al., "Large Language Models are Effective Text Rankers with Pairwise Ranking Prompting").

The ``prp`` stage reranks the first ``depth`` candidates of every query with one of the methods of
:mod:`ragopt.kernels.prp`: ``allpair`` (every pair, score = wins), ``sorting`` (heap sort, or bubble sort, until
the top ``top_k`` are fixed) or ``sliding`` (``top_k`` backward passes of a window of two). The rankers of all
queries of a batch run in lockstep: each round's comparisons go to the LLM in one call.

A comparison of passages ``a`` and ``b`` for query ``q`` renders the template with ``(q, a, b)`` (and, with
``both_orders``, with ``(q, b, a)`` too) and reads the LLM's preference for the first label (``labels``, default ``A/B``: ``A`` names
the first passage) or the second:

* ``mode: score``: the log-probabilities of the labels ``A`` and ``B`` as the first reply token (``" A"``/``" B"``
  after a plain-text prompt); ``P(first wins) = exp(lA) / (exp(lA) + exp(lB))``. Needs a backend with logprobs.
* ``mode: generate``: greedy generation of a few tokens, parsed for the label (``A``, ``B``, ``Passage A`` ...);
  an answer with no label, or both, is *unparseable*: counted, and a tie (0.5) for that order.

With ``both_orders`` the probability that ``a`` beats ``b`` is the mean of ``P(a wins | a first)`` and
``P(a wins | a second) = P(b, first, loses)``, which cancels a constant position bias; when the two orders
disagree (each prefers the same position) the pair is *inconsistent*: counted, and a tie (the paper's rule), or,
with ``inconsistent: mean``, still the mean (the small models packaged here prefer label A in almost every prompt,
so under the paper's rule nearly every pair is a tie; the mean keeps what the two orders' probabilities say beyond
that bias). Ties keep the order the candidates came in. Without ``both_orders`` one prompt is asked per pair,
the candidate ranked higher on input first.

Every prompt goes through the persistent LLM call cache (:class:`ragopt.llm.CachedLLM`). A prompt depends only
on the template, the query and the two passage texts in that order, so a comparison asked again (a later trial,
another method or depth, the same pair met twice in one ranking) is free. Counters in the batch stats:
``prp_comparisons`` (comparisons the ranking algorithms asked, repeats included), ``prp_inconsistent``,
``prp_unparseable`` (unparseable answers among them), ``prp_prompts`` and ``prp_prompt_tokens`` (the distinct
prompts the comparisons needed and their tokens, whether the cache served them or the model ran them: the cost of
the method on a cold cache), ``prp_rounds`` (LLM round trips), ``prp_reranked`` (candidates reranked),
``prp_short_lists`` (queries with fewer than ``depth`` candidates: reranked as they are), and the LLM's
``llm_calls``, ``llm_cache_hits``, ``prompt_tokens``, ``completion_tokens`` (in score mode the LLM layer counts a
(prompt, label) row as a call: two per prompt, though the transformers backend reads both labels from one forward
pass); seconds under ``prp``.

Scores out: the reranked candidates get ``m, m-1, ..., 1`` (``m`` of them, in their new order); candidates below
``depth`` keep their order and their scores, shifted below the reranked ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt.config import param
from ragopt.errors import ConfigError, StageError, check_template_fields, unknown_template_error
from ragopt.kernels.prp import drive_many, make_ranker
from ragopt.kernels.topk import splice_head
from ragopt.llm.base import GenerationParams, Prompt
from ragopt.llm.stage import LLMStage, default_llm, truncate_to_tokens
from ragopt.registry import register
from ragopt.types import Batch, Corpus, Stats

__all__ = [
    "PRPReranker",
    "TEMPLATES",
    "TEMPLATE_VERSION",
    "resolve_template",
    "parse_label",
    "parse_labels",
    "default_llm",
]

SLOTS = ("query", "passage_a", "passage_b")
#: optional fields: the two labels (the stage's ``labels``) and what they are ("letter", "number" or "label")
LABEL_SLOTS = ("label_a", "label_b", "label_kind")
#: bumped when a built-in template's wording changes (part of the stage's output key)
TEMPLATE_VERSION = 1
TEMPLATES: dict[str, str] = {
    # the paper's prompt, with one-letter labels so the first reply token decides
    "pairwise": (
        'Given a query "{query}", which of the following two passages is more relevant to the query?\n\n'
        'Passage {label_a}: "{passage_a}"\n\nPassage {label_b}: "{passage_b}"\n\n'
        "Answer with one {label_kind}, {label_a} or {label_b}:"
    ),
}
_GENERATE_TOKENS = 8
_LABEL = re.compile(r"[A-Za-z0-9]+")  # a label: one word of letters and digits
_COUNTERS = (
    "prp_comparisons",
    "prp_inconsistent",
    "prp_unparseable",
    "prp_prompts",
    "prp_rounds",
    "prp_reranked",
    "prp_short_lists",
    "llm_calls",
    "llm_cache_hits",
    "prompt_tokens",
    "completion_tokens",
)


def resolve_template(template: str, path: str = "template") -> str:
    """A built-in template by name, or a user template that holds ``{query}``, ``{passage_a}`` and
    ``{passage_b}``, optionally ``{label_a}``, ``{label_b}`` and ``{label_kind}``, and no other field; otherwise a
    :class:`ConfigError` naming ``path``."""
    if template in TEMPLATES:
        return TEMPLATES[template]
    if "{" not in template:
        raise unknown_template_error(path, template, TEMPLATES, "{query}, {passage_a} and {passage_b}")
    check_template_fields(path, template, SLOTS, LABEL_SLOTS)
    return template


def parse_labels(labels: str, path: str = "labels") -> tuple[str, str]:
    """The two labels of ``"first/second"`` (e.g. ``"A/B"``, ``"1/2"``): each one word of letters and digits,
    different from each other (case-insensitively); otherwise a :class:`ConfigError` naming ``path``."""
    parts = [p.strip() for p in str(labels).split("/")]
    if len(parts) != 2 or not all(_LABEL.fullmatch(p) for p in parts):
        raise ConfigError(
            path, f"{labels!r} is not two labels: write them as first/second, each a word of letters or digits (A/B)"
        )
    if parts[0].lower() == parts[1].lower():
        raise ConfigError(path, f"{labels!r}: the two labels must differ")
    return parts[0], parts[1]


def label_kind(labels: tuple[str, str]) -> str:
    """What the labels are, for a template's ``{label_kind}``: "letter", "number" or "label"."""
    if all(len(x) == 1 and x.isalpha() for x in labels):
        return "letter"
    if all(x.isdigit() for x in labels):
        return "number"
    return "label"


def parse_label(text: str, labels: tuple[str, str] = ("A", "B")) -> str | None:
    """The label (one of ``labels``) a generated answer gives, or None (unparseable): a leading label (``A``,
    ``B.``, ``Passage B``, ``**A**``), else the one of ``Passage A`` / ``Passage B`` the text names; a text that
    names both is unparseable. Labels of letters match as written (``a`` is not ``A``); the word "passage" matches
    in any case."""
    alts = "|".join(re.escape(x) for x in labels)
    named = set(re.findall(rf"\b[Pp]assage\s+({alts})\b", text))
    if len(named) > 1:  # names both passages: ambiguous
        return None
    m = re.match(rf"""^[\s"'*(\[]*(?:[Pp]assage\s+)?({alts})(?![A-Za-z0-9])""", text)
    if m:
        return m.group(1)
    return named.pop() if named else None


@dataclass
class _Judgement:
    p: float  # probability that the first passage of the key beats the second
    inconsistent: bool
    unparseable: int


@register("prp")
class PRPReranker(LLMStage):
    """Rerank the top ``depth`` candidates by pairwise LLM comparisons (see the module docstring)."""

    template_version: ClassVar[int] = TEMPLATE_VERSION

    requires: ClassVar[frozenset[str]] = frozenset({"queries", "candidates"})
    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    cache_ignore: ClassVar[tuple[str, ...]] = ("cache",)
    #: what a configuration asks for, cached or not (replayed when the stage cache serves the output)
    work_counters: ClassVar[tuple[str, ...]] = (
        "prp_comparisons",
        "prp_inconsistent",
        "prp_unparseable",
        "prp_prompts",
        "prp_prompt_tokens",
        "prp_rounds",
        "prp_reranked",
        "prp_short_lists",
    )

    method: Literal["allpair", "sorting", "sliding"] = param(
        "sliding",
        doc="allpair: every pair, score = wins (n(n-1)/2 comparisons); sorting: sort until the top_k "
        "are fixed (heap: O(n + k log n)); sliding: top_k backward passes of a window of two "
        "(top_k (n-1))",
    )
    sort: Literal["heap", "bubble"] = param("heap", doc="sorting's algorithm: heap sort, or bubble sort for the top_k")
    depth: int = param(20, doc="candidates reranked per query; the rest keep their order below them", ge=1)
    top_k: int = param(10, doc="sorting: the top fixed; sliding: the passes K (fixes the top K)", ge=1)
    mode: Literal["score", "generate"] = param(
        "score", doc="score: log-probabilities of the labels A/B (needs logprobs); generate: parse the generated label"
    )
    both_orders: bool = param(
        True, doc="ask each comparison in both passage orders (cancels position bias; two prompts per comparison)"
    )
    inconsistent: Literal["tie", "mean"] = param(
        "tie",
        doc="both orders disagreeing: tie (the paper's rule) or mean (keep the mean of the two orders' "
        "probabilities: a debiased soft preference, for models that favour one position whatever the passages)",
    )
    template: str = param(
        "pairwise",
        doc="built-in (pairwise) or a text with {query}, {passage_a} and {passage_b} (and optionally {label_a}, "
        "{label_b}, {label_kind})",
    )
    labels: str = param(
        "A/B",
        doc="the labels of the first and second passage, first/second (A/B, 1/2, X/Y ...): what the prompt "
        "names and the LLM answers with; each label one word of letters or digits",
    )
    chat: bool = param(
        True,
        doc="send the prompt as a user chat message (the model's chat template); false: plain "
        "text, the labels scored as ' A' / ' B'",
    )
    passage_max_tokens: int = param(128, doc="tokens kept of each passage (cut at a word boundary)", ge=1)
    with_title: bool = param(True, doc="passage text is title + text (BEIR convention) rather than text alone")

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        resolve_template(self.template, f"{at}template")
        parse_labels(self.labels, f"{at}labels")
        if self.mode == "score" and not self.llm.supports_logprobs:
            raise ConfigError(
                f"{at}mode",
                f"mode 'score' reads label log-probabilities, which {self.llm.describe()} "
                "does not return; set mode: generate (parse the generated label) or use "
                "a backend with logprobs",
            )

    # -- protocol ------------------------------------------------------------------------------
    def fit(
        self, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None
    ) -> PRPReranker:
        self.validate()
        return super().fit(corpus, store, rebuild=rebuild, progress=progress)

    # -- prompts -------------------------------------------------------------------------------
    def prompt(self, query: str, passage_a: str, passage_b: str) -> Prompt:
        """The prompt comparing ``passage_a`` (the first label) with ``passage_b`` (the second) for ``query``."""
        la, lb = parse_labels(self.labels)
        text = resolve_template(self.template).format(
            query=query,
            passage_a=passage_a,
            passage_b=passage_b,
            label_a=la,
            label_b=lb,
            label_kind=label_kind((la, lb)),
        )
        return [{"role": "user", "content": text}] if self.chat else text

    @property
    def continuations(self) -> tuple[str, str]:
        """The two labels as scored continuations: as they are after a chat prompt, after a space after plain
        text."""
        la, lb = parse_labels(self.labels)
        return (la, lb) if self.chat else (" " + la, " " + lb)

    def passage_texts(self, corpus: Corpus, rows: Iterable[int]) -> dict[int, str]:
        """The text of each corpus row, cut to ``passage_max_tokens`` tokens of the backend's tokenizer."""
        rows_l = sorted(set(rows))
        texts = [corpus.text(r, self.with_title) for r in rows_l]
        count = self.client().count_tokens
        sizes = count(texts) if texts else []
        out = {}
        for r, t, n in zip(rows_l, texts, sizes):
            out[r] = t if n <= self.passage_max_tokens else truncate_to_tokens(t, self.passage_max_tokens, count)
        return out

    # -- judging -------------------------------------------------------------------------------
    def judge(self, triples: Sequence[tuple[str, str, str]], stats: Stats | None = None) -> list[float]:
        """``P(a beats b)`` for each ``(query, a, b)`` (passage texts as given), through the LLM call cache;
        counts into ``stats``."""
        stats = stats if stats is not None else Stats()
        memo: dict[tuple[str, str, str], _Judgement] = {}
        self._judge_missing(list(dict.fromkeys(triples)), memo, stats)
        return [memo[t].p for t in triples]

    def _judge_missing(
        self, keys: list[tuple[str, str, str]], memo: dict[tuple[str, str, str], _Judgement], stats: Stats
    ) -> None:
        """Ask the LLM about every key not in ``memo`` (one batched call) and store the judgements."""
        keys = [k for k in dict.fromkeys(keys) if k not in memo]
        if not keys:
            return
        prompts: list[Prompt] = []
        for q, a, b in keys:
            prompts.append(self.prompt(q, a, b))
            if self.both_orders:
                prompts.append(self.prompt(q, b, a))
        first = self._first_wins(prompts, stats)  # P(first passage wins), None: unparseable
        step = 2 if self.both_orders else 1
        for n, key in enumerate(keys):
            p1 = first[step * n]
            unparseable = int(p1 is None)
            p1 = 0.5 if p1 is None else p1
            if not self.both_orders:
                memo[key] = _Judgement(p1, False, unparseable)
                continue
            p2 = first[step * n + 1]
            unparseable += int(p2 is None)
            p2 = 0.5 if p2 is None else 1.0 - p2  # a wins in the second order: b, first, loses
            inconsistent = (p1 - 0.5) * (p2 - 0.5) < 0
            tie = inconsistent and self.inconsistent == "tie"
            memo[key] = _Judgement(0.5 if tie else (p1 + p2) / 2, inconsistent, unparseable)

    def _first_wins(self, prompts: list[Prompt], stats: Stats) -> list[float | None]:
        client = self.client()
        if self.mode == "score":
            la, lb = self.continuations
            scores = client.score([p for p in prompts for _ in (0, 1)], [la, lb] * len(prompts), stats=stats)
            self._count_prompts(scores[0::2], stats)
            out: list[float | None] = []
            for i in range(len(prompts)):
                d = scores[2 * i + 1].logprob - scores[2 * i].logprob  # log P(B) - log P(A)
                out.append(None if math.isnan(d) else 1.0 / (1.0 + math.exp(min(d, 700.0))))
            return out
        params = GenerationParams(max_new_tokens=_GENERATE_TOKENS, stop=("\n",))
        answers = client.generate(prompts, params, stats=stats)
        self._count_prompts(answers, stats)
        labels = parse_labels(self.labels)
        got = [parse_label(c.text, labels) for c in answers]
        return [None if lab is None else (1.0 if lab == labels[0] else 0.0) for lab in got]

    @staticmethod
    def _count_prompts(responses: Sequence[Any], stats: Stats) -> None:
        """What the comparisons needed, whether the cache served it or the model ran it (the LLM layer's
        ``llm_calls`` / ``prompt_tokens`` count only what was paid)."""
        stats.add("prp_prompts", len(responses))
        stats.add("prp_prompt_tokens", sum(r.prompt_tokens for r in responses))

    # -- transform -----------------------------------------------------------------------------
    def transform(self, batch: Batch) -> Batch:
        if batch.doc_idx is None:
            raise StageError("prp: the batch has no candidates; put a retriever before it")
        self.validate()
        stats = batch.stats
        for key in _COUNTERS:
            stats.add(key, 0)  # present in every run's report, zero or not
        n, width = batch.doc_idx.shape
        depth = min(self.depth, width)
        corpus = batch.corpus
        heads = [[int(i) for i in batch.doc_idx[r, :depth] if i >= 0] for r in range(n)]
        valid = (batch.doc_idx >= 0).sum(axis=1)
        stats.add("prp_short_lists", int((valid < self.depth).sum()))
        stats.add("prp_reranked", sum(len(h) for h in heads))
        with stats.timer("prp"):
            texts = self.passage_texts(corpus, {i for h in heads for i in h})
            qtexts = batch.queries.texts
            todo = [r for r in range(n) if len(heads[r]) >= 2]
            rankers = [make_ranker(self.method, len(heads[r]), self.top_k, self.sort) for r in todo]
            memo: dict[tuple[str, str, str], _Judgement] = {}

            def compare(flat: list[tuple[int, int, int]]) -> list[float]:
                asked = []
                for k, i, j in flat:  # the pair in its input order (i < j): one prompt set per pair
                    r = todo[k]
                    lo, hi = (i, j) if i < j else (j, i)
                    asked.append(((qtexts[r], texts[heads[r][lo]], texts[heads[r][hi]]), i > j))
                self._judge_missing([key for key, _ in asked], memo, stats)
                stats.add("prp_rounds", 1)
                out = []
                for key, flipped in asked:
                    jd = memo[key]
                    stats.add("prp_comparisons", 1)
                    stats.add("prp_inconsistent", int(jd.inconsistent))
                    stats.add("prp_unparseable", jd.unparseable)
                    out.append(1.0 - jd.p if flipped else jd.p)
                return out

            ranked = drive_many(rankers, compare)
        orders: list[list[int]] = [list(range(len(h))) for h in heads]
        for r, res in zip(todo, ranked):
            orders[r] = res.order
        head_idx = np.full((n, depth), -1, np.int64)
        head_scores = np.full((n, depth), -np.inf, np.float32)
        for r, (h, order) in enumerate(zip(heads, orders)):
            m = len(h)
            head_idx[r, :m] = [h[o] for o in order]
            head_scores[r, :m] = np.arange(m, 0, -1, dtype=np.float32)
        if width == depth:
            return batch.with_candidates(head_idx, head_scores, corpus)
        idx, scores = splice_head(head_idx, head_scores, batch.doc_idx[:, depth:], batch.scores[:, depth:])
        return batch.with_candidates(idx, scores, corpus)
