"""Dense index backends against numpy brute force: exactness, recall, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ragopt.config import from_config
from ragopt.errors import ArtifactError, BackendUnavailableError, ConfigError, StageError
from ragopt.indexes.chroma_index import ChromaIndex
from ragopt.indexes.faiss_index import FaissFlat, FaissHNSW, FaissIVF, FaissIVFPQ, auto_nlist
from ragopt.indexes.torch_index import TorchExact
from ragopt.store import ArtifactStore

DIM = 32


def _norm(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """2,000 random unit vectors around 20 random centres (like real embeddings, unlike uniform noise),
    100 queries from the same mixture, and the exact top-10 by inner product."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, DIM))
    x = _norm(centres[rng.integers(0, 20, 2000)] + 0.5 * rng.normal(size=(2000, DIM)))
    q = _norm(centres[rng.integers(0, 20, 100)] + 0.5 * rng.normal(size=(100, DIM)))
    exact = q @ x.T
    return x, q, np.argsort(-exact, axis=1, kind="stable")[:, :10], exact


def _built(index, x, tmp_path):
    out = tmp_path / index.type_name
    out.mkdir()
    index.build(x, out)
    index.load(out, x.shape[1])
    return out


def _recall(idx: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(idx, truth)]))


@pytest.mark.parametrize("make", [FaissFlat, lambda: TorchExact(device="cpu")], ids=["faiss_flat", "torch_exact"])
def test_exact_indexes_match_brute_force(make, data, tmp_path):
    x, q, truth, exact = data
    index = make()
    _built(index, x, tmp_path)
    idx, scores = index.search(q, 10)
    assert idx.dtype == np.int64 and scores.dtype == np.float32 and idx.shape == (100, 10)
    np.testing.assert_allclose(scores, np.take_along_axis(exact, truth, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(exact, idx, 1), scores, rtol=1e-5, atol=1e-5)
    assert _recall(idx, truth) == 1.0
    assert (np.diff(scores, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("make", [FaissHNSW, FaissIVF, ChromaIndex], ids=["hnsw", "ivf", "chroma"])
def test_approximate_indexes_recall(make, data, tmp_path):
    x, q, truth, exact = data
    index = make()
    _built(index, x, tmp_path)
    idx, scores = index.search(q, 10)
    assert _recall(idx, truth) >= 0.9
    found = idx >= 0
    np.testing.assert_allclose(scores[found], np.take_along_axis(exact, np.where(found, idx, 0), 1)[found], atol=1e-4)


def test_ivfpq_runs_with_sensible_recall(data, tmp_path):
    x, q, truth, _ = data
    index = FaissIVFPQ(m=8, nbits=5)
    out = _built(index, x, tmp_path)
    idx, scores = index.search(q, 10)
    assert 0.4 <= _recall(idx, truth) < 1.0  # compressed codes: approximate
    assert (idx >= 0).all() and np.isfinite(scores).all()
    assert (out / "index.faiss").stat().st_size < x.nbytes / 4  # 8 bytes a vector instead of 128


def test_ivf_nprobe_is_a_search_setting(data, tmp_path):
    x, q, truth, _ = data
    low, high = FaissIVF(nprobe=1), FaissIVF(nprobe=64)
    assert low.build_spec() == high.build_spec() and "nprobe" not in low.build_spec()
    out = _built(low, x, tmp_path)
    high.load(out, DIM)
    assert _recall(high.search(q, 10)[0], truth) > _recall(low.search(q, 10)[0], truth)
    assert FaissHNSW(ef_search=16).build_spec() == FaissHNSW(ef_search=512).build_spec()
    assert FaissHNSW(M=16).build_spec() != FaissHNSW(M=32).build_spec()
    assert TorchExact(device="cpu").build_spec() == TorchExact(precision="fp16").build_spec()
    assert auto_nlist(2000) == 51 and auto_nlist(1_000_000) == 4000 and auto_nlist(10) == 1


@pytest.mark.parametrize(
    "make",
    [FaissFlat, FaissHNSW, FaissIVF, lambda: FaissIVFPQ(m=8, nbits=5), lambda: TorchExact(device="cpu"), ChromaIndex],
    ids=["flat", "hnsw", "ivf", "ivfpq", "torch", "chroma"],
)
def test_persistence_round_trip(make, data, tmp_path):
    """Built once into a store artifact, reloaded by a fresh object: identical results, untouched files."""
    x, q, _, _ = data
    store = ArtifactStore(tmp_path)
    first = make()
    art = store.get_or_create("test-index", first.build_spec(), 1, lambda d: first.build(x, d))
    first.load(art.path, DIM)
    again = from_config(first.to_config())
    again.load(store.open(art.path, "test-index", first.build_spec(), 1).path, DIM)
    a, b = first.search(q, 20), again.search(q, 20)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    assert again.size == 2000 and again.dim == DIM
    store.open(art.path, "test-index", first.build_spec(), 1)  # checksums still match after searching


@pytest.mark.parametrize(
    "make",
    [FaissFlat, FaissHNSW, lambda: TorchExact(device="cpu"), ChromaIndex],
    ids=["flat", "hnsw", "torch", "chroma"],
)
def test_k_larger_than_index_is_padded(make, tmp_path):
    x = _norm(np.random.default_rng(3).normal(size=(5, 8)))
    index = make()
    _built(index, x, tmp_path)
    idx, scores = index.search(x[:2], 8)
    assert idx.shape == (2, 8) and (idx[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert sorted(idx[0, :5]) == [0, 1, 2, 3, 4] and idx[0, 0] == 0 and idx[1, 0] == 1
    assert index.search(x[:0], 3)[0].shape == (0, 3)


def test_dimension_mismatch_is_an_error(data, tmp_path):
    x, q, _, _ = data
    for index in (FaissFlat(), TorchExact(device="cpu"), ChromaIndex()):
        out = tmp_path / index.type_name
        out.mkdir()
        index.build(x, out)
        with pytest.raises(ArtifactError, match="holds 32-d vectors but 16-d vectors were expected"):
            index.load(out, 16)
        index.load(out, DIM)
        with pytest.raises(ConfigError, match=r"query vectors have shape \(2, 16\) but the index holds 32-d"):
            index.search(q[:2, :16], 5)


def test_bad_build_input(tmp_path):
    x = _norm(np.random.default_rng(4).normal(size=(300, 30)))
    with pytest.raises(
        ConfigError,
        match=r"m=16 sub-quantisers must divide the vector dimension 30 "
        r"\(divisors of 30: \[1, 2, 3, 5, 6, 10, 15, 30\]\)",
    ):
        FaissIVFPQ().build(x, tmp_path)
    with pytest.raises(ConfigError, match="nbits=10 needs at least 1024 vectors"):
        FaissIVFPQ(m=10, nbits=10).build(x, tmp_path)
    with pytest.raises(ConfigError, match="nlist=500 exceeds the 300 vectors"):
        FaissIVF(nlist=500).build(x, tmp_path)
    for bad in (np.zeros((0, 8), np.float32), np.zeros(8, np.float32)):
        with pytest.raises(ConfigError, match="non-empty"):
            FaissFlat().build(bad, tmp_path)
    with pytest.raises(ConfigError, match="NaN"):
        TorchExact().build(np.full((2, 4), np.nan, np.float32), tmp_path)
    with pytest.raises(StageError, match="not loaded"):
        FaissFlat().search(x[:1], 3)


def test_gpu_request_without_faiss_gpu(tmp_path):
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("faiss has GPU support here")
    x = _norm(np.random.default_rng(5).normal(size=(50, 8)))
    FaissFlat(use_gpu=True).build(x, tmp_path)  # building is always on the CPU
    with pytest.raises(BackendUnavailableError, match="faiss-gpu.*torch_exact"):
        FaissFlat(use_gpu=True).load(tmp_path, 8)
    FaissFlat(use_gpu="auto").load(tmp_path, 8)  # auto falls back to the CPU


def test_index_configs_round_trip():
    for cfg in (
        {"type": "faiss_flat", "use_gpu": False},
        {"type": "faiss_hnsw", "M": 16, "ef_search": 64},
        {"type": "faiss_ivf", "nlist": 100, "nprobe": 8, "seed": 3},
        {"type": "faiss_ivfpq", "m": 8, "nbits": 4},
        {"type": "torch_exact", "device": "cpu"},
        {"type": "chroma", "space": "cosine", "ef_search": 50},
    ):
        index = from_config(cfg)
        assert from_config(index.to_config()) == index
        assert {k: v for k, v in index.to_config().items() if k in cfg} == cfg
    with pytest.raises(ConfigError, match="use_gpu"):
        from_config({"type": "faiss_flat", "use_gpu": "yes"})
    with pytest.raises(ConfigError, match="space"):
        from_config({"type": "chroma", "space": "l2"})


@pytest.mark.gpu
def test_torch_exact_on_cuda(data, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, q, truth, _ = data
    for precision in ("fp32", "fp16"):
        index = TorchExact(device="cuda", precision=precision)
        (tmp_path / precision).mkdir()
        _built(index, x, tmp_path / precision)
        assert _recall(index.search(q, 10)[0], truth) >= (1.0 if precision == "fp32" else 0.97)
