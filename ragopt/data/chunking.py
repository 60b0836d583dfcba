"""Chunking (documents -> passages) and aggregation (passage candidates -> document candidates).

:class:`Chunker` is a stage whose :meth:`~Chunker.prepare_corpus` cuts every document into passages: fixed
windows of tokens or characters (with overlap), groups of sentences, recursive splitting on separators, or
semantic breakpoints (where consecutive sentences' embeddings are far apart). Passages keep their parent
document id and their character span in the parent text (``parent.texts[i][start:end] == passage text``);
titles are not chunked (a retriever's ``with_title`` prefixes the parent title to every passage). A
document shorter than one chunk is one passage; an empty (or blank) document is one empty passage with
span ``(0, 0)``, so every document still exists in the passage corpus.

The passage corpus's fingerprint is a hash of the parent fingerprint and the chunker's passage-shaping
parameters, so the chunker config is part of the key of every artifact built downstream.

:class:`PassageAggregator` (``aggregate``) maps passage candidates back to documents (``max``, ``sum``,
``first_k_sum``) so that later stages and evaluation see documents.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt._imports import require
from ragopt.config import Component, canonical_json, param
from ragopt.encoders import Encoder
from ragopt.errors import ArtifactError, ConfigError, StageError
from ragopt.kernels.passages import aggregate_candidates
from ragopt.pipeline import Fitted, Stage
from ragopt.registry import register
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Stats

__all__ = ["Chunker", "PassageAggregator", "Aggregate", "split_sentences"]

FORMAT_VERSION = 1  # bump when a chunking algorithm changes: it is part of every passage fingerprint
DEFAULT_SIZE = {"tokens": 128, "chars": 1000, "sentences": 5, "recursive": 1000, "semantic": 20}
RECURSIVE_SEPARATORS = ("\n\n", "\n", ". ", " ")

Span = tuple[int, int]

# -- sentence splitting ---------------------------------------------------------------------------
# Words that end with a period without ending a sentence (compared lowercased, without the final ".").
_ABBREVIATIONS = frozenset(
    [
        "e.g",
        "i.e",
        "cf",
        "vs",
        "viz",
        "al",
        "approx",
        "ca",
        "resp",
        "fig",
        "figs",
        "eq",
        "eqs",
        "ref",
        "refs",
        "vol",
        "vols",
        "pp",
        "ch",
        "sec",
        "secs",
        "tab",
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "st",
        "jr",
        "sr",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "univ",
        "est",
        "min",
        "max",
        "av",
        "ave",
        "incl",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
_BEFORE_NUMBER = frozenset({"no", "nos", "p", "nr", "art"})  # "No. 5", "p. 12"
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_END = re.compile(r"([.!?\u2026]+)([\"'\u201d\u2019)\]]*)(\s+)(?=\S)")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # e.g / U.S / i.e (final "." excluded)


def _is_boundary(text: str, m: re.Match) -> bool:
    punct = m.group(1)
    if punct != ".":  # "!", "?", "...", "?!": always a boundary
        return True
    nxt = text[m.end()]
    if nxt.islower():  # "approx. the", "et al. showed"
        return False
    ws = max(text.rfind(" ", 0, m.start(1)), text.rfind("\n", 0, m.start(1)), text.rfind("\t", 0, m.start(1)))
    word = text[ws + 1 : m.start(1)].lstrip("([{\"'\u201c\u2018")
    low = word.lower()
    if low in _ABBREVIATIONS or _DOTTED.fullmatch(word):
        return False
    if len(word) == 1 and word.isupper():  # an initial: "J. Smith"
        return False
    if low in _BEFORE_NUMBER and (nxt.isdigit() or nxt == "("):
        return False
    return True


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Character spans of the sentences of ``text[start:end]`` (whitespace excluded).

    A regex splitter: sentences end at ``.``, ``!``, ``?`` (plus closing quotes or brackets) followed by
    whitespace, and at blank lines. A period does not end a sentence after a known abbreviation
    (``e.g.``, ``Fig.``, ``et al.``, ...), an initial, ``No.``/``p.`` before a number, or when the next word
    starts in lowercase; decimals (``3.14``) never split since no space follows the point."""
    end = len(text) if end is None else end
    spans: list[Span] = []
    pos = start
    for para in [*_PARAGRAPH.finditer(text, start, end), None]:
        p_end = para.start() if para is not None else end
        s = pos
        for m in _END.finditer(text, pos, p_end):
            if _is_boundary(text, m):
                spans.append((s, m.start(3)))
                s = m.end(3)
        spans.append((s, p_end))
        if para is not None:
            pos = para.end()
    return [t for t in (_trim(text, a, b) for a, b in spans) if t[1] > t[0]]


