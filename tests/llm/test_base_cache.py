"""The protocol types, the scripted double, configs and the persistent call cache (no model, no network)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
import yaml

from ragopt.config import from_config
from ragopt.errors import BackendUnavailableError, ConfigError, LLMError, StageError
from ragopt.llm import CachedLLM, GenerationParams, LLMCallCache, load_backend
from ragopt.llm.base import apply_stop
from ragopt.llm.scripted import ScriptedLLM
from ragopt.types import Stats

CONFIGS = [
    {"type": "scripted", "name": "double", "rules": [{"match": "x", "output": "y"}], "default": "z"},
    {"type": "transformers", "model": "smollm2-135m-instruct", "dtype": "float32", "batch_size": 2},
    {"type": "transformers", "model": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "abc123"},
    {
        "type": "openai",
        "model": "gpt-4o-mini",
        "base_url": "http://localhost:8000/v1",
        "api_key_env": "MY_KEY",
        "concurrency": 3,
        "extra_body": {"top_k": 5},
    },
    {"type": "llama_cpp", "model": "smollm2-135m-instruct", "n_ctx": 2048},
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c["type"])
def test_config_round_trip(cfg):
    backend = load_backend(cfg)
    out = backend.to_config()
    assert {k: out[k] for k in cfg} == cfg
    again = from_config(yaml.safe_load(yaml.safe_dump(out)))
    assert again == backend and again.to_config() == out
    with pytest.raises(ConfigError, match="unknown key"):
        from_config({**cfg, "temprature": 0.5})


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown model alias 'smollm2-135m'.*did you mean"):
        load_backend({"type": "transformers", "model": "smollm2-135m"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_backend({"type": "transformers", "model": "./no/such/model.gguf"})
    with pytest.raises(ConfigError, match="not an LLM backend"):
        load_backend({"type": "bm25"})
    with pytest.raises(ConfigError, match="rules\\[0\\]"):
        ScriptedLLM(rules=[{"match": "x"}])


def test_api_key_is_never_a_config_value():
    key = "sk-live-abcdefghijklmnop"
    with pytest.raises(ConfigError) as e:
        load_backend({"type": "openai", "model": "m", "api_key_env": key})
    assert key not in str(e.value) and "NAME of an environment variable" in str(e.value)
    for url in ("https://user:pw@example.com/v1", "https://example.com/v1?api_key=abc"):
        with pytest.raises(ConfigError, match="credentials") as e:
            load_backend({"type": "openai", "model": "m", "base_url": url})
        assert "pw" not in str(e.value) and "abc" not in str(e.value)


def test_generation_params():
    p = GenerationParams()
    assert p.greedy and p.deterministic and p.to_dict() == {"max_new_tokens": 64, "temperature": 0.0, "stop": []}
    assert GenerationParams(temperature=0.7, top_p=0.9, seed=None).deterministic is False
    assert GenerationParams(temperature=0.7, seed=1).to_dict()["seed"] == 1
    assert GenerationParams(top_p=0.5).to_dict() == p.to_dict()  # greedy ignores sampling fields
    assert GenerationParams.from_dict({"stop": "\n", "max_new_tokens": 4}).stop == ("\n",)
    assert GenerationParams.from_dict({"stop": None}) == GenerationParams()
    for bad in ({"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"seed": 1.5}, {"stop": [""]}):
        with pytest.raises(ConfigError):
            GenerationParams(**bad)
    with pytest.raises(ConfigError, match="unknown decoding parameter"):
        GenerationParams.from_dict({"max_tokens": 3})
    # a call with stops is keyed by how stops cut, so completions cut by an older rule are not served
    with_stop = GenerationParams(stop=("\n",))
    assert with_stop.to_dict()["stop_rule"] == "after-leading-space"
    assert GenerationParams.from_dict(with_stop.to_dict()) == with_stop


@pytest.mark.parametrize(
    "text, stop, want",
    [
        (" Paris\nQ: next", ("\n",), (" Paris", True)),
        # small models open an answer with a newline: that newline does not end it (it used to give "")
        (" \nParis\nQ: next", ("\n",), (" \nParis", True)),
        ("\n\n  Paris", ("\n",), ("\n\n  Paris", False)),
        ("   ", ("\n",), ("   ", False)),
        ("a of b is c", ("is", "of"), ("a ", True)),
        ("no stop here", (), ("no stop here", False)),
    ],
)
def test_apply_stop_cuts_after_leading_whitespace(text, stop, want):
    assert apply_stop(text, stop) == want


def test_prompt_checks(scripted):
    with pytest.raises(StageError, match="role 'bot'"):
        scripted.generate([[{"role": "bot", "content": "x"}]])
    with pytest.raises(StageError, match="a list of prompts"):
        scripted.generate("just a string")
    with pytest.raises(StageError, match="one continuation per prompt"):
        scripted.score(["a", "b"], ["A"])


def test_scripted_double(scripted):
    out = scripted.generate(
        ["What is the capital of France?", [{"role": "user", "content": "hello"}], "long"],
        GenerationParams(max_new_tokens=4),
    )
    assert [c.text for c in out] == ["The capital of France", "I do not know.", "one two three four"]
    assert [c.finish_reason for c in out] == ["length", "stop", "length"]
    assert out[0].prompt_tokens == 6 and out[0].completion_tokens == 4
    assert scripted.generate(["capital of Peru"], GenerationParams(stop=("is",)))[0].text == "The capital of Peru "
    s = scripted.score(["Which passage? ", "Which passage? ", "other"], ["A", "B", "A"])
    assert [x.logprob for x in s] == [-0.25, -1.5, -10.0]
    assert scripted.next_token_logprobs("Which passage?", 5) == [("A", -0.25), ("B", -1.5)]
    assert "TEST DOUBLE" in ScriptedLLM.__doc__


def test_cache_hits_and_counts(scripted, store):
    llm = CachedLLM(scripted, store=store)
    stats = Stats()
    prompts = ["capital of France", "capital of Spain", "capital of France"]
    first = llm.generate(prompts, stats=stats)
    assert [c.cached for c in first] == [False, False, True]  # the duplicate rode on the first
    assert stats.counts["llm_calls"] == 2 and stats.counts["llm_cache_hits"] == 1
    assert stats.counts["prompt_tokens"] == 6 and stats.counts["completion_tokens"] == 12
    assert stats.seconds["llm"] > 0
    assert len(scripted.calls) == 2
    again = CachedLLM(scripted, store=store)  # a new wrapper, same store: read from disk
    stats2 = Stats()
    second = again.generate(prompts + ["capital of Peru"], stats=stats2)
    assert [c.text for c in second[:3]] == [c.text for c in first]
    assert all(c.cached for c in second[:3]) and not second[3].cached
    assert stats2.counts["llm_calls"] == 1 and stats2.counts["llm_cache_hits"] == 3
    assert stats2.counts["prompt_tokens"] == 3  # only what was paid for
    assert [p for _, p in scripted.calls] == ["capital of France", "capital of Spain", "capital of Peru"]


def test_cache_key_separation(scripted, store):
    llm = CachedLLM(scripted, store=store)
    llm.generate(["capital of France"], GenerationParams(max_new_tokens=3))
    llm.generate(["capital of France"], GenerationParams(max_new_tokens=4))
    llm.generate(["capital of France"], GenerationParams(max_new_tokens=4, stop=("X",)))
    llm.generate([[{"role": "user", "content": "capital of France"}]], GenerationParams(max_new_tokens=4))
    assert len(scripted.calls) == 4 and len(llm.cache) == 4
    other = ScriptedLLM(name="another-model", rules=scripted.rules)
    assert other.fingerprint() != scripted.fingerprint()
    llm2 = CachedLLM(other, store=store)
    stats = Stats()
    llm2.generate(["capital of France"], GenerationParams(max_new_tokens=3), stats=stats)
    assert stats.counts["llm_cache_hits"] == 0 and len(other.calls) == 1
    assert llm2.cache.path != llm.cache.path
    # score and generate rows never collide; continuations are part of the key
    llm.score(["Which passage?"] * 2, ["A", "B"])
    stats = Stats()
    res = llm.score(["Which passage?", "Which passage?"], ["B", "A"], stats=stats)
    assert [r.logprob for r in res] == [-1.5, -0.25] and all(r.cached for r in res)
    assert stats.counts["llm_cache_hits"] == 2 and stats.counts.get("llm_calls", 0) == 0


def test_sampling_without_seed_is_not_cached(scripted, store):
    llm = CachedLLM(scripted, store=store)
    p = GenerationParams(temperature=0.8)
    llm.generate(["capital of France", "capital of France"], p)
    llm.generate(["capital of France"], p)
    assert len(scripted.calls) == 3 and len(llm.cache) == 0
    seeded = GenerationParams(temperature=0.8, seed=7)
    llm.generate(["capital of France"], seeded)
    llm.generate(["capital of France"], seeded)
    llm.generate(["capital of France"], GenerationParams(temperature=0.8, seed=8))
    assert len(scripted.calls) == 5 and len(llm.cache) == 2


def test_failed_call_writes_nothing(store):
    failing = ScriptedLLM(rules=[{"match": "ok", "output": "fine"}], fail_on="boom")
    llm = CachedLLM(failing, store=store, chunk_size=2)
    stats = Stats()
    with pytest.raises(LLMError, match="scripted failure"):
        llm.generate(["ok 1", "ok 2", "ok 3", "boom"], stats=stats)
    # the first chunk completed and was committed; the failed chunk wrote nothing
    assert len(llm.cache) == 2 and stats.counts["llm_calls"] == 2
    healed = ScriptedLLM(rules=[{"match": "ok", "output": "fine"}], fail_on="boom")
    with pytest.raises(LLMError):
        CachedLLM(healed, store=store).score(["boom"], ["A"])
    assert len(llm.cache) == 2


def test_uncached_mode_counts(scripted, store):
    llm = CachedLLM(scripted, store=store, cache=False)
    stats = Stats()
    llm.generate(["capital of France"] * 2, stats=stats)
    assert stats.counts["llm_calls"] == 2 and len(scripted.calls) == 2
    assert not (store.root / "llm-calls").exists()


def test_cache_file_checks_its_model(tmp_path):
    cache = LLMCallCache.for_fingerprint(tmp_path, "scripted:a")
    cache.put("generate", "p", {"max_new_tokens": 1}, [("x", "", {"text": "t"})])
    assert cache.get("generate", "p", [("x", ""), ("y", "")]) == [{"text": "t"}, None]
    meta = next((tmp_path / "llm-calls").glob("*.json"))
    meta.write_text('{"format": 1, "fingerprint": "scripted:b"}')
    from ragopt.errors import ArtifactError

    with pytest.raises(ArtifactError, match="another model"):
        LLMCallCache.for_fingerprint(tmp_path, "scripted:a")


def test_llama_cpp_missing_is_a_clear_error():
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is not None:
        pytest.skip("llama_cpp is installed")
    backend = load_backend({"type": "llama_cpp", "model": "smollm2-135m-instruct"})
    with pytest.raises(BackendUnavailableError, match="pip install llama-cpp-python"):
        backend.load()


def test_import_stays_light():
    code = (
        "import sys, ragopt, ragopt.llm, ragopt.llm.transformers_backend, ragopt.llm.openai_backend, "
        "ragopt.llm.llama_cpp_backend, ragopt.testing.openai_server\n"
        "print([m for m in ('torch', 'transformers', 'openai', 'gguf', 'llama_cpp') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_hit_replays_the_seconds_its_call_took(store):
    slow = ScriptedLLM(rules=[{"match": "x", "output": "y"}], delay_s=0.05)
    stats = Stats()
    CachedLLM(slow, store=store).generate(["x 1", "x 2"], stats=stats)  # one call of two prompts, >= 0.05 s
    assert stats.cached_seconds == 0
    again = Stats()
    CachedLLM(slow, store=store).generate(["x 2", "x 1", "x 1"], stats=again)  # from disk; the duplicate rides
    assert again.counts["llm_cache_hits"] == 3 and again.counts.get("llm_calls", 0) == 0
    # each record holds its share of the call (0.05 s / 2 at least); the duplicate read the cache too
    assert again.cached_seconds >= 3 * 0.025
    assert again.seconds["llm"] < again.cached_seconds  # a hit is faster than the call was
    merged = Stats().merge(again).merge(again)
    assert merged.cached_seconds == pytest.approx(2 * again.cached_seconds)
    # records written without the time (an older cache) add nothing
    llm = CachedLLM(slow, store=store)
    with sqlite3.connect(llm.cache.path) as db:
        db.execute("UPDATE calls SET response = json_remove(response, '$.seconds')")
    old = Stats()
    assert [c.text for c in llm.generate(["x 1", "x 2"], stats=old)] == ["y", "y"]
    assert old.counts["llm_cache_hits"] == 2 and old.cached_seconds == 0
