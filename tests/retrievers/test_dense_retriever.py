"""DenseRetriever: artifacts (embeddings reused across index types and search settings, never across
models or corpora), bad input, and quality of all-MiniLM-L6-v2 on cranfield (slow; the full scifact figure is in benchmarks/dense.py)."""

from __future__ import annotations

import subprocess
import sys
import zlib
from typing import Any

import numpy as np
import pytest

from ragopt.config import from_config, param
from ragopt.encoders import Encoder
from ragopt.errors import ArtifactError, ConfigError, DataError, StageError
from ragopt.indexes.faiss_index import FaissFlat, FaissHNSW, FaissIVF
from ragopt.registry import register
from ragopt.retrievers.dense import DenseRetriever
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Queries


@register("test_dense_hash")
class WordHashEncoder(Encoder):
    """Deterministic bag-of-words vectors: a fixed random vector per word, summed."""

    dims: int = param(32, ge=1)
    seed: int = param(0)
    batch_size: int = param(16, ge=1)

    @property
    def dim(self) -> int:
        return self.dims

    def spec(self, kind: str = "doc") -> dict[str, Any]:
        return {"type": self.type_name, "dims": self.dims, "seed": self.seed}

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dims), np.float32)
        for r, t in enumerate(texts):
            for w in t.lower().split():
                out[r] += np.random.default_rng([self.seed, zlib.crc32(w.encode())]).normal(size=self.dims)
        out[:, 0] += 1e-3
        return out


TEXTS = [
    "the cat sat on the mat",
    "dogs chase cats in the park",
    "stock markets fell sharply",
    "interest rates and inflation",
    "a kitten on a mat",
    "the park is green in spring",
    "hypersonic flow over a blunt body",
    "boundary layer transition on a flat plate",
]


def toy_corpus(texts=TEXTS, name="toy") -> Corpus:
    return Corpus([f"d{i}" for i in range(len(texts))], list(texts), name=name)


def retriever(**kw) -> DenseRetriever:
    return DenseRetriever(encoder=WordHashEncoder(), **kw)


def test_fit_and_search(tmp_path):
    r = retriever(top_k=3).fit(toy_corpus(), ArtifactStore(tmp_path))
    batch = r.search(["boundary layer transition on a flat plate", "stock markets", "  ", ""])
    assert batch.doc_idx.shape == (4, 3)
    assert batch.ranked(0)[0][0] == "d7" and batch.ranked(1)[0][0] == "d2"
    assert batch.ranked(0)[0][1] == pytest.approx(1.0, abs=1e-5)
    assert (batch.doc_idx[2:] == -1).all() and np.isneginf(batch.scores[2:]).all()  # blank: no candidates
    assert batch.stats.counts["encoder_texts"] == 2 and batch.stats.counts["encoder_batches"] == 1
    assert batch.stats.counts["dense_queries"] == 4
    assert (np.diff(batch.scores[:2], axis=1) <= 0).all()
    run = batch.to_run()
    assert list(run["0"])[0] == "d7"
    wide = retriever(top_k=100).fit(toy_corpus(), ArtifactStore(tmp_path)).search("cat")
    assert wide.doc_idx.shape == (1, len(TEXTS))  # at most the corpus size


def test_second_fit_reuses_embeddings_and_index(tmp_path):
    store = ArtifactStore(tmp_path)
    corpus = toy_corpus()
    first = retriever().fit(corpus, store)
    assert [a["created"] for a in first.artifacts()] == [True, True]
    assert first.fit_stats.counts["encoder_texts"] == len(TEXTS)
    again = retriever().fit(corpus, store)
    assert [a["created"] for a in again.artifacts()] == [False, False]
    assert again.fit_stats.counts.get("encoder_texts", 0) == 0
    assert [a["path"] for a in again.artifacts()] == [a["path"] for a in first.artifacts()]
    q = Queries.from_texts(["cats on mats"])
    np.testing.assert_array_equal(first.transform(Batch(q)).doc_idx, again.transform(Batch(q)).doc_idx)


