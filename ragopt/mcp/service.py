"""The tool-retrieval service without a transport: search, gateway calls, validation, refresh.

:class:`ToolService` holds a :class:`~ragopt.mcp.catalog.Catalog` and a ragopt pipeline fitted on its corpus.
``search(query, k)`` ranks tools; in gateway mode (a servers config) ``call(name, arguments)`` validates the
arguments against the tool's input schema and forwards them to the upstream server that owns the tool, and
``refresh()`` re-lists the upstream tools and refits only when the catalogue's fingerprint changed.
:mod:`ragopt.mcp.server` only exposes these methods as MCP tools; every check lives here and is tested
without a transport. Errors are :class:`ToolServiceError` with a message meant for the calling agent.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

try:  # pydantic (hence the MCP SDK) reads result schemas from typing_extensions' TypedDict on Python < 3.12
    from typing import Required

    from typing_extensions import TypedDict
except ImportError:  # pragma: no cover
    from typing import Required, TypedDict

from ragopt._imports import require
from ragopt.errors import ConfigError, RagoptError
from ragopt.mcp.catalog import Catalog, TextTemplate, ToolSpec
from ragopt.mcp.upstream import GatewayConfig, UpstreamError, UpstreamPool
from ragopt.pipeline import Stage

__all__ = [
    "ToolService",
    "Limits",
    "ToolServiceError",
    "InvalidRequest",
    "UnknownTool",
    "UpstreamError",
    "ToolHit",
    "SearchResult",
    "RefreshReport",
]

log = logging.getLogger("ragopt.mcp")


class ToolServiceError(RagoptError):
    """A request the service refuses; the message is written for the calling agent."""


class InvalidRequest(ToolServiceError):
    """Bad query, k, arguments, or a call the service does not make."""


class UnknownTool(ToolServiceError):
    """No tool with that id in the catalogue."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for."""

    max_k: int = 50
    default_k: int = 5
    max_query_chars: int = 2000
    max_arguments_bytes: int = 256 * 1024  # JSON size of call_tool's arguments
    max_request_bytes: int = 1024 * 1024  # HTTP request body (the transport enforces it)
    min_refresh_seconds: float = 2.0  # refresh_tools more often than this re-lists nothing

    def __post_init__(self) -> None:
        if not 1 <= self.default_k <= self.max_k:
            raise ConfigError("limits.default_k", f"must be in [1, max_k={self.max_k}], got {self.default_k}")
        for f in ("max_query_chars", "max_arguments_bytes", "max_request_bytes"):
            if getattr(self, f) < 1:
                raise ConfigError(f"limits.{f}", "must be >= 1")


class ToolHit(TypedDict, total=False):
    """One retrieved tool. Every token here lands in the agent's prompt, so keys that carry nothing are left
    out: ``name`` when it equals ``id``, ``input_schema`` when the tool has none, ``server`` outside gateways."""

    id: Required[str]
    description: Required[str]
    score: Required[float]
    name: str
    input_schema: dict[str, Any]
    server: str


class SearchResult(TypedDict):
    """The tools, best first, and the size of the catalogue they were chosen from."""

    tools: list[ToolHit]
    n_tools: int


class RefreshReport(TypedDict):
    changed: bool
    n_tools: int
    fingerprint: str
    errors: dict[str, str]
    stale: list[str]
    seconds: float


@dataclass(frozen=True)
class _Index:
    catalog: Catalog
    pipeline: Stage | None  # None for an empty catalogue


class _Slot:
    __slots__ = ("pipeline", "query", "result", "error", "done")

    def __init__(self, pipeline: Stage, query: str):
        self.pipeline, self.query = pipeline, query
        self.result: list[tuple[str, float]] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class _Batcher:
    """Runs concurrent searches as batches: one thread at a time (stages are not promised to be thread-safe:
    stemmers, torch) calls the pipeline once for every query waiting on the same pipeline, so concurrent
    requests share one encoder batch instead of queueing behind each other. ``calls`` counts pipeline calls."""

    def __init__(self, max_batch: int = 64):
        self.max_batch = max_batch
        self._pending: list[_Slot] = []
        self._pending_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self.calls = 0

    def search(self, pipeline: Stage, query: str) -> list[tuple[str, float]]:
        slot = _Slot(pipeline, query)
        with self._pending_lock:
            self._pending.append(slot)
        while not slot.done.is_set():
            if self._run_lock.acquire(timeout=0.005):
                try:
                    self._run_batch()
                finally:
                    self._run_lock.release()
            else:
                slot.done.wait(0.005)
        if slot.error is not None:
            raise slot.error
        return slot.result or []

    def _run_batch(self) -> None:
        with self._pending_lock:
            if not self._pending:
                return
            pipe = self._pending[0].pipeline
            batch = [s for s in self._pending if s.pipeline is pipe][: self.max_batch]
            taken = set(map(id, batch))
            self._pending = [s for s in self._pending if id(s) not in taken]
        try:
            self.calls += 1
            out = pipe.search([s.query for s in batch])
            for row, s in enumerate(batch):
                s.result = out.ranked(row)
        except BaseException as e:
            for s in batch:
                s.error = e
        finally:
            for s in batch:
                s.done.set()


