"""The ``rewrite`` stage: an LLM turns each query into what a retriever should look for, before the retriever runs
(query rewriting for retrieval, in the spirit of AdaCQR, Lai et al. 2024, and of Ma et al., "Query Rewriting for
Retrieval-Augmented Large Language Models", 2023).

Tool retrieval is the case in point: a user's task ("book me a table for two in Rome tomorrow") shares few words
with the description of the tool it needs ("Restaurant reservation API: ..."). The built-in ``capability`` template
asks for the capability the task needs, in one short line; ``keywords`` asks for search keywords; a user template
is a text with ``{query}`` and no other field. With ``mode: append`` (the default, safer for lexical retrievers) the
new query text is ``original + " " + rewrite``; with ``mode: replace`` it is the rewrite alone.

Decoding is greedy and stops at the first newline. The answer is cleaned: its first non-empty line, without a
leading label (``Capability:``, ``Keywords:`` ...), wrapping quotes or markdown, or a final period. An empty
rewrite leaves the query as it was (counted as ``rewrite_empty``).

The output batch has the same query ids, the new texts, the same :class:`~ragopt.types.Stats` and no candidates:
the stage runs before any retriever (a pipeline that puts it after one fails its check). Every prompt goes through
the persistent LLM call cache (:class:`ragopt.llm.CachedLLM`), so a query rewritten before costs nothing; the
stage-output cache stores nothing for this stage (``cache_outputs = False``, as for ``generate``) but chains its
key, so the retrievers after it are cached per rewrite configuration. Counters: ``rewrite_queries`` (queries rewritten),
``rewrite_empty`` (of those, the ones left as they were) and the LLM's ``llm_calls``, ``llm_cache_hits``, ``prompt_tokens``, ``completion_tokens``;
seconds under ``rewrite``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from ragopt.config import param
from ragopt.errors import StageError, check_template_fields, unknown_template_error
from ragopt.llm.base import GenerationParams, Prompt
from ragopt.llm.stage import LLMStage, default_llm
from ragopt.registry import register
from ragopt.types import Batch, Queries, Stats

__all__ = [
    "QueryRewriter",
    "RewriteTemplate",
    "TEMPLATES",
    "TEMPLATE_VERSION",
    "resolve_template",
    "clean_rewrite",
    "default_llm",
]

#: bumped when a built-in template's wording or the clean-up changes (part of the stage's output key)
TEMPLATE_VERSION = 1
FIELDS = ("query",)


@dataclass(frozen=True)
class RewriteTemplate:
    """A system text (may be empty) and a user text with ``{query}``."""

    system: str
    user: str


_SYSTEM = "You help a search engine find the right tool for a user's task."
TEMPLATES: dict[str, RewriteTemplate] = {
    "capability": RewriteTemplate(
        _SYSTEM,
        "Task: {query}\n"
        "What capability or tool does this task need? Answer in one short line, "
        'such as "restaurant reservation", "send email" or "weather forecast".\n'
        "Capability:",
    ),
    "keywords": RewriteTemplate(
        _SYSTEM,
        "Task: {query}\nWrite a few search keywords for the tool this task needs, on one line.\nKeywords:",
    ),
}
_COUNTERS = ("rewrite_queries", "rewrite_empty", "llm_calls", "llm_cache_hits", "prompt_tokens", "completion_tokens")
# a leading label the model repeats ("Capability:", "Search keywords:", "Rewritten query:" ...)
_LABEL = re.compile(
    r"^\s*(?:(?:the\s+)?(?:capabilit(?:y|ies)|tools?|(?:search\s+)?keywords?|(?:rewritten\s+|search\s+)?query|"
    r"rewrite|answer|short\s+answer)(?:\s+needed)?)\s*:\s*",
    re.I,
)
_WRAP = "\"'`*_ \t"


def resolve_template(template: str, system: str | None = None, path: str = "template") -> RewriteTemplate:
    """A built-in template by name (``system`` replacing its system text when given), or a user template: a text
    with ``{query}`` and no other field. Otherwise a :class:`ConfigError` naming ``path``."""
    if template in TEMPLATES:
        t = TEMPLATES[template]
        return RewriteTemplate(system, t.user) if system is not None else t
    if "{" not in template:
        raise unknown_template_error(path, template, TEMPLATES, "{query}")
    check_template_fields(path, template, FIELDS)
    return RewriteTemplate(system or "", template)


def clean_rewrite(text: str) -> str:
    """The rewrite in a completion: its first non-empty line without a leading label (``Capability:`` ...),
    wrapping quotes or markdown, or a final period; ``""`` when nothing is left."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    for _ in range(2):  # "**Capability:** send email" needs the markdown, then the label, then the markdown again
        line = _LABEL.sub("", line.strip(_WRAP))
    line = line.strip(_WRAP)
    if line.endswith(".") and not re.search(r"\b[A-Z]\.$", line):  # keep "U.S." style abbreviations
        line = line[:-1].rstrip(_WRAP)
    return line