# -- span helpers ---------------------------------------------------------------------------------
def _trim(text: str, a: int, b: int) -> Span:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _windows(n: int, size: int, overlap: int) -> list[Span]:
    """Unit ranges ``[i, j)`` of windows of ``size`` units moving by ``size - overlap``; the last one ends at n."""
    out, start, step = [], 0, size - overlap
    while start < n:
        end = min(start + size, n)
        out.append((start, end))
        if end >= n:
            break
        start += step
    return out


def _unit_windows(units: list[Span], size: int, overlap: int) -> list[Span]:
    return [(units[i][0], units[j - 1][1]) for i, j in _windows(len(units), size, overlap)]


def _recursive_pieces(text: str, a: int, b: int, seps: tuple[str, ...], size: int) -> list[Span]:
    """Tile ``[a, b)`` with pieces of at most ``size`` chars, cutting at the first separator that helps."""
    if b - a <= size:
        return [(a, b)]
    if not seps:
        return [(i, min(i + size, b)) for i in range(a, b, size)]
    sep, rest = seps[0], seps[1:]
    cuts, i = [], text.find(sep, a, b)
    while i >= 0:
        cuts.append(i + len(sep))  # the separator stays at the end of the piece before it
        i = text.find(sep, i + len(sep), b)
    bounds = [a, *[c for c in cuts if a < c < b], b]
    out: list[Span] = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        out.extend(_recursive_pieces(text, s, e, rest, size))
    return out


def _merge_pieces(pieces: list[Span], size: int, overlap: int) -> list[Span]:
    """Greedily join consecutive pieces up to ``size`` chars; a new chunk repeats up to ``overlap`` chars."""
    out: list[Span] = []
    cur: list[Span] = []
    for p in pieces:
        if cur and p[1] - cur[0][0] > size:
            out.append((cur[0][0], cur[-1][1]))
            while cur and (cur[-1][1] - cur[0][0] > overlap or p[1] - cur[0][0] > size):
                cur.pop(0)
        cur.append(p)
    if cur:
        out.append((cur[0][0], cur[-1][1]))
    return out


def _finish(text: str, spans: list[Span], min_chars: int) -> list[Span]:
    """Trim whitespace, drop empty spans, merge spans under ``min_chars`` into a neighbour; never empty."""
    spans = [t for t in (_trim(text, a, b) for a, b in spans) if t[1] > t[0]]
    if min_chars > 0 and len(spans) > 1:
        merged: list[Span] = []
        for a, b in spans:
            if merged and b - a < min_chars:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        if len(merged) > 1 and merged[0][1] - merged[0][0] < min_chars:
            merged[1] = (merged[0][0], merged[1][1])
            merged.pop(0)
        spans = merged
    return spans or [(0, 0)]


# -- the chunker ----------------------------------------------------------------------------------
@dataclass(eq=False)
class _ChunkerFit(Fitted):
    passages: Corpus | None = None  # the passage corpus of the fitted corpus


