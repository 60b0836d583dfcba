"""LLM-judged RAG metrics: answer correctness (against the gold answers), faithfulness (the answer is
supported by the packed context) and answer relevance (the answer addresses the question).

The judge is any LLM backend. Each judgement is one Yes/No question with a versioned prompt
(:data:`JUDGE_PROMPT_VERSION`, part of every judgement's cache key through the prompt text); it goes through
the persistent LLM call cache, so a judgement asked before (same judge model, prompt, answer) is free.

* ``mode="score"`` (default where the backend has logprobs): the verdict is ``P(Yes) > P(No)`` from the
  log-probabilities of the two labels as the reply's first token; ``confidence`` keeps ``P(Yes)``.
* ``mode="generate"``: the judge writes its reply; a reply starting with yes/no (any case, punctuation
  ignored) is the verdict, anything else is *unparseable*: counted, and the query is skipped for that metric.

Reports give the mean verdict with a percentile-bootstrap confidence interval and the number of judged
samples (:class:`JudgedResult`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragopt.errors import ConfigError, DataError
from ragopt.evaluation.answers import bootstrap_ci
from ragopt.llm.base import GenerationParams, LLMBackend
from ragopt.llm.cache import CachedLLM
from ragopt.types import Stats

__all__ = [
    "JUDGE_METRICS",
    "JUDGE_PROMPT_VERSION",
    "LLMJudge",
    "JudgedResult",
    "is_judge_metric",
    "judge_metric",
    "evaluate_judged",
]

JUDGE_PROMPT_VERSION = 1
_SYSTEM = "You are a strict grader. Reply with one word: Yes or No."
_PROMPTS = {
    "judge_correctness": (
        "Question: {question}\nGold answer(s): {gold}\nProposed answer: {answer}\n\n"
        "Does the proposed answer give the same answer as one of the gold answers? Yes or No?"
    ),
    "faithfulness": (
        "Context:\n{context}\n\nAnswer: {answer}\n\n"
        "Is everything the answer states supported by the context? Yes or No?"
    ),
    "answer_relevance": "Question: {question}\nAnswer: {answer}\n\nDoes the answer address the question? Yes or No?",
}
#: metric -> what it needs besides the answer (``answers``: gold answers, ``context``: the packed passages)
JUDGE_METRICS: dict[str, frozenset[str]] = {
    "judge_correctness": frozenset({"answers", "question"}),
    "faithfulness": frozenset({"context"}),
    "answer_relevance": frozenset({"question"}),
}
_ALIASES = {
    "judge_correctness": "judge_correctness",
    "judged_correctness": "judge_correctness",
    "correctness": "judge_correctness",
    "faithfulness": "faithfulness",
    "answer_relevance": "answer_relevance",
    "relevance": "answer_relevance",
}
_YES = re.compile(r"^\W*(yes|no)\b", re.I)


def is_judge_metric(name: str) -> bool:
    return str(name).strip().lower().replace("-", "_") in _ALIASES


def judge_metric(name: str) -> str:
    """The canonical name of a judged metric (aliases: correctness, judged_correctness, relevance)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in _ALIASES:
        raise ConfigError("metrics", f"unknown judged metric {name!r} (judged: {', '.join(JUDGE_METRICS)})")
    return _ALIASES[key]


