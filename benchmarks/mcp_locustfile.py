"""Locust users for `ragopt serve-mcp` over streamable HTTP (run by benchmarks/mcp_locust.py; `pip install locust`).

``SearchUser``: an agent. On start it does the MCP initialize handshake (protocol 2025-06-18: ``initialize``,
then the ``Mcp-Session-Id`` the server gave on every request, ``notifications/initialized``), then sends
``tools/call search_tools`` back to back with toollens queries (k=5); a call counts as failed unless it is a
JSON-RPC result with ``isError`` false and a ``tools`` list. On stop it deletes its session.

``Attacker`` (``RAGOPT_LOCUST_ATTACKERS`` users, default 0): while the agents run, each of its requests is one
abuse, and it counts as a success only when the server refuses it the expected way: no token and a wrong token
(401), a body over the request cap (413), a body that is not JSON (JSON-RPC parse error), a JSON-RPC batch and
an envelope without ``method`` (invalid request or invalid params), ``k`` out of range and a query of the wrong type (tool error
from the input schema), ``call_tool`` on a server that has no gateway (unknown tool), and a slow client that
sends half a request body and goes silent.

Environment: ``RAGOPT_MCP_TOKEN`` (bearer token), ``RAGOPT_LOCUST_QUERIES`` (a file, one query per line).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import time
from urllib.parse import urlsplit

from locust import FastHttpUser, constant, task

PROTOCOL = "2025-06-18"
TOKEN = os.environ.get("RAGOPT_MCP_TOKEN", "")
_QUERIES_FILE = os.environ.get("RAGOPT_LOCUST_QUERIES")
QUERIES = (
    [q for q in open(_QUERIES_FILE, encoding="utf-8").read().splitlines() if q.strip()]
    if _QUERIES_FILE
    else ["send an email", "weather forecast for a city", "convert currency", "translate text"]
)
_next_query = itertools.count(random.Random(0).randrange(len(QUERIES)))
ACCEPT = "application/json, text/event-stream"


def rpc_message(resp) -> dict | None:
    """The JSON-RPC message of a response: a JSON body, or the last ``data:`` event of an SSE body."""
    text = resp.text or ""
    if "text/event-stream" in (resp.headers.get("content-type") or ""):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = data[-1] if data else ""
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


class MCPSession(FastHttpUser):
    """A user with an MCP session: the initialize handshake on start, the session deleted on stop."""

    abstract = True

    def headers(self, session: bool = True) -> dict[str, str]:
        h = {"Authorization": f"Bearer {TOKEN}", "Accept": ACCEPT, "Content-Type": "application/json"}
        if session and self.session_id:
            h["Mcp-Session-Id"] = self.session_id
            h["MCP-Protocol-Version"] = PROTOCOL
        return h

    def on_start(self) -> None:
        self.session_id = None
        self.ids = itertools.count(1)
        body = {
            "jsonrpc": "2.0",
            "id": next(self.ids),
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "ragopt-locust", "version": "0"},
            },
        }
        with self.client.post(
            "", data=json.dumps(body), headers=self.headers(False), name="initialize", catch_response=True
        ) as r:
            msg = rpc_message(r)
            self.session_id = r.headers.get("mcp-session-id")
            if r.status_code != 200 or not msg or "result" not in msg or not self.session_id:
                r.failure(f"initialize: HTTP {r.status_code}, session {self.session_id!r}, {r.text[:200]!r}")
                return
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        with self.client.post(
            "", data=json.dumps(note), headers=self.headers(), name="notifications/initialized", catch_response=True
        ) as r:
            if r.status_code not in (200, 202):
                r.failure(f"initialized: HTTP {r.status_code}")

    def on_stop(self) -> None:
        if self.session_id:
            self.client.delete("", headers=self.headers(), name="DELETE session")


class SearchUser(MCPSession):
    wait_time = constant(0)

    @task
    def search_tools(self) -> None:
        query = QUERIES[next(_next_query) % len(QUERIES)]
        body = {
            "jsonrpc": "2.0",
            "id": next(self.ids),
            "method": "tools/call",
            "params": {"name": "search_tools", "arguments": {"query": query, "k": 5}},
        }
        with self.client.post(
            "", data=json.dumps(body), headers=self.headers(), name="tools/call search_tools", catch_response=True
        ) as r:
            msg = rpc_message(r)
            result = (msg or {}).get("result") or {}
            tools = (result.get("structuredContent") or {}).get("tools")
            if r.status_code != 200 or result.get("isError") or not isinstance(tools, list):
                r.failure(f"HTTP {r.status_code}: {r.text[:200]!r}")


class Attacker(MCPSession):
    """One abuse per request, inside its session; success = refused the expected way (see the module docstring)."""

    wait_time = constant(0.2)
    fixed_count = int(os.environ.get("RAGOPT_LOCUST_ATTACKERS", "0"))
    weight = 0 if fixed_count == 0 else 1

    def _expect(self, name: str, data: bytes | str, check, headers: dict | None = None) -> None:
        h = self.headers()
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}  # None: leave the header out
        with self.client.post("", data=data, headers=h, name=f"attack: {name}", catch_response=True) as r:
            ok, why = check(r)
            if ok:
                r.success()
            else:
                r.failure(f"{why}: HTTP {r.status_code} {r.text[:200]!r}")

    @staticmethod
    def _status(code: int):
        return lambda r: (r.status_code == code, f"expected HTTP {code}")

    @staticmethod
    def _rpc_error(*codes: int):
        def check(r):
            err = (rpc_message(r) or {}).get("error") or {}
            return err.get("code") in codes, f"expected JSON-RPC error {codes}"

        return check

    @staticmethod
    def _tool_error(text: str):
        def check(r):
            result = (rpc_message(r) or {}).get("result") or {}
            message = json.dumps(result.get("content"))
            return bool(result.get("isError")) and text in message, f"expected a tool error with {text!r}"

        return check

    @staticmethod
    def _call(name: str, arguments) -> str:
        params = {"name": name, "arguments": arguments}
        return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})

    @task
    def no_token(self) -> None:
        self._expect("no token", self._call("search_tools", {"query": "x"}), self._status(401), {"Authorization": None})

    @task
    def wrong_token(self) -> None:
        bad = {"Authorization": f"Bearer {TOKEN[:-1]}{'x' if not TOKEN.endswith('x') else 'y'}"}
        self._expect("wrong token", self._call("search_tools", {"query": "x"}), self._status(401), bad)

    @task
    def oversize(self) -> None:
        self._expect("oversize body", self._call("search_tools", {"query": "x" * (2 << 20)}), self._status(413))

    @task
    def not_json(self) -> None:
        self._expect("not JSON", b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", ', self._rpc_error(-32700))

    @task
    def batch(self) -> None:
        self._expect(
            "JSON-RPC batch", "[" + self._call("search_tools", {"query": "x"}) + "]", self._rpc_error(-32600, -32602)
        )

    @task
    def no_method(self) -> None:
        self._expect(
            "no method", json.dumps({"jsonrpc": "2.0", "id": 1, "params": {}}), self._rpc_error(-32600, -32602)
        )

    @task
    def k_out_of_range(self) -> None:
        self._expect("k out of range", self._call("search_tools", {"query": "x", "k": 10**6}), self._tool_error("k"))

    @task
    def query_not_a_string(self) -> None:
        self._expect("query not a string", self._call("search_tools", {"query": {"a": 1}}), self._tool_error("query"))

    @task
    def call_tool_outside_config(self) -> None:
        args = {"name": "http://127.0.0.1:9/mcp", "arguments": {"cmd": "rm -rf /"}}
        self._expect("call_tool outside the config", self._call("call_tool", args), self._tool_error("call_tool"))

    @task
    def slow_client(self) -> None:
        """Half a request body, then silence for 2 s, then hang up: the server must not wait on it for others."""
        url = urlsplit(self.host)
        t0 = time.perf_counter()
        ok = True
        try:
            with socket.create_connection((url.hostname, url.port), timeout=5) as s:
                s.sendall(
                    f"POST {url.path} HTTP/1.1\r\nHost: {url.hostname}\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Content-Type: application/json\r\nAccept: {ACCEPT}\r\nContent-Length: 1000\r\n\r\n".encode()
                    + b'{"jsonrpc": "2.0", "id": 1, '
                )
                time.sleep(2)
        except OSError:
            ok = False
        self.environment.events.request.fire(
            request_type="RAW",
            name="attack: slow client",
            response_time=(time.perf_counter() - t0) * 1000,
            response_length=0,
            exception=None if ok else OSError("could not connect"),
            context={},
        )
