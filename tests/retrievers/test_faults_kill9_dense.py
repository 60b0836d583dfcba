"""Faults: SIGKILL while a dense index is built, in the middle of encoding the corpus into shards. After the
restart the finished shards are reused (only the rest is encoded: counted), nothing half-written is used (no
embeddings or index artifact exists until the build finishes) and the result equals an uninterrupted build.

A tiny locally built BERT (1 layer, 16-d; ``ragopt.testing.models.tiny_bert``) stands in for the encoder: its
vectors are arbitrary but deterministic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("faiss")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")]

WORDS = ["river", "mountain", "city", "music", "history", "science", "cat", "dog", "capital", "population"]
N, SHARD = 160, 8  # 20 shards of 8 passages
CORPUS = f"""
from ragopt.types import Corpus
WORDS = {WORDS!r}
texts = [" ".join(WORDS[(i * k + k) % len(WORDS)] for k in range(1, 2 + i % 7)) for i in range({N})]
corpus = Corpus([f"d{{i}}" for i in range({N})], texts, name="kill9")
"""
CHILD = (
    CORPUS
    + f"""
import sys, time
import ragopt.encoders.encoder as E
from ragopt.encoders import SentenceTransformerEncoder
from ragopt.retrievers.dense import DenseRetriever
from ragopt.store import ArtifactStore

E.SHARD_SIZE = {SHARD}
real = SentenceTransformerEncoder._encode_batch


def slow(self, texts):  # slow enough for the parent to kill us between shards or in one
    time.sleep(0.1)
    return real(self, texts)


SentenceTransformerEncoder._encode_batch = slow
enc = SentenceTransformerEncoder(model=sys.argv[2], batch_size=4, device="cpu")
DenseRetriever(encoder=enc, top_k=5).fit(corpus, ArtifactStore(sys.argv[1]))
print("finished", flush=True)
"""
)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    from ragopt.testing.models import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-enc"), WORDS, head="encoder", max_positions=32)


def _corpus():
    scope: dict = {}
    exec(CORPUS, scope)
    return scope["corpus"]


def test_kill9_while_encoding_shards_then_the_restart_encodes_only_the_rest(tmp_path, tiny_encoder, monkeypatch):
    import ragopt.encoders.encoder as encoders
    from ragopt.encoders import SentenceTransformerEncoder
    from ragopt.retrievers.dense import DenseRetriever
    from ragopt.store import ArtifactStore

    store_dir = tmp_path / "store"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(store_dir), str(tiny_encoder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    shards: list[Path] = []
    deadline = time.monotonic() + 120
    while len(shards) < 4:  # kill once a few shards are on disk
        assert child.poll() is None, f"child ended early: {child.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no shards appeared"
        time.sleep(0.02)
        shards = list(store_dir.glob("embeddings/.partial-*/shard-*.npy"))
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    store = ArtifactStore(store_dir)
    assert store.list() == []  # neither the embeddings nor the index took an artifact's name
    partial = next(store_dir.glob("embeddings/.partial-*"))
    done = len(list(partial.glob("shard-*.npy")))  # complete by construction: written to a temp file, renamed
    assert 4 <= done < N // SHARD, done

    monkeypatch.setattr(encoders, "SHARD_SIZE", SHARD)
    corpus = _corpus()
    enc = SentenceTransformerEncoder(model=str(tiny_encoder), batch_size=4, device="cpu")
    r = DenseRetriever(encoder=enc, top_k=5).fit(corpus, store)
    counts = r._fit.stats.counts
    assert counts["encoder_texts"] == N - done * SHARD  # the finished shards were not encoded again
    assert {a["kind"]: a["created"] for a in r.artifacts()} == {"embeddings": True, "dense-faiss_flat": True}
    assert not partial.exists()

    emb = store.list("embeddings")[0]
    vecs = np.load(emb.file("embeddings.npy"), allow_pickle=False)
    np.testing.assert_allclose(vecs, enc.encode(corpus.contents()), rtol=1e-5, atol=1e-6)  # as if never killed
    top = r.search(corpus.texts[7]).ranked(0)[0]
    assert top[1] == pytest.approx(1.0, abs=1e-4)  # a passage finds itself (or an identical text) first