@dataclass
class JudgedResult:
    """Mean verdicts (``metrics``), per-query verdicts (1/0), bootstrap intervals ``ci[metric] = (lo, hi)``,
    the number of judged samples, and the unparseable replies (generation mode) per metric."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    ci: dict[str, tuple[float, float]]
    n_judged: dict[str, int]
    unparseable: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    confidence: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "ci95": {k: list(v) for k, v in self.ci.items()},
            "n_judged": self.n_judged,
            "unparseable": self.unparseable,
            "n_skipped": {k: len(v) for k, v in self.skipped.items()},
            "judge_prompt_version": JUDGE_PROMPT_VERSION,
        }


class LLMJudge:
    """Yes/No judgements by ``llm`` (a backend, or a :class:`CachedLLM`), in ``mode`` ``auto`` (score where
    the backend gives logprobs, else generate), ``score`` or ``generate``."""

    def __init__(self, llm: LLMBackend | CachedLLM, mode: str = "auto", store: Any = None, cache: bool = True):
        self.client = llm if isinstance(llm, CachedLLM) else CachedLLM(llm, store=store, cache=cache)
        if mode not in ("auto", "score", "generate"):
            raise ConfigError("judge.mode", f"must be auto, score or generate, got {mode!r}")
        if mode == "score" and not self.client.supports_logprobs:
            raise ConfigError("judge.mode", f"{self.client.backend.describe()} gives no logprobs; use mode generate")
        self.mode = (
            "score" if mode == "auto" and self.client.supports_logprobs else ("generate" if mode == "auto" else mode)
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.client.backend.describe(),
            "fingerprint": self.client.fingerprint(),
            "mode": self.mode,
            "prompt_version": JUDGE_PROMPT_VERSION,
        }

    @staticmethod
    def prompt(metric: str, **fields: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": _PROMPTS[judge_metric(metric)].format(**fields)},
        ]

    def judge(
        self, prompts: Sequence[list[dict[str, str]]], stats: Stats | None = None
    ) -> list[tuple[float | None, float | None]]:
        """``(verdict 1/0 or None when unparseable, P(Yes) or None)`` per prompt."""
        if self.mode == "score":
            n = len(prompts)  # both labels in one call: a backend can score them in one pass over each prompt
            both = self.client.score([*prompts, *prompts], ["Yes"] * n + ["No"] * n, stats=stats)
            ys, ns = both[:n], both[n:]
            out = []
            for y, n in zip(ys, ns):
                m = max(y.logprob, n.logprob)
                p = math.exp(y.logprob - m) / (math.exp(y.logprob - m) + math.exp(n.logprob - m))
                out.append((1.0 if p > 0.5 else 0.0, p))
            return out
        comps = self.client.generate(list(prompts), GenerationParams(max_new_tokens=3), stats=stats)
        out = []
        for c in comps:
            m = _YES.match(c.text)
            out.append(((1.0 if m.group(1).lower() == "yes" else 0.0) if m else None, None))
        return out


def evaluate_judged(
    judge: LLMJudge,
    metrics: Sequence[str],
    predictions: Mapping[str, str],
    questions: Mapping[str, str],
    golds: Mapping[str, Sequence[str]] | None = None,
    contexts: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    stats: Stats | None = None,
    seed: int = 0,
) -> JudgedResult:
    """Judge every predicted query with each metric; queries missing what a metric needs are skipped."""
    names = list(dict.fromkeys(judge_metric(m) for m in metrics))
    have = {"answers": bool(golds), "context": contexts is not None, "question": bool(questions)}
    for m in names:
        missing = [n for n in sorted(JUDGE_METRICS[m]) if not have[n]]
        if missing:
            raise DataError(f"metric {m!r} needs {' and '.join(missing)}, which this evaluation does not have")
    golds, contexts = golds or {}, contexts or {}
    res = JudgedResult({}, {}, {}, {})
    for m in names:
        qids, prompts, skip = [], [], []
        for q, answer in predictions.items():
            gold = golds.get(q)
            if "answers" in JUDGE_METRICS[m] and not gold:
                skip.append(q)
                continue
            ctx = "\n".join(f"[{j + 1}] {t}" for j, (_, t) in enumerate(contexts.get(q, ())))
            if "context" in JUDGE_METRICS[m] and not ctx:
                skip.append(q)
                continue
            qids.append(q)
            prompts.append(
                judge.prompt(
                    m,
                    question=questions.get(q, ""),
                    answer=answer or "(no answer)",
                    gold=" | ".join(gold or []),
                    context=ctx,
                )
            )
        verdicts = judge.judge(prompts, stats) if prompts else []
        values = {q: v for q, (v, _) in zip(qids, verdicts) if v is not None}
        res.unparseable[m] = sum(v is None for v, _ in verdicts)
        res.confidence[m] = {q: p for q, (_, p) in zip(qids, verdicts) if p is not None}
        res.skipped[m] = skip
        if not values:
            raise DataError(
                f"metric {m!r}: no query could be judged ({len(skip)} skipped, "
                f"{res.unparseable[m]} unparseable replies)"
            )
        mean, lo, hi = bootstrap_ci(values, seed=seed)
        res.per_query[m], res.metrics[m], res.ci[m], res.n_judged[m] = values, mean, (lo, hi), len(values)
    return res
