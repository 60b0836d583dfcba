"""``llama_cpp``: a GGUF model run in-process by llama.cpp (``pip install llama-cpp-python``; optional, not in CI).

``model`` is a packaged alias (:mod:`ragopt.llm.models`) or a ``.gguf`` file. Chats go through
``create_chat_completion`` (the GGUF's chat template), plain text through ``create_completion``; one prompt at a
time. :meth:`score` evaluates prompt + continuation tokens and reads the continuation's logprobs from the logits
(the model is opened with ``logits_all=True``). The fingerprint is the GGUF's sha256 (and ``n_ctx``).

Only the missing-package error is exercised by the test suite; the calls follow llama-cpp-python 0.3's API.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ragopt._imports import require
from ragopt.config import param
from ragopt.errors import ConfigError, LLMError, RagoptError
from ragopt.llm.base import (
    Completion,
    ContinuationScore,
    GenerationParams,
    LLMBackend,
    Prompt,
    apply_stop,
    check_prompts,
)
from ragopt.llm.models import check_name, resolve_llm
from ragopt.registry import register

__all__ = ["LlamaCppLLM"]

_MODELS: dict[tuple[str, int, int], Any] = {}
_LOCK = threading.Lock()


def _require_llama_cpp() -> Any:
    # not an extra of ragopt: llama-cpp-python compiles llama.cpp at install time
    return require(
        "llama_cpp",
        "",
        "the llama_cpp LLM backend",
        install="pip install llama-cpp-python (ragopt does not install it: it compiles llama.cpp)",
    )


@register("llama_cpp")
class LlamaCppLLM(LLMBackend):
    """A GGUF model run by llama.cpp (llama-cpp-python), on the CPU or with offloaded GPU layers."""

    model: str = param(doc="packaged alias (e.g. smollm2-135m-instruct) or a .gguf file")
    n_ctx: int = param(4096, doc="context window in tokens; part of the fingerprint", ge=16)
    n_threads: int | None = param(None, doc="CPU threads (None: llama.cpp's default)", ge=1)
    n_gpu_layers: int = param(0, doc="layers offloaded to the GPU (-1: all)", ge=-1)

    chunk_size = 16

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        check_name(self.model, f"{at}model")
        if not self.model.lower().endswith(".gguf") and "/" in self.model:
            raise ConfigError(f"{at}model", "llama_cpp reads a packaged alias or a .gguf file, not a hub id or folder")

    @property
    def supports_logprobs(self) -> bool:
        return True

    def fingerprint(self) -> str:
        return f"llama_cpp:{self._resolved().identity}:n_ctx={self.n_ctx}"

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._resolved_llm: Any = None
        self._llm: Any = None

    def _resolved(self) -> Any:
        if self._resolved_llm is None:
            self._resolved_llm = resolve_llm(self.model, store=self.artifact_store(), verify=True)
        return self._resolved_llm

    def load(self) -> Any:
        if self._llm is not None:
            return self._llm
        llama_cpp = _require_llama_cpp()
        res = self._resolved()
        key = (res.identity, self.n_ctx, self.n_gpu_layers)
        with _LOCK:
            if key not in _MODELS:
                try:
                    _MODELS[key] = llama_cpp.Llama(
                        model_path=str(res.gguf_path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_gpu_layers=self.n_gpu_layers,
                        logits_all=True,
                        verbose=False,
                    )
                except RagoptError:
                    raise
                except Exception as e:
                    raise LLMError(
                        f"cannot load {self.describe()} from {res.gguf_path}: {type(e).__name__}: {e}"
                    ) from e
        self._llm = _MODELS[key]
        return self._llm

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        llm = self.load()
        return [len(llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)) for t in texts]

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams | None = None) -> list[Completion]:
        params = params or GenerationParams()
        prompts = check_prompts(prompts)
        llm = self.load()
        kw: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "temperature": float(params.temperature),
            "top_p": float(params.top_p) if not params.greedy else 1.0,
            "stop": list(params.stop) or None,
        }
        if not params.greedy:
            kw["seed"] = params.seed
        out = []
        for p in prompts:
            try:
                if isinstance(p, str):
                    r = llm.create_completion(p, **kw)
                    text = r["choices"][0]["text"]
                else:
                    r = llm.create_chat_completion(messages=p, **kw)
                    text = r["choices"][0]["message"]["content"] or ""
            except (RuntimeError, ValueError) as e:
                raise LLMError(f"{self.describe()}: generation failed: {e}") from e
            text, stopped = apply_stop(text, params.stop)
            usage = r.get("usage") or {}
            out.append(
                Completion(
                    text,
                    int(usage.get("prompt_tokens", 0)),
                    int(usage.get("completion_tokens", 0)),
                    "stop" if stopped else str(r["choices"][0].get("finish_reason") or "stop"),
                )
            )
        return out

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[ContinuationScore]:
        import numpy as np

        prompts = self._check_score_args(prompts, continuations)
        llm = self.load()
        out = []
        for p, c in zip(prompts, continuations):
            if not isinstance(p, str):
                raise LLMError(f"{self.describe()}: score takes plain-text prompts (render the chat first)")
            p_ids = llm.tokenize(p.encode("utf-8"), add_bos=True, special=True)
            c_ids = llm.tokenize(c.encode("utf-8"), add_bos=False, special=False)
            llm.reset()
            llm.eval(p_ids + c_ids[:-1])
            logits = np.asarray(llm.scores[len(p_ids) - 1 : len(p_ids) + len(c_ids) - 1], dtype=np.float64)
            logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
            vals = [float(logp[j, t]) for j, t in enumerate(c_ids)]
            toks = tuple(llm.detokenize([t]).decode("utf-8", "replace") for t in c_ids)
            out.append(ContinuationScore(toks, tuple(vals), float(sum(vals)), len(p_ids), len(c_ids)))
        return out
