"""The tool service without a transport (search, validation, refresh, gateway checks), then each MCP tool
through an in-process client, and the gateway against the small upstream server in upstream_server.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("anyio")

import anyio

from ragopt.errors import ConfigError
from ragopt.mcp.catalog import Catalog, ToolSpec
from ragopt.mcp.service import (
    InvalidRequest,
    Limits,
    ToolService,
    UnknownTool,
    cut_query,
    query_word_limit,
    validate_arguments,
)
from ragopt.mcp.upstream import GatewayConfig, ServerConfig, UpstreamError, UpstreamPool, load_gateway_config
from ragopt.retrievers.bm25 import BM25
from ragopt.store import ArtifactStore

UPSTREAM = str(Path(__file__).with_name("upstream_server.py"))
TIMEOUT = 60

TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather and forecast for a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "city name"}},
            "required": ["city"],
        },
    },
    {
        "name": "send_email",
        "description": "Send an email message to a recipient.",
        "input_schema": {
            "type": "object",
            "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
            "required": ["to", "body"],
        },
    },
    {
        "name": "convert_currency",
        "description": "Convert an amount of money between currencies.",
        "input_schema": {"type": "object", "properties": {"amount": {"type": "number"}, "to": {"type": "string"}}},
    },
    {"name": "search_flights", "description": "Find flights between two airports on a date."},
    {"name": "translate", "description": "Translate text into another language."},
]


def _run(fn, *args, timeout: float = TIMEOUT):
    async def main():
        with anyio.fail_after(timeout):
            return await fn(*args)

    return anyio.run(main)


@pytest.fixture()
def tools_file(tmp_path):
    f = tmp_path / "tools.jsonl"
    f.write_text("".join(json.dumps(t) + "\n" for t in TOOLS))
    return f


@pytest.fixture()
def store(tmp_path):
    return ArtifactStore(tmp_path / "store")


def _service(tools, store, **kw):
    return ToolService(BM25(top_k=20), tools=tools, store=store, **kw)


def _gateway(*servers, timeout=5.0):
    return GatewayConfig(list(servers), timeout=timeout)


def _calc(timeout=5.0, prefix="", connect_timeout=None):
    return ServerConfig(
        "calc",
        command=sys.executable,
        args=(UPSTREAM,),
        timeout=timeout,
        prefix=prefix,
        connect_timeout=connect_timeout,
    )


# -- search -------------------------------------------------------------------------------------


def test_search_ranks_tools_and_returns_what_an_agent_needs(tools_file, store):
    svc = _service(tools_file, store)
    res = svc.search("what is the weather forecast in Paris", k=2)
    assert res["n_tools"] == 5 and 1 <= len(res["tools"]) <= 2
    top = res["tools"][0]
    assert top["id"] == "get_weather" and top["description"].startswith("Current weather")
    assert top["input_schema"]["required"] == ["city"] and top["score"] > 0
    assert "name" not in top and "server" not in top  # equal to the id / no upstream: no tokens spent on them
    scores = [h["score"] for h in res["tools"]]
    assert scores == sorted(scores, reverse=True)
    flights = svc.search("book flights between airports")["tools"][0]
    assert flights["id"] == "search_flights" and "input_schema" not in flights
    assert svc.search("convert 10 dollars into euros money")["tools"][0]["id"] == "convert_currency"
    assert len(svc.search("email", k=None)["tools"]) >= 1  # default k
    assert svc.search("zzzz qqqq")["tools"] == []  # no shared term: nothing, not noise


def test_search_validates_query_and_k(tools_file, store):
    svc = _service(tools_file, store, limits=Limits(max_k=10, max_request_bytes=50))
    for query, k, msg in [
        ("   ", 3, "query is empty"),
        ("x" * 51, 3, "query is 51 bytes; the request limit is 50"),
        ("é" * 26, 3, "query is 52 bytes; the request limit is 50"),  # bytes, not characters
        (42, 3, "query must be a string"),
        ("weather", 0, "between 1 and 10"),
        ("weather", 11, "between 1 and 10"),
        ("weather", True, "must be an integer"),
        ("weather", "3", "must be an integer"),
    ]:
        with pytest.raises(InvalidRequest, match=msg):
            svc.search(query, k)
    assert svc.search("  weather  ", 10)["tools"][0]["id"] == "get_weather"
    with pytest.raises(ConfigError, match="default_k"):
        Limits(max_k=3, default_k=5)
    with pytest.raises(ConfigError, match="max_query_words"):
        Limits(max_query_words=0)


# A real benchmark task an agent passed whole (18,686 characters) failed the call when queries were capped at
# 2,000 characters: now long queries are cut to what the pipeline reads, and the result says so.
TASK = "Send an email message to a recipient with the report. " + " ".join(
    f"Step {i}: keep the archive folder tidy and note progress in the shared log." for i in range(250)
)


def test_long_queries_are_cut_to_what_the_pipeline_reads(tools_file, store):
    assert len(TASK) > 18_000
    svc = _service(tools_file, store)
    assert svc.query_words == 1024 and svc.info()["limits"]["max_query_words"] == 1024  # BM25: LEXICAL_QUERY_WORDS
    res = svc.search(TASK, 2)
    assert res["truncated"] is True and res["query_chars"] == len(TASK)
    assert res["used_chars"] == len(cut_query(TASK, 1024)[0]) < len(TASK)
    assert res["tools"][0]["id"] == "send_email"
    # exactly the first N words are searched: the same ranking as the cut query sent whole
    short = _service(tools_file, store, limits=Limits(max_query_words=3))
    res = short.search("  weather forecast city send an email message  ")
    assert (res["truncated"], res["used_chars"]) == (True, len("weather forecast city"))
    assert res["tools"] == short.search("weather forecast city")["tools"]
    assert res["tools"][0]["id"] == "get_weather"
    assert "truncated" not in short.search("weather forecast city")  # nothing said when nothing was cut
    assert "truncated" not in short.search("weather forecast city   ")


def test_cut_query_keeps_whole_words_and_spacing():
    assert cut_query("a  b\tc d", 3) == ("a  b\tc", True)
    assert cut_query("a b c", 3) == ("a b c", False)
    assert cut_query("a b c   ", 3) == ("a b c", False)
    assert cut_query("one", 1) == ("one", False)


def test_query_word_limit_is_what_the_pipeline_reads():
    from ragopt.config import from_config
    from ragopt.pipeline_io import load_pipeline

    dense = {"type": "dense", "encoder": {"type": "sentence_transformer", "model": "m", "max_length": 128}}
    assert query_word_limit(from_config(dense)) == 128  # an encoder reads at most max_length tokens, so words
    assert query_word_limit(from_config({**dense, "encoder": {"type": "sentence_transformer", "model": "m"}})) == 512
    assert query_word_limit(BM25()) == 1024  # a lexical retriever reads every word: the lexical cap
    hybrid = from_config({"type": "rrf", "inputs": [{"type": "bm25"}, dense]})
    assert query_word_limit(hybrid) == 1024  # the most any stage reads
    assert query_word_limit(load_pipeline("tools")) == 1024  # the service's default pipeline: BM25 + MiniLM
    ce = from_config(
        {"type": "pipeline", "stages": [dense, {"type": "cross_encoder", "model": "m", "max_length": 300}]}
    )
    assert query_word_limit(ce) == 300


def test_service_needs_one_source_and_a_retriever(tools_file, store):
    with pytest.raises(ConfigError, match="exactly one source"):
        ToolService(BM25(), store=store)
    with pytest.raises(ConfigError, match="exactly one source"):
        ToolService(BM25(), tools=tools_file, gateway=_gateway(_calc()), store=store)
    from ragopt.ops import Cutoff

    with pytest.raises(ConfigError, match="must start with a retriever"):
        ToolService(Cutoff(k=3), tools=tools_file, store=store)


def test_indexes_are_artifacts_keyed_by_the_catalogue(tools_file, store):
    a = _service(tools_file, store)
    b = _service(Catalog.from_jsonl(tools_file), store)
    arts_a = a._index.pipeline.artifacts()
    arts_b = b._index.pipeline.artifacts()
    assert arts_a[0]["created"] is True and arts_b[0]["created"] is False
    assert arts_a[0]["path"] == arts_b[0]["path"]
    assert a.catalog.fingerprint == b.catalog.fingerprint


def test_refresh_refits_only_when_the_catalogue_changes(tools_file, store):
    svc = _service(tools_file, store, limits=Limits(min_refresh_seconds=60))

    async def go():
        async with svc.running():
            same = await svc.refresh(force=True)
            tools_file.write_text(
                tools_file.read_text()
                + json.dumps({"name": "book_hotel", "description": "Reserve a hotel room."})
                + "\n"
            )
            throttled = await svc.refresh()  # within min_refresh_seconds: nothing re-read
            changed = await svc.refresh(force=True)
            tools_file.write_text("not json\n")
            broken = await svc.refresh(force=True)
            return same, throttled, changed, broken

    same, throttled, changed, broken = _run(go)
    assert same["changed"] is False and same["n_tools"] == 5 and same["errors"] == {}
    assert throttled["changed"] is False and throttled["seconds"] == 0.0 and throttled["n_tools"] == 5
    assert changed["changed"] is True and changed["n_tools"] == 6
    assert broken["changed"] is False and "index" in broken["errors"]
    assert broken["n_tools"] == 6  # a catalogue that fails to load leaves the last good index in service
    assert svc.search("hotel room reservation")["tools"][0]["id"] == "book_hotel"
    idle = _service(Catalog([ToolSpec("a", "a", "A tool.")]), store)
    with pytest.raises(InvalidRequest, match="not running"):
        _run(idle.refresh)


def test_concurrent_searches_share_pipeline_calls():
    """Queries arriving while the pipeline runs wait and go in the next call together (one encoder batch),
    each caller gets its own rows, and a failing call fails exactly the queries in it."""
    import threading
    import time

    from ragopt.mcp.batching import Batcher

    class SlowPipe:
        def __init__(self):
            self.sizes = []

        def search(self, texts):
            self.sizes.append(len(texts))
            time.sleep(0.05)
            if "boom" in texts:
                raise RuntimeError("boom")

            class Out:
                def ranked(self, row):
                    return [(texts[row], float(row))]

            return Out()

    pipe, batcher = SlowPipe(), Batcher(max_batch=8)
    results, errors = {}, {}

    def one(q):
        try:
            results[q] = batcher.search(pipe, q)
        except RuntimeError as e:
            errors[q] = str(e)

    threads = [threading.Thread(target=one, args=(f"q{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert {q: r[0][0] for q, r in results.items()} == {f"q{i}": f"q{i}" for i in range(20)}
    assert sum(pipe.sizes) == 20 and len(pipe.sizes) < 20 and max(pipe.sizes) <= 8
    assert batcher.calls == len(pipe.sizes)
    one("boom")
    assert errors == {"boom": "boom"} and batcher.search(pipe, "ok")[0][0] == "ok"


# -- gateway checks (no upstream needed) -----------------------------------------------------------


def test_validate_arguments_lists_every_problem():
    tool = ToolSpec("send_email", **TOOLS[1])
    validate_arguments(tool, {"to": "a@b.c", "body": "hi"})
    with pytest.raises(InvalidRequest) as e:
        validate_arguments(tool, {"to": 3})
    msg = str(e.value)
    assert "input schema of 'send_email'" in msg and "'body' is a required property" in msg
    assert "to: 3 is not of type 'string'" in msg


def test_gateway_refuses_what_it_must_not_forward(tools_file, store):
    svc = _service(tools_file, store)
    with pytest.raises(InvalidRequest, match="only available in gateway mode"):
        svc.check_call("get_weather", {"city": "Oslo"})
    gw = ToolService(BM25(top_k=20), gateway=_gateway(_calc()), store=store, limits=Limits(max_arguments_bytes=100))
    gw._pool = UpstreamPool(gw.gateway.servers)  # configured for "calc" only; never entered: nothing connects
    evil = {"type": "object", "properties": {"x": {"type": "string"}}}
    gw._index = gw._fit(
        Catalog(
            [
                ToolSpec("add", "add", "Add.", {"type": "object"}, "calc"),
                ToolSpec("steal", "steal", "Exfiltrate.", evil, "evil"),
                ToolSpec("local", "local", "No server."),
                ToolSpec("cal", "cal", "Bad schema.", {}, "calc", schema_error="invalid input_schema: x"),
            ]
        )
    )
    with pytest.raises(InvalidRequest, match="no configured upstream server"):
        gw.check_call("steal", {"x": "y"})
    with pytest.raises(InvalidRequest, match="no configured upstream server"):
        gw.check_call("local", {})
    with pytest.raises(UnknownTool, match="did you mean 'add'"):
        gw.check_call("ad", {})
    with pytest.raises(InvalidRequest, match="non-empty string"):
        gw.check_call("", {})
    with pytest.raises(InvalidRequest, match="must be a JSON object, got list"):
        gw.check_call("add", [1, 2])
    with pytest.raises(InvalidRequest, match=r"bytes; the limit is 100"):
        gw.check_call("add", {"a": "x" * 200})
    with pytest.raises(InvalidRequest, match="cannot be called through the gateway: its invalid input_schema"):
        gw.check_call("cal", {})
    assert gw.check_call("add", None)[1] == {}

    async def forward_elsewhere():
        async with UpstreamPool([_calc()]) as pool:
            await pool.call_tool("evil", "steal", {})

    with pytest.raises(UpstreamError, match="server 'evil' is not in the gateway's config"):
        _run(forward_elsewhere)


def test_gateway_config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TOKEN", "s3cret")
    f = tmp_path / "servers.yaml"
    f.write_text(
        "servers:\n"
        "  calc: {command: python, args: [up.py, '${TEST_TOKEN}'], env: {KEY: '${TEST_TOKEN}'}}\n"
        "  web: {url: 'http://127.0.0.1:9/mcp', headers: {Authorization: 'Bearer ${TEST_TOKEN}'},"
        " prefix: 'web.', timeout: 2, connect_timeout: 20}\n"
        "timeout: 7\ntext: {params: names}\npipeline: bm25\n"
    )
    cfg = load_gateway_config(f)
    calc, web = cfg.servers
    assert calc.args == ("up.py", "s3cret") and calc.env == {"KEY": "s3cret"} and calc.timeout == 7.0
    assert web.headers == {"Authorization": "Bearer s3cret"} and web.prefix == "web." and web.timeout == 2.0
    assert web.connect_seconds == 20.0 and calc.connect_timeout is None and calc.connect_seconds == 7.0
    assert cfg.text.params == "names" and cfg.pipeline == "bm25"
    assert "s3cret" not in web.describe() and web.transport == "http" and calc.transport == "stdio"
    # a secret expanded into the URL itself (a token query parameter, a password) is not shown either
    f.write_text("servers:\n  q: {url: 'http://u:${TEST_TOKEN}@127.0.0.1:9/mcp?access_token=${TEST_TOKEN}&k=2'}\n")
    (q,) = load_gateway_config(f).servers
    assert q.url.count("s3cret") == 2  # the URL used keeps it
    assert q.describe() == "q (http: http://u:***@127.0.0.1:9/mcp?access_token=***&k=2)"
    for text, msg in [
        ("servers: {}\n", "non-empty 'servers'"),
        ("servers: {a: {command: x, url: 'http://h/mcp'}}\n", "exactly one of 'command'"),
        ("servers: {a: {url: 'ftp://h'}}\n", r"servers\.a\.url: expected an http"),
        ("servers: {a: {command: x, cmd: y}}\n", r"servers\.a\.cmd: unknown key"),
        ("servers: {a: {command: x}}\nextra: 1\n", "extra: unknown top-level key"),
        ("servers: {a: {command: x, timeout: -1}}\n", "positive number of seconds"),
        ("servers: {a: {command: x, connect_timeout: 0}}\n", r"servers\.a\.connect_timeout: expected a positive"),
        ("servers: {'a b': {command: x}}\n", "server names are"),
        ("servers: {a: {command: '${NOPE_NOT_SET}'}}\n", "'NOPE_NOT_SET' is not set"),
    ]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load_gateway_config(f)


# -- each MCP tool through an in-process client ------------------------------------------------


def test_in_process_client_search_and_refresh(tools_file, store):
    from mcp import Client

    from ragopt.mcp.server import build_server

    svc = _service(tools_file, store, limits=Limits(max_k=5))

    async def go():
        async with Client(build_server(svc)) as c:
            listed = {t.name: t for t in (await c.list_tools()).tools}
            ok = await c.call_tool("search_tools", {"query": "send a message by email", "k": 1})
            empty = await c.call_tool("search_tools", {"query": "  "})
            too_many = await c.call_tool("search_tools", {"query": "weather", "k": 6})
            refresh = await c.call_tool("refresh_tools", {})
            after = await c.call_tool("search_tools", {"query": "weather"})
            long = await c.call_tool("search_tools", {"query": TASK, "k": 1})
            return listed, ok, empty, too_many, refresh, after, long

    listed, ok, empty, too_many, refresh, after, long = _run(go)
    assert set(listed) == {"search_tools", "refresh_tools"}  # no call_tool outside gateway mode
    schema = listed["search_tools"].input_schema["properties"]
    assert schema["k"]["maximum"] == 5 and "maxLength" not in schema["query"]  # only the request size is capped
    out_schema = listed["search_tools"].output_schema["properties"]
    assert {"truncated", "query_chars", "used_chars"} <= set(out_schema)
    assert not long.is_error and long.structured_content["tools"][0]["id"] == "send_email"
    assert long.structured_content["truncated"] is True and long.structured_content["query_chars"] == len(TASK)
    assert listed["search_tools"].output_schema is not None
    assert not ok.is_error and ok.structured_content["tools"][0]["id"] == "send_email"
    assert json.loads(ok.content[0].text) == ok.structured_content
    assert empty.is_error and "query is empty" in empty.content[0].text
    assert too_many.is_error and "less than or equal to 5" in too_many.content[0].text
    assert not refresh.is_error and refresh.structured_content["changed"] is False
    assert not after.is_error and after.structured_content["tools"][0]["id"] == "get_weather"


def test_gateway_against_an_upstream_server(store):
    """Search over the upstream's tools, forward valid calls, refuse bad ones, survive a dying and a hanging
    upstream and a server that never starts, and pick up new tools on refresh."""
    from mcp import Client

    from ragopt.mcp.server import build_server

    broken = ServerConfig("broken", command=sys.executable, args=("-c", "import sys; sys.exit(3)"), timeout=5.0)
    # calls time out after 3 s; starting the upstream (a Python process importing the MCP SDK) may take longer on a
    # loaded machine, hence connect_timeout, and the whole exchange (three reconnects) gets more than the default
    calc = _calc(timeout=3.0, prefix="calc.", connect_timeout=30.0)
    svc = ToolService(BM25(top_k=20), gateway=_gateway(calc, broken), store=store)

    async def go():
        out = {}
        async with Client(build_server(svc)) as c:
            call = lambda name, args: c.call_tool("call_tool", {"name": name, "arguments": args})
            out["tools"] = {t.name for t in (await c.list_tools()).tools}
            out["info"] = svc.info()
            out["search"] = await c.call_tool("search_tools", {"query": "add two integers sum", "k": 3})
            out["add"] = await call("calc.add", {"a": 2, "b": 3})
            out["bad"] = await call("calc.add", {"a": "two"})
            out["enum"] = await call("calc.get_weather", {"city": "Oslo", "unit": "kelvin"})
            out["unknown"] = await call("add", {"a": 1, "b": 2})
            out["calls_before"] = await call("calc.calls", {})
            out["fail"] = await call("calc.fail", {"message": "boom"})
            out["slow"] = await call("calc.slow", {"seconds": 30})
            out["after_slow"] = await call("calc.add", {"a": 1, "b": 1})
            out["crash"] = await call("calc.crash", {})
            out["search_after_crash"] = await c.call_tool("search_tools", {"query": "weather in a city", "k": 1})
            out["after_crash"] = await call("calc.add", {"a": 4, "b": 5})
            out["enable"] = await call("calc.enable_extra", {})
            out["refresh"] = await c.call_tool("refresh_tools", {})
            out["new"] = await c.call_tool("search_tools", {"query": "translate text into french", "k": 1})
            out["translate"] = await call("calc.translate_text", {"text": "hi", "target_language": "fr"})
        return out

    out = _run(go, timeout=180)
    assert out["tools"] == {"search_tools", "call_tool", "refresh_tools"}
    info = out["info"]
    assert info["n_tools"] == 7 and info["servers"]["calc"]["connected"] is True
    assert info["servers"]["broken"]["n_tools"] == 0 and "cannot connect" in info["servers"]["broken"]["last_error"]
    hits = out["search"].structured_content["tools"]
    assert hits[0]["id"] == "calc.add" and hits[0]["name"] == "add" and hits[0]["server"] == "calc"  # prefixed
    assert hits[0]["input_schema"]["required"] == ["a", "b"]
    assert not out["add"].is_error and out["add"].content[0].text == "5"
    assert out["bad"].is_error and "a: 'two' is not of type 'integer'" in out["bad"].content[0].text
    assert "'b' is a required property" in out["bad"].content[0].text
    assert out["enum"].is_error and "'kelvin' is not one of ['celsius', 'fahrenheit']" in out["enum"].content[0].text
    assert out["unknown"].is_error and "did you mean 'calc.add'" in out["unknown"].content[0].text
    assert out["calls_before"].content[0].text == "1"  # the refused calls never reached the upstream
    assert out["fail"].is_error and "boom" in out["fail"].content[0].text  # the upstream's own error, unchanged
    assert out["slow"].is_error and "timed out after 3s" in out["slow"].content[0].text
    assert not out["after_slow"].is_error and out["after_slow"].content[0].text == "2"
    assert out["crash"].is_error and "upstream calc" in out["crash"].content[0].text
    assert out["search_after_crash"].structured_content["tools"][0]["id"] == "calc.get_weather"
    assert not out["after_crash"].is_error and out["after_crash"].content[0].text == "9"  # reconnected
    refresh = out["refresh"].structured_content
    assert refresh["changed"] is True and refresh["n_tools"] == 8 and "broken" in refresh["errors"]
    assert out["new"].structured_content["tools"][0]["id"] == "calc.translate_text"
    assert out["translate"].content[0].text == "[fr] hi"


def test_pool_over_streamable_http_upstream(tmp_path):
    """An HTTP upstream (with configured headers), and one that is down: listed concurrently, errors per server."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, UPSTREAM, "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    web = ServerConfig("web", url=f"http://127.0.0.1:{port}/mcp", headers={"X-Test": "1"}, timeout=10.0)
    down = ServerConfig("down", url="http://127.0.0.1:9/mcp", timeout=3.0)

    async def go():
        for _ in range(200):  # wait for the upstream to listen
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                await anyio.sleep(0.1)
        async with UpstreamPool([web, down]) as pool:
            tools, errors = await pool.list_all()
            res = await pool.call_tool("web", "add", {"a": 20, "b": 22})
            return tools, errors, res, pool.status()

    try:
        tools, errors, res, status = _run(go)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert {t.id for t in tools} >= {"add", "get_weather", "crash"} and all(t.server == "web" for t in tools)
    assert set(errors) == {"down"} and "cannot connect" in errors["down"]
    assert res.content[0].text == "42"
    assert status["web"]["connected"] and not status["down"]["connected"]


