"""The dense index interface: build from vectors into a folder, load it, search it by inner product."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragopt.config import Component
from ragopt.errors import ArtifactError, ConfigError, StageError

__all__ = ["DenseIndex", "LoadedIndex", "pad_results"]


@dataclass(eq=False)
class LoadedIndex:
    """A loaded index: the backend object searched (a faiss index, a torch matrix, a Chroma collection handle),
    its number of vectors and their dimension, and the folder it was loaded from. Backends that keep more
    (GPU resources) subclass it."""

    handle: Any
    size: int
    dim: int
    path: str = ""


class DenseIndex(Component):
    """An inner-product index over ``(n, dim)`` float32 vectors (normalised vectors: cosine).

    Subclasses implement :meth:`build`, :meth:`_load` and :meth:`_search`; what :meth:`load` loaded is kept in
    ``self._fit`` (a :class:`LoadedIndex`). Fields named in
    ``runtime_params`` (search-time settings, devices, batch sizes) do not shape the built index: they are
    left out of :meth:`build_spec`, so changing them reuses it."""

    runtime_params: ClassVar[tuple[str, ...]] = ()

    def build_spec(self) -> dict[str, Any]:
        """The parameters that shape the built index (part of its artifact key)."""
        spec = {"type": self.type_name}
        for f in dataclasses.fields(self):
            if f.name not in self.runtime_params:
                spec[f.name] = getattr(self, f.name)
        return spec

    def build(self, vectors: np.ndarray, out_dir: Path) -> dict[str, Any] | None:
        """Write the index of ``vectors`` into ``out_dir``; return extra manifest fields."""
        raise NotImplementedError

    def _load(self, directory: Path) -> LoadedIndex:
        """Load the index in ``directory``."""
        raise NotImplementedError

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(idx, scores)`` of the ``k`` best rows, ``k <= size``; may contain -1 slots."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    @staticmethod
    def check_vectors(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
            raise ConfigError("", f"cannot index {what} of shape {vectors.shape}: need a non-empty (n, dim) array")
        if not np.isfinite(vectors).all():
            raise ConfigError("", f"{what} contain NaN or infinite values")
        return vectors

    def load(self, directory: Path, dim: int | None = None) -> None:
        """Load a built index; ``dim`` (if given) must match the dimension it was built with."""
        self._fit = None
        loaded = self._load(Path(directory))
        if dim is not None and loaded.dim != dim:
            raise ArtifactError(
                f"{self.type_name} index {directory} holds {loaded.dim}-d vectors but "
                f"{dim}-d vectors were expected (built with another encoder?); rebuild it"
            )
        loaded.path = str(directory)
        self._fit = loaded

    @property
    def is_loaded(self) -> bool:
        return self._fit is not None

    @property
    def size(self) -> int:
        return int(self._fit.size) if self._fit is not None else 0

    @property
    def dim(self) -> int:
        if self._fit is None:
            raise StageError(f"{self.type_name}: index not loaded")
        return int(self._fit.dim)

    @property
    def handle(self) -> Any:
        """The loaded backend object (faiss index, torch matrix, Chroma handle); StageError when not loaded."""
        if self._fit is None:
            raise StageError(f"{self.type_name}: index not loaded")
        return self._fit.handle

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows by inner product for each query vector: ``idx`` int64 ``(n, k)`` (-1 padded),
        ``scores`` float32 ``(n, k)`` (-inf padded), rows sorted by descending score."""
        if not self.is_loaded:
            raise StageError(f"{self.type_name}: index not loaded (fit the retriever first)")
        q = np.ascontiguousarray(q, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ConfigError(
                "",
                f"{self.type_name}: query vectors have shape {q.shape} but the index holds "
                f"{self.dim}-d vectors (encoder and index dimensions differ)",
            )
        n = q.shape[0]
        kk = min(k, self.size)
        if n == 0 or kk <= 0:
            return pad_results(np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32), k)
        idx, scores = self._search(q, kk)
        return pad_results(idx, scores, k)


def pad_results(idx: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mark invalid slots (-1 / non-finite) consistently and pad to ``k`` columns."""
    idx = np.asarray(idx, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    bad = (idx < 0) | ~np.isfinite(scores) | (scores <= np.float32(-3e38))
    idx = np.where(bad, -1, idx)
    scores = np.where(bad, -np.inf, scores).astype(np.float32)
    n, w = idx.shape
    if w < k:
        idx = np.concatenate([idx, np.full((n, k - w), -1, np.int64)], axis=1)
        scores = np.concatenate([scores, np.full((n, k - w), -np.inf, np.float32)], axis=1)
    return idx[:, :k], scores[:, :k]
