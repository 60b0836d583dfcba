"""End to end: `ragopt serve-mcp` as a subprocess, spoken to over stdio and over streamable HTTP (gateway mode,
bearer token, request caps, loopback bind), with timeouts everywhere and the process killed in `finally`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("anyio")

import anyio

from ragopt.testing.mcp_http import start_http_server, stop_server

UPSTREAM = str(Path(__file__).with_name("upstream_server.py"))
TIMEOUT = 90
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather and forecast for a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {"name": "send_email", "description": "Send an email message to a recipient."},
    {"name": "translate", "description": "Translate text into another language."},
]


@pytest.fixture()
def tools_file(tmp_path):
    f = tmp_path / "tools.jsonl"
    f.write_text("".join(json.dumps(t) + "\n" for t in TOOLS))
    return f


def _env(tmp_path) -> dict[str, str]:
    return {
        "RAGOPT_INDEX_DIR": str(tmp_path / "indexes"),
        "RAGOPT_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONUNBUFFERED": "1",
    }


def _run(fn):
    async def main():
        with anyio.fail_after(TIMEOUT):
            return await fn()

    return anyio.run(main)


def test_stdio_subprocess(tmp_path, tools_file):
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        env=_env(tmp_path),
        cwd=str(tmp_path),
        args=["-m", "ragopt.cli", "serve-mcp", "--tools", str(tools_file), "--pipeline", "bm25", "--max-k", "3"],
    )

    async def go():
        async with Client(params, read_timeout_seconds=60) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            hit = await c.call_tool("search_tools", {"query": "what's the weather in Rome", "k": 2})
            capped = await c.call_tool("search_tools", {"query": "weather", "k": 4})
            again = await c.call_tool("search_tools", {"query": "email a friend"})
            return names, hit, capped, again

    names, hit, capped, again = _run(go)
    assert names == {"search_tools", "refresh_tools"}
    assert not hit.is_error and hit.structured_content["tools"][0]["id"] == "get_weather"
    assert hit.structured_content["tools"][0]["input_schema"]["required"] == ["city"]
    assert capped.is_error and "less than or equal to 3" in capped.content[0].text
    assert again.structured_content["tools"][0]["id"] == "send_email"  # still serving after an error


def test_cli_errors_before_serving(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "ragopt.cli", "serve-mcp", "--tools", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **_env(tmp_path)},
    )
    assert res.returncode == 2 and "tools file not found" in res.stderr and res.stdout == ""
    res = subprocess.run([sys.executable, "-m", "ragopt.cli", "serve-mcp"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "one of the arguments --tools --servers is required" in res.stderr


def test_http_gateway_subprocess_with_token(tmp_path):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    servers = tmp_path / "servers.yaml"
    servers.write_text(
        f"servers:\n  calc:\n    command: {json.dumps(sys.executable)}\n"
        f"    args: [{json.dumps(UPSTREAM)}]\n    timeout: 20\n"
    )
    args = ["--servers", str(servers), "--pipeline", "bm25", "--max-request-bytes", "20000"]
    env = {**os.environ, **_env(tmp_path), "RAGOPT_MCP_TOKEN": "t0ken"}
    proc, log, url = start_http_server(args, tmp_path, env, TIMEOUT)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")

        async def go():
            out = {}
            async with httpx2.AsyncClient(timeout=30) as raw:
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
                out["no_token"] = (await raw.post(url, json=body)).status_code
                out["bad_token"] = (
                    await raw.post(url, json=body, headers={"Authorization": "Bearer nope"})
                ).status_code
                big = {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "search_tools", "arguments": {"query": "x" * 50000}},
                }
                out["too_big"] = (
                    await raw.post(
                        url,
                        json=big,
                        headers={"Authorization": "Bearer t0ken", "Accept": "application/json, text/event-stream"},
                    )
                ).status_code
            async with httpx2.AsyncClient(headers={"Authorization": "Bearer t0ken"}, timeout=60) as http:
                async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=60) as c:
                    out["names"] = {t.name for t in (await c.list_tools()).tools}
                    out["search"] = await c.call_tool("search_tools", {"query": "add two numbers", "k": 1})
                    out["add"] = await c.call_tool("call_tool", {"name": "add", "arguments": {"a": 40, "b": 2}})
                    out["bad"] = await c.call_tool("call_tool", {"name": "add", "arguments": {"a": 1}})
                    out["after"] = await c.call_tool(
                        "call_tool", {"name": "get_weather", "arguments": {"city": "Oslo"}}
                    )
            return out

        out = _run(go)
    finally:
        stop_server(proc, log, timeout=15)
    assert out["no_token"] == 401 and out["bad_token"] == 401
    assert out["too_big"] == 413
    assert out["names"] == {"search_tools", "call_tool", "refresh_tools"}
    assert out["search"].structured_content["tools"][0]["id"] == "add"
    assert out["add"].content[0].text == "42"
    assert out["bad"].is_error and "'b' is a required property" in out["bad"].content[0].text
    assert not out["after"].is_error and "Oslo" in out["after"].content[0].text


def test_default_pipeline_follows_the_onnx_extra(monkeypatch):
    import importlib.util

    from ragopt.cli.serve_mcp import default_pipeline

    real = importlib.util.find_spec
    assert default_pipeline() == "tools_onnx"  # the suite installs every extra, onnx among them
    for missing in ("onnxruntime", "onnx"):
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a, _m=missing: None if name == _m else real(name)
        )
        assert default_pipeline() == "tools"


@pytest.mark.slow
def test_http_default_pipeline_is_the_int8_encoder(tmp_path, tools_file):
    """No --pipeline: the server says it serves tools_onnx, writes the int8 export into its store, and ranks."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    proc, log, url = start_http_server(["--tools", str(tools_file)], tmp_path, {**os.environ, **_env(tmp_path)}, 300)
    try:

        async def go():
            async with httpx2.AsyncClient(timeout=60) as http:
                async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=60) as c:
                    return [
                        await c.call_tool("search_tools", {"query": q, "k": 3})
                        for q in ("is it going to rain in Rome tomorrow", "write to my colleague", "say it in French")
                    ]

        hits = _run(go)
    finally:
        stop_server(proc, log, timeout=15)
    text = (tmp_path / "server.log").read_text()
    assert "ragopt serve-mcp: pipeline tools_onnx" in text
    assert [h.structured_content["tools"][0]["id"] for h in hits] == ["get_weather", "send_email", "translate"]
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "indexes" / "enc-onnx").glob("*/manifest.json")]
    assert [m["precision"] for m in manifests] == ["int8"]  # one export, int8, written by this server
    assert manifests[0]["quantization"]["weight_bits"] in (7, 8)