@register("rewrite")
class QueryRewriter(LLMStage):
    """Rewrite each query with an LLM before retrieval: the capability or keywords it needs (see the module
    docstring)."""

    template_version: ClassVar[int] = TEMPLATE_VERSION

    requires: ClassVar[frozenset[str]] = frozenset({"queries"})
    provides: ClassVar[frozenset[str]] = frozenset()
    cache_ignore: ClassVar[tuple[str, ...]] = ("cache",)
    # the stage-output cache rebuilds a hit from the *input* queries and stores candidates only: a cached rewrite
    # would come back unrewritten. Repeats are served by the LLM call cache instead (as for ``generate``).
    cache_outputs: ClassVar[bool] = False

    template: str = param(
        "capability",
        doc="built-in (capability: the capability or tool the task needs, one short line; keywords: search "
        "keywords) or a text with {query} and no other field",
    )
    system: str | None = param(None, doc="system message (default: the built-in template's; none for a user text)")
    mode: Literal["replace", "append"] = param(
        "append",
        doc="append: the query becomes original + ' ' + rewrite (safer for lexical retrievers); replace: the "
        "rewrite alone",
    )
    max_new_tokens: int = param(32, doc="tokens generated at most per rewrite", ge=1)
    chat: bool = param(True, doc="send chat messages (the model's chat template); false: one plain-text prompt")

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        resolve_template(self.template, self.system, f"{at}template")

    def check(self, available: frozenset[str], where: str = "") -> frozenset[str]:
        late = sorted(available - {"queries"})
        if late:
            raise StageError(
                f"{where + ': ' if where else ''}stage 'rewrite' rewrites queries for the retriever, but its input "
                f"already has {late}; put it before the retriever"
            )
        return super().check(available, where)

    # -- prompts -------------------------------------------------------------------------------
    def prompt(self, query: str) -> Prompt:
        """The prompt asking for the rewrite of ``query``: chat messages, or plain text with ``chat: false``."""
        t = resolve_template(self.template, self.system)
        user = t.user.format(query=query)
        if self.chat:
            return ([{"role": "system", "content": t.system}] if t.system else []) + [{"role": "user", "content": user}]
        return f"{t.system}\n\n{user}" if t.system else user

    def rewrite(self, texts: list[str], stats: Stats) -> list[str]:
        """The cleaned rewrite of each query text (``""`` where the LLM gave nothing usable)."""
        params = GenerationParams(max_new_tokens=self.max_new_tokens, stop=("\n",))
        completions = self.client().generate([self.prompt(q) for q in texts], params, stats=stats)
        return [clean_rewrite(c.text) for c in completions]

    # -- transform -----------------------------------------------------------------------------
    def transform(self, batch: Batch) -> Batch:
        self.check(batch.fields)
        self.validate()
        stats = batch.stats
        for key in _COUNTERS:
            stats.add(key, 0)  # present in every run's report, zero or not
        queries = batch.queries
        for qid, text in zip(queries.ids, queries.texts):
            if not isinstance(text, str) or not text.strip():
                raise StageError(f"rewrite: query {qid!r} is empty; nothing to rewrite")
        if len(queries) == 0:
            return Batch(Queries([], []), batch.corpus, stats=stats)
        with stats.timer("rewrite"):
            rewrites = self.rewrite(list(queries.texts), stats)
        texts = []
        for original, new in zip(queries.texts, rewrites):
            if not new:
                stats.add("rewrite_empty")
                texts.append(original)
            else:
                texts.append(new if self.mode == "replace" else f"{original} {new}")
        stats.add("rewrite_queries", len(texts))
        return Batch(Queries(queries.ids, texts), batch.corpus, stats=stats)
