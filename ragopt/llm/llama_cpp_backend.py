"""``llama_cpp``: a GGUF model run in-process by llama.cpp (``pip install llama-cpp-python``; optional, not in CI).

``model`` is a packaged alias (:mod:`ragopt.llm.models`) or a ``.gguf`` file. Chats are rendered with the GGUF's
own chat template (as ``create_chat_completion`` does) and generated as text, one prompt at a time, streamed so
that stop strings are read as :func:`~ragopt.llm.base.apply_stop` reads them. :meth:`score` reads the
continuation's logprobs from next-token logits, token by token; llama.cpp keeps the KV cache of what it read last,
so a prompt that shares a head with the previous one (the same prompt with another label, or the next PRP
comparison of the same query) only pays for the new tokens. The fingerprint is the GGUF's sha256 (and ``n_ctx``).
Quantised weights are computed as llama.cpp computes them (not dequantised to float32 as the transformers backend
does), so scores differ from that backend's in the last digits. Tested in the suite when llama-cpp-python is
installed (it compiles llama.cpp, so it is not a dependency of ragopt).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ragopt._imports import require
from ragopt.config import param
from ragopt.errors import ConfigError, LLMError, RagoptError, first_line
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

_MODELS: dict[tuple[Any, ...], Any] = {}
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
    n_threads: int | None = param(
        None, doc="CPU threads for generation and prompt processing (None: llama.cpp's defaults)", ge=1
    )
    n_gpu_layers: int = param(0, doc="layers offloaded to the GPU (-1: all)", ge=-1)
    prefix_cache: bool = param(
        True,
        doc="score: reuse the KV cache of the head a prompt shares with the previous one (false: read every "
        "prompt from its first token; for measuring what the reuse saves)",
    )
    mmap: bool = param(
        True,
        doc="memory-map the GGUF (llama.cpp's default); false reads it into memory, which keeps a host that "
        "reclaims page cache eagerly (some VMs) from re-reading weights from disk at every token",
    )

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
        self._chat_formatter: Any = None

    def _resolved(self) -> Any:
        if self._resolved_llm is None:
            self._resolved_llm = resolve_llm(self.model, store=self.artifact_store(), verify=True)
        return self._resolved_llm

    def load(self) -> Any:
        if self._llm is not None:
            return self._llm
        llama_cpp = _require_llama_cpp()
        res = self._resolved()
        key = (res.identity, self.n_ctx, self.n_gpu_layers, self.n_threads, self.mmap)
        with _LOCK:
            if key not in _MODELS:
                try:
                    _MODELS[key] = llama_cpp.Llama(
                        model_path=str(res.gguf_path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        # prompt processing too: llama.cpp's default for it is every core, whatever n_threads says
                        n_threads_batch=self.n_threads,
                        n_gpu_layers=self.n_gpu_layers,
                        use_mmap=self.mmap,
                        logits_all=False,
                        verbose=False,
                    )
                except RagoptError:
                    raise
                except Exception as e:
                    raise LLMError(f"cannot load {self.describe()} from {res.gguf_path}: {first_line(e)}") from e
        self._llm = _MODELS[key]
        return self._llm

    def render(self, prompt: Prompt) -> str:
        """The text the model reads: a chat through the GGUF's own chat template (with the assistant turn
        opened, as ``create_chat_completion`` does), plain text as it is."""
        if isinstance(prompt, str):
            return prompt
        if self._chat_formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            llm = self.load()
            template = llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise LLMError(f"{self.describe()}: the GGUF has no chat template; send plain-text prompts")

            def token(key: str) -> str:
                tid = llm.metadata.get(key)
                return llm.detokenize([int(tid)], special=True).decode("utf-8", "replace") if tid else ""

            self._chat_formatter = Jinja2ChatFormatter(
                template, token("tokenizer.ggml.eos_token_id"), token("tokenizer.ggml.bos_token_id")
            )
        return self._chat_formatter(messages=list(prompt)).prompt

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt as the model reads it (BOS added where the model wants one)."""
        llm = self.load()
        return list(llm.tokenize(self.render(prompt).encode("utf-8"), add_bos=True, special=True))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        llm = self.load()
        return [len(llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)) for t in texts]

    def _prefill(self, ids: list[int]) -> Any:
        """Evaluate ``ids``, reusing the KV cache of the longest prefix shared with what the model last read
        (so scoring two labels, or both orders of a pair that share a head, reads the shared part once), and
        return the next-token logits after the last id."""
        import numpy as np

        llm = self.load()
        import llama_cpp

        have = llm.n_tokens if self.prefix_cache else 0
        same = 0
        if have:
            prev = llm.input_ids[:have]
            lim = min(have, len(ids) - 1)  # always evaluate at least the last id: its logits are the ones read
            while same < lim and prev[same] == ids[same]:
                same += 1
        llm.n_tokens = same  # eval() drops the KV cache beyond n_tokens
        llm.eval(ids[same:])
        logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).astype(np.float64)

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams | None = None) -> list[Completion]:
        params = params or GenerationParams()
        prompts = check_prompts(prompts)
        llm = self.load()
        kw: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "temperature": float(params.temperature),
            "top_p": float(params.top_p) if not params.greedy else 1.0,
            "top_k": 0 if not params.greedy else 40,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "stream": True,  # stops are read here, as apply_stop reads them (not inside leading whitespace)
        }
        if not params.greedy:
            kw["seed"] = params.seed
        out = []
        for p in prompts:
            ids = self.encode(p)
            if len(ids) + params.max_new_tokens > self.n_ctx:
                raise LLMError(
                    f"{self.describe()}: prompt has {len(ids)} tokens (+{params.max_new_tokens} to generate), "
                    f"more than n_ctx {self.n_ctx}"
                )
            text, n, finish, stopped = "", 0, "length", False
            try:
                for chunk in llm.create_completion(ids, **kw):
                    choice = chunk["choices"][0]
                    text += choice.get("text") or ""
                    if choice.get("finish_reason"):  # the last chunk: no new token
                        finish = str(choice["finish_reason"])
                    else:
                        n += 1
                    if params.stop:
                        text, stopped = apply_stop(text, params.stop)
                        if stopped:
                            finish = "stop"
                            break
            except (RuntimeError, ValueError) as e:
                raise LLMError(f"{self.describe()}: generation failed: {e}") from e
            out.append(Completion(text, len(ids), n, finish))
        return out

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[ContinuationScore]:
        import numpy as np

        prompts = self._check_score_args(prompts, continuations)
        llm = self.load()
        out = []
        for p, c in zip(prompts, continuations):
            p_ids = self.encode(p)
            c_ids = list(llm.tokenize(c.encode("utf-8"), add_bos=False, special=False))
            if not c_ids:
                raise LLMError(f"{self.describe()}: continuation {c!r} has no tokens")
            if len(p_ids) + len(c_ids) > self.n_ctx:
                raise LLMError(f"{self.describe()}: prompt + continuation exceed n_ctx {self.n_ctx}")
            vals = []
            for j, t in enumerate(c_ids):  # the logits before continuation token j
                logits = self._prefill(p_ids + c_ids[:j])
                vals.append(float(logits[t] - np.logaddexp.reduce(logits)))
            toks = tuple(llm.detokenize([t]).decode("utf-8", "replace") for t in c_ids)
            out.append(ContinuationScore(toks, tuple(vals), float(sum(vals)), len(p_ids), len(c_ids)))
        return out
