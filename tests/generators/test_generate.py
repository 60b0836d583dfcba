"""The generate stage over the scripted test double: prompts, packing, context rows, counts, the call cache,
closed-book mode and bad input. (The real-model end-to-end run is tests/generators/test_generate_e2e.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from ragopt.config import from_config
from ragopt.errors import ConfigError, StageError
from ragopt.generators import Generator
from ragopt.llm.scripted import ScriptedLLM
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Queries

TEXTS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "The Nile is a river in Africa.",
    "Mount Everest is the highest mountain.",
    "Shakespeare wrote Hamlet.",
]


@pytest.fixture()
def corpus():
    return Corpus([f"d{i}" for i in range(len(TEXTS))], TEXTS, [""] * len(TEXTS), name="tiny")


def scripted():
    return ScriptedLLM(
        rules=[
            {"match": r"Question: what is the capital of france", "output": "Answer: Paris.\nMore"},
            {"match": r"Question: who wrote hamlet", "output": "The answer is Shakespeare"},
        ],
        default="unknown",
    )


def batch_for(corpus, rows, questions):
    width = max(len(r) for r in rows)
    idx = np.full((len(rows), width), -1, np.int64)
    sc = np.full((len(rows), width), -np.inf, np.float32)
    for i, r in enumerate(rows):
        idx[i, : len(r)] = r
        sc[i, : len(r)] = np.arange(len(r), 0, -1)
    return Batch(Queries([f"q{i}" for i in range(len(rows))], questions), corpus, idx, sc)


def test_answers_contexts_and_counts(corpus, tmp_path):
    gen = Generator(llm=scripted(), context_k=2, template="qa", chat=True).fit(corpus, ArtifactStore(tmp_path))
    b = batch_for(corpus, [[0, 1, 2], [4, 3], []], ["what is the capital of france", "who wrote hamlet", "why"])
    out = gen.transform(b)
    assert out.answers == ["Paris", "Shakespeare", "unknown"]
    assert out.contexts == [[0, 1], [4, 3], []]
    assert out.stats.counts["llm_calls"] == 3 and out.stats.counts["generated_answers"] == 3
    assert out.stats.counts["context_passages"] == 4 and out.stats.counts.get("context_dropped", 0) == 0
    prompt = gen.llm.calls[0][1]
    assert "[1] Paris is the capital of France.\n[2] Berlin" in prompt[-1]["content"]
    # the same prompts again: all served by the persistent cache, in a fresh stage object
    again = Generator(llm=scripted(), context_k=2, template="qa", chat=True).fit(corpus, ArtifactStore(tmp_path))
    out2 = again.transform(
        batch_for(corpus, [[0, 1, 2], [4, 3], []], ["what is the capital of france", "who wrote hamlet", "why"])
    )
    assert out2.answers == out.answers and out2.stats.counts["llm_cache_hits"] == 3
    assert out2.stats.counts.get("llm_calls", 0) == 0 and again.llm.calls == []


def test_order_and_budget(corpus, tmp_path):
    gen = Generator(llm=scripted(), context_k=3, order="reversed", template="qa", chat=True).fit(
        corpus, ArtifactStore(tmp_path)
    )
    out = gen.transform(batch_for(corpus, [[0, 1, 2]], ["what is the capital of france"]))
    assert out.contexts == [[2, 1, 0]]  # best passage last, next to the question
    content = gen.llm.calls[0][1][-1]["content"]
    assert content.index("Nile") < content.index("Berlin") < content.index("Paris")
    # a budget that fits the template and question but only one passage: the weaker ones are dropped
    bare = Generator(llm=scripted(), context_k=0, template="qa", chat=True).fit(corpus, ArtifactStore(tmp_path))
    n_bare = bare.client().count_tokens(
        [
            " ".join(
                m["content"] for m in bare.prompts(batch_for(corpus, [[0]], ["what is the capital of france"]))[0][0]
            )
        ]
    )[0]
    tight = Generator(llm=scripted(), context_k=3, template="qa", chat=True, max_prompt_tokens=n_bare + 8).fit(
        corpus, ArtifactStore(tmp_path)
    )
    out = tight.transform(batch_for(corpus, [[0, 1, 2]], ["what is the capital of france"]))
    assert out.contexts == [[0]] and out.stats.counts["context_dropped"] == 2
    with pytest.raises(
        StageError, match=r"max_prompt_tokens=16 is smaller than the template and question of query 'q0'"
    ):
        Generator(llm=scripted(), context_k=1, template="qa", max_prompt_tokens=16).fit(corpus).transform(
            batch_for(corpus, [[0]], ["what is the capital of france"])
        )


def test_plain_prompt_ends_where_the_answer_begins(corpus, tmp_path):
    gen = Generator(llm=scripted(), context_k=1, template="qa_fewshot").fit(corpus, ArtifactStore(tmp_path))
    out = gen.transform(batch_for(corpus, [[0]], ["what is the capital of france"]))
    prompt = gen.llm.calls[0][1]
    assert isinstance(prompt, str) and prompt.endswith("Question: what is the capital of france\nShort answer:")
    assert "when was the eiffel tower completed\nShort answer: 1889\n\n" in prompt  # worked examples inline
    assert out.answers == ["Paris"]


def test_closed_book_needs_no_retriever(corpus, tmp_path):
    gen = Generator(llm=scripted(), context_k=0, template="closed_book").fit(corpus, ArtifactStore(tmp_path))
    assert gen.requires == frozenset({"queries"})
    out = gen.transform(Batch(Queries(["q0"], ["who wrote hamlet"])))
    assert out.answers == ["Shakespeare"] and out.contexts == [[]]
    with pytest.raises(StageError, match="needs candidates"):
        Generator(llm=scripted(), context_k=3).fit(corpus, ArtifactStore(tmp_path)).transform(
            Batch(Queries(["q0"], ["who wrote hamlet"]))
        )


def test_pipeline_config_round_trip_and_errors(corpus):
    cfg = {
        "type": "pipeline",
        "stages": [
            {"type": "bm25"},
            {
                "type": "generate",
                "llm": {"type": "scripted", "default": "x"},
                "context_k": 3,
                "order": "edges",
                "compression": 0.5,
            },
        ],
    }
    pipe = from_config(cfg)
    assert from_config(pipe.to_config()) == pipe
    with pytest.raises(ConfigError, match=r"stages\[1\]\.template: unknown field\(s\) \{answer\}") as e:
        from_config({**cfg, "stages": [cfg["stages"][0], {**cfg["stages"][1], "template": "{question} {answer}"}]})
    assert e.value.path == "stages[1].template"
    with pytest.raises(ConfigError, match="compression"):
        from_config({**cfg["stages"][1], "compression": 0.0})


def test_end_to_end_with_bm25(corpus, tmp_path):
    from ragopt import BM25

    pipe = BM25() >> Generator(llm=scripted(), context_k=1, template="qa")
    pipe.fit(corpus, ArtifactStore(tmp_path))
    out = pipe.search(["what is the capital of france", "who wrote hamlet"])
    assert out.answers == ["Paris", "Shakespeare"]
    assert [corpus.ids[c[0]] for c in out.contexts] == ["d0", "d4"]