def test_restore_on_a_clone_searches_without_fitting(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    corpus = toy_corpus()
    fitted = retriever(index=FaissIVF(nlist=2, nprobe=2), top_k=4).fit(corpus, store)
    snapshot = fitted.fitted_state()
    calls = []
    original = WordHashEncoder._encode_batch
    monkeypatch.setattr(WordHashEncoder, "_encode_batch", lambda self, t: calls.append(list(t)) or original(self, t))
    monkeypatch.setattr(ArtifactStore, "get_or_create", lambda *a, **k: pytest.fail("restore touched the store"))
    monkeypatch.setattr(FaissIVF, "_load", lambda *a, **k: pytest.fail("restore loaded the index"))
    clone = fitted.clone().restore(snapshot)
    assert clone.is_fitted and clone.index.is_loaded and clone.corpus is corpus
    queries = ["boundary layer transition", "stock markets", "cats on mats"]
    want, got = fitted.search(queries), clone.search(queries)
    assert np.array_equal(got.doc_idx, want.doc_idx) and np.array_equal(got.scores, want.scores)
    assert sum(len(c) for c in calls) == 2 * len(queries)  # query encodings only, for both searches
    assert clone.fit_stats.counts == {} and [a["created"] for a in clone.artifacts()] == [False, False]
    assert [a["path"] for a in clone.artifacts()] == [a["path"] for a in fitted.artifacts()]


def test_index_changes_reuse_embeddings(tmp_path):
    store = ArtifactStore(tmp_path)
    corpus = toy_corpus()
    base = retriever(index=FaissIVF(nlist=2, nprobe=1)).fit(corpus, store)
    emb, idx = base.artifacts()
    other_probe = retriever(index=FaissIVF(nlist=2, nprobe=2)).fit(corpus, store)  # search setting only
    assert [a["created"] for a in other_probe.artifacts()] == [False, False]
    assert other_probe.artifacts()[1]["path"] == idx["path"]
    hnsw = retriever(index=FaissHNSW()).fit(corpus, store)  # another index: same embeddings
    assert [a["created"] for a in hnsw.artifacts()] == [False, True]
    assert hnsw.artifacts()[0]["path"] == emb["path"]
    assert hnsw.fit_stats.counts.get("encoder_texts", 0) == 0
    # set_params on a search setting drops the loaded index; a refit reuses everything
    base.set_params(**{"index.nprobe": 2})
    with pytest.raises(StageError, match="not fitted"):
        base.search("cat")
    base.fit(corpus, store)
    assert [a["created"] for a in base.artifacts()] == [False, False]


def test_other_model_or_chunking_never_reuses(tmp_path):
    store = ArtifactStore(tmp_path)
    corpus = toy_corpus()
    a = retriever().fit(corpus, store)
    b = DenseRetriever(encoder=WordHashEncoder(seed=1)).fit(corpus, store)  # another model, same dim
    assert [x["created"] for x in b.artifacts()] == [True, True]
    chunked = Corpus([f"p{i}" for i in range(len(TEXTS))], TEXTS, parent_ids=[f"d{i}" for i in range(len(TEXTS))])
    c = retriever().fit(chunked, store)  # other passages (chunking): other fingerprint
    assert [x["created"] for x in c.artifacts()] == [True, True]
    paths = {x["path"] for r in (a, b, c) for x in r.artifacts()}
    assert len(paths) == 6
    index_a = a.artifacts()[1]["path"]
    # explicitly loading an index built for another model, corpus or dimension is refused
    with pytest.raises(ArtifactError, match="another configuration or corpus.*seed: built with 0, wanted 1"):
        DenseRetriever(encoder=WordHashEncoder(seed=1)).load_index(index_a, corpus, store)
    with pytest.raises(ArtifactError, match="another configuration or corpus"):
        retriever().load_index(index_a, chunked, store)
    with pytest.raises(ArtifactError, match="built from 32-d vectors but the encoder .* produces 16-d"):
        DenseRetriever(encoder=WordHashEncoder(dims=16)).load_index(index_a, corpus, store)
    loaded = retriever().load_index(index_a, corpus, store)
    assert loaded.search("stock markets").ranked(0)[0][0] == "d2"


def test_bad_corpora(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ConfigError, match="empty corpus"):
        retriever().fit(Corpus([], [], name="none"), store)
    with pytest.raises(DataError, match="all 3 passages of corpus 'blank' have empty text"):
        retriever().fit(Corpus(["a", "b", "c"], ["", " ", "\n"], name="blank"), store)
    r = retriever().fit(Corpus(["a", "b", "c"], ["", "fluid flow", ""], name="holes"), store)
    emb = store.open(r.artifacts()[0]["path"])
    assert emb.manifest["empty_texts"] == 2
    assert r.search("fluid flow").ranked(0)[0][0] == "b"
    with pytest.raises(StageError, match="not fitted"):
        retriever().search("x")


def test_config_yaml_and_light_import():
    from ragopt.pipeline_io import load_pipeline

    r = DenseRetriever(index=FaissIVF(nprobe=4), top_k=50)
    cfg = r.to_config()
    assert cfg["encoder"]["type"] == "sentence_transformer" and cfg["index"] == {
        "type": "faiss_ivf",
        "nlist": None,
        "nprobe": 4,
        "seed": 0,
        "use_gpu": "auto",
    }
    assert from_config(cfg) == r
    assert r.clone(**{"index.nprobe": 8}).index.nprobe == 8
    with pytest.raises(ConfigError, match=r"index\.nprobe: must be >= 1"):
        from_config({**cfg, "index": {"type": "faiss_ivf", "nprobe": 0}})
    with pytest.raises(ConfigError, match="expected a DenseIndex component"):
        from_config({"type": "dense", "index": {"type": "bm25"}})
    p = load_pipeline("dense")
    stage = p.stages[0] if hasattr(p, "stages") else p
    assert isinstance(stage, DenseRetriever) and isinstance(stage.index, FaissFlat)
    assert stage.encoder.model == "all-MiniLM-L6-v2" and stage.top_k == 1000
    code = (
        "import sys, ragopt; from ragopt.config import from_config; "
        "r = from_config({'type': 'dense', 'index': {'type': 'chroma'}}); "
        "heavy = [m for m in ('torch', 'faiss', 'chromadb', 'sentence_transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- real model, real data (slow) ---------------------------------------------------------------
@pytest.mark.slow
def test_cranfield_minilm_quality(data_dir, session_store):
    from ragopt.evaluation.run import evaluate_pipeline
    from ragopt.pipeline_io import load_pipeline

    if not (data_dir / "cranfield" / "corpus.jsonl").is_file():
        pytest.skip("cranfield not in the shared data")
    store = session_store  # shared with the hybrid test: cranfield is encoded once per session
    report = evaluate_pipeline(load_pipeline("dense"), str(data_dir / "cranfield"), store=store, progress=False)
    ndcg = report.metrics["ndcg@10"]
    assert 0.37 <= ndcg <= 0.40, ndcg  # reference 0.382
    assert report.stats["counts"]["encoder_texts"] == 225  # queries only; the corpus was encoded in fit
    # the same pipeline again: embeddings and index reused, identical scores, no corpus encoding
    again = evaluate_pipeline(load_pipeline("dense"), str(data_dir / "cranfield"), store=store, progress=False)
    assert again.metrics["ndcg@10"] == ndcg
    assert [a["created"] for a in again.artifacts] == [False, False]
    # torch exact search over the same embeddings gives the same ranking quality
    torch_run = evaluate_pipeline(
        from_config({"type": "dense", "index": {"type": "torch_exact", "device": "cpu"}}),
        str(data_dir / "cranfield"),
        store=store,
        progress=False,
    )
    assert torch_run.metrics["ndcg@10"] == pytest.approx(ndcg, abs=1e-3)
    assert [a["created"] for a in torch_run.artifacts] == [False, True]
