"""Faults: SIGKILL while a cross-encoder scores pairs. The pair-score cache (SQLite) passes its integrity check and
holds whole scoring batches only (each batch is one transaction); after the restart every committed score is
served from the cache (counted as hits, not scored again) and the scores equal those of an uncached model.

A tiny locally built BERT sequence classifier (``ragopt.testing.models.tiny_bert``) stands in for a real
cross-encoder: its scores are arbitrary but deterministic."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")]

WORDS = ["what", "is", "the", "capital", "of", "france", "paris", "river", "long", "cat", "dog", "music", "city"]
BATCH = 4
PAIRS = f"""
WORDS = {WORDS!r}
queries = [" ".join(WORDS[(q + k) % len(WORDS)] for k in range(3)) for q in range(8)]
passages = [" ".join(WORDS[(p * 3 + k) % len(WORDS)] for k in range(2 + p % 5)) for p in range(25)]
qs = [q for q in queries for _ in passages]
ps = [p for _ in queries for p in passages]
"""
CHILD = (
    PAIRS
    + f"""
import sys, time
from ragopt.rerankers.cross_encoder import CrossEncoderReranker
from ragopt.rerankers.score_cache import PairScoreCache
from ragopt.store import ArtifactStore
from ragopt.types import Corpus

real_put = PairScoreCache.put


def put(self, qh, *rest):  # announce every committed batch, and leave time to be killed in the next one
    real_put(self, qh, *rest)
    print(len(qh), flush=True)
    time.sleep(0.1)


PairScoreCache.put = put
ce = CrossEncoderReranker(model=sys.argv[2], batch_size={BATCH}, max_length=32, device="cpu")
ce.fit(Corpus(["d0"], ["x"], name="kill9"), ArtifactStore(sys.argv[1]))
ce.score_pairs(qs, ps)
print("finished", flush=True)
"""
)


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory) -> Path:
    from ragopt.testing.models import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-ce"), WORDS, max_positions=32, initializer_range=1.0)


def test_kill9_while_scoring_keeps_committed_scores_and_rescores_only_the_rest(tmp_path, tiny_ce):
    from ragopt.rerankers.cross_encoder import CrossEncoderReranker
    from ragopt.store import ArtifactStore
    from ragopt.types import Corpus, Stats

    scope: dict = {}
    exec(PAIRS, scope)
    qs, ps = scope["qs"], scope["ps"]
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path), str(tiny_ce)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    for _ in range(8):  # 8 batches committed, then kill
        line = child.stdout.readline()
        assert line.strip() == str(BATCH), f"child ended early: {child.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    (db,) = tmp_path.glob("ce-scores/*.sqlite")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    conn.close()
    assert 8 * BATCH <= rows < len(qs) and rows % BATCH == 0, rows  # whole batches only

    corpus = Corpus(["d0"], ["x"], name="kill9")
    ce = CrossEncoderReranker(model=str(tiny_ce), batch_size=BATCH, max_length=32, device="cpu")
    ce.fit(corpus, ArtifactStore(tmp_path))
    stats = Stats()
    got = ce.score_pairs(qs, ps, stats)
    assert stats.counts["ce_cache_hits"] == rows and stats.counts["ce_pairs"] == len(qs) - rows
    fresh = CrossEncoderReranker(model=str(tiny_ce), batch_size=BATCH, max_length=32, device="cpu", cache=False)
    want = fresh.fit(corpus, ArtifactStore(tmp_path / "other")).score_pairs(qs, ps)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # the cached scores are the model's
    assert np.unique(np.round(want, 4)).size > 20  # the scores differ from pair to pair: the check means something
