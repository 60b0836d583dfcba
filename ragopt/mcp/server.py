"""The MCP face of :class:`~ragopt.mcp.service.ToolService`, with the official ``mcp`` SDK (2.x ``MCPServer``).

Tools: ``search_tools(query, k)``; ``refresh_tools()``; in gateway mode ``call_tool(name, arguments)``.
Service errors come back as MCP tool errors (``isError`` results the agent can read and correct) and the
server keeps serving. Transports: stdio, and streamable HTTP at the SDK's default path ``/mcp`` (127.0.0.1
unless told otherwise; optional bearer token through the SDK's auth middleware; capped request bodies).
"""

# no `from __future__ import annotations`: the SDK reads the tool signatures, whose types are imported locally
import hmac
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from ragopt._io import atomic_write_text
from ragopt.errors import ConfigError, RagoptError
from ragopt.mcp.service import RefreshReport, SearchResult, ToolService, ToolServiceError, UpstreamError
from ragopt.mcp.upstream import require_mcp

__all__ = ["build_server", "http_app", "serve", "TOKEN_ENV"]

TOKEN_ENV = "RAGOPT_MCP_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

INSTRUCTIONS = (
    "This server finds tools. Call search_tools with a short description of the task to get the few "
    "tools that fit it (name, description, input schema); {gateway}"
)


def _text_result(obj: Any) -> Any:
    """Structured content, and the same JSON as text: compact, since these tokens are the point."""
    from mcp_types import CallToolResult, TextContent

    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=obj)


def build_server(
    service: ToolService,
    *,
    name: str = "ragopt-tools",
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
) -> Any:
    """An ``MCPServer`` exposing ``service``. ``token``: require ``Authorization: Bearer <token>`` (HTTP)."""
    require_mcp()
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import CallToolResult, ToolAnnotations
    from pydantic import Field

    limits = service.limits

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[dict]:
        async with service.running():
            yield {}

    auth_kwargs: dict[str, Any] = {}
    if token:

        class StaticToken:
            async def verify_token(self, presented: str) -> AccessToken | None:
                if hmac.compare_digest(presented.encode(), token.encode()):
                    return AccessToken(token=presented, client_id="ragopt-mcp-client", scopes=[])
                return None

        # resource_server_url None: no OAuth metadata routes; the SDK's bearer middleware guards /mcp
        auth_kwargs = {
            "auth": AuthSettings(issuer_url=f"http://{host}:{port}", resource_server_url=None),
            "token_verifier": StaticToken(),
        }

    gateway = (
        "then call_tool(name, arguments) runs the chosen tool through this gateway."
        if service.is_gateway
        else "then call the chosen tool on the server that provides it."
    )
    mcp = MCPServer(
        name,
        instructions=INSTRUCTIONS.format(gateway=gateway),
        lifespan=lifespan,
        log_level=log_level.upper(),
        **auth_kwargs,
    )

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def search_tools(
        query: Annotated[
            str,
            Field(
                description="what the tool should do, in plain words; a whole task description is fine (a long "
                "one is cut to what the retrieval reads, and the result says so)"
            ),
        ],
        k: Annotated[int, Field(description="how many tools to return", ge=1, le=limits.max_k)] = limits.default_k,
    ) -> Annotated[CallToolResult, SearchResult]:
        """Find the tools that fit a task. Returns up to k tools, best first: id, description, input_schema, score
        (and name when it differs from id); truncated, query_chars and used_chars when the query was cut."""
        try:
            return _text_result(await service.search_async(query, k))
        except ToolServiceError as e:
            raise ToolError(str(e)) from None

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
    async def refresh_tools() -> Annotated[CallToolResult, RefreshReport]:
        """Re-read the tool catalogue (re-list the upstream servers' tools) and re-index it if it changed."""
        try:
            return _text_result(await service.refresh())
        except ToolServiceError as e:
            raise ToolError(str(e)) from None

    if service.is_gateway:

        @mcp.tool(annotations=ToolAnnotations(open_world_hint=True))
        async def call_tool(
            name: Annotated[str, Field(description="the tool id, as search_tools returned it", max_length=512)],
            arguments: Annotated[
                dict[str, Any] | None, Field(description="the tool's arguments, matching its input schema")
            ] = None,
        ) -> CallToolResult:
            """Run a tool found by search_tools on the upstream server that provides it. The arguments are checked
            against the tool's input schema first; the tool's own result is returned unchanged."""
            try:
                return await service.call(name, arguments)
            except (ToolServiceError, UpstreamError) as e:
                raise ToolError(str(e)) from None

    return mcp