@register("chunker")
class Chunker(Stage):
    """Cut documents into passages; later stages index and retrieve passages.

    ``size`` and ``overlap`` count tokens (``tokens``), characters (``chars``, ``recursive``) or sentences
    (``sentences``; for ``semantic``, ``size`` caps the sentences of a passage). ``semantic`` embeds every
    sentence with ``encoder`` and starts a new passage where the cosine distance between consecutive
    sentences exceeds the ``breakpoint_percentile``-th percentile of all such distances in the corpus (one
    threshold for the whole corpus, so short documents are not forced to split); its passages are cached
    in the artifact store. The chunker passes query batches through unchanged."""

    requires: ClassVar[frozenset[str]] = frozenset({"queries"})
    provides: ClassVar[frozenset[str]] = frozenset()
    cache_outputs: ClassVar[bool] = False  # queries pass through unchanged

    method: Literal["tokens", "chars", "sentences", "recursive", "semantic"] = param(
        "tokens",
        doc="fixed token windows, fixed character windows, sentence groups, recursive "
        "separator splitting, or semantic breakpoints",
    )
    size: int | None = param(
        None,
        doc="passage size in the method's unit (null: tokens 128, chars 1000, "
        "sentences 5, recursive 1000 chars, semantic 20 sentences max)",
        ge=1,
    )
    overlap: int = param(0, doc="units shared by consecutive passages (must be < size; 0 for semantic)", ge=0)
    min_chars: int = param(
        0, doc="a passage shorter than this many characters is merged into its neighbour (0: never)", ge=0
    )
    tokenizer: str = param(
        "whitespace",
        doc="tokens method: 'whitespace' (\\S+ tokens) or 'hf:<path or model id>' (a Hugging Face fast tokenizer)",
    )
    encoder: Component | None = param(None, doc="semantic method: the sentence encoder")
    breakpoint_percentile: float = param(
        95.0,
        doc="semantic method: split where the distance between consecutive sentences exceeds this percentile",
        ge=0,
        le=100,
    )

    def validate(self, path: str = "") -> None:
        p = f"{path}." if path else ""
        if self.overlap >= self.chunk_size:
            raise ConfigError(
                f"{p}overlap",
                f"must be smaller than size ({self.chunk_size} for method {self.method!r}), got {self.overlap}",
            )
        if self.method == "semantic":
            if self.encoder is None:
                raise ConfigError(
                    f"{p}encoder",
                    "method 'semantic' needs an encoder, e.g. {type: sentence_transformer, model: all-MiniLM-L6-v2}",
                )
            if self.overlap:
                raise ConfigError(f"{p}overlap", "semantic passages do not overlap; set overlap: 0")
        if self.encoder is not None:
            if not isinstance(self.encoder, Encoder):
                raise ConfigError(f"{p}encoder", f"expected an encoder component, got {self.encoder.type_name!r}")
        if self.tokenizer != "whitespace" and not (self.tokenizer.startswith("hf:") and len(self.tokenizer) > 3):
            raise ConfigError(f"{p}tokenizer", f"expected 'whitespace' or 'hf:<path>', got {self.tokenizer!r}")

    @property
    def chunk_size(self) -> int:
        return self.size if self.size is not None else DEFAULT_SIZE[self.method]

    def passage_spec(self) -> dict[str, Any]:
        """The parameters that shape the passages (part of the passage corpus fingerprint)."""
        spec: dict[str, Any] = {
            "chunker_format": FORMAT_VERSION,
            "method": self.method,
            "size": self.chunk_size,
            "overlap": self.overlap,
            "min_chars": self.min_chars,
        }
        if self.method == "tokens":
            spec["tokenizer"] = self.tokenizer
        if self.method == "semantic":
            spec["encoder"] = self.encoder.spec("doc")  # model identity, not batch size or device
            spec["breakpoint_percentile"] = self.breakpoint_percentile
        return spec

    def fingerprint_for(self, corpus: Corpus) -> str:
        payload = canonical_json({"parent": corpus.fingerprint, "chunker": self.passage_spec()})
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._passages: dict[str, Corpus] = {}  # passage corpora of corpora not fitted on, by parent fingerprint
        self._hf_tokenizer: Any = None

    # -- stage protocol -------------------------------------------------------------------------
    def fit(self, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None) -> Chunker:
        fitted = self._fit
        if fitted is not None and fitted.corpus.fingerprint == corpus.fingerprint and not rebuild:
            # fitted on this corpus already: nothing to build or encode again
            self._fit = _ChunkerFit(
                corpus, [dict(x, created=False) for x in fitted.artifacts], Stats(), passages=fitted.passages
            )
            return self
        stats = Stats()
        artifacts: list[dict] = []
        if self.method == "semantic":
            store = store if store is not None else ArtifactStore()
            spec = {**self.passage_spec(), "corpus": corpus.fingerprint, "n_docs": len(corpus)}

            def build(out):
                rows, offsets = self._spans(corpus, progress, stats)
                np.save(out / "doc_rows.npy", rows)
                np.save(out / "offsets.npy", offsets)
                return {"n_passages": int(len(rows))}

            art = store.get_or_create("passages", spec, FORMAT_VERSION, build, rebuild=rebuild)
            rows = np.load(art.file("doc_rows.npy"), allow_pickle=False)
            offsets = np.load(art.file("offsets.npy"), allow_pickle=False)
            if rows.ndim != 1 or offsets.shape != (len(rows), 2) or (len(rows) and rows.max() >= len(corpus)):
                raise ArtifactError(
                    f"passages {art.path} do not fit corpus {corpus.name or 'unnamed'} "
                    f"({len(corpus)} documents); rebuild them (--rebuild)"
                )
            passages = self._make_corpus(corpus, rows, offsets)
            artifacts.append({"kind": "passages", "path": str(art.path), "created": art.created})
        else:
            passages = self.prepare_corpus(corpus)
        self._fit = _ChunkerFit(corpus, artifacts, stats, passages=passages)
        return self

    def prepare_corpus(self, corpus: Corpus) -> Corpus:
        if self._fit is not None and self._fit.corpus.fingerprint == corpus.fingerprint:
            return self._fit.passages
        out = self._passages.get(corpus.fingerprint)
        if out is None:
            rows, offsets = self._spans(corpus, None, Stats())
            out = self._passages[corpus.fingerprint] = self._make_corpus(corpus, rows, offsets)
        return out

    def transform(self, batch: Batch) -> Batch:
        return batch

    # -- chunking -------------------------------------------------------------------------------
    def _make_corpus(self, corpus: Corpus, rows: np.ndarray, offsets: np.ndarray) -> Corpus:
        ids, texts, titles, parents = [], [], [], []
        j, last = 0, -1
        for r, (a, b) in zip(rows.tolist(), offsets.tolist()):
            j = j + 1 if r == last else 0
            last = r
            doc = corpus.ids[r]
            ids.append(f"{doc}#{j}")
            texts.append(corpus.texts[r][a:b])
            titles.append(corpus.titles[r])
            parents.append(doc)
        return Corpus(
            ids,
            texts,
            titles,
            parent_ids=parents,
            offsets=offsets.astype(np.int64, copy=False),
            name=f"{corpus.name}:passages" if corpus.name else "passages",
            fingerprint=self.fingerprint_for(corpus),
            parent=corpus,
        )

    def _spans(self, corpus: Corpus, progress: bool | None, stats: Stats) -> tuple[np.ndarray, np.ndarray]:
        """(parent row, [start, end)) of every passage, in document order (sentence encoding counted in
        ``stats``)."""
        if len(corpus) == 0:
            raise ConfigError("", f"chunker: cannot chunk an empty corpus ({corpus.name or 'unnamed'})")
        texts = corpus.texts
        size, overlap = self.chunk_size, self.overlap
        if self.method == "tokens":
            units = self._token_spans(texts)
            per_doc = [_unit_windows(u, size, overlap) for u in units]
        elif self.method == "chars":
            per_doc = [_windows(len(t), size, overlap) for t in texts]
        elif self.method == "sentences":
            per_doc = [_unit_windows(split_sentences(t), size, overlap) for t in texts]
        elif self.method == "recursive":
            per_doc = [
                _merge_pieces(_recursive_pieces(t, 0, len(t), RECURSIVE_SEPARATORS, size), size, overlap) for t in texts
            ]
        else:
            per_doc = self._semantic(texts, progress, stats)
        rows, offsets = [], []
        for r, (text, spans) in enumerate(zip(texts, per_doc)):
            for span in _finish(text, spans, self.min_chars):
                rows.append(r)
                offsets.append(span)
        return np.asarray(rows, np.int64), np.asarray(offsets, np.int64).reshape(-1, 2)

    def _token_spans(self, texts: list[str]) -> list[list[Span]]:
        if self.tokenizer == "whitespace":
            return [[m.span() for m in re.finditer(r"\S+", t)] for t in texts]
        tok = self._hf_tokenizer
        if tok is None:
            tok = self._hf_tokenizer = _load_hf_tokenizer(self.tokenizer[3:])
        out = []
        for enc in tok.encode_batch(texts, add_special_tokens=False):
            out.append([(a, b) for a, b in enc.offsets if b > a])
        return out

    def _semantic(self, texts: list[str], progress: bool | None, stats: Stats) -> list[list[Span]]:
        sentences = [split_sentences(t) for t in texts]
        flat = [t[a:b] for t, spans in zip(texts, sentences) for a, b in spans]
        if flat:
            emb = np.asarray(self.encoder.encode(flat, kind="doc", stats=stats, progress=progress), np.float32)
            if emb.shape[0] != len(flat):
                raise StageError(f"chunker: the encoder returned {emb.shape[0]} vectors for {len(flat)} sentences")
        else:
            emb = np.zeros((0, 1), np.float32)
        dists, start = [], 0
        for spans in sentences:
            e = emb[start : start + len(spans)]
            start += len(spans)
            dists.append(1.0 - np.sum(e[:-1] * e[1:], axis=1) if len(spans) > 1 else np.zeros(0))
        all_d = np.concatenate(dists) if dists else np.zeros(0)
        threshold = float(np.percentile(all_d, self.breakpoint_percentile)) if len(all_d) else np.inf
        per_doc = []
        for spans, d in zip(sentences, dists):
            chunks, first = [], 0
            for i in range(1, len(spans) + 1):
                if i == len(spans) or d[i - 1] > threshold or i - first >= self.chunk_size:
                    chunks.append((spans[first][0], spans[i - 1][1]))
                    first = i
            per_doc.append(chunks)
        return per_doc


