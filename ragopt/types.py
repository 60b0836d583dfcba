"""The data shapes every stage shares.

* :class:`Corpus`: documents or passages (ids, titles, texts; passages also keep their parent document id
  and character offsets), with a content fingerprint used in artifact keys.
* :class:`Queries`: query ids and texts.
* :class:`Batch`: what flows between stages. Candidate lists are two padded 2-D arrays, ``doc_idx``
  (int64 row indices into the corpus, ``-1`` = empty slot) and ``scores`` (float32, ``-inf`` in empty
  slots), each row sorted by descending score. Texts are read from the corpus alongside; generators add
  ``answers``. :class:`Stats` travels with the batch and counts expensive calls and stage time.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragopt.errors import ConfigError, DataError, StageError

__all__ = ["Corpus", "Queries", "Batch", "Stats", "Qrels", "Run"]

Qrels = dict[str, dict[str, int]]
#: the relevance grades a qrels may hold: trec_eval (through pytrec_eval) allocates 8 bytes per level up to a query's
#: largest grade (2**31 - 1 took 16 GB and 28 s; 2**32 was read as 0, 2**63 raised a SystemError); negative grades
#: cost nothing and count as not relevant
MIN_GRADE, MAX_GRADE = -(2**31), 10**6


def check_seed(value: object, where: str = "seed") -> int:
    """A seed: an integer in 0..2**32 - 1, what optuna's samplers and numpy's and torch's generators all take (-1
    raised their ValueError as a traceback, after the work had started). ConfigError at ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**32:
        raise ConfigError(where, f"must be an integer in 0..{2**32 - 1}, got {value!r}")
    return int(value)