def test_batches_are_length_sorted_chunks_and_abandoned_queries_are_skipped():
    """While the pipeline runs, queries queue; the next round runs them shortest first in chunks of at most
    max_batch (an encoder pads each batch to its longest query), each caller gets its own row, and a query whose
    caller has gone is not run at all."""
    import asyncio
    import threading

    from ragopt.mcp.batching import Batcher

    release = threading.Event()

    class GatedPipe:
        def __init__(self):
            self.calls = []

        def search(self, texts):
            self.calls.append(list(texts))
            if len(self.calls) == 1:
                assert release.wait(30), "never released"

            class Out:
                def ranked(self, row):
                    return [(texts[row], float(len(texts[row])))]

            return Out()

    pipe, batcher = GatedPipe(), Batcher(max_batch=3, max_wait=0.0)
    queries = ["first", "a much longer query here", "mid query", "x", "the longest query of them all, by far", "ab"]

    async def go():
        first = asyncio.ensure_future(batcher.search_async(pipe, queries[0]))
        while not pipe.calls:  # the worker is inside the first call
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.search_async(pipe, q)) for q in queries[1:]]
        gone = asyncio.ensure_future(batcher.search_async(pipe, "abandoned"))
        while len(batcher._pending) < len(queries):  # every later query is queued, then one caller gives up
            await asyncio.sleep(0.01)
        gone.cancel()
        release.set()
        return await asyncio.gather(first, *rest)

    results = asyncio.run(asyncio.wait_for(go(), 60))
    assert [r[0][0] for r in results] == queries  # each caller its own row
    later = sorted(queries[1:], key=len)
    assert pipe.calls == [["first"], later[:3], later[3:]]  # shortest first, chunks of 3, "abandoned" never run
    assert batcher.calls == 3


