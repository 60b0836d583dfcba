"""Shared-prefix scoring in the transformers backend: rows of one ``score`` call that start with the same tokens
read that head once (KV cache) and must give the plain path's log-probabilities (fp32, within 1e-4)."""

from __future__ import annotations

import pytest

from ragopt.llm import transformers_backend as tb
from ragopt.rerankers.prp import PRPReranker

pytestmark = pytest.mark.slow

QUERIES = ["who wrote hamlet", "what is the boiling point of water at sea level in degrees celsius"]
PASSAGES = [
    "Hamlet is a tragedy by William Shakespeare.",
    "Macbeth is a tragedy written around 1606 by William Shakespeare; it is set in Scotland and follows a "
    "general who murders the king.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Paris",
]


def _rows(llm):
    """PRP prompts (both orders, passages of different lengths, two queries), each with both labels and one
    multi-token continuation, plus a prompt with a head of its own (a group of one)."""
    st = PRPReranker(llm=llm)
    prompts, conts = [], []
    for q in QUERIES:
        for i, a in enumerate(PASSAGES):
            for b in PASSAGES[i + 1 :]:
                for first, second in ((a, b), (b, a)):
                    p = st.prompt(q, first, second)
                    prompts += [p, p]
                    conts += ["A", "B"]
        prompts.append(st.prompt(q, PASSAGES[0], PASSAGES[2]))
        conts.append("Passage A is more relevant")
    prompts.append("The capital of France, a country in western Europe, is")
    conts.append(" Paris")
    return prompts, conts


def test_shared_prefix_scores_equal_the_plain_path(smollm2, session_store):
    plain = smollm2.clone(share_prefix=False).use_store(session_store)
    assert smollm2.share_prefix
    prompts, conts = _rows(smollm2)

    # the rows do form groups with a long shared head, and the lone prompt is in none of them
    tok = smollm2.load()[1]
    seqs: dict[tuple[int, ...], int] = {}
    for p, c in zip(prompts, conts):
        c_ids = tok(c, add_special_tokens=False)["input_ids"]
        key = tuple(smollm2.encode(p) + c_ids[:-1])
        seqs[key] = max(seqs.get(key, 0), len(c_ids))
    groups = smollm2._prefix_groups(seqs)
    assert len(groups) >= 2 and all(len(g) >= 2 and head >= tb._MIN_SHARED for g, head in groups)
    lone = tuple(smollm2.encode(prompts[-1]))
    assert all(lone not in g for g, _ in groups)
    assert sum(len(g) for g, _ in groups) == len(seqs) - 1
    assert any(len({len(s) for s in g}) > 1 for g, _ in groups)  # rows of different lengths share a head

    shared = smollm2.score(prompts, conts)
    ref = plain.score(prompts, conts)
    assert len(shared) == len(ref) == len(prompts)
    for i, (s, r) in enumerate(zip(shared, ref)):
        assert s.tokens == r.tokens and s.prompt_tokens == r.prompt_tokens, i
        assert s.token_logprobs == pytest.approx(r.token_logprobs, abs=1e-4), (i, conts[i])
        assert s.logprob == pytest.approx(r.logprob, abs=1e-4), i
    multi = [s for s, c in zip(shared, conts) if c.startswith("Passage")]
    assert multi and all(len(s.token_logprobs) > 1 for s in multi)


def test_a_group_of_one_and_short_heads_take_the_plain_path(smollm2, session_store):
    one = {tuple(smollm2.encode("The capital of France is")): 1}
    assert smollm2._prefix_groups(one) == []
    short = {tuple(smollm2.encode(t)): 1 for t in ("Paris is", "Paris was")}  # head far below _MIN_SHARED
    assert smollm2._prefix_groups(short) == []
    long_head = {tuple(range(40)): 1, tuple(range(41)): 1}
    assert [len(g) for g, _ in smollm2._prefix_groups(long_head)] == [2]
    assert smollm2.clone(share_prefix=False).use_store(session_store)._prefix_groups(long_head) == []
