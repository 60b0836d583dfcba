"""What every LLM-using stage shares (the ``generate`` stage, PRP reranking, ...): the ``llm`` and ``cache``
parameters, a fitted state holding the artifact store whose root keeps the LLM call cache, the
:class:`~ragopt.llm.cache.CachedLLM` client every call goes through, and a stage-output key that names the
model's fingerprint and the prompt template's version. Plus :func:`truncate_to_tokens`, for passages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ragopt.config import param
from ragopt.llm.base import LLMBackend
from ragopt.llm.cache import CachedLLM
from ragopt.llm.transformers_backend import TransformersLLM
from ragopt.pipeline import Fitted, Stage
from ragopt.store import ArtifactStore
from ragopt.types import Corpus

__all__ = ["LLMStage", "LLMFitted", "default_llm", "truncate_to_tokens"]


def default_llm() -> LLMBackend:
    """The packaged SmolLM2-135M-Instruct on the transformers backend (offline, small, fast)."""
    return TransformersLLM(model="smollm2-135m-instruct")


@dataclass(eq=False)
class LLMFitted(Fitted):
    """A fitted LLM stage: the corpus and the artifact store whose root holds the LLM call cache."""

    store: Any = None


class LLMStage(Stage):
    """Base class of stages that call an LLM: subclasses build prompts and call :meth:`client`."""

    #: bumped by a subclass when its built-in prompts change (part of its output key)
    template_version: ClassVar[int] = 1

    llm: LLMBackend = param(default_factory=default_llm, doc="the LLM backend (transformers, openai, llama_cpp, ...)")
    cache: bool = param(True, doc="use the persistent LLM call cache (the artifact store's llm-calls/)")

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._llm_client: CachedLLM | None = None

    def fit(self, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None) -> Stage:
        self._fit = LLMFitted(corpus, store=store if store is not None else ArtifactStore())
        self._llm_client = None
        return self

    def client(self) -> CachedLLM:
        """The LLM behind the persistent call cache of the fitted store (the default store if unfitted)."""
        if self._llm_client is None:
            store = self._fit.store if isinstance(self._fit, LLMFitted) else ArtifactStore()
            self._llm_client = CachedLLM(self.llm, store=store, cache=self.cache)
        return self._llm_client

    def cache_spec(self) -> dict[str, Any] | None:
        spec = super().cache_spec()
        if spec is not None:
            spec["llm_fingerprint"] = self.llm.fingerprint()
            spec["template_version"] = self.template_version
        return spec


def truncate_to_tokens(text: str, max_tokens: int, count: Callable[[Sequence[str]], list[int]]) -> str:
    """``text`` cut at a word boundary to at most ``max_tokens`` tokens (by ``count``, a batch token counter)."""
    if count([text])[0] <= max_tokens:
        return text
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # the longest word prefix that fits
        mid = (lo + hi + 1) // 2
        if count([" ".join(words[:mid])])[0] <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])
