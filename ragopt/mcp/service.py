"""The tool-retrieval service without a transport: search, gateway calls, validation, refresh.

:class:`ToolService` holds a :class:`~ragopt.mcp.catalog.Catalog` and a ragopt pipeline fitted on its corpus.
``search(query, k)`` ranks tools; in gateway mode (a servers config) ``call(name, arguments)`` validates the
arguments against the tool's input schema and forwards them to the upstream server that owns the tool, and
``refresh()`` re-lists the upstream tools and refits only when the catalogue's fingerprint changed.

Queries of any length are accepted up to the request-size cap (agents pass whole task descriptions): a query
longer than what the pipeline reads (:func:`query_word_limit`) is cut to its first words, and the result says
so (``truncated``, ``query_chars``, ``used_chars``).
:mod:`ragopt.mcp.server` only exposes these methods as MCP tools; every check lives here and is tested
without a transport. Errors are :class:`ToolServiceError` with a message meant for the calling agent.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
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
from ragopt.config import Component, walk
from ragopt.errors import ConfigError, RagoptError
from ragopt.mcp.batching import Batcher
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
    "query_word_limit",
    "cut_query",
]

log = logging.getLogger("ragopt.mcp")


class ToolServiceError(RagoptError):
    """A request the service refuses; the message is written for the calling agent."""


class InvalidRequest(ToolServiceError):
    """Bad query, k, arguments, or a call the service does not make."""


class UnknownTool(ToolServiceError):
    """No tool with that id in the catalogue."""


#: Words of a query a lexical retriever (BM25) uses: it reads every word, but past this many a task description
#: adds cost, not signal. Also the cut when no stage of the pipeline says what it reads.
LEXICAL_QUERY_WORDS = 1024
#: Tokens an encoder reads when its ``max_length`` is unset (the model's own limit): BERT-family models read 512.
ENCODER_DEFAULT_TOKENS = 512


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for. A query is not refused for its length (only the request size is
    capped); ``max_query_words`` is where it is cut (None: what the pipeline reads, :func:`query_word_limit`)."""

    max_k: int = 50
    default_k: int = 5
    max_query_words: int | None = None
    max_arguments_bytes: int = 256 * 1024  # JSON size of call_tool's arguments
    max_request_bytes: int = 1024 * 1024  # HTTP request body (the transport enforces it; a query over it is refused)
    min_refresh_seconds: float = 2.0  # refresh_tools more often than this re-lists nothing
    max_sessions: int = 1000  # open MCP sessions (HTTP, handshake protocols); one more is answered 503
    request_read_seconds: float = 30.0  # HTTP: a request body not received within this is answered 408

    def __post_init__(self) -> None:
        if not 1 <= self.default_k <= self.max_k:
            raise ConfigError("limits.default_k", f"must be in [1, max_k={self.max_k}], got {self.default_k}")
        for f in ("max_query_words", "max_arguments_bytes", "max_request_bytes", "max_sessions"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"limits.{f}", f"must be an integer >= 1, got {v!r}")
        t = self.request_read_seconds
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < math.inf:
            raise ConfigError("limits.request_read_seconds", f"must be a positive number of seconds, got {t!r}")


def query_word_limit(pipeline: Component) -> int:
    """How many words of a query ``pipeline`` reads: the most any of its stages reads. A model (an encoder, a
    SPLADE or cross-encoder stage: any component with ``max_length`` tokens) reads at most ``max_length`` words,
    since every word is at least one token (unset: :data:`ENCODER_DEFAULT_TOKENS`); a retriever without such a
    model (BM25) reads every word, counted as :data:`LEXICAL_QUERY_WORDS`."""
    limits = []
    for c in walk(pipeline):
        if "max_length" in c.param_names():
            limits.append(c.max_length or ENCODER_DEFAULT_TOKENS)
        elif getattr(c, "requires", None) == frozenset({"queries"}) and not any(
            "max_length" in n.param_names() for n in walk(c)
        ):
            limits.append(LEXICAL_QUERY_WORDS)
    return max(limits, default=LEXICAL_QUERY_WORDS)


_WORD = re.compile(r"\S+")


def cut_query(query: str, max_words: int) -> tuple[str, bool]:
    """``query`` up to the end of its ``max_words``-th word (whitespace-separated), and whether it was cut."""
    for i, m in enumerate(_WORD.finditer(query), 1):
        if i == max_words:
            end = m.end()
            return query[:end], bool(query[end:].strip())
    return query, False