def check_relevance_level(value: object) -> int:
    """A relevance level (the grade from which a document counts as relevant): an integer in 1..MAX_GRADE.
    ConfigError otherwise (pytrec_eval raised a TypeError for 0, counted nothing relevant for -5; 1.5 was cut to 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_GRADE:
        raise ConfigError("relevance_level", f"must be an integer in 1..{MAX_GRADE}, got {value!r}")
    return int(value)


Run = dict[str, dict[str, float]]


def _checked_ids(ids: Sequence[Any], what: str, item: str) -> list[str]:
    """``ids`` as strings: each a string or an integer, none repeated (a repeated id made two documents or two
    queries one row of a run, silently); a DataError naming ``what`` otherwise."""
    ids = list(ids)
    if set(map(type, ids)) <= {str}:  # the usual case, checked at C speed (1M ids: about 20 ms)
        out = ids
    else:
        bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, (str, int, np.integer))]
        if bad:
            raise DataError(f"{what}: an id must be a string or an integer, got {type(bad[0]).__name__} {bad[0]!r:.60}")
        out = [str(i) for i in ids]
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(i for i in out if i in seen or seen.add(i))
        raise DataError(f"{what}: the id {dup!r} is given to more than one {item}")
    return out


def _check_texts(ids: list[str], texts: list[Any], what: str, item: str, field: str = "text") -> None:
    if set(map(type, texts)) <= {str}:  # the usual case at C speed; str subclasses take the loop below
        return
    k, t = next(((k, t) for k, t in enumerate(texts) if not isinstance(t, str)), (None, None))
    if k is None:
        return
    raise DataError(f"{what}: the {field} of {item} {ids[k]!r} is {type(t).__name__} {t!r:.60}, not a string")


class Corpus:
    """Documents (or passages) held as parallel lists. Row ``i`` is ``ids[i]``, ``titles[i]``, ``texts[i]``.

    ``parent_ids`` is set for passages made by a chunker (with ``parent``, the document corpus, and
    ``offsets``, character spans in the parent text): evaluation aggregates passage scores to these
    document ids. ``fingerprint`` is a content hash; derived corpora may be given one (e.g. a hash of the
    parent fingerprint and the chunker config) instead of hashing their text again.
    """

    __slots__ = ("ids", "titles", "texts", "parent_ids", "offsets", "parent", "name", "_fingerprint", "_index")

    def __init__(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        titles: Sequence[str] | None = None,
        parent_ids: Sequence[str] | None = None,
        offsets: np.ndarray | None = None,
        name: str = "",
        fingerprint: str | None = None,
        parent: Corpus | None = None,
    ):
        self.ids = _checked_ids(ids, "corpus", "document")
        self.texts = list(texts)
        self.titles = list(titles) if titles is not None else [""] * len(self.ids)
        if not (len(self.ids) == len(self.texts) == len(self.titles)):
            raise ValueError("corpus ids, texts and titles must have the same length")
        # a text that is not a string failed hashing the corpus ("'NoneType' object has no attribute 'encode'")
        _check_texts(self.ids, self.texts, "corpus", "document")
        _check_texts(self.ids, self.titles, "corpus", "document", "title")
        self.parent_ids = list(parent_ids) if parent_ids is not None else None
        self.offsets = offsets  # (n, 2) int64 character [start, end) of each passage in its parent text
        self.parent = parent  # the document corpus these passages were cut from
        self.name = name
        self._fingerprint = fingerprint
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Corpus(name={self.name!r}, n={len(self)}, fingerprint={self.fingerprint[:12]})"

    @property
    def fingerprint(self) -> str:
        """sha256 over ids, titles, texts (and parents): identical content gives an identical key."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            parents = self.parent_ids or ()
            for i, (d, t, x) in enumerate(zip(self.ids, self.titles, self.texts)):
                h.update(d.encode("utf-8", "surrogatepass"))
                h.update(b"\x1f")
                h.update(t.encode("utf-8", "surrogatepass"))
                h.update(b"\x1f")
                h.update(x.encode("utf-8", "surrogatepass"))
                if parents:
                    h.update(b"\x1f")
                    h.update(parents[i].encode("utf-8", "surrogatepass"))
                h.update(b"\x1e")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def index_of(self, doc_id: str) -> int:
        """Row of ``doc_id``; KeyError if absent."""
        if self._index is None:
            self._index = {d: i for i, d in enumerate(self.ids)}
        return self._index[doc_id]

    def __contains__(self, doc_id: str) -> bool:
        if self._index is None:
            self._index = {d: i for i, d in enumerate(self.ids)}
        return doc_id in self._index

    def text(self, i: int, with_title: bool = True) -> str:
        """The text to index for row ``i``: ``title + " " + text`` (BEIR convention) or the text alone."""
        title = self.titles[i]
        if with_title and title:
            return f"{title} {self.texts[i]}" if self.texts[i] else title
        return self.texts[i]

    def contents(self, with_title: bool = True) -> list[str]:
        return [self.text(i, with_title) for i in range(len(self))]

    def parent_rows(self) -> np.ndarray:
        """Row of each passage's parent document in :attr:`parent` (int64); a passage corpus only."""
        if self.parent is None or self.parent_ids is None:
            raise StageError(f"corpus {self.name or 'unnamed'} is not a passage corpus (no parent)")
        try:
            return np.fromiter((self.parent.index_of(p) for p in self.parent_ids), np.int64, len(self))
        except KeyError as e:
            raise StageError(
                f"passage parent id {e.args[0]!r} is not in the parent corpus {self.parent.name or 'unnamed'}"
            ) from None

    @property
    def doc_ids(self) -> list[str]:
        """The document id of every row: the parent id for passages, the row id otherwise."""
        return self.parent_ids if self.parent_ids is not None else self.ids


