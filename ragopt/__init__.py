"""ragopt: build, evaluate and tune retrieval and RAG pipelines.

``import ragopt`` is light (numpy and the standard library); heavy backends (torch, faiss, pyserini,
optuna, mcp) are imported only by the components that use them. Public names are loaded lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Batch": "ragopt.types",
    "Corpus": "ragopt.types",
    "Queries": "ragopt.types",
    "Stats": "ragopt.types",
    "Component": "ragopt.config",
    "from_config": "ragopt.config",
    "register": "ragopt.registry",
    "available": "ragopt.registry",
    "Stage": "ragopt.pipeline",
    "Pipeline": "ragopt.pipeline",
    "Cutoff": "ragopt.ops",
    "ArtifactStore": "ragopt.store",
    "BM25Retriever": "ragopt.retrievers.bm25",
    "BM25": "ragopt.retrievers.bm25",  # alias of BM25Retriever
    "load_dataset": "ragopt.data",
    "Dataset": "ragopt.data",
    "evaluate": "ragopt.evaluation",
    "load_pipeline": "ragopt.pipeline_io",
    "save_pipeline": "ragopt.pipeline_io",
    "evaluate_pipeline": "ragopt.evaluation.run",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ragopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from ragopt.config import Component, from_config
    from ragopt.data import Dataset, load_dataset
    from ragopt.evaluation import evaluate
    from ragopt.evaluation.run import evaluate_pipeline
    from ragopt.ops import Cutoff
    from ragopt.pipeline import Pipeline, Stage
    from ragopt.pipeline_io import load_pipeline, save_pipeline
    from ragopt.registry import available, register
    from ragopt.retrievers.bm25 import BM25, BM25Retriever
    from ragopt.store import ArtifactStore
    from ragopt.types import Batch, Corpus, Queries, Stats
