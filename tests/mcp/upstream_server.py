"""A small upstream MCP server for the gateway tests: ``python upstream_server.py [--http PORT]``.

Tools: ``add``, ``get_weather`` (an enum argument), ``fail`` (answers with a tool error), ``slow`` (sleeps),
``crash`` (the process exits mid-call), ``enable_extra`` (registers one more tool, for refresh tests) and
``calls`` (how many calls this process has served)."""

import argparse
import asyncio
import os
from typing import Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

mcp = MCPServer("upstream-test")
CALLS = {"n": 0}


def _count() -> None:
    CALLS["n"] += 1


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers and return their sum."""
    _count()
    return a + b


@mcp.tool()
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Current weather report (temperature and sky) for a city."""
    _count()
    return f"{city}: 21 degrees {unit}, clear sky"


@mcp.tool()
def fail(message: str) -> str:
    """Always fails with the given message (an upstream tool error)."""
    _count()
    raise ToolError(message)


@mcp.tool()
async def slow(seconds: float) -> str:
    """Sleep for a number of seconds, then answer."""
    _count()
    await asyncio.sleep(seconds)
    return "done"


@mcp.tool()
def crash() -> str:
    """Terminate this server process immediately."""
    os._exit(3)


def translate_text(text: str, target_language: str) -> str:
    """Translate a text into another language."""
    _count()
    return f"[{target_language}] {text}"


@mcp.tool()
def enable_extra() -> str:
    """Register the translate_text tool."""
    _count()
    if not any(t.name == "translate_text" for t in mcp._tool_manager.list_tools()):
        mcp.add_tool(translate_text)
    return "ok"


@mcp.tool()
def calls() -> int:
    """How many tool calls this process has served."""
    return CALLS["n"]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT")
    args = ap.parse_args()
    if args.http:
        mcp.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        mcp.run("stdio")
