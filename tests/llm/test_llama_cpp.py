"""The llama_cpp backend with the packaged SmolLM2 GGUF, checked against llama.cpp itself and the transformers backend.

llama-cpp-python compiles llama.cpp at install time, so it is not a dependency of ragopt and not installed in CI:
these tests run where it is installed (``pip install llama-cpp-python``) and skip elsewhere.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ragopt.llm import CachedLLM, GenerationParams
from ragopt.types import Stats

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed"),
]

CHAT = [{"role": "user", "content": "What is the capital of France?"}]
# few-shot answers on the line after "A:": the completion opens with a newline, which must not end it
LEAD = (
    "Q: What colour is the sky?\nA:\n Blue\n\nQ: How many legs does a cat have?\nA:\n Four\n\n"
    "Q: What is the capital of France?\nA:"
)


@pytest.fixture(scope="module")
def llama(session_store):
    from ragopt.llm.llama_cpp_backend import LlamaCppLLM

    return LlamaCppLLM(model="smollm2-135m-instruct", n_threads=1, n_ctx=1024, mmap=False).use_store(session_store)


def reference_logprobs(llama, text: str, cont: str) -> list[float]:
    """Logprobs of ``cont``'s tokens after ``text`` from a second llama.cpp model that keeps every position's
    logits (``logits_all``) and reads them from one pass: an independent path to the same numbers."""
    import llama_cpp

    ref = llama_cpp.Llama(
        model_path=str(llama._resolved().gguf_path), n_ctx=1024, n_threads=1, logits_all=True, verbose=False
    )
    p = ref.tokenize(text.encode(), add_bos=True, special=True)
    c = ref.tokenize(cont.encode(), add_bos=False, special=False)
    ref.eval(p + c[:-1])
    logits = np.asarray(ref.scores[len(p) - 1 : len(p) + len(c) - 1], dtype=np.float64)
    logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    return [float(logp[j, t]) for j, t in enumerate(c)]


def test_score_matches_a_full_logits_pass_and_prefix_reuse_changes_nothing(llama):
    text = "The capital of Germany is"
    want = reference_logprobs(llama, text, " Berlin, a city")
    # scored after an unrelated prompt, then after a prompt sharing its head (KV cache reused), then alone
    llama.score(["Something else entirely."], [" x"])
    first = llama.score([text], [" Berlin, a city"])[0]
    again = llama.score([text + " the", text], [" city", " Berlin, a city"])[1]
    assert first.completion_tokens == len(want) and first.prompt_tokens == len(llama.encode(text))
    assert first.token_logprobs == pytest.approx(want, abs=1e-3)
    assert again.token_logprobs == pytest.approx(first.token_logprobs, abs=1e-3)
    assert max(first.token_logprobs[:1]) > -2.0  # " Berlin" is a likely next token


def test_greedy_generation_stops_after_leading_whitespace_and_counts_tokens(llama):
    nl = GenerationParams(max_new_tokens=8, stop=("\n",))
    got = llama.generate([LEAD, "The three primary colours are"], nl)
    assert got[0].text.startswith("\n") and "Paris" in got[0].text and "\n" not in got[0].text.lstrip()
    assert got[0].finish_reason == "stop" and 0 < got[0].completion_tokens < 8
    assert got[1].finish_reason == "length" and got[1].completion_tokens == 8
    assert got[0].prompt_tokens == len(llama.encode(LEAD))
    assert llama.generate([LEAD], nl) == got[:1]  # greedy: the same answer again


def test_chat_prompts_render_like_the_transformers_backend(llama, smollm2):
    import llama_cpp

    assert llama.render(CHAT) == smollm2.render(CHAT)
    assert llama.encode(CHAT) == smollm2.encode(CHAT)
    # greedy takes the most likely next token, as a full-logits pass of llama.cpp computes it
    ref = llama_cpp.Llama(
        model_path=str(llama._resolved().gguf_path), n_ctx=1024, n_threads=1, logits_all=True, verbose=False
    )
    ids = llama.encode(CHAT)
    ref.eval(ids)
    best = int(np.argmax(ref.scores[len(ids) - 1]))
    assert llama.generate([CHAT], GenerationParams(max_new_tokens=1))[0].text == ref.detokenize([best]).decode()
    # the same weights, quantised in llama.cpp and dequantised to float32 in transformers: close logprobs (the
    # two top first tokens are within 0.1 nats of each other, so which one greedy picks may differ)
    a, b = llama.score([CHAT, CHAT], ["The", "Paris"]), smollm2.score([CHAT, CHAT], ["The", "Paris"])
    assert a[0].logprob > a[1].logprob + 1 and b[0].logprob > b[1].logprob + 1
    assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=0.5)


def test_through_the_call_cache(llama, tmp_path):
    from ragopt.store import ArtifactStore

    client = CachedLLM(llama, store=ArtifactStore(tmp_path))
    stats = Stats()
    first = client.score([LEAD, LEAD], [" Paris", " London"], stats=stats)
    second = client.score([LEAD, LEAD], [" Paris", " London"], stats=stats)
    assert [s.logprob for s in first] == [s.logprob for s in second]
    assert first[0].logprob > first[1].logprob
    assert stats.counts["llm_calls"] == 2 and stats.counts["llm_cache_hits"] == 2
