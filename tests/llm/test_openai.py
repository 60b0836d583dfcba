"""The openai backend against a real HTTP server (ragopt.testing.openai_server over the scripted double)."""

from __future__ import annotations

import time

import pytest

from ragopt.errors import LLMError
from ragopt.llm import CachedLLM, GenerationParams
from ragopt.llm.openai_backend import OpenAIBackend
from ragopt.testing.openai_server import OpenAITestServer
from ragopt.types import Stats

KEY = "sk-test-4f9c2e7d1a8b6c3e5f0a"
ENV = "RAGOPT_TEST_LLM_KEY"


@pytest.fixture
def server(scripted):
    with OpenAITestServer(scripted, api_key=KEY, model_name="test-model") as srv:
        yield srv


@pytest.fixture
def backend(server, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    monkeypatch.setattr("ragopt.llm.openai_backend.time.sleep", lambda s: None)  # no real backoff waits
    return OpenAIBackend(
        model="test-model", base_url=server.base_url, api_key_env=ENV, timeout_s=0.5, backoff_s=0.01, max_retries=2
    )


def test_chat_and_completions(server, backend):
    out = backend.generate(
        ["capital of France?", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]],
        GenerationParams(max_new_tokens=3),
    )
    assert [c.text for c in out] == ["The capital of", "I do not"]
    assert out[0].finish_reason == "length" and out[0].prompt_tokens == 4 and out[0].completion_tokens == 3
    assert all(r["path"] == "/v1/chat/completions" and r["authorized"] for r in server.requests)
    assert [{"role": "user", "content": "capital of France?"}] in [r["body"]["messages"] for r in server.requests]
    comp = backend.clone(mode="completions")
    assert comp.generate(["capital of Peru"], GenerationParams(stop=("is",)))[0].text == "The capital of Peru "
    assert server.requests[-1]["path"] == "/v1/completions" and server.requests[-1]["body"]["stop"] == ["is"]


def test_score_reads_top_logprobs(server, backend):
    res = backend.score(["Which passage? [1] or [2]"] * 2 + ["unrelated"], ["A", "B", "A"])
    assert [r.logprob for r in res[:2]] == [-0.25, -1.5] and res[0].exact and res[1].exact
    assert not res[2].exact  # not listed: an upper bound
    assert len(server.requests) == 2  # one request per distinct prompt
    body = server.requests[0]["body"]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    comp = backend.clone(mode="completions")
    assert comp.score(["Which passage?"], ["B"])[0].logprob == -1.5


