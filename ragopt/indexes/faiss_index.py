"""faiss indexes, all by inner product: Flat (exact), HNSW, IVF-Flat and IVF-PQ.

Indexes are built on the CPU and saved with ``faiss.write_index``; at load time Flat and IVF indexes move
to the GPU when ``use_gpu`` is true, or ``auto`` and faiss was built with GPU support (``faiss-gpu``).
Search-time settings (``ef_search``, ``nprobe``, ``use_gpu``; ``mmap`` and ``add_batch`` of ``faiss_ivfpq``) are
not part of the artifact key. IVF training samples (and faiss' k-means) are drawn with ``seed``. faiss' HNSW draws
node levels from its own fixed-seed generator, so HNSW builds are deterministic for a given insertion order.

Scale (the ``faiss_ivfpq`` recipe for corpora of millions): Flat and IVF indexes are filled ``add_batch`` rows
(65,536) at a time from the vectors they are given, which may be a memory-mapped ``.npy`` (the embeddings artifact
is one): the build holds the index plus one batch, never a second copy of the corpus' vectors, and checks each
batch for NaN/inf as it goes (the index is the one a single ``add`` of all rows makes). IVF indexes are trained on
a seeded sample (by default 256 rows per centroid, what faiss' k-means uses at most; ``train_size`` of
``faiss_ivfpq`` sets it), so a corpus of any size trains in the time of its sample. With ``mmap: true`` a
``faiss_ivfpq`` index is memory-mapped at load time (faiss ``IO_FLAG_MMAP``: its inverted lists stay in the file)
instead of read into memory: loading is instant, only the lists a query visits are paged in, and processes serving
the same index share one copy in the page cache. The results are the same either way.
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

__all__ = [
    "FaissFlatIndex",
    "FaissHNSWIndex",
    "FaissIVFIndex",
    "FaissIVFPQIndex",
    "auto_nlist",
    "FaissFlat",
    "FaissHNSW",
    "FaissIVF",
    "FaissIVFPQ",
]

INDEX_FILE = "index.faiss"
GPU_MAX_K = 2048  # faiss GPU search limit
ADD_BATCH = 65536  # rows per add() call when filling Flat and IVF indexes


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
    batched_add: ClassVar[bool] = False  # fill add_batch rows at a time (same index as one add(); not HNSW)
    mmap_flag: ClassVar[str | None] = None  # the faiss IO flag that memory-maps this kind of index

    def build(self, vectors: np.ndarray, out_dir: Path) -> dict[str, Any] | None:
        faiss = _faiss()
        if self.batched_add:
            vectors = _check_shape(vectors)
            index, extra = self._make(faiss, vectors)
            step = max(1, int(getattr(self, "add_batch", ADD_BATCH)))
            for start in range(0, vectors.shape[0], step):
                chunk = np.ascontiguousarray(vectors[start : start + step], dtype=np.float32)
                if not np.isfinite(chunk).all():
                    bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
                    raise ConfigError("", f"vectors contain NaN or infinite values (first at row {bad})")
                index.add(chunk)
        else:
            vectors = self.check_vectors(vectors)
            index, extra = self._make(faiss, vectors)
            index.add(vectors)
        faiss.write_index(index, str(Path(out_dir) / INDEX_FILE))
        return {"faiss_version": faiss.__version__, "ntotal": int(index.ntotal), **(extra or {})}

    def _make(self, faiss: Any, vectors: np.ndarray) -> tuple[Any, dict | None]:
        raise NotImplementedError

    def _load(self, directory: Path) -> LoadedIndex:
        faiss = _faiss()
        if getattr(self, "mmap", False) and self.mmap_flag is not None:
            index = faiss.read_index(str(directory / INDEX_FILE), getattr(faiss, self.mmap_flag))
        else:
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
                "or use the torch_exact index with device: cuda"
            )
        return bool(want)

    def _params(self, faiss: Any, k: int) -> Any:
        return None

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._fit.handle
        if self._fit.on_gpu:
            if k > GPU_MAX_K:
                raise ConfigError(
                    "top_k",
                    f"faiss GPU search returns at most {GPU_MAX_K} results, "
                    f"{k} were asked for; lower top_k or set use_gpu: false",
                )
            scores, idx = index.search(q, k)
        else:
            params = self._params(_faiss(), k)
            scores, idx = index.search(q, k, params=params) if params is not None else index.search(q, k)
        return idx, scores


def _check_shape(vectors: np.ndarray) -> np.ndarray:
    """A non-empty 2-D float32 array, not copied (a memory map stays one); values are checked batch by batch."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ConfigError("", f"cannot index vectors of shape {vectors.shape}: need a non-empty (n, dim) array")
    if vectors.dtype != np.float32:
        vectors = vectors.astype(np.float32)
    return vectors


