"""Chroma (embedded ``PersistentClient``) holding our own embeddings.

The collection is created with ``embedding_function=None``, so Chroma never loads or downloads its
default embedder, and telemetry is off. Chroma rewrites its SQLite file whenever a client opens it, so a
loaded index works on a private temporary copy of the artifact's ``chroma/`` folder (removed when the
index is dropped or the process exits); the artifact itself stays byte-identical to its manifest.
Distances are turned back into similarities: ``ip`` distance is ``1 - dot``, ``cosine`` is ``1 - cos``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt._imports import require
from ragopt.config import param
from ragopt.errors import ArtifactError
from ragopt.indexes.base import DenseIndex, LoadedIndex
from ragopt.registry import register

__all__ = ["ChromaIndex"]

COLLECTION = "ragopt"


def _chromadb() -> tuple[Any, Any]:
    chromadb = require("chromadb", "chroma", "the chroma index")
    settings = require("chromadb.config", "chroma", "the chroma index").Settings
    return chromadb, settings(anonymized_telemetry=False, allow_reset=False)


@contextmanager
def _quiet():
    """Chroma calls a collection made with ``embedding_function=None`` 'legacy' and warns on every read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="legacy embedding function config", category=DeprecationWarning)
        yield


class _Handle:
    """An open client on a temporary copy of the index; closed and deleted when garbage-collected."""

    def __init__(self, source: Path, ef_search: int):
        chromadb, settings = _chromadb()
        self.tmp = Path(tempfile.mkdtemp(prefix="ragopt-chroma-"))
        try:
            shutil.copytree(source, self.tmp / "chroma")
            self.client = chromadb.PersistentClient(path=str(self.tmp / "chroma"), settings=settings)
            with _quiet():
                self.collection = self.client.get_collection(COLLECTION, embedding_function=None)
                self.collection.modify(configuration={"hnsw": {"ef_search": ef_search}})
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _close, self.client, self.tmp)


def _close(client: Any, tmp: Path) -> None:
    try:
        client.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@register("chroma")
class ChromaIndex(DenseIndex):
    """An HNSW Chroma collection of the corpus vectors (ids are row numbers)."""

    runtime_params: ClassVar[tuple[str, ...]] = ("ef_search", "batch_size", "query_batch")

    space: Literal["ip", "cosine"] = param("ip", doc="Chroma distance: ip (1 - dot) or cosine (1 - cos)")
    M: int = param(16, doc="HNSW neighbours per node (Chroma's max_neighbors)", ge=2)
    ef_construction: int = param(100, doc="HNSW candidate list size while building", ge=1)
    ef_search: int = param(100, doc="HNSW candidate list size while searching", ge=1)
    batch_size: int = param(4096, doc="vectors per add() call (capped by Chroma's maximum)", ge=1)
    query_batch: int = param(256, doc="queries per query() call", ge=1)

    def build(self, vectors: np.ndarray, out_dir: Path) -> dict[str, Any] | None:
        chromadb, settings = _chromadb()
        vectors = self.check_vectors(vectors)
        client = chromadb.PersistentClient(path=str(Path(out_dir) / "chroma"), settings=settings)
        try:
            col = client.create_collection(
                COLLECTION,
                embedding_function=None,
                configuration={
                    "hnsw": {
                        "space": self.space,
                        "max_neighbors": self.M,
                        "ef_construction": self.ef_construction,
                        "ef_search": self.ef_search,
                    }
                },
            )
            step = max(1, min(self.batch_size, client.get_max_batch_size()))
            for start in range(0, vectors.shape[0], step):
                stop = min(start + step, vectors.shape[0])
                col.add(ids=[str(i) for i in range(start, stop)], embeddings=vectors[start:stop])
            count = col.count()
        finally:
            client.close()
        return {"chromadb_version": chromadb.__version__, "count": count, "dim": int(vectors.shape[1])}

    def _load(self, directory: Path) -> LoadedIndex:
        source = directory / "chroma"
        if not source.is_dir():
            raise ArtifactError(f"chroma index {directory} has no chroma/ folder")
        manifest = (
            json.loads((directory / "manifest.json").read_text("utf-8"))
            if (directory / "manifest.json").is_file()
            else {}
        )
        handle = _Handle(source, self.ef_search)
        with _quiet():
            count = handle.collection.count()
            dim = manifest.get("dim")
            if dim is None:
                dim = len(handle.collection.get(ids=["0"], include=["embeddings"])["embeddings"][0])
        return LoadedIndex(handle, int(count), int(dim))

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        col = self._fit.handle.collection
        n = q.shape[0]
        idx = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float32)
        for start in range(0, n, self.query_batch):
            with _quiet():
                res = col.query(
                    query_embeddings=q[start : start + self.query_batch], n_results=k, include=["distances"]
                )
            for r, (ids, dists) in enumerate(zip(res["ids"], res["distances"])):
                m = len(ids)
                idx[start + r, :m] = np.asarray(ids, dtype=np.int64)
                scores[start + r, :m] = 1.0 - np.asarray(dists, dtype=np.float32)
        return idx, scores
