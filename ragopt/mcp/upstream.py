"""Clients of upstream MCP servers: the gateway's configuration, tool listing and call forwarding.

A servers config (YAML) lists the upstream servers, each a stdio command or a streamable-HTTP URL::

    servers:
      files:                         # the server's name (tools are owned by it)
        command: python
        args: [-m, my_files_server]
        env: {ROOT: /data}           # ${VAR} is expanded from the environment in env, headers, args, url
      search:
        url: http://127.0.0.1:9000/mcp
        headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}
        prefix: "search."            # tool ids become search.<name> (needed when names collide)
    timeout: 30                      # seconds for connecting, listing and each forwarded call
    # a server may also set connect_timeout: seconds to start and connect (default: its timeout), e.g. a slow
    # starting stdio server whose calls should still time out quickly
    text: {params: descriptions}     # how tools are indexed (ragopt.mcp.catalog.TextTemplate)
    pipeline: tools                  # retrieval pipeline (--pipeline overrides; default: tools_onnx with the
                                     # onnx extra, else tools)

:class:`UpstreamPool` keeps one connection per server, each owned by its own supervisor task, so a server
that dies or hangs fails only its own calls (with an error naming it) and is reconnected on next use.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragopt._imports import require
from ragopt._urls import redact_url
from ragopt.errors import ConfigError, RagoptError, first_line
from ragopt.mcp.catalog import TextTemplate, ToolSpec, schema_problem
from ragopt.pipeline_io import read_yaml

__all__ = ["ServerConfig", "GatewayConfig", "load_gateway_config", "UpstreamPool", "UpstreamError", "require_mcp"]

log = logging.getLogger("ragopt.mcp")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_SERVER_KEYS = ("command", "args", "env", "cwd", "url", "headers", "prefix", "timeout", "connect_timeout")
_TOP_KEYS = ("servers", "timeout", "text", "pipeline")
_MAX_PAGES = 100


class UpstreamError(RagoptError):
    """An upstream server could not be reached, timed out, or answered with a protocol error."""


def require_mcp() -> None:
    """BackendUnavailableError unless the MCP SDK (2.x) is installed."""
    require("mcp.server.mcpserver", "mcp", "the MCP service (SDK 2.x)")


@dataclass(frozen=True)
class ServerConfig:
    """One upstream MCP server: a stdio ``command`` (with ``args``, ``env``, ``cwd``) or an HTTP ``url``."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] | None = None
    prefix: str = ""
    timeout: float = 30.0
    connect_timeout: float | None = None  # None: ``timeout``

    @property
    def connect_seconds(self) -> float:
        """Seconds allowed to start the server and finish the handshake."""
        return self.timeout if self.connect_timeout is None else self.connect_timeout

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    def describe(self) -> str:
        """Where it is, without secrets (no env or header values)."""
        return f"{self.name} (stdio: {self.command})" if self.command else f"{self.name} (http: {redact_url(self.url)})"


@dataclass
class GatewayConfig:
    servers: list[ServerConfig]
    timeout: float = 30.0
    text: TextTemplate = field(default_factory=TextTemplate)
    pipeline: str | None = None
    source: str = ""


def _expand(value: Any, where: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(where, f"expected a string, got {value!r}")

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ConfigError(where, f"environment variable {name!r} is not set")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, str(value))