class Queries:
    """Query ids and texts, parallel lists."""

    __slots__ = ("ids", "texts")

    def __init__(self, ids: Sequence[str], texts: Sequence[str]):
        self.ids = _checked_ids(ids, "queries", "query")
        self.texts = list(texts)
        if len(self.ids) != len(self.texts):
            raise ValueError("query ids and texts must have the same length")
        # a text that is not a string failed deep in a tokenizer ("'int' object has no attribute 'lower'")
        _check_texts(self.ids, self.texts, "queries", "query")

    @classmethod
    def from_texts(cls, texts: Sequence[str] | str | Mapping[str, str]) -> Queries:
        """Queries from one text, a list of texts (ids "0", "1", ...) or a mapping of id to text."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, Mapping):
            return cls(list(texts), list(texts.values()))
        if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
            raise DataError(
                f"queries: expected a text, a list of texts, a mapping of id to text or Queries, got "
                f"{type(texts).__name__} {texts!r:.60}"
            )
        texts = list(texts)
        return cls([str(i) for i in range(len(texts))], texts)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: slice | Sequence[int]) -> Queries:
        if isinstance(item, slice):
            return Queries(self.ids[item], self.texts[item])
        return Queries([self.ids[i] for i in item], [self.texts[i] for i in item])

    def __repr__(self) -> str:
        return f"Queries(n={len(self)})"

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for q, t in zip(self.ids, self.texts):
            h.update(q.encode() + b"\x1f" + t.encode("utf-8", "surrogatepass") + b"\x1e")
        return h.hexdigest()


class Stats:
    """Counters of expensive calls (``encoder_batches``, ``ce_pairs``, ``llm_tokens`` ...) and stage time."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        #: seconds that the outputs served from a cache (stage outputs, LLM calls) took when they were computed:
        #: wall time plus this is what the work would take without the caches (a study's ``latency_ms``)
        self.cached_seconds = 0.0

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += int(n)

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def merge(self, other: Stats) -> Stats:
        for k, v in other.counts.items():
            self.counts[k] += v
        for k, v in other.seconds.items():
            self.seconds[k] += v
        self.cached_seconds += other.cached_seconds
        return self

    def to_dict(self) -> dict:
        return {
            "counts": dict(self.counts),
            "seconds": {k: round(v, 6) for k, v in self.seconds.items()},
            "cached_seconds": round(self.cached_seconds, 6),
        }


