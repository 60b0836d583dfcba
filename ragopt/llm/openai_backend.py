"""``openai``: any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...) through the
official ``openai`` client.

* ``mode: chat`` posts to ``/chat/completions`` (plain-text prompts become one user message); ``mode:
  completions`` posts plain text to ``/completions``. One request per prompt, at most ``concurrency`` in flight
  per backend object (a thread pool and a semaphore).
* Failures are retried with exponential backoff (``backoff_s * 2**attempt``, capped at ``backoff_max_s``, or
  at least the server's ``Retry-After``, within the cap), at most ``max_retries`` times, on: HTTP 429 and
  5xx, timeouts (``timeout_s`` per request), closed or refused connections, and malformed responses (not JSON,
  or JSON without choices). Other statuses (400, 401, 404 ...) fail at once. Every failure is an
  :class:`~ragopt.errors.LLMError` naming the endpoint, the model and what happened; responses of the same batch
  that completed ride along in ``LLMError.partial`` (the call cache keeps them).
* :meth:`score` needs the endpoint's logprobs (``logprobs: true``): it asks for the top ``top_logprobs``
  candidates of the first generated token (``max_tokens=1``, greedy) and reads each continuation there, so a
  continuation must be one token of the served model (``"A"``/``"B"`` labels). A continuation the endpoint did not
  list gets the lowest listed logprob as an upper bound (``exact=False``). An endpoint that returns no logprobs
  raises an LLMError saying to use generation mode.
* The API key is read from the environment variable named by ``api_key_env`` when the first request is made; it is
  never a config field, and it is never written to a cache, a log, a repr or an error message (messages are
  scrubbed of it). ``api_key_env: ""`` sends no key (local servers).
* ``fingerprint()`` = endpoint URL + mode + model name (+ a hash of ``extra_body``); the endpoint is trusted to
  serve the same weights under one name.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Literal
from urllib.parse import urlsplit

from ragopt._imports import require
from ragopt.config import canonical_json, config_hash, param
from ragopt.errors import ConfigError, LLMError, StageError
from ragopt.llm.base import (
    Completion,
    ContinuationScore,
    GenerationParams,
    LLMBackend,
    Prompt,
    apply_stop,
    check_prompts,
)
from ragopt.registry import register

__all__ = ["OpenAIBackend"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NO_KEY = "no-key"


def _require_openai() -> Any:
    return require("openai", "llm", "the openai LLM backend")


@register("openai")
class OpenAIBackend(LLMBackend):
    """An OpenAI-compatible chat/completions endpoint (API key from the environment variable ``api_key_env``)."""

    model: str = param(doc="model name the endpoint serves (e.g. gpt-4o-mini, Qwen/Qwen2.5-7B-Instruct)")
    base_url: str = param("https://api.openai.com/v1", doc="endpoint root, up to and including /v1")
    api_key_env: str = param(
        "OPENAI_API_KEY",
        doc="NAME of the environment variable holding the API key (never the key itself); empty: send no key",
    )
    mode: Literal["chat", "completions"] = param("chat", doc="chat: /chat/completions; completions: /completions")
    timeout_s: float = param(60.0, doc="seconds per request before it counts as timed out", gt=0)
    max_retries: int = param(4, doc="retries of a failed request (429, 5xx, timeout, connection, malformed)", ge=0)
    backoff_s: float = param(0.5, doc="first retry delay; doubles on each retry", ge=0)
    backoff_max_s: float = param(30.0, doc="longest retry delay", ge=0)
    concurrency: int = param(8, doc="requests in flight at most", ge=1)
    logprobs: bool = param(True, doc="the endpoint returns logprobs (score() needs them)")
    top_logprobs: int = param(20, doc="candidates requested when scoring a continuation", ge=1, le=20)
    extra_body: dict[str, Any] = param(
        default_factory=dict,
        doc="extra JSON fields sent with every request (server-specific options); part of the fingerprint",
    )

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        if self.api_key_env and not _ENV_NAME.match(self.api_key_env):
            # never echo the value: it may be a key pasted in the wrong place
            raise ConfigError(
                f"{at}api_key_env",
                "must be the NAME of an environment variable (letters, digits, "
                "underscores), not an API key; put the key in that variable",
            )
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{at}base_url", f"expected an http(s) URL, got {self.base_url!r}")
        if parts.username or parts.password or re.search(r"(key|token|secret|password)", parts.query, re.I):
            raise ConfigError(
                f"{at}base_url",
                "must not carry credentials; put the key in the environment variable named by api_key_env",
            )
        if not self.model:
            raise ConfigError(f"{at}model", "must be a non-empty model name")

    @property
    def chunk_size(self) -> int:  # type: ignore[override]
        return 4 * self.concurrency

    @property
    def supports_logprobs(self) -> bool:
        return self.logprobs

    def fingerprint(self) -> str:
        fp = f"openai:{self.base_url.rstrip('/')}:{self.mode}:{self.model}"
        return fp + (f":{config_hash(self.extra_body)}" if self.extra_body else "")

    def describe(self) -> str:
        return f"model {self.model!r} at {self.base_url}"

    # -- client --------------------------------------------------------------------------------
    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._lock = threading.Lock()
        self._openai_client: Any = None
        self._secret: str | None = None
        self._slots: threading.BoundedSemaphore | None = None

    def _client(self) -> Any:
        with self._lock:
            if self._openai_client is None:
                openai = _require_openai()
                key = _NO_KEY
                if self.api_key_env:
                    import os

                    key = os.environ.get(self.api_key_env, "")
                    if not key:
                        raise LLMError(
                            f"{self.describe()}: environment variable {self.api_key_env} is not set "
                            "(it should hold the API key; set api_key_env: '' for a server without keys)"
                        )
                self._secret = key
                self._openai_client = openai.OpenAI(
                    api_key=key, base_url=self.base_url, timeout=self.timeout_s, max_retries=0
                )
                self._slots = threading.BoundedSemaphore(self.concurrency)
        return self._openai_client

    def _scrub(self, text: str) -> str:
        key = self._secret
        if key and key != _NO_KEY and len(key) >= 4:
            text = text.replace(key, "***")
        return text

    def _request(self, endpoint: str, payload: dict[str, Any]) -> Any:
        """POST one request with retries; returns the parsed response object."""
        openai = _require_openai()
        client = self._client()
        create = client.chat.completions.create if endpoint == "chat" else client.completions.create
        if self.extra_body:
            payload = {**payload, "extra_body": dict(self.extra_body)}
        attempt = 0
        while True:
            retry_after = None
            try:
                with self._slots:
                    resp = create(**payload)
                if not getattr(resp, "choices", None):
                    raise _Malformed("the response has no choices")
                return resp
            except openai.APIStatusError as e:
                status = e.status_code
                retryable = status == 429 or status >= 500
                what = f"HTTP {status}" + (" (rate limited)" if status == 429 else "") + f": {_short(e)}"
                retry_after = _retry_after(e)
            except openai.APITimeoutError:
                retryable, what = True, f"timed out after {self.timeout_s:g} s"
            except openai.APIConnectionError as e:
                cause = e.__cause__ or e
                retryable, what = True, f"connection failed or closed ({type(cause).__name__}: {cause})"
            except (openai.APIResponseValidationError, ValueError, _Malformed) as e:  # JSONDecodeError is a ValueError
                retryable, what = True, f"malformed response ({type(e).__name__}: {e})"
            if not retryable or attempt >= self.max_retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise LLMError(self._scrub(f"{self.describe()} ({endpoint} endpoint): {what}{tries}"))
            delay = min(self.backoff_max_s, self.backoff_s * (2**attempt)) * (0.75 + 0.25 * random.random())
            if retry_after is not None:
                delay = min(self.backoff_max_s, max(delay, retry_after))
            time.sleep(delay)
            attempt += 1

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items`` with at most ``concurrency`` in flight; on the first LLMError the requests not
        yet started are cancelled and the error carries the completed results in ``partial``."""
        if not items:
            return []
        self._client()
        if len(items) == 1 or self.concurrency == 1:
            out: list[Any] = []
            for x in items:
                try:
                    out.append(fn(x))
                except LLMError as e:
                    e.partial = out + [None] * (len(items) - len(out))
                    raise
            return out
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)), thread_name_prefix="ragopt-llm") as pool:
            futures = [pool.submit(fn, x) for x in items]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
        results, error = [], None
        for f in futures:
            if f.cancelled() or f.exception() is not None:
                results.append(None)
                exc = None if f.cancelled() else f.exception()
                if exc is not None and not isinstance(exc, LLMError):
                    raise exc
                error = error or exc
            else:
                results.append(f.result())
        if error is not None:
            error.partial = results
            raise error
        return results

    # -- protocol ------------------------------------------------------------------------------
    def _payload(self, prompt: Prompt) -> tuple[str, dict[str, Any]]:
        if self.mode == "chat":
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            return "chat", {"model": self.model, "messages": messages}
        if not isinstance(prompt, str):
            raise StageError(
                f"{self.describe()}: mode 'completions' takes plain-text prompts; use mode 'chat' for chat messages"
            )
        return "completions", {"model": self.model, "prompt": prompt}

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams | None = None) -> list[Completion]:
        params = params or GenerationParams()
        prompts = check_prompts(prompts)
        requests = [self._payload(p) for p in prompts]
        for _, payload in requests:
            payload.update(max_tokens=params.max_new_tokens, temperature=float(params.temperature))
            if not params.greedy:
                payload["top_p"] = float(params.top_p)
                if params.seed is not None:
                    payload["seed"] = params.seed
            if params.stop:
                payload["stop"] = list(params.stop)
        return self._map(lambda r: self._complete(r[0], r[1], params), requests)

    def _complete(self, endpoint: str, payload: dict[str, Any], params: GenerationParams) -> Completion:
        resp = self._request(endpoint, payload)
        try:
            choice = resp.choices[0]
            text = (choice.message.content if endpoint == "chat" else choice.text) or ""
            finish = choice.finish_reason or "stop"
        except (AttributeError, IndexError, TypeError) as e:
            raise LLMError(self._scrub(f"{self.describe()} ({endpoint} endpoint): malformed response ({e})")) from None
        text, stopped = apply_stop(text, params.stop)
        usage = getattr(resp, "usage", None)
        ptoks = getattr(usage, "prompt_tokens", None)
        ctoks = getattr(usage, "completion_tokens", None)
        if ptoks is None:
            src = payload.get("prompt") or " ".join(m["content"] for m in payload.get("messages", []))
            ptoks = self.count_tokens([src])[0]
        if ctoks is None:
            ctoks = self.count_tokens([text])[0]
        return Completion(text, int(ptoks), int(ctoks), "stop" if stopped else str(finish))

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[ContinuationScore]:
        prompts = self._check_score_args(prompts, continuations)
        if not self.logprobs:
            raise LLMError(
                f"{self.describe()}: logprobs are off for this endpoint (logprobs: false), so it cannot "
                "score continuations; use generation mode (generate the label and parse it)"
            )

        uniq: dict[str, Prompt] = {}
        for p in prompts:
            uniq.setdefault(canonical_json(p), p)
        keys = list(uniq)
        tops = self._map(lambda k: self._top_logprobs(uniq[k]), keys)
        by_key = dict(zip(keys, tops))
        out = []
        for p, c in zip(prompts, continuations):
            cands, ptoks, ctoks = by_key[canonical_json(p)]
            if c in cands:
                lp, exact = cands[c], True
            else:
                lp, exact = min(cands.values()), False
            out.append(ContinuationScore((c,), (lp,), lp, ptoks, ctoks, exact))
        return out

    def _top_logprobs(self, prompt: Prompt) -> tuple[dict[str, float], int, int]:
        endpoint, payload = self._payload(prompt)
        payload.update(max_tokens=1, temperature=0.0)
        if endpoint == "chat":
            payload.update(logprobs=True, top_logprobs=self.top_logprobs)
        else:
            payload.update(logprobs=self.top_logprobs)
        resp = self._request(endpoint, payload)
        cands: dict[str, float] = {}
        try:
            lp = resp.choices[0].logprobs
            if endpoint == "chat":
                first = (lp.content or [None])[0] if lp is not None else None
                for t in (first.top_logprobs if first is not None else None) or []:
                    cands.setdefault(t.token, float(t.logprob))
                if first is not None:
                    cands.setdefault(first.token, float(first.logprob))
            elif lp is not None and lp.top_logprobs:
                for t, v in (lp.top_logprobs[0] or {}).items():
                    cands.setdefault(t, float(v))
        except (AttributeError, IndexError, TypeError, ValueError) as e:
            raise LLMError(self._scrub(f"{self.describe()} ({endpoint} endpoint): malformed logprobs ({e})")) from None
        if not cands:
            raise LLMError(
                f"{self.describe()} ({endpoint} endpoint) returned no logprobs, so it cannot score "
                "continuations; use generation mode (generate the label and parse it), or a server "
                "that returns logprobs"
            )
        usage = getattr(resp, "usage", None)
        return cands, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 1) or 1)


class _Malformed(Exception):
    pass


def _short(e: Any) -> str:
    body = getattr(e, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    if not msg and isinstance(body, dict) and isinstance(body.get("error"), dict):
        msg = body["error"].get("message")
    return str(msg or getattr(e, "message", None) or e)[:300]


def _retry_after(e: Any) -> float | None:
    try:
        value = e.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