_USE_GPU_DOC = "move the index to the GPU at load time: auto (when faiss has GPU support), true, false"
_TRAIN_DOC = "rows of the seeded training sample (null: 256 per centroid, all rows when fewer)"
_MMAP_DOC = "memory-map the index at load time instead of reading it into memory (same results)"
_ADD_BATCH_DOC = "vectors added per call while filling the index (memory of the build; not the result)"


@register("faiss_flat")
class FaissFlatIndex(_Faiss):
    """Exact inner-product search (``IndexFlatIP``)."""

    runtime_params: ClassVar[tuple[str, ...]] = ("use_gpu",)
    batched_add: ClassVar[bool] = True

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
    batched_add: ClassVar[bool] = True
    mmap_flag: ClassVar[str | None] = "IO_FLAG_MMAP"

    def build_spec(self) -> dict[str, Any]:
        spec = super().build_spec()
        if spec.get("train_size") is None:  # the default sample: keys of indexes built before the field stay valid
            spec.pop("train_size", None)
        return spec

    def _nlist(self, n: int) -> int:
        nlist = self.nlist if self.nlist is not None else auto_nlist(n)
        if nlist > n:
            raise ConfigError("nlist", f"{self.type_name}: nlist={nlist} exceeds the {n} vectors to index")
        return nlist

    def _train(self, index: Any, vectors: np.ndarray, n_train: int) -> int:
        """Train on a seeded sample of ``n_train`` rows (``train_size`` when set); return the sample size."""
        index.cp.seed = self.seed
        index.cp.spherical = True  # centroids on the unit sphere: the right k-means for inner product
        if getattr(self, "train_size", None) is not None:  # a field of faiss_ivfpq
            n_train = self.train_size
        rng = np.random.default_rng(self.seed)
        n = vectors.shape[0]
        if min(n, n_train) < index.nlist:
            raise ConfigError(
                "train_size",
                f"{self.type_name}: a training sample of {min(n, n_train)} vectors cannot "
                f"train {index.nlist} inverted lists; raise train_size or lower nlist",
            )
        sample = vectors if n <= n_train else vectors[np.sort(rng.choice(n, n_train, replace=False))]
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if not np.isfinite(sample).all():
            raise ConfigError("", "vectors contain NaN or infinite values (in the training sample)")
        index.train(sample)
        return int(sample.shape[0])

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
        n_train = self._train(index, vectors, 256 * nlist)
        return index, {"nlist": nlist, "trained_on": n_train}


@register("faiss_ivfpq")
class FaissIVFPQIndex(_IVF):
    """Inverted lists of product-quantised vectors (``IndexIVFPQ``, inner product): compact, approximate."""

    runtime_params: ClassVar[tuple[str, ...]] = ("nprobe", "use_gpu", "mmap", "add_batch")

    nlist: int | None = param(None, doc="inverted lists (null: about 4*sqrt(n), at most n/39)", ge=1)
    nprobe: int = param(16, doc="lists visited per query", ge=1)
    m: int = param(16, doc="sub-quantisers; must divide the vector dimension", ge=1)
    nbits: int = param(8, doc="bits per sub-quantiser code", ge=1, le=16)
    seed: int = param(0, doc="seed of the training sample and k-means")
    train_size: int | None = param(None, doc=_TRAIN_DOC, ge=1)
    use_gpu: bool | Literal["auto"] = param("auto", doc=_USE_GPU_DOC)
    mmap: bool = param(False, doc=_MMAP_DOC)
    add_batch: int = param(ADD_BATCH, doc=_ADD_BATCH_DOC, ge=1)

    def _make(self, faiss: Any, vectors: np.ndarray) -> tuple[Any, dict | None]:
        n, d = vectors.shape
        if d % self.m:
            divisors = [x for x in range(1, d + 1) if d % x == 0]
            raise ConfigError(
                "m",
                f"faiss_ivfpq: m={self.m} sub-quantisers must divide the vector dimension "
                f"{d} (divisors of {d}: {divisors})",
            )
        n_fit = min(n, self.train_size or n)
        if n_fit < (1 << self.nbits):
            field = "train_size" if n_fit < n else "nbits"
            raise ConfigError(
                field,
                f"faiss_ivfpq: nbits={self.nbits} needs at least {1 << self.nbits} vectors to "
                f"train its codebooks, got {n_fit}" + (" (train_size)" if n_fit < n else ""),
            )
        nlist = self._nlist(n)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, self.m, self.nbits, faiss.METRIC_INNER_PRODUCT)
        index.pq.cp.seed = self.seed
        n_train = self._train(index, vectors, 256 * max(nlist, 1 << self.nbits))
        return index, {"nlist": nlist, "code_bytes": int(index.code_size), "trained_on": n_train}


# the names before indexes were suffixed by role
FaissFlat, FaissHNSW, FaissIVF, FaissIVFPQ = FaissFlatIndex, FaissHNSWIndex, FaissIVFIndex, FaissIVFPQIndex
