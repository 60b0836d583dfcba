"""Exact inner-product search with torch: a matrix product and ``torch.topk``, on CPU or GPU.

The GPU path needs no faiss-gpu. Vectors are stored as ``vectors.npy`` (float32); ``precision`` only
changes the search arithmetic (``auto``: fp16 on cuda, fp32 on cpu).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt._imports import require
from ragopt.config import param
from ragopt.encoders import resolve_device, resolve_precision
from ragopt.indexes.base import DenseIndex, LoadedIndex
from ragopt.registry import register

__all__ = ["TorchExactIndex", "TorchExact"]

VECTORS_FILE = "vectors.npy"


@register("torch_exact")
class TorchExactIndex(DenseIndex):
    """Brute-force inner product with torch (exact up to ``precision``)."""

    runtime_params: ClassVar[tuple[str, ...]] = ("device", "precision", "query_batch")

    device: Literal["auto", "cpu", "cuda"] = param("auto", doc="auto: cuda when available, else cpu")
    precision: Literal["auto", "fp32", "fp16"] = param("auto", doc="auto: fp16 on cuda, fp32 on cpu")
    query_batch: int = param(256, doc="queries per matrix product", ge=1)

    def build(self, vectors: np.ndarray, out_dir: Path) -> dict[str, Any] | None:
        vectors = self.check_vectors(vectors)
        np.save(Path(out_dir) / VECTORS_FILE, vectors, allow_pickle=False)
        return None

    def _load(self, directory: Path) -> LoadedIndex:
        torch = require("torch", "dense", "torch_exact")
        device = resolve_device(self.device)
        dtype = torch.float16 if resolve_precision(self.precision, device) == "fp16" else torch.float32
        vectors = np.load(directory / VECTORS_FILE, allow_pickle=False)
        mat = torch.from_numpy(vectors).to(device=device, dtype=dtype)
        return LoadedIndex(mat, int(vectors.shape[0]), int(vectors.shape[1]))

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        mat = self._fit.handle
        idx_parts, score_parts = [], []
        with torch.inference_mode():
            for start in range(0, q.shape[0], self.query_batch):
                qt = torch.from_numpy(q[start : start + self.query_batch]).to(mat.device, mat.dtype)
                scores = (qt @ mat.T).float()
                top = torch.topk(scores, k, dim=1, largest=True, sorted=True)
                score_parts.append(top.values.cpu().numpy())
                idx_parts.append(top.indices.cpu().numpy())
        return np.concatenate(idx_parts), np.concatenate(score_parts)


TorchExact = TorchExactIndex  # the name before indexes were suffixed by role