@dataclass(eq=False)
class Batch:
    """Queries plus whatever stages have produced for them so far.

    ``fields`` says what is present: ``queries`` always, ``candidates`` once a retriever ran,
    ``answers`` once a generator ran. Stages declare what they require and provide in these terms.
    ``contexts`` (set with ``answers``): the corpus rows of the passages each answer's prompt was given."""

    queries: Queries
    corpus: Corpus | None = None
    doc_idx: np.ndarray | None = None
    scores: np.ndarray | None = None
    answers: list[str] | None = None
    stats: Stats = field(default_factory=Stats)
    key: str | None = None  # content key of this state, set by the stage cache (ragopt.cache)
    contexts: list[list[int]] | None = None

    def __post_init__(self) -> None:
        if (self.doc_idx is None) != (self.scores is None):
            raise StageError("doc_idx and scores must be given together")
        if self.doc_idx is not None:
            if self.doc_idx.ndim != 2 or self.doc_idx.shape != self.scores.shape:
                raise StageError(
                    f"doc_idx {self.doc_idx.shape} and scores {self.scores.shape} must be 2-D arrays of one shape"
                )
            if self.doc_idx.shape[0] != len(self.queries):
                raise StageError(f"{self.doc_idx.shape[0]} candidate rows for {len(self.queries)} queries")
            if self.corpus is None:
                raise StageError("a batch with candidates needs the corpus they index")

    @property
    def fields(self) -> frozenset[str]:
        out = {"queries"}
        if self.doc_idx is not None:
            out.add("candidates")
        if self.answers is not None:
            out.add("answers")
        return frozenset(out)

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def depth(self) -> int:
        return 0 if self.doc_idx is None else int(self.doc_idx.shape[1])

    def with_candidates(self, doc_idx: np.ndarray, scores: np.ndarray, corpus: Corpus | None = None) -> Batch:
        """A new batch sharing queries and stats, with new candidate lists (answers are dropped)."""
        return Batch(
            self.queries,
            corpus if corpus is not None else self.corpus,
            np.asarray(doc_idx, dtype=np.int64),
            np.asarray(scores, dtype=np.float32),
            None,
            self.stats,
        )

    def cut(self, k: int) -> Batch:
        """Keep the first ``k`` candidates of every row (``k`` >= 0)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:  # -1 dropped the last column
            raise ConfigError("k", f"a cutoff must be an integer >= 0, got {k!r}")
        if self.doc_idx is None:
            raise StageError("cutoff: the batch has no candidates yet (put a retriever first)")
        return Batch(
            self.queries,
            self.corpus,
            self.doc_idx[:, :k],
            self.scores[:, :k],
            self.answers,
            self.stats,
            contexts=self.contexts,
        )

    def select(self, rows: Sequence[int] | slice) -> Batch:
        """The sub-batch of some queries (rows)."""
        if isinstance(rows, slice):
            rows = range(len(self))[rows]
        rows = list(rows)
        return Batch(
            self.queries[rows],
            self.corpus,
            None if self.doc_idx is None else self.doc_idx[rows],
            None if self.scores is None else self.scores[rows],
            None if self.answers is None else [self.answers[i] for i in rows],
            self.stats,
            contexts=None if self.contexts is None else [self.contexts[i] for i in rows],
        )

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Stack batches of the same corpus; candidate arrays are padded to the widest depth."""
        if not batches:
            raise StageError("cannot concatenate zero batches")
        first = batches[0]
        queries = Queries([q for b in batches for q in b.queries.ids], [t for b in batches for t in b.queries.texts])
        if all(b.stats is first.stats for b in batches):
            stats = first.stats
        else:
            stats = Stats()
            for b in {id(b.stats): b.stats for b in batches}.values():
                stats.merge(b)
        doc_idx = scores = None
        if first.doc_idx is not None:
            width = max(b.depth for b in batches)
            doc_idx = np.full((len(queries), width), -1, np.int64)
            scores = np.full((len(queries), width), -np.inf, np.float32)
            r = 0
            for b in batches:
                n = len(b)
                doc_idx[r : r + n, : b.depth] = b.doc_idx
                scores[r : r + n, : b.depth] = b.scores
                r += n
        answers = [a for b in batches for a in b.answers] if first.answers is not None else None
        contexts = [c for b in batches for c in b.contexts] if first.contexts is not None else None
        return Batch(queries, first.corpus, doc_idx, scores, answers, stats, contexts=contexts)

    def ranked(self, row: int) -> list[tuple[str, float]]:
        """``[(row_id, score), ...]`` of query ``row``, best first, padding dropped."""
        if self.doc_idx is None:
            return []
        idx, sc = self.doc_idx[row], self.scores[row]
        ids = self.corpus.ids
        return [(ids[i], float(s)) for i, s in zip(idx, sc) if i >= 0]

    def to_run(self, aggregate: str = "max") -> Run:
        """``{qid: {doc_id: score}}`` for evaluation.

        For passages (corpus with ``parent_ids``) scores are aggregated to documents: ``max`` (best
        passage), ``sum``, or ``first`` (score of the best-ranked passage; same as max for sorted rows)."""
        if self.doc_idx is None:
            raise StageError("to_run: the batch has no candidates")
        ids = self.corpus.doc_ids
        run: Run = {}
        for qid, idx, sc in zip(self.queries.ids, self.doc_idx.tolist(), self.scores.tolist()):
            entry: dict[str, float] = {}
            for i, s in zip(idx, sc):
                if i < 0:
                    continue
                d = ids[i]
                if d in entry:
                    if aggregate == "sum":
                        entry[d] += s
                    elif aggregate == "max" and s > entry[d]:
                        entry[d] = s
                else:
                    entry[d] = s
            if qid in run:  # duplicate query id: keep the first
                continue
            run[qid] = entry
        return run

    def texts(self, row: int, with_title: bool = True) -> list[str]:
        """Candidate texts of query ``row``, best first."""
        if self.doc_idx is None:
            return []
        return [self.corpus.text(int(i), with_title) for i in self.doc_idx[row] if i >= 0]
