"""``scripted``: a deterministic TEST DOUBLE of an LLM backend, for unit tests only. Never a default.

It answers from rules, not from a model. A prompt is matched as its plain rendering
(:func:`ragopt.llm.base.prompt_text`: chats become ``role: content`` lines):

* ``rules``: ``[{match: <regex>, output: <text>}]``; the first rule whose regex is found in the prompt gives the
  completion (``output`` may use the match's groups, ``\\1`` or ``\\g<name>``); else ``default``.
* ``score_rules``: ``[{match: <regex>, continuation: <text>, logprob: <float>}]``; the first rule whose regex is
  found in the prompt and whose continuation equals the scored one gives the summed logprob (split evenly over
  its tokens); else ``default_logprob`` per token.
* ``fail_on``: a regex; a batch holding a matching prompt raises :class:`~ragopt.errors.LLMError` (to test that
  failed calls are not cached). ``delay_s`` sleeps per call (to test concurrency).

Tokens are words with their leading whitespace (``re.findall(r"\\s*\\S+")``). Every prompt the double
received is appended to ``calls`` (a list of ``(kind, prompt)``), so a test sees what reached the "model".
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from ragopt.config import config_hash, param
from ragopt.errors import ConfigError, LLMError
from ragopt.llm.base import (
    Completion,
    ContinuationScore,
    GenerationParams,
    LLMBackend,
    Prompt,
    apply_stop,
    check_prompts,
    prompt_text,
)
from ragopt.registry import register

__all__ = ["ScriptedLLM", "scripted_tokens"]

_TOKEN = re.compile(r"\s*\S+")


def scripted_tokens(text: str) -> list[str]:
    """The double's tokenisation: words with their leading whitespace."""
    return _TOKEN.findall(text)


@register("scripted")
class ScriptedLLM(LLMBackend):
    """TEST DOUBLE: a rule-based, deterministic stand-in for an LLM (unit tests; never a default)."""

    name: str = param("scripted", doc="model name reported and used in the fingerprint")
    rules: list[dict[str, Any]] = param(default_factory=list, doc="[{match: regex, output: text}], first match wins")
    default: str = param("", doc="completion when no rule matches")
    score_rules: list[dict[str, Any]] = param(
        default_factory=list, doc="[{match: regex, continuation: text, logprob: float}]"
    )
    default_logprob: float = param(-10.0, doc="logprob per token of a continuation no score rule covers", le=0)
    fail_on: str = param("", doc="regex: a batch with a matching prompt raises LLMError (tests)")
    delay_s: float = param(0.0, doc="seconds to sleep per call (tests)", ge=0)

    chunk_size = 64

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        for field, keys in (("rules", {"match", "output"}), ("score_rules", {"match", "continuation", "logprob"})):
            for i, rule in enumerate(getattr(self, field)):
                if set(rule) != keys:
                    raise ConfigError(f"{at}{field}[{i}]", f"expected keys {sorted(keys)}, got {sorted(rule)}")
                try:
                    re.compile(rule["match"])
                except (re.error, TypeError) as e:
                    raise ConfigError(f"{at}{field}[{i}].match", f"bad regex {rule['match']!r}: {e}") from None
        if self.fail_on:
            try:
                re.compile(self.fail_on)
            except re.error as e:
                raise ConfigError(f"{at}fail_on", f"bad regex {self.fail_on!r}: {e}") from None

    # -- protocol ------------------------------------------------------------------------------
    @property
    def supports_logprobs(self) -> bool:
        return True

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> list[tuple[str, Any]]:
        return self._calls

    def fingerprint(self) -> str:
        return f"scripted:{self.name}:{config_hash(self.to_config())}"

    def describe(self) -> str:
        return f"scripted model {self.name!r}"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(scripted_tokens(t)) for t in texts]

    def _enter(self, kind: str, prompts: list[Prompt]) -> list[str]:
        texts = [prompt_text(p) for p in prompts]
        with self._lock:
            self.calls.extend((kind, p) for p in prompts)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on:
            for i, t in enumerate(texts):
                if re.search(self.fail_on, t):
                    raise LLMError(f"{self.describe()}: scripted failure on prompt {i} (matches fail_on)")
        return texts

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams | None = None) -> list[Completion]:
        params = params or GenerationParams()
        prompts = check_prompts(prompts)
        out = []
        for text in self._enter("generate", prompts):
            output = self.default
            for rule in self.rules:
                m = re.search(rule["match"], text)
                if m:
                    output = m.expand(rule["output"])
                    break
            output, _ = apply_stop(output, params.stop)
            tokens, finish = scripted_tokens(output), "stop"
            if len(tokens) > params.max_new_tokens:
                output, finish = "".join(tokens[: params.max_new_tokens]), "length"
            out.append(Completion(output, len(scripted_tokens(text)), len(scripted_tokens(output)), finish))
        return out

    def continuation_logprob(self, text: str, continuation: str) -> tuple[list[str], list[float], bool]:
        tokens = scripted_tokens(continuation) or [continuation]
        for rule in self.score_rules:
            if rule["continuation"] == continuation and re.search(rule["match"], text):
                lp = float(rule["logprob"]) / len(tokens)
                return tokens, [lp] * len(tokens), True
        return tokens, [self.default_logprob] * len(tokens), False

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[ContinuationScore]:
        prompts = self._check_score_args(prompts, continuations)
        out = []
        for text, cont in zip(self._enter("score", prompts), continuations):
            tokens, lps, _ = self.continuation_logprob(text, cont)
            out.append(
                ContinuationScore(tuple(tokens), tuple(lps), float(sum(lps)), len(scripted_tokens(text)), len(tokens))
            )
        return out

    def next_token_logprobs(self, prompt: Prompt, k: int) -> list[tuple[str, float]]:
        """Top-``k`` single-token continuations the score rules give this prompt (for the test server)."""
        text = prompt_text(check_prompts([prompt])[0])
        seen: dict[str, float] = {}
        for rule in self.score_rules:
            c = rule["continuation"]
            if c not in seen and len(scripted_tokens(c)) == 1 and re.search(rule["match"], text):
                seen[c] = float(rule["logprob"])
        return sorted(seen.items(), key=lambda kv: -kv[1])[:k]
