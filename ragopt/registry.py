"""Registry of short component names (``bm25``, ``pipeline``, ``cutoff``, ...).

Configs name components by these short names only; a config string is never imported as a module path.
Built-ins are listed here by module so that resolving a name imports only what it needs (torch-heavy
modules are imported only when a config asks for them). Third-party packages add components through the
``ragopt.components`` entry-point group (``name = "package.module:Class"``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ragopt.errors import ConfigError

if TYPE_CHECKING:
    from ragopt.config import Component

__all__ = ["register", "resolve", "available", "describe"]

# name -> "module:Class"; resolved lazily.
_BUILTIN: dict[str, str] = {
    "pipeline": "ragopt.pipeline:Pipeline",
    "cutoff": "ragopt.ops:Cutoff",
    "bm25": "ragopt.retrievers.bm25:BM25Retriever",
    # encoders (nested inside retrievers / chunkers, not stages themselves)
    "sentence_transformer": "ragopt.encoders.encoder:SentenceTransformerEncoder",
    # dense retrieval and its index backends
    "dense": "ragopt.retrievers.dense:DenseRetriever",
    "faiss_flat": "ragopt.indexes.faiss_index:FaissFlatIndex",
    "faiss_hnsw": "ragopt.indexes.faiss_index:FaissHNSWIndex",
    "faiss_ivf": "ragopt.indexes.faiss_index:FaissIVFIndex",
    "faiss_ivfpq": "ragopt.indexes.faiss_index:FaissIVFPQIndex",
    "torch_exact": "ragopt.indexes.torch_index:TorchExactIndex",
    "chroma": "ragopt.indexes.chroma_index:ChromaIndex",
    # learned sparse
    "splade": "ragopt.retrievers.splade:SpladeRetriever",
    # chunking (corpus -> passages) and passage -> document aggregation
    "chunker": "ragopt.data.chunking:Chunker",
    "aggregate": "ragopt.data.chunking:PassageAggregator",
    # fusion
    "rrf": "ragopt.ops:RRFFusion",
    "weighted": "ragopt.ops:WeightedFusion",
    # rerankers and cross-encoder search
    "cross_encoder": "ragopt.rerankers.cross_encoder:CrossEncoderReranker",
    "prp": "ragopt.rerankers.prp:PRPReranker",
    "blockrank": "ragopt.rerankers.blockrank:BlockRankReranker",
    "cur": "ragopt.rerankers.cur:CURReranker",
    # LLM backends (ragopt.llm): shared by generators, PRP, LLM judges; "scripted" is a test double
    "transformers": "ragopt.llm.transformers_backend:TransformersLLM",
    "openai": "ragopt.llm.openai_backend:OpenAIBackend",
    "llama_cpp": "ragopt.llm.llama_cpp_backend:LlamaCppLLM",
    "scripted": "ragopt.llm.scripted:ScriptedLLM",
    # generators
    "generate": "ragopt.generators.generate:Generator",
    "rewrite": "ragopt.rewriters.llm_rewrite:QueryRewriter",  # LLM query rewriting, before the retriever
}

_REGISTERED: dict[str, type] = {}
_ENTRY_POINTS: dict[str, str] | None = None

C = TypeVar("C", bound=type)


def register(name: str) -> Callable[[C], C]:
    """Class decorator: register a :class:`~ragopt.config.Component` under ``name``."""

    def deco(cls: C) -> C:
        existing = _REGISTERED.get(name)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"component name {name!r} is already registered to {existing.__qualname__}")
        cls.type_name = name
        _REGISTERED[name] = cls
        return cls

    return deco


def _entry_points() -> dict[str, str]:
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:
        from importlib.metadata import entry_points

        _ENTRY_POINTS = {ep.name: ep.value for ep in entry_points(group="ragopt.components")}
    return _ENTRY_POINTS


def available() -> list[str]:
    """Every component name that a config may use."""
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def resolve(name: object, path: str = "type") -> type[Component]:
    """Return the class registered under ``name``; a ConfigError naming ``path`` if there is none."""
    if not isinstance(name, str):
        raise ConfigError(path, f"component type must be a string, got {name!r}")
    if name in _REGISTERED:
        return _REGISTERED[name]
    target = _BUILTIN.get(name) or _entry_points().get(name)
    if target is None:
        hint = difflib.get_close_matches(name, available(), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(path, f"unknown component type {name!r}{extra} (known: {', '.join(available())})")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(path, f"component type {name!r} points at {target!r}, which cannot be loaded: {e}") from e
    if not _is_component(cls):
        # an entry point may only name a ragopt component class: a config never reaches arbitrary code through it
        raise ConfigError(path, f"component type {name!r} points at {target!r}, which is not a ragopt component")
    if name not in _REGISTERED:  # an entry point class that did not use @register
        cls.type_name = name
        _REGISTERED[name] = cls
    return cls


def _is_component(cls: object) -> bool:
    """A ragopt component class (checked by shape: importing ``ragopt.config`` here would make a cycle)."""
    return (
        isinstance(cls, type)
        and dataclasses.is_dataclass(cls)
        and all(callable(getattr(cls, m, None)) for m in ("to_config", "from_config", "validate"))
    )


def describe(name: str) -> dict[str, Any]:
    """What a config may say about component ``name``: its class (``module:Class``), the first paragraph of its
    docstring on one line, and each parameter's name, default (``None`` when ``required``) and doc."""
    cls = resolve(name)
    doc = (cls.__doc__ or "").strip()
    params = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        params.append({"name": f.name, "default": default, "required": required, "doc": f.metadata.get("doc", "")})
    return {
        "name": name,
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "summary": " ".join(doc.split("\n\n")[0].split()),
        "params": params,
    }
