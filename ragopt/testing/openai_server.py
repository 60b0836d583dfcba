"""A small OpenAI-compatible HTTP server for tests (stdlib ``http.server``, one thread per request).

It serves ``POST /v1/chat/completions``, ``POST /v1/completions`` and ``GET /v1/models`` on 127.0.0.1 at an
ephemeral port, answering from any :class:`~ragopt.llm.base.LLMBackend` (the ``scripted`` test double, or a
real local model). Logprobs (``logprobs``/``top_logprobs``) come from the backend's
``next_token_logprobs(prompt, k)``; ``logprobs=False`` makes the server omit them, like servers that lack them.

Faults are injected per request, in order: :meth:`OpenAITestServer.inject` queues names, each consumed by one
request: ``"ok"`` (no fault), ``"429"`` (rate limited, ``Retry-After: 0``), ``"500"``, ``"503"``, ``"400"``,
``"timeout"`` (answers only after ``hang_s``), ``"close"`` (closes the connection without answering), ``"malformed"`` (200 with a
body that is not JSON), ``"no_choices"`` (200 with JSON lacking ``choices``), ``"leak"`` (a 500 whose message echoes
the request's ``Authorization`` header, to test that clients scrub keys). ``requests`` records every request (path,
JSON body, whether the key matched, fault applied); ``peak_concurrency`` the most requests handled at once.

Usage::

    with OpenAITestServer(ScriptedLLM(rules=[...]), api_key="sk-test") as server:
        backend = OpenAIBackend(model="test-model", base_url=server.base_url, api_key_env="MY_KEY")
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ragopt.llm.base import GenerationParams

__all__ = ["OpenAITestServer", "FAULTS"]

FAULTS = ("ok", "429", "500", "503", "400", "timeout", "close", "malformed", "no_choices", "leak")


class OpenAITestServer:
    """OpenAI-compatible test server over ``backend`` (see the module docstring)."""

    def __init__(
        self,
        backend: Any,
        *,
        api_key: str | None = None,
        model_name: str = "test-model",
        logprobs: bool = True,
        delay_s: float = 0.0,
        hang_s: float = 5.0,
        default_max_tokens: int = 16,
    ):
        self.backend = backend
        self.api_key = api_key
        self.model_name = model_name
        self.logprobs = logprobs
        self.delay_s = delay_s
        self.hang_s = hang_s
        self.default_max_tokens = default_max_tokens
        self.requests: list[dict[str, Any]] = []
        self.peak_concurrency = 0
        self._faults: deque[str] = deque()
        self._lock = threading.Lock()
        # one model answers one request at a time, as a single-model server does (backends are not thread-safe)
        self._backend_lock = threading.Lock()
        self._active = 0
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._n = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> OpenAITestServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="openai-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def inject(self, *faults: str) -> None:
        """Queue faults; each is applied to one request, in order."""
        for f in faults:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.peak_concurrency = 0

    # -- answering -----------------------------------------------------------------------------
    def _next_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        chat = path.endswith("/chat/completions")
        if chat:
            prompt: Any = body["messages"]
        else:
            prompt = body["prompt"]
            if isinstance(prompt, list):
                if len(prompt) != 1:
                    raise _BadRequest("this test server takes one prompt per request")
                prompt = prompt[0]
        stop = body.get("stop") or ()
        params = GenerationParams(
            max_new_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or self.default_max_tokens),
            temperature=float(body.get("temperature") or 0.0),
            top_p=float(body.get("top_p") or 1.0),
            seed=body.get("seed"),
            stop=tuple([stop] if isinstance(stop, str) else stop),
        )
        with self._backend_lock:
            comp = self.backend.generate([prompt], params)[0]
        want = body.get("logprobs")
        k = int(body.get("top_logprobs") or 0) if chat else int(want or 0)
        logprobs = None
        if self.logprobs and want and (k or chat):
            with self._backend_lock:
                top = self.backend.next_token_logprobs(prompt, max(k, 1))
            tok, lp = top[0] if top else (comp.text, 0.0)
            if chat:
                logprobs = {
                    "content": [
                        {
                            "token": tok,
                            "logprob": lp,
                            "bytes": None,
                            "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in top[:k]],
                        }
                    ]
                }
            else:
                logprobs = {
                    "tokens": [tok],
                    "token_logprobs": [lp],
                    "top_logprobs": [dict(top[:k])],
                    "text_offset": [0],
                }
        with self._lock:
            self._n += 1
            rid = self._n
        choice: dict[str, Any] = {"index": 0, "finish_reason": comp.finish_reason, "logprobs": logprobs}
        if chat:
            choice["message"] = {"role": "assistant", "content": comp.text}
        else:
            choice["text"] = comp.text
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-test-{rid}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [choice],
            "usage": {
                "prompt_tokens": comp.prompt_tokens,
                "completion_tokens": comp.completion_tokens,
                "total_tokens": comp.prompt_tokens + comp.completion_tokens,
            },
        }


class _BadRequest(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAITestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.owner.model_name, "object": "model"}]})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def do_POST(self) -> None:
        srv = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = None
        authorized = srv.api_key is None or self.headers.get("Authorization") == f"Bearer {srv.api_key}"
        fault = srv._next_fault()
        with srv._lock:
            srv.requests.append({"path": self.path, "body": body, "authorized": authorized, "fault": fault})
            srv._active += 1
            srv.peak_concurrency = max(srv.peak_concurrency, srv._active)
        try:
            self._handle(srv, body, authorized, fault)
        finally:
            with srv._lock:
                srv._active -= 1

    def _handle(self, srv: OpenAITestServer, body: Any, authorized: bool, fault: str | None) -> None:
        if srv.delay_s:
            time.sleep(srv.delay_s)
        if fault == "timeout":
            srv._stopping.wait(srv.hang_s)
        elif fault == "close":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        elif fault in ("429", "500", "503", "400"):
            status = int(fault)
            headers = {"Retry-After": "0"} if status == 429 else None
            kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(status, "server_error")
            return self._error(status, f"injected fault {fault}", kind, headers)
        elif fault == "malformed":
            return self._send(200, b'{"id": "x", "choices": [{"index": 0, "message": ')
        elif fault == "no_choices":
            return self._send(200, {"id": "x", "object": "chat.completion"})
        elif fault == "leak":
            return self._error(500, f"upstream failed for {self.headers.get('Authorization')}", "server_error")
        if not authorized:
            return self._error(401, "invalid API key", "invalid_request_error")
        if not isinstance(body, dict):
            return self._error(400, "request body is not JSON", "invalid_request_error")
        path = self.path.rstrip("/")
        if path not in ("/v1/chat/completions", "/v1/completions"):
            return self._error(404, f"no route {self.path}", "not_found")
        try:
            self._send(200, srv._answer(path, body))
        except (_BadRequest, KeyError, TypeError, ValueError) as e:
            self._error(400, f"bad request: {type(e).__name__}: {e}", "invalid_request_error")
        except Exception as e:  # the backend failed
            self._error(500, f"backend error: {type(e).__name__}: {e}", "server_error")
