"""Dense retrieval: a bi-encoder and a vector index.

``fit`` builds (or finds) two artifacts: the corpus ``embeddings`` (keyed by the encoder spec, corpus
fingerprint and ``with_title``) and the index built from them (keyed by the index type and build
parameters, the embeddings key and the dimension). Both are reused by later fits, so changing a search-time
setting (``nprobe``, ``ef_search``, devices) or the index type never re-encodes the corpus, and another
model or chunking never reuses them. Passages with empty text are encoded as empty strings (their count is
in the embeddings manifest as ``empty_texts``); a corpus whose texts are all empty is an error.

Queries that are empty or whitespace get no candidates (an empty row) and are not encoded, as with BM25:
a vector of nothing would rank arbitrary documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragopt.config import canonical_json, param
from ragopt.encoders import FORMAT_VERSION as EMB_FORMAT
from ragopt.encoders import Encoder, SentenceTransformerEncoder
from ragopt.errors import ArtifactError, ConfigError, StageError
from ragopt.indexes.base import DenseIndex
from ragopt.indexes.faiss_index import FaissFlatIndex
from ragopt.pipeline import Fitted, Stage
from ragopt.registry import register
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Stats

__all__ = ["DenseRetriever"]

FORMAT_VERSION = 1


@register("dense")
class DenseRetriever(Stage):
    """Encode the corpus once, index the vectors, and search by inner product."""

    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    cache_depth_field: ClassVar[str | None] = "top_k"

    encoder: Encoder = param(default_factory=SentenceTransformerEncoder, doc="the bi-encoder")
    index: DenseIndex = param(default_factory=FaissFlatIndex, doc="the vector index")
    top_k: int = param(1000, doc="candidates returned per query", ge=1)
    with_title: bool = param(True, doc="encode title + text (BEIR convention) rather than text alone")

    def cache_spec(self) -> dict[str, Any] | None:
        """Stage-output cache key: what the vectors depend on (the encoder's spec, not its batch size or
        device), the index config (search parameters change results), and the corpus."""
        return {
            "encoder": canonical_json([self.encoder.spec("query"), self.encoder.spec("doc")]),
            "index": canonical_json(self.index.to_config()),
            "with_title": self.with_title,
            "corpus": self.corpus.fingerprint if self.is_fitted else None,
        }

    @property
    def index_kind(self) -> str:
        return f"dense-{self.index.type_name}"

    def index_spec(self, embeddings_key: str, n_docs: int, dim: int) -> dict[str, Any]:
        """The index artifact key: index build parameters, the embeddings artifact (which the encoder spec,
        repeated here for readable mismatch messages, and the corpus determine) and the dimension."""
        return {
            "index": self.index.build_spec(),
            "embeddings": embeddings_key,
            "encoder": self.encoder.spec("doc"),
            "n_docs": n_docs,
            "dim": dim,
        }

    # ------------------------------------------------------------------------------------------
    def fit(
        self, corpus: Corpus, store: ArtifactStore | None = None, *, rebuild: bool = False, progress: bool | None = None
    ) -> DenseRetriever:
        self._check_corpus(corpus)
        store = store if store is not None else ArtifactStore()
        stats = Stats()
        vectors, emb = self.encoder.encode_corpus(
            corpus, store, with_title=self.with_title, rebuild=rebuild, progress=progress, stats=stats
        )
        dim = int(vectors.shape[1])
        art = store.get_or_create(
            self.index_kind,
            self.index_spec(emb.key, len(corpus), dim),
            FORMAT_VERSION,
            lambda d: self._build(vectors, d, emb, dim),
            rebuild=rebuild,
        )
        self._load(art.path, corpus, dim)
        self._fit = Fitted(
            corpus,
            [
                {"kind": "embeddings", "path": str(emb.path), "created": emb.created},
                {"kind": self.index_kind, "path": str(art.path), "created": art.created},
            ],
            stats,
        )
        return self

    def _build(self, vectors: np.ndarray, out: Path, emb: Any, dim: int) -> dict[str, Any]:
        extra = self.index.build(np.asarray(vectors), out) or {}
        return {"embeddings_path": str(emb.path), "n": int(vectors.shape[0]), "dim": dim, **extra}

    def _load(self, path: Path, corpus: Corpus, dim: int) -> None:
        self._fit = None
        self.index.load(path, dim)
        if self.index.size != len(corpus):
            raise ArtifactError(
                f"dense index {path} holds {self.index.size} vectors, the corpus has "
                f"{len(corpus)}; it was built for another corpus (rebuild it)"
            )

    def load_index(self, path: str | Path, corpus: Corpus, store: ArtifactStore | None = None) -> DenseRetriever:
        """Use an existing index directory after checking it was built for this encoder, index config and
        corpus (ArtifactError otherwise). Needs no embeddings: only the encoder, for queries."""
        store = store if store is not None else ArtifactStore()
        self.encoder.use_store(store)
        path = Path(path)
        emb_key = store.key("embeddings", self.encoder.embeddings_spec(corpus, self.with_title), EMB_FORMAT)
        manifest = store.open(path).manifest
        dim = int(manifest.get("dim", -1))
        enc_dim = self.encoder.dim
        if dim != enc_dim:
            raise ArtifactError(
                f"dense index {path} was built from {dim}-d vectors but the encoder "
                f"({self.encoder.spec('doc').get('model', self.encoder.type_name)}) produces "
                f"{enc_dim}-d vectors"
            )
        store.open(path, self.index_kind, self.index_spec(emb_key, len(corpus), dim), FORMAT_VERSION)
        self._load(path, corpus, dim)
        self._fit = Fitted(corpus, [{"kind": self.index_kind, "path": str(path), "created": False}])
        return self

    # ------------------------------------------------------------------------------------------
    def transform(self, batch: Batch) -> Batch:
        if self._fit is None or not self.index.is_loaded:
            raise StageError("dense: not fitted; call .fit(corpus) first")
        n = len(batch)
        k = min(self.top_k, len(self.corpus))
        doc_idx = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float32)
        rows = [r for r, t in enumerate(batch.queries.texts) if t.strip()]
        if rows:
            q = self.encoder.encode([batch.queries.texts[r] for r in rows], "query", stats=batch.stats)
            if q.shape[1] != self.index.dim:
                raise ConfigError(
                    "encoder",
                    f"dense: the encoder produces {q.shape[1]}-d vectors but the index "
                    f"holds {self.index.dim}-d vectors",
                )
            with batch.stats.timer("dense_search"):
                idx, sc = self.index.search(q, k)
            doc_idx[rows] = idx
            scores[rows] = sc
        batch.stats.add("dense_queries", n)
        return batch.with_candidates(doc_idx, scores, self.corpus)
