"""The transformers backend with the packaged SmolLM2-135M-Instruct (CPU, fp32).

The session fixture converts the GGUF once into the session store (20-40 s); the tests then generate a few tokens.
"""

from __future__ import annotations

import time

import pytest

from ragopt.llm import CachedLLM, GenerationParams
from ragopt.llm.transformers_backend import CONVERTED_KIND, TransformersLLM, unload_all
from ragopt.types import Stats

pytestmark = pytest.mark.slow

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": "Which planet is known as the red planet? Think about the solar system."},
    ],
    "The three primary colours are",
]


def test_converted_weights_are_an_artifact_reused_on_the_next_load(smollm2, session_store, capsys):
    first = smollm2.load_info
    assert first["artifact_created"] is True and first["dtype"] == "float32"
    assert first["artifact"].startswith(str(session_store.root / CONVERTED_KIND))
    unload_all()  # forget the process-level model: the next load must go to the store
    again = TransformersLLM(model="smollm2-135m-instruct", device="cpu").use_store(session_store)
    t0 = time.perf_counter()
    again.load()
    reload_s = time.perf_counter() - t0
    info = again.load_info
    assert info["artifact_created"] is False and info["artifact"] == first["artifact"]
    assert again.fingerprint() == smollm2.fingerprint()
    with capsys.disabled():
        print(
            f"\nSmolLM2 load: cold (convert GGUF) {smollm2.first_load_s:.1f} s, "
            f"from converted artifact {reload_s:.2f} s"
        )


def test_fingerprint_names_the_weights(smollm2):
    from ragopt.llm.models import PACKAGED

    assert smollm2.fingerprint() == f"transformers:gguf-sha256:{PACKAGED['smollm2-135m-instruct'].sha256}:float32"


def test_greedy_is_deterministic_and_batching_does_not_change_it(smollm2, capsys):
    params = GenerationParams(max_new_tokens=8)
    t0 = time.perf_counter()
    batched = smollm2.generate(CHATS, params)
    dt = time.perf_counter() - t0
    assert smollm2.generate(CHATS, params) == batched
    single = [smollm2.generate([p], params)[0] for p in CHATS]
    assert [c.text for c in single] == [c.text for c in batched]
    assert [c.completion_tokens for c in single] == [c.completion_tokens for c in batched]
    assert "Paris" in batched[0].text
    assert all(0 < c.completion_tokens <= 8 for c in batched)
    assert batched[2].finish_reason == "length" and batched[2].prompt_tokens == 5
    with capsys.disabled():
        n = sum(c.completion_tokens for c in batched)
        print(f"\nSmolLM2 batched generate: {n} tokens in {dt:.2f} s ({n / dt:.1f} tok/s incl. prefill)")


def test_stop_strings_and_seeded_sampling(smollm2):
    out = smollm2.generate([CHATS[0]], GenerationParams(max_new_tokens=8, stop=("of",)))[0]
    assert "of" not in out.text and out.finish_reason == "stop"
    # a row ended by a stop string inside a batch is padded after it: the pad is not a generated token
    stop = GenerationParams(max_new_tokens=8, stop=("of",))
    batched = smollm2.generate(CHATS, stop)
    single = [smollm2.generate([p], stop)[0] for p in CHATS]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in single]
    # few-shot answers on the line after "A:": the completion opens with a newline, which must not end it
    lead = "Q: What colour is the sky?\nA:\n Blue\n\nQ: How many legs does a cat have?\nA:\n Four\n\n"
    lead += "Q: What is the capital of France?\nA:"
    nl = GenerationParams(max_new_tokens=8, stop=("\n",))
    got = smollm2.generate([lead, CHATS[2]], nl)[0]
    assert got.text.startswith("\n") and "Paris" in got.text and "\n" not in got.text.lstrip()
    assert got.finish_reason == "stop" and got.completion_tokens < 8
    assert smollm2.generate([lead], nl)[0] == got
    sampled = GenerationParams(max_new_tokens=5, temperature=1.0, seed=11)
    a = smollm2.generate(CHATS, sampled)
    b = smollm2.generate(CHATS[::-1], sampled)[::-1]  # other batch order, same per-prompt samples
    assert [c.text for c in a] == [c.text for c in b]