class ToolService:
    """Tool search over a catalogue (from ``tools``: a JSONL path, a dataset folder or a Catalog), or, in gateway
    mode, over the tools of the upstream servers in ``gateway``. ``pipeline`` is a template: it is cloned and
    fitted for each catalogue version (indexes come from ``store``, keyed by the catalogue's corpus)."""

    def __init__(
        self,
        pipeline: Stage,
        *,
        tools: Catalog | str | os.PathLike | None = None,
        gateway: GatewayConfig | None = None,
        template: TextTemplate | None = None,
        store: Any = None,
        limits: Limits | None = None,
    ):
        if (tools is None) == (gateway is None):
            raise ConfigError(
                "tools",
                "give exactly one source of tools: a tools file / catalogue, or a gateway "
                "config (--tools PATH | --servers CONFIG.yaml)",
            )
        if not isinstance(pipeline, Stage) or pipeline.requires != frozenset({"queries"}):
            raise ConfigError("pipeline", "the tool-retrieval pipeline must start with a retriever (from queries)")
        self.pipeline = pipeline
        self.gateway = gateway
        self.template = template or (gateway.text if gateway else TextTemplate())
        self.store = store
        self.limits = limits or Limits()
        self._batcher = _Batcher(max_batch=64)  # one pipeline call at a time, for all queries waiting
        self._refresh_lock: Any = None
        self._last_refresh = -math.inf
        self._pool: UpstreamPool | None = None
        self._known: dict[str, list[ToolSpec]] = {}  # last tools listed per upstream server
        self._errors: dict[str, str] = {}
        self._source = tools
        self._index = _Index(Catalog([], self.template, "empty"), None)
        if tools is not None:
            catalog = tools if isinstance(tools, Catalog) else Catalog.from_jsonl(tools, self.template)
            self._index = self._fit(catalog)

    # -- state -----------------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        return self._index.catalog

    @property
    def is_gateway(self) -> bool:
        return self.gateway is not None

    def _fit(self, catalog: Catalog) -> _Index:
        if len(catalog) == 0:
            return _Index(catalog, None)
        pipe = self.pipeline.clone()
        pipe.fit(catalog.corpus, self.store, progress=False)
        return _Index(catalog, pipe)

    def info(self) -> dict[str, Any]:
        idx = self._index
        out: dict[str, Any] = {
            "n_tools": len(idx.catalog),
            "fingerprint": idx.catalog.fingerprint,
            "pipeline": repr(self.pipeline),
            "gateway": self.is_gateway,
            "limits": {"max_k": self.limits.max_k, "max_query_chars": self.limits.max_query_chars},
        }
        if self._pool is not None:
            out["servers"] = {
                name: dict(s, n_tools=len(self._known.get(name, [])), last_error=self._errors.get(name))
                for name, s in self._pool.status().items()
            }
        return out

    # -- search ----------------------------------------------------------------------------------
    def check_query(self, query: Any, k: Any) -> tuple[str, int]:
        if not isinstance(query, str):
            raise InvalidRequest(f"query must be a string, got {type(query).__name__}")
        if len(query) > self.limits.max_query_chars:
            raise InvalidRequest(f"query is {len(query)} characters; the limit is {self.limits.max_query_chars}")
        query = query.strip()
        if not query:
            raise InvalidRequest("query is empty")
        if k is None:
            k = self.limits.default_k
        if isinstance(k, bool) or not isinstance(k, int):
            raise InvalidRequest(f"k must be an integer, got {k!r}")
        if not 1 <= k <= self.limits.max_k:
            raise InvalidRequest(f"k must be between 1 and {self.limits.max_k}, got {k}")
        return query, k

    def search(self, query: str, k: int | None = None) -> SearchResult:
        """The ``k`` best tools for ``query``, best first: id, description, score, and name, input schema and
        server where they tell something (see :class:`ToolHit`)."""
        query, k = self.check_query(query, k)
        idx = self._index
        hits: list[ToolHit] = []
        if idx.pipeline is not None:
            for tool_id, score in self._batcher.search(idx.pipeline, query)[:k]:
                hits.append(tool_hit(idx.catalog.get(tool_id), score))
        return SearchResult(tools=hits, n_tools=len(idx.catalog))

    # -- gateway ---------------------------------------------------------------------------------
    @asynccontextmanager
    async def running(self) -> AsyncIterator[ToolService]:
        """Serve: in gateway mode, open the upstream pool and list every server's tools first (servers that
        fail are reported and retried on the next refresh; search works with whatever was listed)."""
        import anyio

        self._refresh_lock = anyio.Lock()
        if self.gateway is None:
            yield self
            return
        async with UpstreamPool(self.gateway.servers) as pool:
            self._pool = pool
            try:
                await self.refresh(force=True)
                yield self
            finally:
                self._pool = None

    async def refresh(self, force: bool = False) -> RefreshReport:
        """Re-list the tools (upstream servers, or the tools file) and refit only if the catalogue changed.

        A server that fails keeps its last listed tools (reported in ``stale``); a refit that fails keeps the
        current index (reported in ``errors["index"]``)."""
        import anyio

        if self._refresh_lock is None:
            raise InvalidRequest("the service is not running (use `async with service.running()`)")
        async with self._refresh_lock:
            t0 = time.perf_counter()
            if not force and t0 - self._last_refresh < self.limits.min_refresh_seconds:
                idx = self._index
                return RefreshReport(
                    changed=False,
                    n_tools=len(idx.catalog),
                    fingerprint=idx.catalog.fingerprint,
                    errors=dict(self._errors),
                    stale=[],
                    seconds=0.0,
                )
            self._last_refresh = t0
            errors: dict[str, str] = {}
            stale: list[str] = []
            if self._pool is not None:
                listed, errors = await self._pool.list_all()
                by_server: dict[str, list[ToolSpec]] = {}
                for t in listed:
                    by_server.setdefault(t.server, []).append(t)
                for name in self._pool.servers:
                    if name in errors:
                        if self._known.get(name):
                            stale.append(name)
                    else:
                        self._known[name] = by_server.get(name, [])
                tools = [t for name in self._pool.servers for t in self._known.get(name, [])]
                make = lambda: Catalog(tools, self.template, "gateway")
            elif isinstance(self._source, Catalog):
                make = lambda: self._source
            else:
                make = lambda: Catalog.from_jsonl(self._source, self.template)
            changed = False
            try:
                catalog = make()
                if catalog.fingerprint != self._index.catalog.fingerprint:
                    self._index = await anyio.to_thread.run_sync(self._fit, catalog)
                    changed = True
            except RagoptError as e:
                errors["index"] = str(e)
                log.warning("tool catalogue not updated: %s", e)
            self._errors = errors
            idx = self._index
            return RefreshReport(
                changed=changed,
                n_tools=len(idx.catalog),
                fingerprint=idx.catalog.fingerprint,
                errors=errors,
                stale=stale,
                seconds=round(time.perf_counter() - t0, 4),
            )

    def check_call(self, name: Any, arguments: Any) -> tuple[ToolSpec, dict[str, Any]]:
        """The tool and arguments of a call the gateway may forward; InvalidRequest / UnknownTool otherwise."""
        if self._pool is None:
            raise InvalidRequest("call_tool is only available in gateway mode (ragopt serve-mcp --servers ...)")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("name must be a non-empty string (a tool id from search_tools)")
        catalog = self._index.catalog
        tool = catalog.get(name)
        if tool is None:
            same = [t.id for t in catalog if t.name == name]  # the upstream name of a prefixed tool
            close = (same + [c for c in difflib.get_close_matches(name, catalog.ids, n=3) if c not in same])[:3]
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; use search_tools to find one"
            raise UnknownTool(f"no tool {name[:200]!r} in the catalogue{hint}")
        if tool.server is None or tool.server not in self._pool.servers:
            raise InvalidRequest(f"tool {name!r} has no configured upstream server; the gateway does not forward it")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise InvalidRequest(f"arguments must be a JSON object, got {type(arguments).__name__}")
        size = len(json.dumps(arguments, ensure_ascii=False, default=str).encode())
        if size > self.limits.max_arguments_bytes:
            raise InvalidRequest(f"arguments are {size} bytes; the limit is {self.limits.max_arguments_bytes}")
        if tool.schema_error:
            raise InvalidRequest(f"tool {name!r} cannot be called through the gateway: its {tool.schema_error}")
        if tool.input_schema is not None:
            validate_arguments(tool, arguments)
        return tool, arguments

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Validate and forward a call; returns the upstream ``CallToolResult`` (UpstreamError if it fails)."""
        tool, arguments = self.check_call(name, arguments)
        return await self._pool.call_tool(tool.server, tool.name, arguments)


def tool_hit(tool: ToolSpec, score: float) -> ToolHit:
    hit = ToolHit(
        id=tool.id, description=tool.description, score=round(float(score), 4) if math.isfinite(score) else 0.0
    )
    if tool.name != tool.id:
        hit["name"] = tool.name
    if tool.input_schema is not None:
        hit["input_schema"] = tool.input_schema
    if tool.server is not None:
        hit["server"] = tool.server
    return hit


def validate_arguments(tool: ToolSpec, arguments: dict[str, Any]) -> None:
    """InvalidRequest listing (up to 5) places where ``arguments`` break ``tool.input_schema``."""
    validator_for = require("jsonschema.validators", "mcp", "validating tool arguments").validator_for
    schema = tool.input_schema or {}
    validator = validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        parts = []
        for e in errors[:5]:
            where = "/".join(str(p) for p in e.absolute_path) or "(arguments)"
            msg = e.message if len(e.message) <= 300 else e.message[:300] + "..."
            parts.append(f"{where}: {msg}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InvalidRequest(f"arguments do not match the input schema of {tool.id!r}: " + "; ".join(parts) + more)