class ToolHit(TypedDict, total=False):
    """One retrieved tool. Every token here lands in the agent's prompt, so keys that carry nothing are left
    out: ``name`` when it equals ``id``, ``input_schema`` when the tool has none, ``server`` outside gateways."""

    id: Required[str]
    description: Required[str]
    score: Required[float]
    name: str
    input_schema: dict[str, Any]
    server: str


class SearchResult(TypedDict, total=False):
    """The tools, best first, and the size of the catalogue they were chosen from. When the query was longer than
    what the pipeline reads: ``truncated`` (true), ``query_chars`` (its length) and ``used_chars`` (the length of
    the start that was searched)."""

    tools: Required[list[ToolHit]]
    n_tools: Required[int]
    truncated: bool
    query_chars: int
    used_chars: int


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


@dataclass(frozen=True)
class _Search:
    """One checked search request: what is searched (``used``), and how to turn the ranking into the result."""

    query: str
    used: str
    truncated: bool
    k: int
    index: _Index

    def result(self, ranked: list[tuple[str, float]]) -> SearchResult:
        catalog = self.index.catalog
        out = SearchResult(tools=[tool_hit(catalog.get(i), s) for i, s in ranked[: self.k]], n_tools=len(catalog))
        if self.truncated:
            out.update(truncated=True, query_chars=len(self.query), used_chars=len(self.used))
        return out


class ToolService:
    """Tool search over a catalogue (from ``tools``: a JSONL path, a dataset folder or a Catalog), or, in gateway
    mode, over the tools of the upstream servers in ``gateway``. ``pipeline`` is a template: it is cloned and
    fitted for each catalogue version (indexes come from ``store``, keyed by the catalogue's corpus), then runs one
    query so its models are loaded before the first request. Concurrent searches run as length-sorted batches of
    at most ``batch_size`` queries on one worker thread, which waits up to ``batch_wait`` seconds for a batch to
    fill (:class:`~ragopt.mcp.batching.Batcher`)."""

    def __init__(
        self,
        pipeline: Stage,
        *,
        tools: Catalog | str | os.PathLike | None = None,
        gateway: GatewayConfig | None = None,
        template: TextTemplate | None = None,
        store: Any = None,
        limits: Limits | None = None,
        batch_size: int = 8,
        batch_wait: float = 0.002,
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
        self.query_words = self.limits.max_query_words or query_word_limit(pipeline)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError("batch_size", f"must be an integer >= 1, got {batch_size!r}")
        if not isinstance(batch_wait, int | float) or not 0 <= batch_wait <= 1:
            raise ConfigError("batch_wait", f"must be a number of seconds in [0, 1], got {batch_wait!r}")
        self._batcher = Batcher(max_batch=batch_size, max_wait=float(batch_wait))
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
        pipe.search([next(iter(catalog)).name])  # warm: load the models now, not on the first request
        return _Index(catalog, pipe)

    def info(self) -> dict[str, Any]:
        idx = self._index
        out: dict[str, Any] = {
            "n_tools": len(idx.catalog),
            "fingerprint": idx.catalog.fingerprint,
            "pipeline": repr(self.pipeline),
            "gateway": self.is_gateway,
            "limits": {
                "max_k": self.limits.max_k,
                "max_query_words": self.query_words,
                "max_request_bytes": self.limits.max_request_bytes,
            },
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
        size = len(query.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_request_bytes:  # the transport's cap, for transports that do not enforce it
            raise InvalidRequest(f"query is {size} bytes; the request limit is {self.limits.max_request_bytes}")
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
        server where they tell something (see :class:`ToolHit`). A query longer than what the pipeline reads is
        cut to its first :attr:`query_words` words, and the result says so."""
        req = self._request(query, k)
        ranked = self._batcher.search(req.index.pipeline, req.used) if req.index.pipeline is not None else []
        return req.result(ranked)

    async def search_async(self, query: str, k: int | None = None) -> SearchResult:
        """:meth:`search` for an event loop: the query waits for its batch without holding a thread (asyncio;
        other event loops run :meth:`search` in a worker thread)."""
        import sniffio

        if sniffio.current_async_library() != "asyncio":
            import anyio

            return await anyio.to_thread.run_sync(self.search, query, k)
        req = self._request(query, k)
        pipe = req.index.pipeline
        ranked = await self._batcher.search_async(pipe, req.used) if pipe is not None else []
        return req.result(ranked)

    def _request(self, query: Any, k: Any) -> _Search:
        checked, k = self.check_query(query, k)
        used, truncated = cut_query(checked, self.query_words)
        return _Search(query, used, truncated, k, self._index)

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
