"""faiss indexes, all by inner product: Flat (exact), HNSW, IVF-Flat and IVF-PQ.

Indexes are built on the CPU and saved with ``faiss.write_index``; at load time Flat and IVF indexes move
to the GPU when ``use_gpu`` is true, or ``auto`` and faiss was built with GPU support (``faiss-gpu``).
Search-time settings (``ef_search``, ``nprobe``, ``use_gpu``) are not part of the artifact key.
IVF training samples (and faiss' k-means) are drawn with ``seed``. faiss' HNSW draws node levels from its
own fixed-seed generator, so HNSW builds are deterministic for a given insertion order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt._imports import require
from ragopt.config import param
from ragopt.errors import BackendUnavailableError, ConfigError
from ragopt.indexes.base import DenseIndex, LoadedIndex
from ragopt.registry import register

__all__ = ["FaissFlatIndex", "FaissHNSWIndex", "FaissIVFIndex", "FaissIVFPQIndex", "auto_nlist",
           "FaissFlat", "FaissHNSW", "FaissIVF", "FaissIVFPQ"]

INDEX_FILE = "index.faiss"
GPU_MAX_K = 2048  # faiss GPU search limit


def _faiss() -> Any:
    return require("faiss", "dense", "faiss indexes")


def auto_nlist(n: int) -> int:
    """About ``4 * sqrt(n)`` inverted lists, at most ``n // 39`` (faiss wants >= 39 training points a list)."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


@dataclass(eq=False)
class _FaissLoaded(LoadedIndex):
    gpu_resources: Any = None  # kept alive as long as the GPU index
    on_gpu: bool = False


class _Faiss(DenseIndex):
    """Shared save/load/search of faiss indexes."""

    gpu_capable: ClassVar[bool] = True

    def build(self, vectors: np.ndarray, out_dir: Path) -> dict[str, Any] | None:
        faiss = _faiss()
        vectors = self.check_vectors(vectors)
        index, extra = self._make(faiss, vectors)
        index.add(vectors)
        faiss.write_index(index, str(Path(out_dir) / INDEX_FILE))
        return {"faiss_version": faiss.__version__, "ntotal": int(index.ntotal), **(extra or {})}

    def _make(self, faiss: Any, vectors: np.ndarray) -> tuple[Any, dict | None]:
        raise NotImplementedError

    def _load(self, directory: Path) -> LoadedIndex:
        faiss = _faiss()
        index = faiss.read_index(str(directory / INDEX_FILE))
        res = None
        if self.gpu_capable and self._want_gpu(faiss):
            res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(res, 0, index)
            if hasattr(self, "nprobe"):
                index.nprobe = self.nprobe
        return _FaissLoaded(index, int(index.ntotal), int(index.d), gpu_resources=res, on_gpu=res is not None)

    def _want_gpu(self, faiss: Any) -> bool:
        want = getattr(self, "use_gpu", False)
        n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if want == "auto":
            return n_gpus > 0
        if want and n_gpus == 0:
            raise BackendUnavailableError(
                f"{self.type_name}: use_gpu is true but this faiss has no GPU support (install faiss-gpu), "
                "or use the torch_exact index with device: cuda")
        return bool(want)

    def _params(self, faiss: Any, k: int) -> Any:
        return None

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._fit.handle
        if self._fit.on_gpu:
            if k > GPU_MAX_K:
                raise ConfigError("top_k", f"faiss GPU search returns at most {GPU_MAX_K} results, "
                                           f"{k} were asked for; lower top_k or set use_gpu: false")
            scores, idx = index.search(q, k)
        else:
            params = self._params(_faiss(), k)
            scores, idx = index.search(q, k, params=params) if params is not None else index.search(q, k)
        return idx, scores


_USE_GPU_DOC = "move the index to the GPU at load time: auto (when faiss has GPU support), true, false"


@register("faiss_flat")
class FaissFlatIndex(_Faiss):
    """Exact inner-product search (``IndexFlatIP``)."""

    runtime_params: ClassVar[tuple[str, ...]] = ("use_gpu",)

    use_gpu: bool | Literal["auto"] = param("auto", doc=_USE_GPU_DOC)

    def _make(self, faiss: Any, vectors: np.ndarray) -> tuple[Any, dict | None]:
        return faiss.IndexFlatIP(vectors.shape[1]), None