def test_score_matches_a_manual_forward_pass(smollm2):
    import torch

    model, tok = smollm2.load()
    prompts = [CHATS[0], CHATS[0], CHATS[1], "The capital of Germany is"]
    conts = ["Paris", "The", "Mars is red", " Berlin, a city"]
    got = smollm2.score(prompts, conts)
    for p, c, s in zip(prompts, conts, got):
        # no special tokens for chats (the template has them) nor plain text (SmolLM2's GGUF declares no BOS:
        # test_gguf_meta.py; some transformers versions add one by default)
        p_ids = tok(smollm2.render(p), add_special_tokens=False)["input_ids"]
        c_ids = tok(c, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(torch.tensor([p_ids + c_ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        want = [float(logp[len(p_ids) - 1 + j, t]) for j, t in enumerate(c_ids)]
        assert s.completion_tokens == len(c_ids) and s.prompt_tokens == len(p_ids)
        assert s.token_logprobs == pytest.approx(want, abs=2e-4)
        assert s.logprob == pytest.approx(sum(want), abs=5e-4)
    top = smollm2.next_token_logprobs(CHATS[0], 3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


def test_cached_calls_do_not_touch_the_model(smollm2, tmp_path):
    from ragopt.store import ArtifactStore

    llm = CachedLLM(smollm2, store=ArtifactStore(tmp_path))
    params = GenerationParams(max_new_tokens=4)
    llm.generate(CHATS[:2], params)
    stats = Stats()
    out = llm.generate(CHATS[:2], params, stats=stats)
    assert all(c.cached for c in out) and stats.counts["llm_cache_hits"] == 2
    assert stats.counts.get("llm_calls", 0) == 0  # the model was not called


def test_openai_backend_over_a_real_model_through_http(smollm2, monkeypatch):
    """End to end: the openai client -> HTTP test server -> SmolLM2, equal to calling SmolLM2 directly."""
    from ragopt.llm.openai_backend import OpenAIBackend
    from ragopt.testing.openai_server import OpenAITestServer

    params = GenerationParams(max_new_tokens=6)
    with OpenAITestServer(smollm2) as srv:
        http = OpenAIBackend(model="smollm2", base_url=srv.base_url, api_key_env="", concurrency=2)
        assert [c.text for c in http.generate(CHATS[:2], params)] == [
            c.text for c in smollm2.generate(CHATS[:2], params)
        ]
        top = dict(smollm2.next_token_logprobs(CHATS[0], 20))
        label = next(iter(top))
        assert http.score([CHATS[0]], [label])[0].logprob == pytest.approx(top[label], abs=1e-5)


def test_models_that_cannot_be_loaded(tmp_path):
    from ragopt.errors import LLMError
    from ragopt.store import ArtifactStore

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(LLMError, match="cannot load transformers model .*broken.gguf"):
        TransformersLLM(model=str(bad), device="cpu").use_store(store).load()
    assert not list((tmp_path / "store").rglob("*.safetensors"))  # no half-converted artifact
    # a hub id without a hub (tests run with HF_HUB_OFFLINE=1)
    with pytest.raises(LLMError, match="cannot load transformers model 'ragopt-test/no-such-model'") as err:
        TransformersLLM(model="ragopt-test/no-such-model", device="cpu").use_store(store).load()
    # one line (the hub's offline error runs over two), saying what works without a network
    assert "\n" not in str(err.value) and str(err.value).endswith(
        "no network or hub cache here? use a packaged alias or a folder"
    )


class _AddsBos:
    """A tokenizer that puts a BOS before plain text by default, as transformers 4.56-5.0 did for SmolLM2's GGUF."""

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, text, add_special_tokens=True, **kw):
        out = self._tok(text, add_special_tokens=False, **kw)
        if add_special_tokens:
            out["input_ids"] = [self._tok.bos_token_id, *out["input_ids"]]
        return out


def test_plain_prompts_get_the_special_tokens_the_gguf_declares(smollm2, monkeypatch):
    """SmolLM2's GGUF says add_bos_token false (llama.cpp reads it so): a plain prompt has no BOS, whatever the
    tokenizer's default; a GGUF that asked for BOS and EOS would get both (EOS left off for a prompt's head)."""
    _, tok = smollm2.load()
    text = "The three primary colours are"
    plain = list(tok(text, add_special_tokens=False)["input_ids"])
    assert len(plain) == 5 and smollm2.load_info["specials"] == {"bos": False, "eos": False}
    monkeypatch.setattr(smollm2, "_tokenizer", _AddsBos(tok))
    assert smollm2.encode(text) == plain
    assert smollm2.generate([text], GenerationParams(max_new_tokens=1))[0].prompt_tokens == 5
    monkeypatch.setitem(smollm2._info, "specials", {"bos": True, "eos": True})
    assert smollm2.encode(text) == [tok.bos_token_id, *plain, tok.eos_token_id]
    assert smollm2.encode_plain(text, eos=False) == [tok.bos_token_id, *plain]
    monkeypatch.delitem(smollm2._info, "specials")  # weights that declare nothing: the tokenizer's default
    assert smollm2.encode(text) == [tok.bos_token_id, *plain]
