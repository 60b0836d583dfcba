"""Pair-score cache: lookups in chunks, missing pairs, truncation flags, keys, several writers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ragopt.errors import ArtifactError
from ragopt.rerankers.score_cache import PairScoreCache, text_hash


def test_text_hash_is_sha1_of_exact_text():
    import hashlib

    assert text_hash("café") == hashlib.sha1("café".encode()).hexdigest()
    assert text_hash("a ") != text_hash("a")


@pytest.mark.parametrize("on_disk", [False, True])
def test_put_get_round_trip_with_missing_pairs(tmp_path, on_disk):
    cache = PairScoreCache(tmp_path / "s.sqlite" if on_disk else None)
    q = [text_hash("q1")] * 3 + [text_hash("q2")]
    d = [text_hash(f"d{i}") for i in range(4)]
    cache.put(q[:3], d[:3], [0.5, -1.25, 3.0], [False, True, False])
    scores, trunc = cache.get(q + [text_hash("q1")], d + [text_hash("d1")])
    np.testing.assert_array_equal(scores[:3], np.float32([0.5, -1.25, 3.0]))
    assert np.isnan(scores[3]) and scores[4] == np.float32(-1.25)
    assert trunc.tolist() == [False, True, False, False, True]
    assert len(cache) == 3
    cache.put(q[:1], d[:1], [9.0])  # an existing pair keeps its score (scores of one key never change)
    assert cache.get(q[:1], d[:1])[0][0] == np.float32(0.5)


def test_lookups_larger_than_one_statement(tmp_path):
    cache = PairScoreCache(tmp_path / "big.sqlite")
    qs = [text_hash(f"q{i % 3}") for i in range(1500)]
    ds = [text_hash(f"d{i}") for i in range(1500)]
    cache.put(qs[::2], ds[::2], np.arange(750, dtype=np.float32))
    scores, _ = cache.get(qs, ds)
    np.testing.assert_array_equal(scores[::2], np.arange(750, dtype=np.float32))
    assert np.isnan(scores[1::2]).all()


def test_missing_file_reads_empty_and_is_created_on_write(tmp_path):
    cache = PairScoreCache(tmp_path / "sub" / "x.sqlite")
    assert len(cache) == 0 and not cache.exists
    assert np.isnan(cache.get(["a"], ["b"])[0]).all() and not cache.exists
    (tmp_path / "sub").mkdir()
    cache.put(["a"], ["b"], [1.0])
    assert cache.exists and len(cache) == 1


def test_two_writers_share_one_file(tmp_path):
    a = PairScoreCache(tmp_path / "shared.sqlite")
    b = PairScoreCache(tmp_path / "shared.sqlite")
    a.put(["q"], ["d1"], [1.0])
    b.put(["q"], ["d2"], [2.0])
    a.put(["q"], ["d2"], [2.0])  # the same pair from another worker: ignored, no error
    np.testing.assert_array_equal(b.get(["q", "q"], ["d1", "d2"])[0], np.float32([1.0, 2.0]))
    a.close()
    b.close()


def test_for_spec_keys_files_by_scorer(tmp_path):
    spec = {"model": None, "model_fingerprint": "abc", "max_length": 256, "with_title": True}
    a = PairScoreCache.for_spec(tmp_path, spec)
    assert a.path.parent == tmp_path / "ce-scores" and a.path.suffix == ".sqlite"
    assert PairScoreCache.for_spec(tmp_path, dict(spec)).path == a.path
    assert PairScoreCache.for_spec(tmp_path, {**spec, "max_length": 128}).path != a.path
    meta = json.loads(a.path.with_suffix(".json").read_text())
    assert meta["spec"] == spec
    a.path.with_suffix(".json").write_text(json.dumps({"format": 1, "spec": {"model": "other"}}))
    with pytest.raises(ArtifactError, match="another scorer"):
        PairScoreCache.for_spec(tmp_path, spec)