def http_app(mcp: Any, service: ToolService, host: str = "127.0.0.1", token: str | None = None) -> Any:
    """The ASGI app serving streamable HTTP at ``/mcp`` with the service's limits: request size, open sessions,
    and time to send a request body (:class:`BodyDeadline`). Answers are JSON, not event streams: no tool here
    sends anything before its result, and a JSON answer is cheaper to make and to read. ``token``: the bearer
    token ``mcp`` was built with; requests without it go to the SDK's 401 without their body being read."""
    limits = service.limits
    app = mcp.streamable_http_app(
        host=host,
        max_request_body_size=limits.max_request_bytes,
        max_sessions=limits.max_sessions,
        json_response=True,
    )
    return BodyDeadline(app, limits.request_read_seconds, limits.max_request_bytes, token)


class BodyDeadline:
    """ASGI middleware: a POST's whole body must arrive within ``seconds`` (else 408 and the connection is closed)
    and be at most ``max_bytes`` (else 413), before the app sees the request. A client that sends half a request
    and goes silent (slowloris) holds a connection for ``seconds``, not forever. With a ``token``, only requests
    that present it are read here (the others go on to the app's 401 unread: no buffering for strangers)."""

    def __init__(self, app: Any, seconds: float, max_bytes: int, token: str | None = None):
        self.app, self.seconds, self.max_bytes = app, seconds, max_bytes
        self.authorization = f"Bearer {token}".encode() if token else None

    def __getattr__(self, name: str) -> Any:  # the wrapped Starlette app's router, state, ...
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        import anyio
        from starlette.responses import PlainTextResponse

        headers = dict(scope.get("headers") or [])
        if self.authorization is not None and not hmac.compare_digest(
            headers.get(b"authorization", b""), self.authorization
        ):
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            await PlainTextResponse("Request body too large", 413)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.seconds) as timer:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    await PlainTextResponse("Request body too large", 413)(scope, receive, send)
                    return
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
        if timer.cancelled_caught:
            text = f"request body not received within {self.seconds:g} s"
            await PlainTextResponse(text, 408, headers={"Connection": "close"})(scope, receive, send)
            return
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def check_listen(host: str, port: int) -> None:
    """That the HTTP server can listen on ``host``:``port``, checked by binding a socket there once (with
    SO_REUSEADDR, as uvicorn binds): a port out of range is a ConfigError, a host that does not resolve or an
    address in use a RagoptError, each one line (before, uvicorn's traceback, or SystemExit 3 for a port in use)."""
    import socket

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("--port", f"must be in 0..65535 (0: a free one), got {port!r}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError("--host", f"cannot resolve {host!r}: {getattr(e, 'strerror', None) or e}") from None
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        raise RagoptError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(
    service: ToolService,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    log_level: str = "warning",
    ready_file: str | None = None,
) -> None:
    """Run the server until interrupted. HTTP on a non-loopback host without a token is allowed but warned
    about; ``ready_file``: write ``{"url": ...}`` there once the HTTP socket listens."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if transport != "stdio":
        check_listen(host, port)
    mcp = build_server(service, token=token, host=host, port=port, log_level=log_level)
    if transport == "stdio":
        mcp.run("stdio")
        return
    import anyio
    import uvicorn

    if host not in LOOPBACK and not token:
        print(
            f"ragopt serve-mcp: warning: serving on {host} without a token; set --token or ${TOKEN_ENV}",
            file=sys.stderr,
        )
    config = uvicorn.Config(
        http_app(mcp, service, host, token),
        host=host,
        port=port,
        log_level=log_level,
        timeout_keep_alive=30,
        lifespan="on",
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            while not server.started:
                if server.should_exit:
                    return
                await anyio.sleep(0.05)
            sockets = [s for srv in getattr(server, "servers", []) for s in srv.sockets]
            bound = sockets[0].getsockname()[1] if sockets else port
            url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/mcp"
            print(
                f"ragopt serve-mcp: {service.info()['n_tools']} tools, MCP over streamable HTTP at {url}",
                file=sys.stderr,
                flush=True,
            )
            if ready_file:
                atomic_write_text(ready_file, json.dumps({"url": url, "port": bound, "pid": os.getpid()}))

    anyio.run(run)
