"""Talk to the ragopt tool-retrieval MCP server the way an agent does: find the few tools that fit a task.

By default it starts `ragopt serve-mcp --tools ../shared/data/toollens` itself over stdio; give --url to
connect to a running server instead (`ragopt serve-mcp --tools ... --transport http` serves
http://127.0.0.1:8000/mcp; add --token if the server requires one).

    python examples/mcp_client.py "convert 100 dollars to euros" [-k 3] [--pipeline bm25]
    python examples/mcp_client.py "weather in Oslo" --url http://127.0.0.1:8000/mcp --token SECRET
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

TOOLS = Path(__file__).resolve().parents[2] / "shared" / "data" / "toollens"


async def main(args: argparse.Namespace) -> None:
    if args.url:
        import httpx2

        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        http = httpx2.AsyncClient(headers=headers, timeout=60)
        server = streamable_http_client(args.url, http_client=http)
    else:
        server = StdioServerParameters(
            command=sys.executable,
            args=["-m", "ragopt.cli", "serve-mcp", "--tools", args.tools, "--pipeline", args.pipeline],
        )
    with anyio.fail_after(300):
        async with Client(server, read_timeout_seconds=120) as client:
            tools = (await client.list_tools()).tools
            print("server tools:", ", ".join(t.name for t in tools))
            result = await client.call_tool("search_tools", {"query": args.query, "k": args.k})
            if result.is_error:
                raise SystemExit(result.content[0].text)
            found = result.structured_content
            print(f"top {len(found['tools'])} of {found['n_tools']} tools for {args.query!r}:")
            for hit in found["tools"]:
                params = ", ".join((hit.get("input_schema") or {}).get("properties", {}))
                print(f"  {hit['score']:7.4f}  {hit['id']}: {hit.get('name', hit['id'])}({params})")
                print(f"           {hit['description'][:100]}")
            print(f"\nwhat the agent reads: {len(result.content[0].text)} characters of JSON, e.g.")
            print(json.dumps(found["tools"][0], indent=1)[:600])
    if args.url:
        await http.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("query")
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--tools", default=str(TOOLS), help="tools JSONL or dataset folder (stdio mode)")
    ap.add_argument("--pipeline", default="tools", help="retrieval pipeline (stdio mode; bm25 needs no torch)")
    ap.add_argument("--url", help="connect to a running streamable-HTTP server instead")
    ap.add_argument("--token", help="bearer token for --url")
    anyio.run(main, ap.parse_args())
