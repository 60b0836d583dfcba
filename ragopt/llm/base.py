"""The LLM protocol every LLM-using stage shares (generators, PRP reranking, LLM judges, BlockRank).

Notation:

* a **prompt** is plain text (``str``) or a chat: a list of messages ``{"role": "system"|"user"|"assistant",
  "content": str}``. Backends apply the model's chat template to chats; plain text goes to the model as is.
* :class:`GenerationParams`: decoding parameters (``max_new_tokens``, ``temperature``, ``top_p``, ``seed``,
  ``stop``). Greedy (``temperature == 0``) by default. Decoding is *deterministic* when greedy or seeded;
  only deterministic calls are cached (:mod:`ragopt.llm.cache`).
* :meth:`LLMBackend.generate` ``(prompts, params) -> list[Completion]``: one completion per prompt, with the
  prompt's and the completion's token counts.
* :meth:`LLMBackend.score` ``(prompts, continuations) -> list[ContinuationScore]``: for row ``i``, the
  log-probability of ``continuations[i]`` as the next tokens after ``prompts[i]`` (per token and summed),
  e.g. the labels ``"A"``/``"B"`` of a pairwise (PRP) prompt. Needs ``supports_logprobs``.
* :meth:`LLMBackend.fingerprint`: identifies the model exactly (weights' sha256 / content fingerprint and
  dtype for local models, endpoint + model name for HTTP; never a key): the cache key of its calls.

Backends are :class:`~ragopt.config.Component` s registered under short names (``transformers``, ``openai``,
``llama_cpp``, and the test double ``scripted``); heavy packages are imported inside their methods.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ragopt.config import Component, canonical_json
from ragopt.errors import ConfigError, LLMError, StageError
from ragopt.store import ArtifactStore

__all__ = [
    "Message",
    "Prompt",
    "GenerationParams",
    "Completion",
    "ContinuationScore",
    "LLMBackend",
    "check_prompts",
    "prompt_text",
    "apply_stop",
    "ROLES",
    "STOP_RULE",
]

Message = dict[str, str]
Prompt = str | list[Message]
ROLES = ("system", "user", "assistant")
#: how stop strings cut a completion (part of the cache key of calls with stops): after leading whitespace
STOP_RULE = "after-leading-space"


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters of one :meth:`LLMBackend.generate` call (greedy by default).

    ``temperature == 0`` is greedy decoding and ignores ``top_p`` and ``seed``. With ``temperature > 0``
    tokens are sampled; a ``seed`` makes the sample reproducible (and cacheable), no seed makes the call
    non-deterministic: it is never served from or written to the cache. ``stop`` strings end the completion
    and are not part of its text; whitespace the completion starts with does not end it (a model that opens its
    answer with a newline is not cut to an empty answer: see :func:`apply_stop`)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be an integer >= 1, got {self.max_new_tokens!r}")
        if (
            not isinstance(self.temperature, (int, float))
            or not math.isfinite(self.temperature)
            or self.temperature < 0
        ):
            raise ConfigError("temperature", f"must be a number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ConfigError("seed", f"must be an integer or null, got {self.seed!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError("stop", f"must be a list of non-empty strings, got {list(self.stop)!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def deterministic(self) -> bool:
        """Greedy, or sampled with a seed: the same prompt gives the same completion (cacheable)."""
        return self.greedy or self.seed is not None

    def to_dict(self) -> dict[str, Any]:
        """Canonical form (the cache key of the decoding): sampling fields are dropped when greedy."""
        d: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": float(self.temperature),
            "stop": list(self.stop),
        }
        if self.stop:  # stops apply after the completion's leading whitespace (not the cut of format 1)
            d["stop_rule"] = STOP_RULE
        if not self.greedy:
            d.update(top_p=float(self.top_p), seed=self.seed)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> GenerationParams:
        d = dict(d or {})
        d.pop("stop_rule", None)  # derived from ``stop`` (see to_dict)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(unknown[0], f"unknown decoding parameter (known: {', '.join(sorted(names))})")
        if "stop" in d:
            d["stop"] = () if d["stop"] is None else tuple([d["stop"]] if isinstance(d["stop"], str) else d["stop"])
        return cls(**d)


def _response_dict(response: Any) -> dict[str, Any]:
    """A response's fields as JSON values (tuples as lists), without ``cached``: it says where the response came
    from, not what it is."""
    out = {f.name: getattr(response, f.name) for f in dataclasses.fields(response) if f.name != "cached"}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class Completion:
    """One generated completion. ``finish_reason``: ``"stop"`` (end of turn or a stop string) or ``"length"``
    (``max_new_tokens`` reached). ``cached``: served from the LLM cache (no tokens paid)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _response_dict(self)


