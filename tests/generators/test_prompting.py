"""Prompt building: templates, passage order, packing under a budget, compression, answer extraction."""

from __future__ import annotations

import pytest

from ragopt.errors import ConfigError
from ragopt.generators.prompting import (
    TEMPLATES,
    compress_passage,
    extract_answer,
    order_passages,
    pack_context,
    render,
    resolve_template,
)


def words(texts):
    return [len(t.split()) for t in texts]


def test_orders():
    assert order_passages(5, "score") == [0, 1, 2, 3, 4]
    assert order_passages(5, "reversed") == [4, 3, 2, 1, 0]
    # best at both edges, the weakest in the middle (Lost in the Middle)
    assert order_passages(5, "edges") == [0, 2, 4, 3, 1]
    assert order_passages(4, "edges") == [0, 2, 3, 1]
    assert order_passages(0, "edges") == []
    with pytest.raises(ConfigError, match="order"):
        order_passages(3, "random")


def test_templates_are_validated_up_front():
    assert resolve_template("qa", None) is TEMPLATES["qa"]
    assert resolve_template("qa", "be brief").system == "be brief"
    t = resolve_template("Q: {question}\nDocs: {context} ({n_passages})", None)
    assert t.fields() == {"question", "context", "n_passages"}
    with pytest.raises(
        ConfigError,
        match=r"unknown field\(s\) \{answer\} in the template; it may use only \{question\}, \{context\} and \{n_passages\}",
    ) as e:
        resolve_template("Q: {question} A: {answer}", None, "stages[1].template")
    assert e.value.path == "stages[1].template"
    with pytest.raises(ConfigError, match=r"the template has no \{question\}"):
        resolve_template("Docs: {context}", None)
    with pytest.raises(ConfigError, match="malformed"):
        resolve_template("Q: {question", None)
    with pytest.raises(ConfigError, match="did you mean 'qa_fewshot'"):
        resolve_template("qa_fewshoot", None)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \{question.upper\}"):  # no attribute access
        resolve_template("{question.upper}", None)


def test_pack_respects_k_budget_and_truncation():
    passages = [f"passage {i} " + "word " * 20 for i in range(6)]
    pos, texts = pack_context(
        passages, "q", context_k=4, order="score", budget=10_000, passage_max_tokens=5, compression=1.0, count=words
    )
    assert pos == [0, 1, 2, 3]
    assert all(len(t.split()) == 5 for t in texts)
    # a budget for two "[j] text" lines of 6 words each: the weakest are dropped first
    pos, texts = pack_context(
        passages, "q", context_k=4, order="reversed", budget=13, passage_max_tokens=5, compression=1.0, count=words
    )
    assert pos == [1, 0] and texts[1].startswith("passage 0")
    pos, _ = pack_context(
        passages, "q", context_k=4, order="score", budget=0, passage_max_tokens=5, compression=1.0, count=words
    )
    assert pos == []
    pos, _ = pack_context(
        passages[:2],
        "q",
        context_k=5,
        order="score",
        budget=10_000,
        passage_max_tokens=50,
        compression=1.0,
        count=words,
    )
    assert pos == [0, 1]  # fewer candidates than k: all of them


def test_compression_keeps_the_sentences_nearest_the_question_in_order():
    text = (
        "The weather was fine. Paris is the capital of France. It has many museums. "
        "The capital has a population of two million."
    )
    out = compress_passage(text, "what is the capital of france", 0.5)
    assert out == "Paris is the capital of France. The capital has a population of two million."
    assert compress_passage(text, "capital of france", 1.0) == text
    assert compress_passage("One sentence only", "x", 0.1) == "One sentence only"


def test_render_chat_with_shots():
    msgs = render(TEMPLATES["qa_fewshot"], "who wrote hamlet", ["Hamlet is a play by Shakespeare."])
    assert msgs[0]["role"] == "system"
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[-1]["content"].endswith("Question: who wrote hamlet\nShort answer:")
    assert "[1] Hamlet is a play by Shakespeare." in msgs[-1]["content"]
    closed = render(TEMPLATES["closed_book"], "who wrote hamlet", [])
    assert len(closed) == 2 and "Passages" not in closed[-1]["content"]


@pytest.mark.parametrize(
    "raw, short",
    [
        ("Paris", "Paris"),
        ("  Paris.\nIt is the capital.", "Paris"),
        ("Answer: 1889", "1889"),
        ("The answer is Mount Kilimanjaro.", "Mount Kilimanjaro"),
        ('"William Shakespeare"', "William Shakespeare"),
        ("Short answer: the U.S.", "the U.S."),
        ("", ""),
        ("\n\n  George Washington  \n", "George Washington"),
    ],
)
def test_extract_short_answer(raw, short):
    assert extract_answer(raw, "short") == short


def test_extract_styles():
    assert extract_answer(" a\nb ", "raw") == "a\nb"
    assert extract_answer("\nAnswer: x.\ny", "first_line") == "Answer: x."
