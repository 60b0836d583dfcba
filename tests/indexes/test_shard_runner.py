"""The shard-runner hook of the encoders' shard loop (what ``ragopt index --ray`` plugs into), without Ray: shards
encoded elsewhere and returned in any order land in the same files and make the same embeddings artifact; a runner
that loses a shard or returns the wrong rows is an error that keeps the shards written, and a later run resumes."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest

from ragopt.config import from_config, param
from ragopt.encoders import Encoder
from ragopt.encoders import encoder as encoder_module
from ragopt.encoders.shards import use_shard_runner
from ragopt.errors import ArtifactError
from ragopt.registry import register
from ragopt.store import ArtifactStore
from ragopt.types import Corpus, Stats


@register("test_shard_runner_hash")
class HashEncoder(Encoder):
    """Deterministic bag-of-words vectors."""

    dims: int = param(8, ge=1)

    @property
    def dim(self) -> int:
        return self.dims

    def spec(self, kind: str = "doc") -> dict[str, Any]:
        return {"type": self.type_name, "dims": self.dims}

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dims), np.float32)
        for r, t in enumerate(texts):
            for w in t.split():
                out[r] += np.random.default_rng(zlib.crc32(w.encode())).normal(size=self.dims)
        return out + 1e-3


class Runner:
    """Encodes every shard with an encoder rebuilt from the job's config (as a remote worker does), returning them
    last first; ``lose`` drops a shard, ``short`` cuts one shard's rows."""

    def __init__(self, lose: int | None = None, short: int | None = None):
        self.lose, self.short, self.seen = lose, short, []

    def run(self, job, todo):
        enc = from_config(job.encoder_config)
        assert enc.spec(job.kind) == job.spec
        for i, texts in reversed(list(todo)):
            self.seen.append(i)
            if i == self.lose:
                continue
            stats = Stats()
            vecs = enc.encode(list(texts), job.kind, stats)
            job.on_stats(dict(stats.counts), dict(stats.seconds))
            yield i, (vecs[:-1] if i == self.short else vecs)


CORPUS = Corpus([f"d{i}" for i in range(50)], [f"word{i % 7} token{i % 3} text{i}" for i in range(50)], name="c50")


@pytest.fixture(autouse=True)
def shards_of_8(monkeypatch):
    monkeypatch.setattr(encoder_module, "SHARD_SIZE", 8)  # 50 texts: 7 shards, the last of 2


def test_runner_in_any_order_writes_the_local_artifact(tmp_path):
    local, art = HashEncoder().encode_corpus(CORPUS, ArtifactStore(tmp_path / "a"))
    runner, stats = Runner(), Stats()
    with use_shard_runner(runner):
        remote, art2 = HashEncoder().encode_corpus(CORPUS, ArtifactStore(tmp_path / "b"), stats=stats)
    assert runner.seen == [6, 5, 4, 3, 2, 1, 0]
    assert art2.key == art.key and art2.manifest["spec"] == art.manifest["spec"]
    np.testing.assert_array_equal(np.asarray(remote), np.asarray(local))
    assert stats.counts["encoder_texts"] == 50  # the runner's counts are the caller's


def test_a_lost_or_short_shard_is_an_error_and_the_rest_resume(tmp_path):
    store = ArtifactStore(tmp_path)
    with (
        use_shard_runner(Runner(lose=3)),
        pytest.raises(ArtifactError, match=r"finished without embeddings shards \[3\]"),
    ):
        HashEncoder().encode_corpus(CORPUS, store)
    short = Runner(short=3)
    with (
        use_shard_runner(short),
        pytest.raises(ArtifactError, match="returned 7 rows for embeddings shard 3 .*expected 8"),
    ):
        HashEncoder().encode_corpus(CORPUS, store)
    assert short.seen == [3]  # the six shards written by the first runner were kept
    stats = Stats()
    vecs, _ = HashEncoder().encode_corpus(CORPUS, store, stats=stats)  # here, without a runner: only shard 3 is left
    assert stats.counts["encoder_texts"] == 8
    np.testing.assert_array_equal(np.asarray(vecs), HashEncoder().encode(CORPUS.contents(True), "doc"))
