"""BM25 retriever: bm25s (default, numpy) or pyserini (Lucene) backend.

The index is an artifact keyed by everything that shapes it: backend, tokenisation (stemmer, stopwords,
lowercasing, title), and for bm25s, which precomputes term scores, ``k1``, ``b``, ``method`` and
``delta``; plus the corpus fingerprint. For pyserini ``k1`` and ``b`` are search-time settings and a
change of them reuses the Lucene index.

Documents that share no term with a query are not returned (bm25s would otherwise fill short lists with
arbitrary zero-score documents), so a row may hold fewer than ``top_k`` candidates.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt._progress import progress_enabled
from ragopt.config import param
from ragopt.errors import ArtifactError, ConfigError, DataError
from ragopt.pipeline import Fitted, Stage
from ragopt.registry import register
from ragopt.retrievers import _pyserini
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus

__all__ = ["BM25Retriever", "BM25"]

FORMAT_VERSION = 1
# PyStemmer algorithms usable with the bm25s backend, and Lucene stemmers usable with pyserini.
_PYSERINI_STEMMERS = ("porter", "krovetz")


_STEMMERS: dict[str, Any] = {}


def _stem_function(algorithm: str) -> Any:
    """One PyStemmer object per algorithm and process: its word cache then serves every batch."""
    if algorithm not in _STEMMERS:
        import Stemmer

        _STEMMERS[algorithm] = Stemmer.Stemmer(algorithm).stemWords
    return _STEMMERS[algorithm]


@dataclass(eq=False)
class _BM25Fit(Fitted):
    index: Any = None  # the loaded bm25s.BM25 or LuceneSearcher


@register("bm25")
class BM25Retriever(Stage):
    """Okapi BM25 over the corpus text (``title + " " + text`` by default)."""

    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    cache_depth_field: ClassVar[str | None] = "top_k"
    cache_ignore: ClassVar[tuple[str, ...]] = ("threads",)

    backend: Literal["bm25s", "pyserini"] = param("bm25s", doc="bm25s (numpy, default) or pyserini (Lucene; extra)")
    k1: float = param(0.9, doc="term-frequency saturation", ge=0.0)
    b: float = param(0.4, doc="document-length normalisation", ge=0.0, le=1.0)
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = param(
        "lucene", doc="bm25s scoring variant (pyserini always uses Lucene's)"
    )
    delta: float = param(0.5, doc="delta of bm25l / bm25+", ge=0.0)
    stemmer: str | None = param(
        "english", doc="bm25s: a PyStemmer algorithm (english, porter, ...); pyserini: porter or krovetz; null for none"
    )
    stopwords: str | None = param("en", doc="stopword list (bm25s language code, e.g. en); null keeps all words")
    lower: bool = param(True, doc="lowercase text before tokenising (bm25s; Lucene always lowercases)")
    with_title: bool = param(True, doc="index title + text (BEIR convention) rather than text alone")
    top_k: int = param(1000, doc="candidates returned per query", ge=1)
    threads: int = param(1, doc="search threads (0 or 1 = sequential)", ge=0)

    # ------------------------------------------------------------------------------------------
    def validate(self, path: str = "") -> None:
        p = f"{path}." if path else ""
        if self.backend == "pyserini":
            if self.stemmer not in (None, "english", *_PYSERINI_STEMMERS):
                raise ConfigError(
                    f"{p}stemmer",
                    f"pyserini supports stemmers {list(_PYSERINI_STEMMERS)} or null, got {self.stemmer!r}",
                )
            if self.stopwords not in (None, "en", "english"):
                raise ConfigError(
                    f"{p}stopwords", f"pyserini supports English stopwords ('en') or null, got {self.stopwords!r}"
                )
            if self.method != "lucene":
                raise ConfigError(f"{p}method", "pyserini scores with Lucene's BM25 only; use method: lucene")
        elif self.stemmer is not None:
            import Stemmer

            if self.stemmer not in Stemmer.algorithms():
                hint = difflib.get_close_matches(self.stemmer, Stemmer.algorithms(), n=1)
                raise ConfigError(
                    f"{p}stemmer",
                    f"unknown stemmer {self.stemmer!r}"
                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                    + f" (PyStemmer algorithms: {', '.join(Stemmer.algorithms())})",
                )

    def index_spec(self, corpus: Corpus) -> dict[str, Any]:
        """Everything the index depends on (its artifact key)."""
        spec: dict[str, Any] = {
            "backend": self.backend,
            "stemmer": self.stemmer,
            "stopwords": self.stopwords,
            "with_title": self.with_title,
            "corpus": corpus.fingerprint,
            "n_docs": len(corpus),
        }
        if self.backend == "bm25s":
            spec.update(
                k1=self.k1,
                b=self.b,
                method=self.method,
                lower=self.lower,
                delta=self.delta if self.method in ("bm25l", "bm25+") else None,
            )
        else:
            spec["stemmer"] = "porter" if self.stemmer == "english" else self.stemmer
            spec["stopwords"] = None if self.stopwords is None else "en"
        return spec

    # ------------------------------------------------------------------------------------------
    def fit(
        self, corpus: Corpus, store: ArtifactStore | None = None, *, rebuild: bool = False, progress: bool | None = None
    ) -> BM25Retriever:
        self._check_corpus(corpus)
        store = store if store is not None else ArtifactStore()
        show = progress_enabled(progress)
        build = self._build_bm25s if self.backend == "bm25s" else self._build_pyserini
        art = store.get_or_create(
            f"bm25-{self.backend}",
            self.index_spec(corpus),
            FORMAT_VERSION,
            lambda d: build(corpus, d, show),
            rebuild=rebuild,
        )
        self._use(art.path, corpus, art.created)
        return self

    def load_index(self, path: str | Path, corpus: Corpus, store: ArtifactStore | None = None) -> BM25Retriever:
        """Use an existing index directory, after checking it was built for this config and corpus."""
        store = store if store is not None else ArtifactStore()
        art = store.open(path, f"bm25-{self.backend}", self.index_spec(corpus), FORMAT_VERSION)
        self._use(art.path, corpus, False)
        return self

    def _use(self, path: Path, corpus: Corpus, created: bool) -> None:
        self._fit = None
        index = self._load(path, corpus)
        self._fit = _BM25Fit(
            corpus, [{"kind": f"bm25-{self.backend}", "path": str(path), "created": created}], index=index
        )

    def _tokenize(self, texts: list[str], show: bool, return_ids: bool):
        import bm25s

        stemmer = _stem_function(self.stemmer) if self.stemmer is not None else None
        return bm25s.tokenize(
            texts,
            lower=self.lower,
            stopwords=self.stopwords or [],
            stemmer=stemmer,
            return_ids=return_ids,
            show_progress=show,
        )

    def _build_bm25s(self, corpus: Corpus, out: Path, show: bool) -> dict:
        import bm25s

        tokens = self._tokenize(corpus.contents(self.with_title), show, return_ids=True)
        if not tokens.vocab:  # bm25s then failed with "max() arg is an empty sequence"
            kept = "not stopwords" if self.stopwords else "any"
            raise DataError(
                f"bm25: no document of the corpus ({corpus.name or 'unnamed'}, {len(corpus)} documents) has a term to "
                f"index (bm25s keeps words of 2+ letters or digits, {kept}): nothing to search",
            )
        retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method, delta=self.delta)
        retriever.index(tokens, show_progress=show)
        retriever.save(str(out), show_progress=False)
        return {"bm25s_version": bm25s.__version__, "vocab_size": len(tokens.vocab)}

    def _build_pyserini(self, corpus: Corpus, out: Path, show: bool) -> dict:
        LuceneIndexer, _ = _pyserini.import_pyserini()
        stemmer = "porter" if self.stemmer == "english" else (self.stemmer or "none")
        args = ["-index", str(out / "lucene"), "-stemmer", stemmer]
        if self.stopwords is None:
            args.append("-keepStopwords")
        indexer = LuceneIndexer(args=args, threads=max(1, self.threads))
        batch = []
        for i in range(len(corpus)):
            batch.append({"id": corpus.ids[i], "contents": corpus.text(i, self.with_title)})
            if len(batch) == 10_000:
                indexer.add_batch_dict(batch)
                batch = []
        if batch:
            indexer.add_batch_dict(batch)
        indexer.close()
        return {"lucene_args": args}

    def _load(self, path: Path, corpus: Corpus) -> Any:
        if self.backend == "bm25s":
            import bm25s

            retriever = bm25s.BM25.load(str(path), load_vocab=True, show_progress=False)
            if int(retriever.scores["num_docs"]) != len(corpus):
                raise ArtifactError(
                    f"bm25 index {path} holds {retriever.scores['num_docs']} documents, the corpus has {len(corpus)}"
                )
            return retriever
        _, LuceneSearcher = _pyserini.import_pyserini()
        searcher = LuceneSearcher(str(path / "lucene"))
        # Lucene does not index documents without text; every other document must be there
        expected = sum(1 for i in range(len(corpus)) if corpus.text(i, self.with_title).strip())
        if searcher.num_docs != expected:
            raise ArtifactError(
                f"lucene index {path} holds {searcher.num_docs} documents, the corpus has {expected} non-empty ones"
            )
        return searcher

    # ------------------------------------------------------------------------------------------
    def transform(self, batch: Batch) -> Batch:
        index = self._fitted().index
        n = len(batch)
        k = min(self.top_k, len(self.corpus))
        if self.backend == "bm25s":
            doc_idx, scores = self._search_bm25s(index, batch.queries.texts, k)
        else:
            doc_idx, scores = self._search_pyserini(index, batch.queries, k)
        batch.stats.add("bm25_queries", n)
        return batch.with_candidates(doc_idx, scores, self.corpus)

    def _search_bm25s(self, retriever: Any, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(texts)
        doc_idx = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float32)
        vocab = retriever.vocab_dict
        token_lists = self._tokenize(texts, False, return_ids=False)
        rows, ids = [], []
        for r, toks in enumerate(token_lists):
            q = [vocab[t] for t in toks if t in vocab]
            if q:
                rows.append(r)
                ids.append(q)
        if not rows:
            return doc_idx, scores
        # bm25s runs n_threads=1 through a one-worker thread pool: slower than its sequential path (0)
        res_docs, res_scores = retriever.retrieve(
            ids, k=k, show_progress=False, n_threads=self.threads if self.threads > 1 else 0, return_as="tuple"
        )
        res_docs = np.asarray(res_docs, np.int64)
        res_scores = np.asarray(res_scores, np.float32)
        if self.method in ("lucene", "atire"):  # positive idf: score 0 means no shared term
            res_docs = np.where(res_scores > 0, res_docs, -1)
            res_scores = np.where(res_scores > 0, res_scores, -np.inf).astype(np.float32)
        doc_idx[rows] = res_docs
        scores[rows] = res_scores
        return doc_idx, scores

    def _search_pyserini(self, searcher: Any, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        searcher.set_bm25(self.k1, self.b)
        n = len(queries)
        doc_idx = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float32)
        rows = [r for r, t in enumerate(queries.texts) if t.strip()]
        if not rows:
            return doc_idx, scores
        keys = [str(r) for r in rows]
        hits = searcher.batch_search([queries.texts[r] for r in rows], keys, k=k, threads=max(1, self.threads))
        corpus = self.corpus
        for r, key in zip(rows, keys):
            row = hits.get(key, [])
            for j, h in enumerate(row):
                doc_idx[r, j] = corpus.index_of(h.docid)
                scores[r, j] = h.score
        return doc_idx, scores


BM25 = BM25Retriever  # the name before stages were suffixed by role (README, saved scripts)
