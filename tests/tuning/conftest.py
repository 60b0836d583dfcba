"""A RAG study factory shared by the tuning tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def rag_study_dict(data_dir):
    """``make(study, rules, **over)``: a study dict over nq-open-oracle-dev (20 queries, 30% held out): BM25, then
    a generator whose scripted LLM answers by ``rules``, with the context size and the passage order in the space
    and f1 the objective; ``over`` sets top-level keys. Skips where the data set is not in the shared data."""
    if not (data_dir / "nq-open-oracle-dev" / "answers.jsonl").is_file():
        pytest.skip("nq-open-oracle-dev not in the shared data")

    def make(study: str, rules: list[dict], **over) -> dict:
        d = {
            "study": study,
            "dataset": str(data_dir / "nq-open-oracle-dev"),
            "queries": {"limit": 20, "seed": 0},
            "holdout": {"fraction": 0.3, "seed": 0},
            "pipeline": [
                {"type": "bm25", "top_k": 100},
                {
                    "type": "generate",
                    "llm": {"type": "scripted", "rules": rules},
                    "context_k": 1,
                    "template": "qa",
                    "chat": True,
                },
            ],
            "space": [
                {"name": "k", "path": "stages.1.context_k", "choices": [1, 3]},
                {"name": "order", "path": "stages.1.order", "choices": ["score", "reversed"]},
            ],
            "objective": {"metrics": ["f1"]},
        }
        d.update(over)
        return d

    return make
