"""The LLM layer: one protocol (:mod:`ragopt.llm.base`), backends registered under short names
(``transformers``, ``openai``, ``llama_cpp``, and the test double ``scripted``), packaged offline models
(:mod:`ragopt.llm.models`) and the persistent call cache every LLM-using stage goes through
(:mod:`ragopt.llm.cache`). Importing this package imports no torch, transformers or openai."""

from ragopt.config import from_config
from ragopt.errors import ConfigError
from ragopt.llm.base import Completion, ContinuationScore, GenerationParams, LLMBackend, Message, Prompt, check_prompts
from ragopt.llm.cache import CachedLLM, LLMCallCache
from ragopt.llm.models import ALIASES, PACKAGED, packaged_gguf, resolve_llm

__all__ = [
    "Completion",
    "ContinuationScore",
    "GenerationParams",
    "LLMBackend",
    "Message",
    "Prompt",
    "check_prompts",
    "CachedLLM",
    "LLMCallCache",
    "ALIASES",
    "PACKAGED",
    "packaged_gguf",
    "resolve_llm",
    "load_backend",
]


def load_backend(cfg: dict | LLMBackend) -> LLMBackend:
    """An LLM backend from its config mapping (``{"type": "transformers", "model": ...}``) or as is."""
    backend = from_config(cfg)
    if not isinstance(backend, LLMBackend):
        raise ConfigError("type", f"{backend.type_name!r} is not an LLM backend")
    return backend
