"""faiss_ivfpq at scale: filled batch by batch from a memory map (the same index as one add of all rows, and as raw
faiss with the same parameters), trained on a seeded sample of ``train_size`` rows, memory-mapped at load time with
the same results, and a NaN in a late batch named by its row."""

from __future__ import annotations

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from ragopt.errors import ConfigError  # noqa: E402
from ragopt.indexes.faiss_index import FaissIVFIndex, FaissIVFPQIndex  # noqa: E402

N, DIM = 3000, 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3,000 unit vectors around 30 centres, saved as .npy (as the embeddings artifact is), and 50 queries."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, DIM))
    x = centres[rng.integers(0, 30, N)] + 0.4 * rng.normal(size=(N, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[rng.choice(N, 50, replace=False)] + np.float32(0.05) * rng.normal(size=(50, DIM)).astype(np.float32)
    path = tmp_path_factory.mktemp("vecs") / "embeddings.npy"
    np.save(path, x)
    return x, q.astype(np.float32), path


def _build(index, vectors, where):
    where.mkdir()
    manifest = index.build(vectors, where)
    return manifest, (where / "index.faiss").read_bytes()


def test_batched_fill_from_a_memory_map_is_the_index_of_one_add(data, tmp_path):
    x, q, path = data
    mm = np.load(path, mmap_mode="r")
    params = dict(nlist=24, m=8, nbits=6, train_size=1500, seed=3)
    m_one, one = _build(FaissIVFPQIndex(**params, add_batch=N), x, tmp_path / "one")
    m_bat, batched = _build(FaissIVFPQIndex(**params, add_batch=137), mm, tmp_path / "batched")  # 22 uneven batches
    assert m_one["ntotal"] == m_bat["ntotal"] == N and m_bat["trained_on"] == 1500
    assert batched == one
    # raw faiss with the same parameters and the same seeded sample: the same bytes
    raw = faiss.IndexIVFPQ(faiss.IndexFlatIP(DIM), DIM, 24, 8, 6, faiss.METRIC_INNER_PRODUCT)
    raw.pq.cp.seed = raw.cp.seed = 3
    raw.cp.spherical = True
    raw.train(x[np.sort(np.random.default_rng(3).choice(N, 1500, replace=False))])
    raw.add(x)
    faiss.write_index(raw, str(tmp_path / "raw.faiss"))
    assert (tmp_path / "raw.faiss").read_bytes() == batched
    # IVF-Flat is filled the same way
    _, flat_one = _build(FaissIVFIndex(nlist=24), x, tmp_path / "ivf1")
    _, flat_mm = _build(FaissIVFIndex(nlist=24), mm, tmp_path / "ivf2")
    assert flat_one == flat_mm


def test_train_size_is_part_of_the_key_only_when_set(data, tmp_path):
    x, _, _ = data
    assert "train_size" not in FaissIVFPQIndex().build_spec()  # keys of indexes built before the field still hold
    assert FaissIVFPQIndex(train_size=500).build_spec()["train_size"] == 500
    for runtime in ("mmap", "add_batch", "nprobe"):
        assert runtime not in FaissIVFPQIndex().build_spec()
    m_default, _ = _build(FaissIVFPQIndex(nlist=8, m=8, nbits=6), x, tmp_path / "default")
    assert m_default["trained_on"] == N  # 256 a centroid (256 x 64 codes) > 3,000 rows: all of them
    with pytest.raises(ConfigError, match=r"train_size: faiss_ivfpq: nbits=8 needs at least 256 vectors .*got 100"):
        FaissIVFPQIndex(nlist=8, m=8, train_size=100).build(x, tmp_path)
    with pytest.raises(ConfigError, match="a training sample of 100 vectors cannot train 200 inverted lists"):
        FaissIVFPQIndex(nlist=200, m=8, nbits=5, train_size=100).build(x, tmp_path)


def test_memory_mapped_load_gives_the_same_results(data, tmp_path):
    x, q, _ = data
    index = FaissIVFPQIndex(nlist=24, m=8, nbits=6, nprobe=6)
    _build(index, x, tmp_path / "ix")
    index.load(tmp_path / "ix", DIM)
    mapped = index.clone(mmap=True)
    mapped.load(tmp_path / "ix", DIM)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(mapped.handle).invlists)
    assert type(lists).__name__ == "OnDiskInvertedLists"  # the lists stay in the file
    assert type(faiss.downcast_InvertedLists(index.handle.invlists)).__name__ == "ArrayInvertedLists"
    (i1, s1), (i2, s2) = index.search(q, 10), mapped.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i2, truth)])
    assert 0.3 <= recall < 1.0  # 8-byte codes of 32-d vectors: approximate (0.44 here), far above chance (0.003)


def test_nan_in_a_late_batch_is_named_by_row(data, tmp_path):
    x, _, _ = data
    bad = x.copy()
    bad[2900, 5] = np.nan
    with pytest.raises(ConfigError, match=r"NaN or infinite values \(first at row 2900\)"):
        FaissIVFPQIndex(nlist=8, m=8, nbits=6, train_size=1000, add_batch=500).build(bad[:], tmp_path)
