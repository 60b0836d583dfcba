"""Numeric kernels of learned-sparse retrieval (SPLADE): pruning, the inverted index, scoring, top-k.

Sparse vectors are ``scipy.sparse.csr_matrix`` rows over a vocabulary of ``V`` terms (float32 weights,
int32 term ids). The inverted index is the document matrix stored term-major, i.e. ``D^T`` as a
``V x N`` CSR matrix: row ``t`` is the posting list of term ``t`` (document ids and impact weights).
Scoring a batch of queries is ``Q @ D^T`` with scipy's sparse-sparse product, which walks only the
posting lists of the query terms (plus an ``O(N)`` accumulator per call), never a dense ``V`` axis.

Reading and writing these arrays is :mod:`ragopt.retrievers.sparse_io`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["InvertedIndex", "to_csr", "prune_rows", "build_inverted", "score", "topk_sparse_rows", "search"]


def to_csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """A canonical CSR matrix (float32 data, int32 term ids, sorted and duplicate-free rows)."""
    m = sp.csr_matrix(
        (np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr)),
        shape=(len(indptr) - 1, int(n_cols)),
    )
    m.sum_duplicates()  # sorts indices within rows too
    return m


def _row_ids(m: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))


def prune_rows(m: sp.csr_matrix, top_n: int | None = None, min_weight: float = 0.0) -> sp.csr_matrix:
    """Keep, in each row, the weights ``>= min_weight`` (zeros always go), then the ``top_n`` largest
    (ties: lower column first). Returns a new canonical float32 CSR matrix."""
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.sum_duplicates()
    keep = m.data != 0
    if min_weight > 0:
        keep &= m.data >= min_weight
    data, cols, rows = m.data[keep], m.indices[keep], _row_ids(m)[keep]
    if top_n is not None:
        order = np.lexsort((cols, -data, rows))  # by row, then weight descending, then column
        srows = rows[order]
        rank = np.arange(len(order)) - np.searchsorted(srows, srows, side="left")
        sel = np.sort(order[rank < top_n])  # back to (row, column) order
        data, cols, rows = data[sel], cols[sel], rows[sel]
    indptr = np.zeros(m.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=m.shape[0]), out=indptr[1:])
    return sp.csr_matrix((data, cols.astype(np.int32), indptr), shape=m.shape)


@dataclass
class InvertedIndex:
    """Posting lists of a ``V``-term vocabulary over ``n_docs`` documents (``D^T`` in CSR form)."""

    indptr: np.ndarray  # (V + 1,) int64: postings of term t are [indptr[t], indptr[t + 1])
    doc_ids: np.ndarray  # (nnz,) int32, ascending within each posting list
    weights: np.ndarray  # (nnz,) float32 impact weights
    n_docs: int

    @property
    def vocab_size(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.doc_ids.nbytes + self.weights.nbytes)

    def posting_lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def matrix(self) -> sp.csr_matrix:
        """The ``V x n_docs`` term-major matrix, built once (index arrays of one dtype, so scipy's
        product never copies the postings)."""
        m = self.__dict__.get("_matrix")
        if m is None:
            idx = np.int32 if self.nnz < np.iinfo(np.int32).max and self.n_docs < np.iinfo(np.int32).max else np.int64
            m = sp.csr_matrix(
                (self.weights, self.doc_ids.astype(idx, copy=False), self.indptr.astype(idx)),
                shape=(self.vocab_size, self.n_docs),
            )
            self.__dict__["_matrix"] = m
        return m

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[term], self.indptr[term + 1]
        return self.doc_ids[lo:hi], self.weights[lo:hi]


def build_inverted(docs: sp.csr_matrix) -> InvertedIndex:
    """Invert a document-major ``N x V`` matrix into posting lists."""
    docs = sp.csr_matrix(docs, dtype=np.float32)
    docs.sum_duplicates()
    docs.eliminate_zeros()
    t = docs.tocsc()  # column t of D = posting list of term t, rows (doc ids) sorted
    t.sort_indices()
    return InvertedIndex(
        indptr=t.indptr.astype(np.int64),
        doc_ids=t.indices.astype(np.int32),
        weights=t.data.astype(np.float32),
        n_docs=docs.shape[0],
    )


# -- scoring ----------------------------------------------------------------------------------------
def score(queries: sp.csr_matrix, index: InvertedIndex) -> sp.csr_matrix:
    """``Q @ D^T``: an ``n_q x N`` sparse matrix of dot products. Cost: the posting lists of the query
    terms (plus an ``O(N)`` accumulator), independent of the vocabulary size."""
    if queries.shape[1] != index.vocab_size:
        raise ValueError(f"queries have {queries.shape[1]} terms, the index {index.vocab_size}")
    out = sp.csr_matrix(queries, dtype=np.float32) @ index.matrix()
    out = sp.csr_matrix(out)
    out.eliminate_zeros()
    return out


def topk_sparse_rows(m: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` stored entries of each row, sorted by descending value, ties by ascending column.

    Returns ``(cols int64, values float32)`` of shape ``(n_rows, k)``, padded with -1 / -inf."""
    n = m.shape[0]
    idx = np.full((n, k), -1, np.int64)
    vals = np.full((n, k), -np.inf, np.float32)
    if k <= 0:
        return idx, vals
    for r in range(n):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        if hi == lo:
            continue
        data, cols = m.data[lo:hi], m.indices[lo:hi]
        if hi - lo > k:
            part = np.argpartition(-data, k - 1)[:k]
            kth = data[part].min()
            # every entry tied with the k-th value competes on column id, as in ragopt.kernels.topk.topk_rows
            part = np.flatnonzero(data >= kth)
            data, cols = data[part], cols[part]
        order = np.lexsort((cols, -data))[:k]
        idx[r, : len(order)] = cols[order]
        vals[r, : len(order)] = data[order]
    return idx, vals


def search(queries: sp.csr_matrix, index: InvertedIndex, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` documents of every query row (documents with score 0 are not returned)."""
    parts_i, parts_s = [], []
    for start in range(0, queries.shape[0], chunk):
        i, s = topk_sparse_rows(score(queries[start : start + chunk], index), k)
        parts_i.append(i)
        parts_s.append(s)
    if not parts_i:
        return np.full((0, k), -1, np.int64), np.full((0, k), -np.inf, np.float32)
    return np.concatenate(parts_i), np.concatenate(parts_s)
