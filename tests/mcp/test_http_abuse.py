"""The HTTP face under abuse, over real sockets against the real app (``http_app(build_server(...))`` served by
uvicorn in a thread): malformed JSON-RPC, clients that send half a request and go silent, more sessions than the
cap, a wrong token of any length. Each case also checks that the server still answers a good search after it.
(Missing and wrong tokens, oversize bodies, schema violations and calls outside the gateway's config are in
test_server_e2e.py and test_service.py.)"""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from ragopt.mcp.service import Limits, ToolService
from ragopt.retrievers.bm25 import BM25
from ragopt.store import ArtifactStore

TOKEN = "t0ken-for-tests"
ACCEPT = "application/json, text/event-stream"
PROTOCOL = "2025-06-18"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
TOOLS = [
    {"name": "get_weather", "description": "Current weather and forecast for a city."},
    {"name": "send_email", "description": "Send an email message to a recipient."},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, port) of the app on 127.0.0.1, with small limits: 4 sessions, 1 s to send a request body."""
    import uvicorn

    from ragopt.mcp.server import build_server, http_app

    tmp = tmp_path_factory.mktemp("abuse")
    (tmp / "tools.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TOOLS))
    limits = Limits(max_request_bytes=20000, max_sessions=4, request_read_seconds=1.0)
    svc = ToolService(BM25(top_k=20), tools=tmp / "tools.jsonl", store=ArtifactStore(tmp / "store"), limits=limits)
    app = http_app(build_server(svc, token=TOKEN, port=0), svc, token=TOKEN)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/mcp", port
    srv.should_exit = True
    thread.join(timeout=30)


def _headers(session: str | None = None, token: str = TOKEN) -> dict[str, str]:
    h = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Content-Type": "application/json"}
    if session:
        h.update({"Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL})
    return h


def _open_session(http, url: str) -> str:
    r = http.post(url, json=INITIALIZE, headers=_headers())
    assert r.status_code == 200, r.text
    session = r.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert http.post(url, json=note, headers=_headers(session)).status_code == 202
    return session


@contextmanager
def _session(http, url: str):
    """An open session, deleted after (the cap is small: every test closes its own)."""
    session = _open_session(http, url)
    try:
        yield session
    finally:
        http.delete(url, headers=_headers(session))


def _call(name: str, arguments, rid: int = 2) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def _search_ok(http, url: str, session: str) -> None:
    r = http.post(url, json=_call("search_tools", {"query": "weather in Oslo", "k": 1}), headers=_headers(session))
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert not result.get("isError") and result["structuredContent"]["tools"][0]["id"] == "get_weather"


def test_malformed_json_rpc_gets_a_json_rpc_error_and_the_server_goes_on(server):
    import httpx

    url, _ = server
    garbage = {
        "truncated JSON": (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", ', -32700),
        "invalid UTF-8": (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "x": "\xff\xfe"}', -32700),
        "huge integer": (b'{"jsonrpc": "2.0", "method": "tools/list", "id": ' + b"9" * 5000 + b"}", -32700),
        "a batch": (json.dumps([_call("search_tools", {"query": "x"})]).encode(), None),
        "no method": (b'{"jsonrpc": "2.0", "id": 3, "params": {}}', None),
        "jsonrpc 1.0": (b'{"jsonrpc": "1.0", "id": 3, "method": "tools/list"}', None),
        "params a list": (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": [1]}', None),
        "a bare string": (b'"hello"', None),
    }
    with httpx.Client(timeout=30) as http, _session(http, url) as session:
        for name, (body, code) in garbage.items():
            for headers in (_headers(session), _headers()):  # inside a session, and without one
                r = http.post(url, content=body, headers=headers)
                assert r.status_code == 400, (name, r.status_code, r.text)
                error = r.json()["error"]
                assert error["code"] == code if code else error["code"] in (-32600, -32602), (name, error)
        r = http.post(url, json={"jsonrpc": "2.0", "id": 4, "method": "no/such"}, headers=_headers(session))
        assert r.json()["error"]["code"] == -32601
        r = http.post(url, json=_call("search_tools", {"query": {"a": 1}}), headers=_headers(session))
        assert r.json()["result"]["isError"] and "query" in r.json()["result"]["content"][0]["text"]
        r = http.post(url, json=_call("call_tool", {"name": "http://127.0.0.1:9/mcp"}), headers=_headers(session))
        assert r.json()["result"]["isError"] and "Unknown tool: call_tool" in r.json()["result"]["content"][0]["text"]
        _search_ok(http, url, session)


def _raw(port: int, head: bytes, timeout: float = 20) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head)
    return s


def _slow_request(port: int, sent: bytes, declared: int) -> bytes:
    return (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nAccept: {ACCEPT}\r\nContent-Length: {declared}\r\n\r\n"
    ).encode() + sent


def test_a_silent_half_sent_request_gets_408_and_does_not_hold_up_others(server):
    """Slow clients (half a body, then nothing) are answered 408 once the read deadline passes and their
    connections closed; meanwhile other clients are served."""
    import httpx

    url, port = server
    slow = [_raw(port, _slow_request(port, b'{"jsonrpc": "2.0", ', 500)) for _ in range(8)]
    try:
        with httpx.Client(timeout=30) as http, _session(http, url) as session:
            for _ in range(3):
                _search_ok(http, url, session)
        for s in slow:
            answer = b""
            while b"\r\n\r\n" not in answer:  # the socket timeout (20 s) bounds this; the deadline is 1 s
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"request body not received within 1 s" in answer or s.recv(4096)
    finally:
        for s in slow:
            s.close()
    # without the token the body is not waited for (nor buffered): 401 at once, half a body or not
    head = _slow_request(port, b'{"jsonrpc": "2.0", ', 500).replace(TOKEN.encode(), b"wrong")
    with _raw(port, head) as s:
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_a_body_over_the_cap_is_refused_as_it_streams_in(server):
    """Chunked transfer declares no length: the cap applies to what arrives."""
    url, port = server
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nAccept: {ACCEPT}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 8000
    with _raw(port, head) as s:
        answer = b""
        try:
            for _ in range(10):  # 80 kB against a 20 kB cap
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:  # the server may answer and close before all is sent
            pass
        while b"\r\n\r\n" not in answer:
            part = s.recv(4096)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_sessions_are_capped_and_a_closed_one_frees_its_place(server):
    import httpx

    url, _ = server
    with httpx.Client(timeout=30) as http:
        sessions = [_open_session(http, url) for _ in range(4)]
        refused = http.post(url, json=INITIALIZE, headers=_headers())
        assert refused.status_code == 503 and "Too many open sessions" in refused.text
        _search_ok(http, url, sessions[0])  # the open ones keep working
        assert http.delete(url, headers=_headers(sessions.pop())).status_code in (200, 204)
        sessions.append(_open_session(http, url))
        _search_ok(http, url, sessions[-1])
        for s in sessions:
            http.delete(url, headers=_headers(s))


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer", b"Bearer ", b"Bearer t", f"Bearer {TOKEN[:-1]}".encode(), f"Bearer {TOKEN}x".encode(),
     f"Bearer {TOKEN.upper()}".encode(), "Bearer é".encode(), b"Bearer " + b"x" * 6000, f"Basic {TOKEN}".encode()],
)  # fmt: skip
def test_wrong_tokens_of_any_length_get_401(server, authorization):
    url, port = server
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}'
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: {ACCEPT}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nAuthorization: "
    ).encode()
    with _raw(port, head + authorization + b"\r\n\r\n" + body) as s:
        answer = b""
        while part := s.recv(4096):
            answer += part
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]


def test_the_token_is_compared_in_constant_time(server, monkeypatch):
    """Every presented token goes through hmac.compare_digest (whose time does not depend on where the first
    differing byte is), never through ``==``."""
    import hmac

    import httpx

    import ragopt.mcp.server as server_module

    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server_module.hmac, "compare_digest", spy)
    url, _ = server
    with httpx.Client(timeout=30) as http:
        for presented in ("wrong", TOKEN):
            headers = _headers(token=presented)
            http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}, headers=headers)
    assert (b"wrong", TOKEN.encode()) in seen and (TOKEN.encode(), TOKEN.encode()) in seen


def test_serve_refuses_an_address_it_cannot_listen_on_in_one_line():
    # before: a port out of range or a host that does not resolve ended in uvicorn's traceback, and a port in use in
    # SystemExit 3 under a traceback, after the model and the index had loaded
    from ragopt.errors import ConfigError, RagoptError
    from ragopt.mcp.server import check_listen

    with pytest.raises(ConfigError, match=r"^--port: must be in 0\.\.65535"):
        check_listen("127.0.0.1", 70000)
    with pytest.raises(ConfigError, match=r"^--host: cannot resolve '999\.1\.1\.1'"):
        check_listen("999.1.1.1", 0)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RagoptError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: "):
            check_listen("127.0.0.1", port)
    check_listen("127.0.0.1", 0)  # a free port: no error