def _load_hf_tokenizer(name: str):
    """A fast tokenizer (``tokenizers.Tokenizer``) from a folder, a tokenizer.json file or a model id."""
    path = Path(name)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if path.is_file():
        tok = require("tokenizers", "dense", f"tokenizer 'hf:{name}'").Tokenizer.from_file(str(path))
    else:
        AutoTokenizer = require(
            "transformers", "dense", f"tokenizer 'hf:{name}' (not a local file or folder: loading it by model id)"
        ).AutoTokenizer
        try:
            tok = AutoTokenizer.from_pretrained(name, use_fast=True).backend_tokenizer
        except OSError as e:
            raise ConfigError("tokenizer", f"cannot load tokenizer {name!r}: {e}") from None
    tok.no_truncation()
    tok.no_padding()
    return tok


# -- aggregation ----------------------------------------------------------------------------------
@register("aggregate")
class PassageAggregator(Stage):
    """Passage candidates -> candidates over the parent documents (``corpus.parent``).

    Candidates that are already documents (a corpus without parent) pass through, cut to ``top_k``. With
    ``max`` the scores equal those of ``Batch.to_run(aggregate="max")`` on the passage batch."""

    requires: ClassVar[frozenset[str]] = frozenset({"queries", "candidates"})
    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    cache_depth_field: ClassVar[str | None] = "top_k"

    method: Literal["max", "sum", "first_k_sum"] = param(
        "max",
        doc="document score: its best passage, the sum of its retrieved passages, or the sum of its "
        "best k_passages passages",
    )
    k_passages: int = param(3, doc="first_k_sum: passages summed per document", ge=1)
    top_k: int = param(1000, doc="documents kept per query", ge=1)

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._rows: dict[tuple[str, str], np.ndarray] = {}  # (passages, documents) fingerprints -> parent rows

    def prepare_corpus(self, corpus: Corpus) -> Corpus:
        return corpus.parent if corpus.parent is not None else corpus

    def transform(self, batch: Batch) -> Batch:
        if batch.doc_idx is None:
            raise StageError("aggregate: the batch has no candidates yet (put a retriever before it)")
        corpus = batch.corpus
        if corpus.parent is None:
            return batch.cut(self.top_k)
        rows = self._parent_rows(corpus)
        doc_idx, scores = aggregate_candidates(
            batch.doc_idx, batch.scores, rows, self.method, self.k_passages, self.top_k
        )
        return batch.with_candidates(doc_idx, scores, corpus.parent)

    def _parent_rows(self, corpus: Corpus) -> np.ndarray:
        key = (corpus.fingerprint, corpus.parent.fingerprint)
        if key not in self._rows:
            self._rows[key] = corpus.parent_rows()
        return self._rows[key]


Aggregate = PassageAggregator  # the name before stages were suffixed by role