@register("faiss_hnsw")
class FaissHNSWIndex(_Faiss):
    """Graph search (``IndexHNSWFlat``, inner product); CPU only."""

    runtime_params: ClassVar[tuple[str, ...]] = ("ef_search",)
    gpu_capable: ClassVar[bool] = False

    M: int = param(32, doc="graph neighbours per node", ge=2, le=512)
    ef_construction: int = param(200, doc="candidate list size while building", ge=1)
    ef_search: int = param(128, doc="candidate list size while searching (raised to k when smaller)", ge=1)

    def _make(self, faiss: Any, vectors: np.ndarray) -> tuple[Any, dict | None]:
        index = faiss.IndexHNSWFlat(vectors.shape[1], self.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index, None

    def _params(self, faiss: Any, k: int) -> Any:
        return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))


class _IVF(_Faiss):
    def _nlist(self, n: int) -> int:
        nlist = self.nlist if self.nlist is not None else auto_nlist(n)
        if nlist > n:
            raise ConfigError("nlist", f"{self.type_name}: nlist={nlist} exceeds the {n} vectors to index")
        return nlist

    def _train(self, index: Any, vectors: np.ndarray, n_train: int) -> None:
        index.cp.seed = self.seed
        index.cp.spherical = True  # centroids on the unit sphere: the right k-means for inner product
        rng = np.random.default_rng(self.seed)
        n = vectors.shape[0]
        sample = vectors if n <= n_train else vectors[np.sort(rng.choice(n, n_train, replace=False))]
        index.train(np.ascontiguousarray(sample))

    def _params(self, faiss: Any, k: int) -> Any:
        return faiss.SearchParametersIVF(nprobe=self.nprobe)


@register("faiss_ivf")
class FaissIVFIndex(_IVF):
    """Inverted lists of full vectors (``IndexIVFFlat``, inner product)."""

    runtime_params: ClassVar[tuple[str, ...]] = ("nprobe", "use_gpu")

    nlist: int | None = param(None, doc="inverted lists (null: about 4*sqrt(n), at most n/39)", ge=1)
    nprobe: int = param(16, doc="lists visited per query", ge=1)
    seed: int = param(0, doc="seed of the training sample and k-means")
    use_gpu: bool | Literal["auto"] = param("auto", doc=_USE_GPU_DOC)

    def _make(self, faiss: Any, vectors: np.ndarray) -> tuple[Any, dict | None]:
        n, d = vectors.shape
        nlist = self._nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        self._train(index, vectors, 256 * nlist)
        return index, {"nlist": nlist}


@register("faiss_ivfpq")
class FaissIVFPQIndex(_IVF):
    """Inverted lists of product-quantised vectors (``IndexIVFPQ``, inner product): compact, approximate."""

    runtime_params: ClassVar[tuple[str, ...]] = ("nprobe", "use_gpu")

    nlist: int | None = param(None, doc="inverted lists (null: about 4*sqrt(n), at most n/39)", ge=1)
    nprobe: int = param(16, doc="lists visited per query", ge=1)
    m: int = param(16, doc="sub-quantisers; must divide the vector dimension", ge=1)
    nbits: int = param(8, doc="bits per sub-quantiser code", ge=1, le=16)
    seed: int = param(0, doc="seed of the training sample and k-means")
    use_gpu: bool | Literal["auto"] = param("auto", doc=_USE_GPU_DOC)

    def _make(self, faiss: Any, vectors: np.ndarray) -> tuple[Any, dict | None]:
        n, d = vectors.shape
        if d % self.m:
            divisors = [x for x in range(1, d + 1) if d % x == 0]
            raise ConfigError("m", f"faiss_ivfpq: m={self.m} sub-quantisers must divide the vector dimension "
                                   f"{d} (divisors of {d}: {divisors})")
        if n < (1 << self.nbits):
            raise ConfigError("nbits", f"faiss_ivfpq: nbits={self.nbits} needs at least {1 << self.nbits} "
                                       f"vectors to train its codebooks, got {n}")
        nlist = self._nlist(n)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, self.m, self.nbits, faiss.METRIC_INNER_PRODUCT)
        index.pq.cp.seed = self.seed
        self._train(index, vectors, 256 * max(nlist, 1 << self.nbits))
        return index, {"nlist": nlist, "code_bytes": int(index.code_size)}


# the names before indexes were suffixed by role
FaissFlat, FaissHNSW, FaissIVF, FaissIVFPQ = FaissFlatIndex, FaissHNSWIndex, FaissIVFIndex, FaissIVFPQIndex
