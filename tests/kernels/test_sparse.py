"""ragopt.kernels.sparse against dense numpy on random sparse data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ragopt.errors import ArtifactError
from ragopt.kernels.sparse import InvertedIndex, build_inverted, prune_rows, score, search, to_csr, topk_sparse_rows
from ragopt.retrievers.sparse_io import load_csr, load_inverted, save_csr, save_inverted


def _random(n: int, v: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    m = sp.random(n, v, density=density, format="csr", dtype=np.float32, random_state=rng)
    m.data = (m.data * 3 + 0.01).astype(np.float32)
    return to_csr(m.data, m.indices, m.indptr, v)


def _dense_topk(dense_scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: full sort by (score desc, column asc), zeros dropped, padded with -1 / -inf."""
    n, m = dense_scores.shape
    idx = np.full((n, k), -1, np.int64)
    sc = np.full((n, k), -np.inf, np.float32)
    for r in range(n):
        cols = np.flatnonzero(dense_scores[r] > 0)
        order = cols[np.lexsort((cols, -dense_scores[r, cols]))][:k]
        idx[r, : len(order)] = order
        sc[r, : len(order)] = dense_scores[r, order]
    return idx, sc


def test_scores_and_rankings_match_dense_numpy():
    # ties on the k-th score are frequent here (integer weights): they must go to the lower doc id
    docs = _random(300, 1000, 0.02, seed=0)
    queries = _random(17, 1000, 0.01, seed=1)
    index = build_inverted(docs)
    assert (index.vocab_size, index.n_docs, index.nnz) == (1000, 300, docs.nnz)
    dense = queries.toarray().astype(np.float64) @ docs.toarray().T.astype(np.float64)
    got = score(queries, index).toarray()
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-6)
    # integer-valued weights make float32 sums exact, so rankings (ties included) must match exactly
    di, qi = docs.copy(), queries.copy()
    di.data = np.ceil(di.data * 4).astype(np.float32)
    qi.data = np.ceil(qi.data * 4).astype(np.float32)
    exact = qi.toarray() @ di.toarray().T
    for k in (1, 5, 300, 400):
        idx, sc = search(qi, build_inverted(di), k=k, chunk=4)
        want_idx, want_sc = _dense_topk(exact, k)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(sc, want_sc)


def test_documents_without_shared_terms_are_not_returned():
    docs = to_csr([1.0, 2.0, 5.0], [0, 1, 2], [0, 1, 2, 3], 4)
    q = to_csr([1.0, 1.0], [1, 3], [0, 2], 4)  # term 3 is in no document
    idx, sc = search(q, build_inverted(docs), k=3)
    assert idx.tolist() == [[1, -1, -1]]
    assert sc[0, 0] == 2.0 and np.isneginf(sc[0, 1:]).all()
    empty = sp.csr_matrix((2, 4), dtype=np.float32)
    idx, sc = search(empty, build_inverted(docs), k=2)
    assert (idx == -1).all() and np.isneginf(sc).all()


def test_topk_ties_break_by_lower_column():
    m = sp.csr_matrix(np.array([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0]], np.float32))
    idx, sc = topk_sparse_rows(m, 2)
    assert idx.tolist() == [[1, 2]] and sc.tolist() == [[3.0, 3.0]]
    idx, _ = topk_sparse_rows(m, 10)
    assert idx.tolist() == [[1, 2, 4, 5, 0, -1, -1, -1, -1, -1]]


def test_scoring_touches_only_query_postings():
    # a huge vocabulary must not cost anything: no dense V-sized array is made per query
    v = 5_000_000
    docs = to_csr([1.0, 2.0, 3.0], [7, 4_999_999, 7], [0, 2, 3], v)
    index = build_inverted(docs)
    assert index.posting_lengths()[[7, 4_999_999]].tolist() == [2, 1]
    q = to_csr([0.5], [7], [0, 1], v)
    out = score(q, index)
    assert out.toarray().tolist() == [[0.5, 1.5]]
    # the cached term-major matrix shares the posting arrays (no copy per call)
    assert np.shares_memory(index.matrix().data, index.weights)
    assert index.matrix() is index.matrix()


def test_prune_rows_keeps_top_n_and_min_weight():
    m = _random(50, 200, 0.1, seed=3)
    pruned = prune_rows(m, top_n=5)
    dense, pd = m.toarray(), pruned.toarray()
    for r in range(50):
        nz = np.flatnonzero(dense[r])
        assert np.count_nonzero(pd[r]) == min(5, len(nz))
        kept = np.flatnonzero(pd[r])
        if len(nz) > 5:  # the kept weights are the 5 largest
            assert dense[r, kept].min() >= np.sort(dense[r, nz])[-5]
        np.testing.assert_array_equal(pd[r, kept], dense[r, kept])
    assert pruned.has_canonical_format and pruned.dtype == np.float32
    both = prune_rows(m, top_n=3, min_weight=2.0).toarray()
    assert ((both == 0) | (both >= 2.0)).all()
    assert (np.count_nonzero(both, axis=1) <= 3).all()
    assert (np.count_nonzero(both, axis=1) == np.minimum(3, (dense >= 2.0).sum(axis=1))).all()
    assert prune_rows(m).nnz == m.nnz


def test_prune_ties_keep_lower_term_ids():
    m = to_csr([1.0, 1.0, 1.0, 0.5], [9, 2, 5, 0], [0, 4], 10)
    assert prune_rows(m, top_n=2).indices.tolist() == [2, 5]


def test_save_load_round_trip_is_identical(tmp_path):
    docs = _random(40, 300, 0.05, seed=4)
    save_csr(tmp_path / "docs", docs)
    back = load_csr(tmp_path / "docs")
    assert back.shape == docs.shape
    for a, b in ((back.data, docs.data), (back.indices, docs.indices), (back.indptr, docs.indptr)):
        np.testing.assert_array_equal(a, b)
    index = build_inverted(docs)
    save_inverted(tmp_path / "inv", index)
    for mmap in (False, True):
        loaded = load_inverted(tmp_path / "inv", mmap=mmap)
        assert isinstance(loaded, InvertedIndex) and loaded.n_docs == 40
        np.testing.assert_array_equal(loaded.indptr, index.indptr)
        np.testing.assert_array_equal(loaded.doc_ids, index.doc_ids)
        np.testing.assert_array_equal(loaded.weights, index.weights)
    assert sorted(p.name for p in (tmp_path / "inv").iterdir()) == [
        "n_docs.npy",
        "postings_doc_ids.npy",
        "postings_indptr.npy",
        "postings_weights.npy",
    ]


def test_load_rejects_inconsistent_arrays(tmp_path):
    save_inverted(tmp_path, build_inverted(_random(10, 20, 0.3, seed=5)))
    np.save(tmp_path / "postings_weights.npy", np.zeros(3, np.float32))
    with pytest.raises(ArtifactError, match="inconsistent"):
        load_inverted(tmp_path)


def test_score_rejects_vocabulary_mismatch():
    index = build_inverted(_random(5, 30, 0.3, seed=6))
    with pytest.raises(ValueError, match="31 terms, the index 30"):
        score(sp.csr_matrix((1, 31), dtype=np.float32), index)
