"""Tool retrieval as an MCP service (RAG-MCP): an agent asks for the few tools that fit its task instead of
reading every tool description in its prompt.

* :mod:`ragopt.mcp.catalog`: tools from JSONL or upstream servers, indexed as a corpus (no SDK needed);
* :mod:`ragopt.mcp.service`: search, gateway calls with argument validation, refresh (transport-free);
* :mod:`ragopt.mcp.upstream`: clients of the upstream MCP servers a gateway forwards to;
* :mod:`ragopt.mcp.server`: the MCP tools, with the official SDK (``pip install 'ragopt[mcp]'``).

CLI: ``ragopt serve-mcp (--tools PATH | --servers CONFIG.yaml) [--pipeline tools_onnx|tools|bm25|...] [--transport stdio|http]``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Catalog": "ragopt.mcp.catalog",
    "ToolSpec": "ragopt.mcp.catalog",
    "TextTemplate": "ragopt.mcp.catalog",
    "ToolService": "ragopt.mcp.service",
    "Limits": "ragopt.mcp.service",
    "ToolServiceError": "ragopt.mcp.service",
    "load_gateway_config": "ragopt.mcp.upstream",
    "build_server": "ragopt.mcp.server",
    "serve": "ragopt.mcp.server",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ragopt.mcp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
