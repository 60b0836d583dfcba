"""Fixtures shared by the training tests: a tiny BERT encoder over a small topical vocabulary, and a BEIR-layout
dataset writer for documents and queries made of those topics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOPICS = [
    "paris france capital",
    "berlin germany city",
    "river long mountain",
    "music history science",
    "cat dog tall",
    "population city history",
    "mountain tall river",
    "science music dog",
]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A 1-layer, 16-d BERT encoder with a 40-word vocabulary (stands in for MiniLM)."""
    pytest.importorskip("transformers")
    from ragopt.testing.models import tiny_bert

    words = sorted({w for t in TOPICS for w in t.split()} | {"the", "a", "of", "what", "is", "where"})
    return tiny_bert(tmp_path_factory.mktemp("tiny-base"), words, head="encoder", max_positions=64)


def topical_dataset(d: Path, qrels_rows: list[str]) -> Path:
    """16 documents (two topics each) and 12 queries (``what is <topic>``) in ``d``, with ``qrels_rows``."""
    docs = [
        {"_id": f"d{i}", "title": "", "text": f"{TOPICS[i % 8]} {'the' if i < 8 else 'a'} {TOPICS[(i + 3) % 8]}"}
        for i in range(16)
    ]
    queries = [{"_id": f"q{i}", "text": f"what is {TOPICS[i % 8]}"} for i in range(12)]
    (d / "corpus.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    (d / "queries.jsonl").write_text("".join(json.dumps(x) + "\n" for x in queries))
    (d / "qrels").mkdir()
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels_rows) + "\n")
    return d