@dataclass(frozen=True)
class ContinuationScore:
    """Log-probability (natural log) of a continuation after a prompt: per token and summed (``logprob``).

    ``completion_tokens`` counts the tokens processed beyond the prompt (the continuation's tokens for a
    local model, the one token the server generated for an HTTP one). ``exact`` is False when an HTTP
    endpoint did not list the continuation among its top logprobs: ``logprob`` is then an upper bound (the
    lowest listed logprob)."""

    tokens: tuple[str, ...]
    token_logprobs: tuple[float, ...]
    logprob: float
    prompt_tokens: int
    completion_tokens: int
    exact: bool = True
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _response_dict(self)


def check_prompts(prompts: Sequence[Prompt], where: str = "prompts") -> list[Prompt]:
    """Validate a batch of prompts (text or chats); raise :class:`StageError` naming the bad one."""
    if isinstance(prompts, (str, dict)):
        raise StageError(f"{where}: expected a list of prompts, got a single {type(prompts).__name__}")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            out.append(p)
            continue
        if not isinstance(p, (list, tuple)) or not p:
            raise StageError(
                f"{where}[{i}]: a prompt is a string or a non-empty list of chat messages, got {type(p).__name__}"
            )
        for j, m in enumerate(p):
            if not isinstance(m, Mapping) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
                raise StageError(
                    f"{where}[{i}][{j}]: a chat message is a mapping with exactly 'role' and 'content', got {m!r}"[:300]
                )
            if m["role"] not in ROLES:
                raise StageError(f"{where}[{i}][{j}]: role {m['role']!r} is not one of {list(ROLES)}")
            if not isinstance(m["content"], str):
                raise StageError(f"{where}[{i}][{j}]: content must be a string, got {type(m['content']).__name__}")
        out.append([{"role": m["role"], "content": m["content"]} for m in p])
    return out


def prompt_text(prompt: Prompt) -> str:
    """A plain rendering of a prompt (chats as ``role: content`` lines) for test doubles and messages."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string after its leading whitespace: ``(text, stopped)``.

    A stop string inside the whitespace a completion starts with does not count: with ``stop=("\n",)`` the
    completion ``" \nParis\nQ:"`` is ``" \nParis"``, not ``""`` (small models often open with a newline)."""
    start = len(text) - len(text.lstrip())
    cut = min((i for i in (text.find(s, start) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class LLMBackend(Component):
    """Base class of LLM backends (see the module docstring for the protocol).

    Subclasses implement :meth:`generate`, :meth:`fingerprint` and, when they can, :meth:`score`
    (then ``supports_logprobs`` is True). Runtime state (loaded model, HTTP client, artifact store) lives in
    private attributes declared in :meth:`_init_runtime`, never in config fields."""

    #: chunk of prompts the cache hands to the backend at once (and commits after)
    chunk_size: ClassVar[int] = 64

    @property
    def supports_logprobs(self) -> bool:
        return False

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams | None = None) -> list[Completion]:
        raise NotImplementedError(f"{type(self).__name__}.generate")

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[ContinuationScore]:
        raise LLMError(
            f"{self.describe()}: this backend cannot score continuations (no logprobs); "
            "use generation mode (generate the label and parse it)"
        )

    def fingerprint(self) -> str:
        raise NotImplementedError(f"{type(self).__name__}.fingerprint")

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of plain texts (exact where the backend has the tokenizer; else ~4 chars a token)."""
        return [max(1, math.ceil(len(t) / 4)) if t else 0 for t in texts]

    def describe(self) -> str:
        """Short human name of the model for messages (no secrets)."""
        return f"{self.type_name} model {getattr(self, 'model', '?')!r}"

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._artifact_store: Any = None

    def use_store(self, store: Any) -> LLMBackend:
        """Artifact store for converted/assembled weights (default: ``ArtifactStore()``)."""
        self._artifact_store = store
        return self

    @property
    def has_store(self) -> bool:
        """Whether a store was given (:meth:`use_store`) or made already."""
        return self._artifact_store is not None

    def artifact_store(self) -> Any:
        """The artifact store of this backend (the default ``ArtifactStore()`` unless one was given)."""
        if self._artifact_store is None:
            self._artifact_store = ArtifactStore()
        return self._artifact_store

    @staticmethod
    def _check_score_args(prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[Prompt]:
        prompts = check_prompts(prompts)
        if isinstance(continuations, str) or len(continuations) != len(prompts):
            raise StageError(
                f"score: expected one continuation per prompt ({len(prompts)}), got "
                f"{1 if isinstance(continuations, str) else len(continuations)}"
            )
        for i, c in enumerate(continuations):
            if not isinstance(c, str) or not c:
                raise StageError(f"continuations[{i}]: must be a non-empty string, got {c!r}")
        return prompts


def prompt_key(prompt: Prompt) -> str:
    """Canonical JSON of a prompt (the exact text, or the messages): hashed into cache keys."""
    return canonical_json(prompt)