def _timeout(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(where, f"expected a positive number of seconds, got {value!r}")
    return float(value)


def _server(name: str, d: Any, default_timeout: float, where: str) -> ServerConfig:
    if not _NAME.match(name):
        raise ConfigError(where, "server names are 1-64 characters of letters, digits, '_', '-', '.'")
    if not isinstance(d, Mapping):
        raise ConfigError(where, f"expected a mapping with 'command' or 'url', got {d!r}")
    for k in d:
        if k not in _SERVER_KEYS:
            raise ConfigError(f"{where}.{k}", f"unknown key (known: {', '.join(_SERVER_KEYS)})")
    if ("command" in d) == ("url" in d):
        raise ConfigError(where, "give exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
    args = d.get("args") or []
    if not isinstance(args, list):
        raise ConfigError(f"{where}.args", "expected a list of strings")
    maps = {}
    for key in ("env", "headers"):
        m = d.get(key)
        if m is not None and not isinstance(m, Mapping):
            raise ConfigError(f"{where}.{key}", "expected a mapping of strings")
        maps[key] = {str(k): _expand(v, f"{where}.{key}.{k}") for k, v in m.items()} if m else None
    url = _expand(d["url"], f"{where}.url") if "url" in d else None
    if url is not None and not re.match(r"^https?://", url):
        raise ConfigError(f"{where}.url", f"expected an http:// or https:// URL, got {redact_url(url)!r}")
    prefix = d.get("prefix", "")
    if not isinstance(prefix, str):
        raise ConfigError(f"{where}.prefix", "expected a string")
    return ServerConfig(
        name=name,
        command=_expand(d["command"], f"{where}.command") if "command" in d else None,
        args=tuple(_expand(a, f"{where}.args[{i}]") for i, a in enumerate(args)),
        env=maps["env"],
        cwd=str(d["cwd"]) if d.get("cwd") else None,
        url=url,
        headers=maps["headers"],
        prefix=prefix,
        timeout=_timeout(d.get("timeout", default_timeout), f"{where}.timeout"),
        connect_timeout=(
            _timeout(d["connect_timeout"], f"{where}.connect_timeout") if d.get("connect_timeout") is not None else None
        ),
    )


def load_gateway_config(path: str | os.PathLike) -> GatewayConfig:
    """Parse a servers config; every error names the file and the key."""
    path = Path(path)
    src = str(path)
    d = read_yaml(path)
    if not isinstance(d, Mapping) or not isinstance(d.get("servers"), Mapping) or not d["servers"]:
        raise ConfigError(src, "expected a mapping with a non-empty 'servers' mapping (name -> command or url)")
    for k in d:
        if k not in _TOP_KEYS:
            raise ConfigError(f"{src}:{k}", f"unknown top-level key (known: {', '.join(_TOP_KEYS)})")
    timeout = _timeout(d.get("timeout", 30.0), f"{src}:timeout")
    servers = [_server(str(n), v, timeout, f"{src}:servers.{n}") for n, v in d["servers"].items()]
    pipeline = d.get("pipeline")
    if pipeline is not None and not isinstance(pipeline, str):
        raise ConfigError(f"{src}:pipeline", "expected a pipeline name or path")
    if pipeline and not os.path.isabs(pipeline) and (path.parent / pipeline).is_file():
        pipeline = str(path.parent / pipeline)
    return GatewayConfig(servers, timeout, TextTemplate.from_dict(d.get("text"), f"{src}:text"), pipeline, src)


def tool_spec(server: ServerConfig, tool: Any) -> ToolSpec:
    """An upstream ``mcp_types.Tool`` as a catalogue entry owned by ``server``."""
    schema = tool.input_schema if isinstance(tool.input_schema, dict) else None
    meta = {"title": tool.title} if getattr(tool, "title", None) else {}
    return ToolSpec(
        server.prefix + tool.name, tool.name, tool.description or "", schema, server.name, meta, schema_problem(schema)
    )


def _describe(e: BaseException) -> str:
    """One line for an exception, unwrapping exception groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return first_line(e)


class _Connection:
    """One upstream session, opened and closed by its own supervisor task."""

    def __init__(self, cfg: ServerConfig):
        import anyio

        self.cfg = cfg
        self.client: Any = None
        self.error: str | None = None
        self._ready = anyio.Event()
        self._stop = anyio.Event()
        self._closed = anyio.Event()

    def _transport(self, stack: AsyncExitStack) -> Any:
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client

        cfg = self.cfg
        if cfg.command:
            params = StdioServerParameters(
                command=cfg.command, args=list(cfg.args), env=dict(cfg.env) if cfg.env else None, cwd=cfg.cwd
            )
            return stdio_client(params)
        http = None
        if cfg.headers:
            import httpx2

            http = httpx2.AsyncClient(
                headers=dict(cfg.headers), timeout=httpx2.Timeout(cfg.timeout, read=max(cfg.timeout, 60.0))
            )
            stack.push_async_callback(http.aclose)
        return streamable_http_client(cfg.url, http_client=http)

    async def run(self) -> None:
        from mcp import Client

        try:
            async with AsyncExitStack() as stack:
                # calls are timed by UpstreamPool (cfg.timeout); the handshake may take up to connect_seconds
                wait = max(self.cfg.timeout, self.cfg.connect_seconds)
                client = Client(self._transport(stack), read_timeout_seconds=wait, cache=None)
                await stack.enter_async_context(client)
                self.client = client
                self._ready.set()
                await self._stop.wait()
        except Exception as e:
            self.error = _describe(e)
            log.warning("upstream %s failed: %s", self.cfg.describe(), self.error)
        finally:
            self.client = None
            self._ready.set()
            self._closed.set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


class UpstreamPool:
    """Connections to the configured servers (and to no other): list their tools, forward calls.

    Use as ``async with UpstreamPool(servers) as pool``; connections open on first use."""

    def __init__(self, servers: Sequence[ServerConfig]):
        self.servers = {s.name: s for s in servers}
        if len(self.servers) != len(servers):
            raise ConfigError("servers", "server names must be unique")
        self._conns: dict[str, _Connection] = {}
        self._tg: Any = None
        self._locks: dict[str, Any] = {}

    async def __aenter__(self) -> UpstreamPool:
        require_mcp()
        import anyio

        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._locks = {name: anyio.Lock() for name in self.servers}
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        for c in self._conns.values():
            c.stop()
        tg, self._tg = self._tg, None
        if exc is not None:
            tg.cancel_scope.cancel()
        # the supervisors catch their own failures, so this only waits for them; an exception raised in the
        # body propagates as itself (not wrapped in an exception group)
        await tg.__aexit__(None, None, None)
        return False

    def _config(self, server: str) -> ServerConfig:
        cfg = self.servers.get(server)
        if cfg is None:  # the gateway forwards only to configured servers
            raise UpstreamError(f"server {server!r} is not in the gateway's config")
        return cfg

    async def _connect(self, server: str) -> Any:
        import anyio

        cfg = self._config(server)
        if self._tg is None:
            raise UpstreamError("the upstream pool is not running (use `async with UpstreamPool(...)`)")
        async with self._locks[server]:
            conn = self._conns.get(server)
            if conn is None or conn.closed:
                conn = _Connection(cfg)
                self._conns[server] = conn
                self._tg.start_soon(conn.run)
            with anyio.move_on_after(cfg.connect_seconds) as scope:
                await conn._ready.wait()
            if scope.cancelled_caught:
                self._drop(server, conn)
                raise UpstreamError(f"upstream {cfg.describe()}: no connection within {cfg.connect_seconds:g}s")
            if conn.client is None:
                raise UpstreamError(f"upstream {cfg.describe()}: cannot connect: {conn.error}")
            return conn.client

    def _drop(self, server: str, conn: _Connection | None = None) -> None:
        conn = conn or self._conns.get(server)
        if conn is not None:
            conn.stop()
            if self._conns.get(server) is conn:
                del self._conns[server]

    async def _request(self, server: str, what: str, fn: Any) -> Any:
        """Run ``fn(client)`` under the server's timeout; failures become UpstreamError naming the server.
        A transport failure or timeout drops the connection (the next request reconnects)."""
        import anyio
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        cfg = self._config(server)
        client = await self._connect(server)
        try:
            with anyio.fail_after(cfg.timeout):
                return await fn(client)
        except MCPError as e:
            if e.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT):  # the session is gone or stuck: reconnect next time
                self._drop(server)
            # otherwise the server answered with a JSON-RPC error and the connection is fine
            raise UpstreamError(f"upstream {cfg.name}: {what} failed: {e}") from None
        except TimeoutError:
            self._drop(server)
            raise UpstreamError(f"upstream {cfg.name}: {what} timed out after {cfg.timeout:g}s") from None
        except Exception as e:
            self._drop(server)
            raise UpstreamError(f"upstream {cfg.name}: {what} failed: {_describe(e)}") from None

    async def list_tools(self, server: str) -> list[ToolSpec]:
        """The server's tools (all pages), as catalogue entries."""
        cfg = self._config(server)

        async def fetch(client: Any) -> list[Any]:
            tools, cursor = [], None
            for _ in range(_MAX_PAGES):
                page = await client.list_tools(cursor=cursor, cache_mode="refresh")
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            return tools

        return [tool_spec(cfg, t) for t in await self._request(server, "tools/list", fetch)]

    async def list_all(self) -> tuple[list[ToolSpec], dict[str, str]]:
        """Tools of every server, listed concurrently, and ``{server: error}`` for those that failed."""
        import anyio

        tools: dict[str, list[ToolSpec]] = {}
        errors: dict[str, str] = {}

        async def one(name: str) -> None:
            try:
                tools[name] = await self.list_tools(name)
            except UpstreamError as e:
                errors[name] = str(e)

        async with anyio.create_task_group() as tg:
            for name in self.servers:
                tg.start_soon(one, name)
        return [t for name in self.servers for t in tools.get(name, [])], errors

    async def call_tool(self, server: str, name: str, arguments: dict[str, Any]) -> Any:
        """Forward a call; returns the server's ``CallToolResult`` (its own ``is_error`` results included)."""
        return await self._request(server, f"tools/call {name!r}", lambda client: client.call_tool(name, arguments))

    def status(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, cfg in self.servers.items():
            c = self._conns.get(name)
            out[name] = {
                "transport": cfg.transport,
                "connected": bool(c and c.client is not None),
                "error": c.error if c else None,
            }
        return out