def test_a_failing_worker_fails_the_waiting_queries_instead_of_hanging():
    import threading

    from ragopt.mcp.batching import Batcher

    class Pipe:
        def search(self, texts):
            raise AssertionError("unreachable: the round fails before")

    batcher = Batcher(max_batch=4, max_wait=0.0)
    batcher._take = lambda: (_ for _ in ()).throw(RuntimeError("bug in the worker"))  # the worker itself breaks
    errors = []

    def caller():
        try:
            batcher.search(Pipe(), "q")
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=caller, daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "the caller is still waiting"
    assert errors == ["bug in the worker"] and batcher._thread is None and batcher._pending == []


def test_new_limits_and_batching_options_are_checked(tools_file, store):
    for kw, where in [
        ({"max_sessions": 0}, "limits.max_sessions"),
        ({"request_read_seconds": 0}, "limits.request_read_seconds"),
        ({"request_read_seconds": float("inf")}, "limits.request_read_seconds"),
    ]:
        with pytest.raises(ConfigError, match=where):
            Limits(**kw)
    for kw, where in [({"batch_size": 0}, "batch_size"), ({"batch_wait": -1}, "batch_wait")]:
        with pytest.raises(ConfigError, match=where):
            _service(tools_file, store, **kw)
    svc = _service(tools_file, store, batch_size=2, batch_wait=0)
    assert svc._batcher.max_batch == 2 and svc._batcher.max_wait == 0.0
    assert svc.search("weather in a city")["tools"][0]["id"] == "get_weather"
