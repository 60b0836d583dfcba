"""BEIR-layout datasets: resolution by name or path, and loading of corpus, queries, qrels, answers, tools.

A dataset folder holds ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv`` and optionally
``answers.jsonl`` and ``tools.jsonl`` (any ``.jsonl`` may be ``.jsonl.gz``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Container
from functools import cached_property
from pathlib import Path
from typing import Any

from ragopt.data.download import BEIR_DATASETS, download_beir
from ragopt.data.jsonl import as_text, read_jsonl, record_id, record_text
from ragopt.errors import ConfigError, DataError, DatasetNotFoundError
from ragopt.types import MAX_GRADE, MIN_GRADE, Corpus, Qrels, Queries

__all__ = [
    "Dataset",
    "load_dataset",
    "resolve_dataset",
    "dataset_search_path",
    "list_datasets",
    "user_cache_dir",
    "load_corpus",
    "load_queries",
    "load_qrels",
]

_TRUE = {"1", "true", "yes", "on"}
_N_EXAMPLES = 5


def user_cache_dir() -> Path:
    """Where downloaded datasets go: ``$RAGOPT_CACHE_DIR/datasets``, ``$XDG_CACHE_HOME/ragopt/datasets``
    or ``~/.cache/ragopt/datasets``."""
    if root := os.environ.get("RAGOPT_CACHE_DIR"):
        return Path(root).expanduser() / "datasets"
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "ragopt" / "datasets"
    return Path.home() / ".cache" / "ragopt" / "datasets"


def dataset_search_path() -> list[Path]:
    """Folders searched for a dataset name, in order (duplicates removed): each entry of
    ``$RAGOPT_DATA_PATH``, ``../shared/data`` from the current folder and from the repository root,
    then the user cache (:func:`user_cache_dir`)."""
    dirs = [Path(p).expanduser() for p in os.environ.get("RAGOPT_DATA_PATH", "").split(os.pathsep) if p]
    dirs += [
        Path.cwd() / ".." / "shared" / "data",
        Path(__file__).resolve().parents[2] / ".." / "shared" / "data",
        user_cache_dir(),
    ]
    out: dict[Path, None] = {}
    for d in dirs:
        out.setdefault(d.resolve(), None)
    return list(out)


def list_datasets() -> dict[str, Path]:
    """Every dataset folder (one holding ``corpus.jsonl`` or ``corpus.jsonl.gz``) directly inside a folder of
    :func:`dataset_search_path`, by name; where two folders hold the same name, the earlier one wins, as
    in :func:`resolve_dataset`. Names are sorted within each search folder."""
    found: dict[str, Path] = {}
    for d in dataset_search_path():
        if d.is_dir():
            for sub in sorted(d.iterdir()):
                if sub.name not in found and _find(sub, "corpus") is not None:
                    found[sub.name] = sub
    return found


def _find(folder: Path, stem: str) -> Path | None:
    """``folder/stem.jsonl`` or ``folder/stem.jsonl.gz``, whichever exists."""
    for suffix in (".jsonl", ".jsonl.gz"):
        if (p := folder / f"{stem}{suffix}").is_file():
            return p
    return None


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("RAGOPT_OFFLINE", "HF_HUB_OFFLINE"))


def resolve_dataset(name_or_path: str | os.PathLike, download: bool | None = None) -> Path:
    """The folder of a dataset given as a path or as a name.

    An existing folder is returned as is (it must hold ``corpus.jsonl``). A name is looked up in each
    folder of :func:`dataset_search_path`; a standard BEIR name not found there is downloaded into the
    user cache unless ``download`` is False (``None``: allowed unless ``RAGOPT_OFFLINE`` or
    ``HF_HUB_OFFLINE`` is set). Raises :class:`DatasetNotFoundError` listing every place looked."""
    if not isinstance(name_or_path, (str, os.PathLike)):  # was: "expected str, bytes or os.PathLike object"
        raise ConfigError("dataset", f"expected a dataset name or folder, got {type(name_or_path).__name__}")
    raw = os.fspath(name_or_path)
    if not str(raw).strip():  # "" was the current folder: "corpus.jsonl: missing: not a dataset folder"
        raise ConfigError("dataset", "empty dataset name")
    as_path = Path(raw).expanduser()
    if as_path.is_dir():
        if _find(as_path, "corpus") is None:
            raise DataError(f"{as_path / 'corpus.jsonl'}: missing: not a dataset folder (BEIR layout expected)")
        return as_path
    looked = []
    for d in dataset_search_path():
        cand = d / raw
        if _find(cand, "corpus") is not None:
            return cand
        looked.append(f"  {cand}" + (" (exists but has no corpus.jsonl)" if cand.is_dir() else ""))
    if as_path.exists():  # a file: the search path's folders were listed three times, then "'' is not a BEIR ..."
        raise DataError(f"{as_path}: a file, not a dataset folder (BEIR layout: corpus.jsonl, queries.jsonl, qrels/)")
    if as_path.is_absolute() or raw.startswith(("~", "./", "../")):  # a path, not a name to look up or download
        raise DatasetNotFoundError(f"dataset folder {as_path} not found")
    beir_name = raw.replace("\\", "/").split("/")[0]
    if beir_name not in BEIR_DATASETS:
        why = f"{beir_name!r} is not a standard BEIR dataset, so it was not downloaded"
    elif download is False or (download is None and _offline()):
        why = "download disabled (download=False, RAGOPT_OFFLINE or HF_HUB_OFFLINE)"
    else:
        try:
            root = download_beir(beir_name, user_cache_dir())
            if _find(root.parent / raw, "corpus") is not None:
                return root.parent / raw
            why = f"downloaded {beir_name} to {root}, but {root.parent / raw} holds no corpus.jsonl"
        except DataError as e:
            why = f"download failed: {e}"
    raise DatasetNotFoundError(f"dataset {raw!r} not found; looked in:\n" + "\n".join(looked) + f"\n{why}")


def _read_docs(path: Path, kind: str) -> tuple[list[str], list[str], list[str]]:
    """Stream ``_id``/``title``/``text`` into parallel lists, checking ids are present and unique."""
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    line_of: dict[str, int] = {}
    what = "query" if kind == "queries" else "corpus"
    for line_no, obj in read_jsonl(path):
        where = f"{path}:{line_no}"
        did = record_id(obj, "_id", where, what)
        if did in line_of:
            raise DataError(f"{where}: duplicate _id {did!r} (first on line {line_of[did]})")
        line_of[did] = line_no
        ids.append(did)
        titles.append(record_text(obj, "title", where, what))
        texts.append(record_text(obj, "text", where, what))
    if not ids:
        raise DataError(f"{kind} {path} is empty")
    return ids, titles, texts


def _corpus_with_stats(path: str | os.PathLike, name: str = "") -> tuple[Corpus, dict[str, int]]:
    ids, titles, texts = _read_docs(Path(path), "corpus")
    stats = {
        "n_docs": len(ids),
        "n_empty": sum(1 for t, x in zip(titles, texts) if not t and not x),
        "n_empty_text": sum(1 for x in texts if not x),
        "n_empty_title": sum(1 for t in titles if not t),
    }
    return Corpus(ids, texts, titles, name=name), stats


def load_corpus(path: str | os.PathLike, name: str = "") -> Corpus:
    """A ``corpus.jsonl`` as a :class:`Corpus` (an ``_id`` is a non-blank string or an integer, kept as its text;
    title and text are strings, missing or null: "")."""
    return _corpus_with_stats(path, name)[0]


def load_queries(path: str | os.PathLike) -> Queries:
    """A ``queries.jsonl`` as :class:`Queries`, in file order."""
    ids, _, texts = _read_docs(Path(path), "queries")
    return Queries(ids, texts)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_qrels(
    path: str | os.PathLike, known_queries: Container[str] | None = None, known_docs: Container[str] | None = None
) -> tuple[Qrels, dict[str, Any]]:
    """Read a qrels TSV (``query-id  corpus-id  score``; a header line and the 4-column TREC form are accepted).
    A score is an integer grade (``1.0`` is read as 1, ``2.5`` is an error); a pair judged twice must be judged
    alike (a repeat is read once; a different grade is an error naming both lines).

    Judgments naming a query not in ``known_queries`` or a document not in ``known_docs`` are dropped;
    the report says how many (``n_pairs``, ``n_kept``, ``n_dropped``, ``unknown_query_ids``,
    ``unknown_doc_ids`` (distinct ids), ``examples``) and one warning names the counts and the file."""
    path = Path(path)
    qrels: Qrels = {}
    n_pairs = n_dropped = 0
    bad_q: set[str] = set()
    bad_d: set[str] = set()
    examples: list[dict[str, Any]] = []
    line_of: dict[tuple[str, str], tuple[int, int]] = {}  # (query, document) -> (first line, grade)
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except FileNotFoundError:
        raise DataError(f"{path}: qrels file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    for line_no, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) == 4:  # TREC: qid iteration docid score
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise DataError(
                f"{path}:{line_no}: expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}"
            )
        qid, did, score_s = (c.strip() for c in cols)
        if line_no == 1 and not _is_number(score_s):
            continue  # header
        try:
            value = int(score_s) if score_s.lstrip("+-").isdigit() else float(score_s)
        except ValueError:
            raise DataError(f"{path}:{line_no}: score {score_s!r} is not a number") from None
        if not float(value).is_integer():  # a grade: 2.5 was cut to 2, changing what the metrics count
            raise DataError(f"{path}:{line_no}: score {score_s!r} is not an integer relevance grade")
        score = int(value)
        if not MIN_GRADE <= score <= MAX_GRADE:  # the evaluator's memory grows with the largest grade (types.py)
            raise DataError(f"{path}:{line_no}: score {score_s!r} is outside the grades {MIN_GRADE}..{MAX_GRADE}")
        first = line_of.setdefault((qid, did), (line_no, score))
        if first[1] != score:
            raise DataError(
                f"{path}:{line_no}: query {qid!r}, document {did!r} judged {score} here and {first[1]} on line "
                f"{first[0]}"
            )
        if first[0] != line_no:
            continue  # the same judgment again: read once
        n_pairs += 1
        unknown_q = known_queries is not None and qid not in known_queries
        unknown_d = known_docs is not None and did not in known_docs
        if unknown_q or unknown_d:
            n_dropped += 1
            if unknown_q:
                bad_q.add(qid)
            if unknown_d:
                bad_d.add(did)
            if len(examples) < _N_EXAMPLES:
                examples.append(
                    {
                        "line": line_no,
                        "query_id": qid,
                        "doc_id": did,
                        "unknown": "query" if not unknown_d else "doc" if not unknown_q else "both",
                    }
                )
            continue
        qrels.setdefault(qid, {})[did] = score
    report = {
        "n_pairs": n_pairs,
        "n_kept": n_pairs - n_dropped,
        "n_dropped": n_dropped,
        "unknown_query_ids": len(bad_q),
        "unknown_doc_ids": len(bad_d),
        "examples": examples,
    }
    if n_dropped:
        warnings.warn(
            f"{path}: dropped {n_dropped} of {n_pairs} judgments naming {len(bad_q)} unknown query "
            f"ids and {len(bad_d)} unknown doc ids (e.g. {examples[0]})",
            stacklevel=2,
        )
    return qrels, report


class Dataset:
    """A BEIR-layout dataset folder; each part is read on first use and kept."""

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        if _find(self.path, "corpus") is None:
            raise DataError(f"{self.path / 'corpus.jsonl'}: missing: not a dataset folder (BEIR layout expected)")
        self._qrels: dict[str, tuple[Qrels, dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, path={str(self.path)!r}, splits={self.splits})"

    def _file(self, stem: str) -> Path | None:
        return _find(self.path, stem)

    @cached_property
    def _corpus_and_stats(self) -> tuple[Corpus, dict[str, int]]:
        return _corpus_with_stats(self._file("corpus") or self.path / "corpus.jsonl", self.name)

    @property
    def corpus(self) -> Corpus:
        return self._corpus_and_stats[0]

    @property
    def corpus_stats(self) -> dict[str, int]:
        """``n_docs``, ``n_empty`` (no title and no text, kept), ``n_empty_text``, ``n_empty_title``."""
        return self._corpus_and_stats[1]

    @cached_property
    def queries(self) -> Queries:
        return load_queries(self._file("queries") or self.path / "queries.jsonl")

    @property
    def splits(self) -> list[str]:
        """Names of the ``qrels/*.tsv`` files."""
        d = self.path / "qrels"
        return sorted(p.stem for p in d.glob("*.tsv") if p.is_file()) if d.is_dir() else []

    def qrels(self, split: str = "test") -> Qrels:
        """Judgments of ``split``; pairs naming unknown queries or documents are dropped (see :meth:`qrels_report`)."""
        if split not in self._qrels:
            path = self.path / "qrels" / f"{split}.tsv"
            if not path.is_file():
                raise DataError(
                    f"{path}: no split {split!r} in dataset {self.name!r}; "
                    f"available splits: {', '.join(self.splits) or 'none'}"
                )
            known_q = set(self.queries.ids)
            self._qrels[split] = load_qrels(path, known_q, self.corpus)
        return self._qrels[split][0]

    def qrels_report(self, split: str = "test") -> dict[str, Any]:
        """What loading ``split`` dropped: ``n_pairs``, ``unknown_query_ids``, ``unknown_doc_ids``, ``examples``."""
        self.qrels(split)
        return self._qrels[split][1]

    def queries_for(self, split: str = "test") -> Queries:
        """The queries judged in ``split``, in ``queries.jsonl`` order."""
        judged = self.qrels(split)
        q = self.queries
        return q[[i for i, qid in enumerate(q.ids) if qid in judged]]

    @cached_property
    def answers(self) -> dict[str, list[str]] | None:
        """Gold answers by query id (``answers.jsonl``), or None."""
        path = self._file("answers")
        if path is None:
            return None
        out: dict[str, list[str]] = {}
        line_of: dict[str, int] = {}
        for line_no, obj in read_jsonl(path):
            where = f"{path}:{line_no}"
            qid = record_id(obj, "query-id", where, "answer")
            if qid in line_of:
                raise DataError(f"{where}: a second answer record for query {qid!r} (first on line {line_of[qid]})")
            line_of[qid] = line_no
            ans = obj.get("answers", [])
            if isinstance(ans, str):
                ans = [ans]
            if not isinstance(ans, list) or any(a is None for a in ans):
                raise DataError(f'{where}: "answers" must be a list of strings (or one string), got {ans!r:.80}')
            out[qid] = [as_text(a, where, 'each of "answers"') for a in ans]
        return out

    @cached_property
    def tools(self) -> list[dict[str, Any]] | None:
        """Tool descriptions (``tools.jsonl``), or None."""
        path = self._file("tools")
        if path is None:
            return None
        tools = []
        for line_no, obj in read_jsonl(path):
            record_id(obj, "_id", f"{path}:{line_no}", "tool")
            tools.append(obj)
        return tools

    @property
    def fingerprint(self) -> str:
        """The corpus fingerprint."""
        return self.corpus.fingerprint


def load_dataset(name_or_path: str | os.PathLike, download: bool | None = None) -> Dataset:
    """Resolve ``name_or_path`` (see :func:`resolve_dataset`) and return a lazily loaded :class:`Dataset`."""
    path = resolve_dataset(name_or_path, download)
    raw = os.fspath(name_or_path)
    return Dataset(path, name=path.name if Path(raw).expanduser().is_dir() else raw)