def test_score_without_logprobs_says_use_generation_mode(scripted, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with OpenAITestServer(scripted, logprobs=False) as srv:
        b = OpenAIBackend(model="m", base_url=srv.base_url, api_key_env=ENV)
        with pytest.raises(LLMError, match="returned no logprobs.*use generation mode"):
            b.score(["Which passage?"], ["A"])
    with pytest.raises(LLMError, match="use generation mode"):
        OpenAIBackend(model="m", logprobs=False).score(["x"], ["A"])


@pytest.mark.parametrize("fault", ["429", "500", "503", "timeout", "close", "malformed", "no_choices"])
def test_retries_then_succeeds(server, backend, fault):
    server.inject(fault)
    assert backend.generate(["capital of Spain"])[0].text == "The capital of Spain is X."
    assert [r["fault"] for r in server.requests] == [fault, None]


@pytest.mark.parametrize(
    "fault, what",
    [
        ("429", "HTTP 429 \\(rate limited\\)"),
        ("500", "HTTP 500"),
        ("timeout", "timed out after 0.5 s"),
        ("close", "connection failed or closed"),
        ("malformed", "malformed response"),
    ],
)
def test_retries_are_bounded(server, backend, fault, what):
    server.inject(*[fault] * 5)
    with pytest.raises(
        LLMError, match=f"model 'test-model' at {server.base_url} \\(chat endpoint\\): {what}.*after 3 attempts"
    ):
        backend.generate(["capital of Spain"])
    assert len(server.requests) == 3  # 1 + max_retries


def test_client_errors_are_not_retried(server, backend):
    server.inject("400")
    with pytest.raises(LLMError, match="HTTP 400"):
        backend.generate(["x"])
    assert len(server.requests) == 1


def test_backoff_doubles(server, backend, monkeypatch):
    delays = []
    monkeypatch.setattr("ragopt.llm.openai_backend.time.sleep", delays.append)
    b = backend.clone(max_retries=4, backoff_s=1.0, backoff_max_s=3.0)
    server.inject("500", "503", "500", "500")
    assert b.generate(["capital of Chad"])[0].text == "The capital of Chad is X."
    assert len(delays) == 4
    for d, nominal in zip(delays, [1.0, 2.0, 3.0, 3.0]):
        assert 0.75 * nominal <= d <= nominal


def test_concurrency_limit(scripted, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with OpenAITestServer(scripted, api_key=KEY, delay_s=0.15) as srv:
        b = OpenAIBackend(model="m", base_url=srv.base_url, api_key_env=ENV, concurrency=3)
        t0 = time.perf_counter()
        out = b.generate([f"capital of C{i}" for i in range(9)])
        wall = time.perf_counter() - t0
        assert [c.text for c in out] == [f"The capital of C{i} is X." for i in range(9)]
        assert 1 < srv.peak_concurrency <= 3
        assert wall >= 3 * 0.15 * 0.9  # 9 requests, 3 at a time
        srv.reset()
        b1 = b.clone(concurrency=1)
        b1.generate([f"capital of D{i}" for i in range(3)])
        assert srv.peak_concurrency == 1


def test_partial_results_are_cached_failed_ones_are_not(server, backend, store):
    b = backend.clone(concurrency=1, max_retries=0)
    llm = CachedLLM(b, store=store)
    server.inject("ok", "400")
    stats = Stats()
    with pytest.raises(LLMError, match="HTTP 400") as e:
        llm.generate(["capital of A", "capital of B", "capital of C"], stats=stats)
    assert [c is not None for c in e.value.partial] == [True, False, False]
    assert len(llm.cache) == 1 and stats.counts["llm_calls"] == 1
    server.reset()
    out = llm.generate(["capital of A", "capital of B", "capital of C"], stats=stats)
    assert [c.cached for c in out] == [True, False, False] and len(server.requests) == 2


def test_missing_key_and_wrong_key(server, monkeypatch):
    monkeypatch.delenv("RAGOPT_TEST_MISSING_KEY", raising=False)
    b = OpenAIBackend(model="test-model", base_url=server.base_url, api_key_env="RAGOPT_TEST_MISSING_KEY")
    with pytest.raises(LLMError, match="environment variable RAGOPT_TEST_MISSING_KEY is not set"):
        b.generate(["x"])
    monkeypatch.setenv("RAGOPT_TEST_WRONG_KEY", "sk-wrong-000000000")
    b = OpenAIBackend(model="test-model", base_url=server.base_url, api_key_env="RAGOPT_TEST_WRONG_KEY")
    with pytest.raises(LLMError, match="HTTP 401") as e:
        b.generate(["x"])
    assert "sk-wrong" not in str(e.value)
    assert len(server.requests) == 1  # 401 is not retried


def test_api_key_never_leaks(server, backend, store, capsys):
    llm = CachedLLM(backend, store=store)
    llm.generate(["capital of France", [{"role": "user", "content": "hi"}]])
    llm.score(["Which passage?"], ["A"])
    server.inject("leak", "leak", "leak")
    with pytest.raises(LLMError) as e:
        llm.generate(["capital of Spain"])
    assert "***" in str(e.value) and KEY not in str(e.value)  # the echoed header was scrubbed
    texts = [repr(backend), repr(llm), str(backend.to_config()), backend.fingerprint(), str(e.value)]
    assert not any(KEY in t for t in texts)
    llm.close()
    files = [f for f in store.root.rglob("*") if f.is_file()]
    assert any(f.suffix == ".sqlite" for f in files)
    for f in files:
        assert KEY.encode() not in f.read_bytes(), f
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    assert all(r["authorized"] for r in server.requests)  # the key did reach the server


def test_connection_refused_names_the_endpoint(monkeypatch):
    monkeypatch.setattr("ragopt.llm.openai_backend.time.sleep", lambda s: None)
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = OpenAIBackend(model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env="", max_retries=1)
    with pytest.raises(LLMError, match=f"model 'm' at http://127.0.0.1:{port}/v1 .*connection.*after 2 attempts"):
        b.generate(["x"])


def test_completion_limit_fields_and_server_default(scripted):
    """A request without a limit gets the server's default; ``max_completion_tokens`` (the newer field) wins
    over ``max_tokens``, as in the OpenAI API."""
    import json
    import urllib.request

    def ask(srv, **limits):
        body = {"model": "m", "messages": [{"role": "user", "content": "capital of Chile?"}], **limits}
        req = urllib.request.Request(
            srv.base_url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            choice = json.loads(r.read())["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]

    with OpenAITestServer(scripted, default_max_tokens=2) as srv:
        assert ask(srv) == ("The capital", "length")
        assert ask(srv, max_tokens=3) == ("The capital of", "length")
        assert ask(srv, max_tokens=1, max_completion_tokens=3) == ("The capital of", "length")
        assert ask(srv, max_tokens=64)[1] == "stop"
