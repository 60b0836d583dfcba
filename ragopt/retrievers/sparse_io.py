"""Sparse matrices and inverted indexes (:mod:`ragopt.kernels.sparse`) on disk: one ``.npy`` per array,
written atomically, loaded with ``allow_pickle=False`` (optionally memory-mapped) and checked for consistency."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ragopt._io import atomic_save_npy
from ragopt.errors import ArtifactError
from ragopt.kernels.sparse import InvertedIndex

__all__ = ["save_csr", "load_csr", "save_inverted", "load_inverted"]


def save_csr(directory: str | os.PathLike, m: sp.csr_matrix, prefix: str = "") -> None:
    """Write ``{prefix}data/indices/indptr/shape.npy`` (atomically, file by file)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(d / f"{prefix}data.npy", np.asarray(m.data, np.float32))
    atomic_save_npy(d / f"{prefix}indices.npy", np.asarray(m.indices, np.int32))
    atomic_save_npy(d / f"{prefix}indptr.npy", np.asarray(m.indptr, np.int64))
    atomic_save_npy(d / f"{prefix}shape.npy", np.asarray(m.shape, np.int64))


def load_csr(directory: str | os.PathLike, prefix: str = "", mmap: bool = False) -> sp.csr_matrix:
    d = Path(directory)
    mode = "r" if mmap else None
    data = np.load(d / f"{prefix}data.npy", mmap_mode=mode, allow_pickle=False)
    indices = np.load(d / f"{prefix}indices.npy", mmap_mode=mode, allow_pickle=False)
    indptr = np.load(d / f"{prefix}indptr.npy", allow_pickle=False)
    shape = tuple(int(x) for x in np.load(d / f"{prefix}shape.npy", allow_pickle=False))
    _check_csr(data, indices, indptr, shape, d)
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def save_inverted(directory: str | os.PathLike, index: InvertedIndex) -> None:
    """Write ``postings_indptr/doc_ids/weights.npy`` and ``n_docs.npy``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(d / "postings_indptr.npy", np.asarray(index.indptr, np.int64))
    atomic_save_npy(d / "postings_doc_ids.npy", np.asarray(index.doc_ids, np.int32))
    atomic_save_npy(d / "postings_weights.npy", np.asarray(index.weights, np.float32))
    atomic_save_npy(d / "n_docs.npy", np.asarray([index.n_docs], np.int64))


def load_inverted(directory: str | os.PathLike, mmap: bool = False) -> InvertedIndex:
    d = Path(directory)
    mode = "r" if mmap else None
    indptr = np.load(d / "postings_indptr.npy", allow_pickle=False)
    doc_ids = np.load(d / "postings_doc_ids.npy", mmap_mode=mode, allow_pickle=False)
    weights = np.load(d / "postings_weights.npy", mmap_mode=mode, allow_pickle=False)
    n_docs = int(np.load(d / "n_docs.npy", allow_pickle=False)[0])
    _check_csr(weights, doc_ids, indptr, (len(indptr) - 1, n_docs), d)
    return InvertedIndex(indptr=indptr, doc_ids=doc_ids, weights=weights, n_docs=n_docs)


def _check_csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple, where: Path) -> None:
    ok = (
        data.ndim == indices.ndim == indptr.ndim == 1
        and len(data) == len(indices)
        and len(shape) == 2
        and len(indptr) == shape[0] + 1
        and int(indptr[0]) == 0
        and int(indptr[-1]) == len(data)
        and data.dtype == np.float32
        and indices.dtype == np.int32
        and indptr.dtype == np.int64
    )
    if not ok:
        raise ArtifactError(
            f"sparse arrays in {where} are inconsistent (shape {shape}, {len(data)} values, "
            f"{len(indptr)} row pointers); rebuild the artifact"
        )
