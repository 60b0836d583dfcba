"""Fixtures of the LLM-layer tests: a scripted double and a fresh artifact store (the packaged SmolLM2 is a
session fixture in tests/conftest.py)."""

from __future__ import annotations

import pytest

from ragopt.llm.scripted import ScriptedLLM
from ragopt.store import ArtifactStore

SCRIPT = dict(
    rules=[
        {"match": r"capital of (\w+)", "output": r"The capital of \1 is X."},
        {"match": "long", "output": "one two three four five six seven eight"},
    ],
    default="I do not know.",
    score_rules=[
        {"match": "Which passage", "continuation": "A", "logprob": -0.25},
        {"match": "Which passage", "continuation": "B", "logprob": -1.5},
    ],
)


@pytest.fixture
def scripted() -> ScriptedLLM:
    return ScriptedLLM(**SCRIPT)


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")
