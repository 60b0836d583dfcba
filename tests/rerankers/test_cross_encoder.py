"""Cross-encoder reranker: ordering, depth, pair-score cache, truncation, empty rows, config, errors.

A tiny BERT sequence classifier (1 layer, 16-d, 40-word vocabulary), built and saved locally, stands in
for a real cross-encoder: its scores are arbitrary but deterministic, which is all these checks need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("sentence_transformers")

from ragopt.config import from_config
from ragopt.errors import ConfigError, StageError
from ragopt.pipeline import Stage
from ragopt.rerankers.cross_encoder import CrossEncoderReranker
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Queries

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "what",
    "who",
    "when",
    "where",
    "how",
    "capital",
    "city",
    "france",
    "paris",
    "germany",
    "berlin",
    "river",
    "long",
    "tall",
    "mountain",
    "population",
    "history",
    "music",
    "science",
    "cat",
    "dog",
]


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory) -> Path:
    from ragopt.testing.models import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-ce"), WORDS, initializer_range=1.0)


@pytest.fixture()
def corpus() -> Corpus:
    texts = [
        "paris is the capital of france",
        "berlin is the capital of germany",
        "the cat and the dog",
        "a long river in the mountain",
        "history of music",
        "population of the city",
        "science",
        "who was the tall cat",
    ]
    return Corpus([f"d{i}" for i in range(len(texts))], texts, [""] * len(texts), name="tiny")


def make_batch(corpus: Corpus, rows: list[list[int]], queries: list[str]) -> Batch:
    width = max(len(r) for r in rows)
    idx = np.full((len(rows), width), -1, np.int64)
    sc = np.full((len(rows), width), -np.inf, np.float32)
    for i, r in enumerate(rows):
        idx[i, : len(r)] = r
        sc[i, : len(r)] = np.arange(len(r), 0, -1, dtype=np.float32) * 10  # retriever order: as listed
    return Batch(Queries([f"q{i}" for i in range(len(rows))], queries), corpus, idx, sc)


def reference_scores(model_dir: Path, pairs: list[tuple[str, str]], max_length: int = 64) -> np.ndarray:
    import torch
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(model_dir), max_length=max_length, device="cpu")
    return ce.predict(pairs, activation_fn=torch.nn.Identity(), convert_to_numpy=True)


def test_reranking_order_follows_model_scores(tiny_ce, corpus, tmp_path):
    ce = CrossEncoderReranker(model=str(tiny_ce), max_length=64, device="cpu").fit(corpus, ArtifactStore(tmp_path))
    q = "what is the capital of france"
    out = ce.transform(make_batch(corpus, [list(range(8))], [q]))
    ref = reference_scores(tiny_ce, [(q, t) for t in corpus.texts])
    expect = np.argsort(-ref, kind="stable")
    assert out.doc_idx[0].tolist() == expect.tolist()
    np.testing.assert_allclose(out.scores[0], ref[expect], rtol=1e-5, atol=1e-5)
    assert out.stats.counts["ce_pairs"] == 8 and out.stats.counts["ce_cache_hits"] == 0
    assert out.stats.counts["ce_batches"] == 1 and out.stats.seconds["cross_encoder"] > 0


def test_depth_reranks_head_and_keeps_tail_below(tiny_ce, corpus, tmp_path):
    ce = CrossEncoderReranker(model=str(tiny_ce), depth=3, max_length=64, device="cpu").fit(
        corpus, ArtifactStore(tmp_path)
    )
    q = "who was the tall cat"
    rows = [[5, 1, 7, 0, 2, 3], [4, 6]]  # second row is shorter than depth + tail
    out = ce.transform(make_batch(corpus, rows, [q, q]))
    ref = reference_scores(tiny_ce, [(q, corpus.texts[i]) for i in rows[0][:3]])
    head = [rows[0][i] for i in np.argsort(-ref, kind="stable")]
    assert out.doc_idx[0].tolist() == head + [0, 2, 3]  # the tail keeps the retriever's order
    s = out.scores[0]
    assert np.all(np.diff(s) <= 0) and s[3] < s[:3].min()
    np.testing.assert_allclose(s[3:] - s[3], [0.0, -10.0, -20.0], atol=1e-4)  # gaps of the tail kept
    assert out.doc_idx[1, :2].tolist() != [-1, -1] and out.doc_idx[1, 2:].tolist() == [-1] * 4
    assert out.stats.counts["ce_pairs"] == 5


def test_second_run_is_served_from_the_cache(tiny_ce, corpus, tmp_path):
    store = ArtifactStore(tmp_path)
    ce = CrossEncoderReranker(model=str(tiny_ce), max_length=64, device="cpu").fit(corpus, store)
    batch = make_batch(corpus, [list(range(8)), [3, 2, 1]], ["capital city", "long river"])
    first = ce.transform(batch)
    again = (
        ce.clone()
        .fit(corpus, store)
        .transform(make_batch(corpus, [list(range(8)), [3, 2, 1]], ["capital city", "long river"]))
    )
    assert again.stats.to_dict()["counts"]["ce_pairs"] == 0 and again.stats.counts["ce_cache_hits"] == 11
    assert again.doc_idx.tolist() == first.doc_idx.tolist()
    np.testing.assert_array_equal(again.scores, first.scores)
    # batch size and device do not change scores: same cache; max_length does: another cache
    assert ce.clone(batch_size=2).fit(corpus, store)._score_cache().path == ce._score_cache().path
    other = CrossEncoderReranker(model=str(tiny_ce), max_length=32, device="cpu").fit(corpus, store)
    assert other._score_cache().path != ce._score_cache().path
    arts = ce.artifacts()
    assert arts[0]["kind"] == "ce-scores" and Path(arts[0]["path"]).parent == tmp_path / "ce-scores"


def test_restore_on_a_clone_reranks_without_fitting(tiny_ce, corpus, tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    fitted = CrossEncoderReranker(model=str(tiny_ce), max_length=64, device="cpu").fit(corpus, store, progress=False)
    rows, queries = [list(range(8)), [3, 2, 1]], ["capital city", "long river"]
    want = fitted.transform(make_batch(corpus, rows, queries))
    snapshot = fitted.fitted_state()
    monkeypatch.setattr(CrossEncoderReranker, "_load_model", lambda *a, **k: pytest.fail("restore loaded the model"))
    monkeypatch.setattr(ArtifactStore, "get_or_create", lambda *a, **k: pytest.fail("restore touched the store"))
    clone = fitted.clone().restore(snapshot)
    assert clone.is_fitted and clone.corpus is corpus
    assert clone._score_cache().path == fitted._score_cache().path  # the store fit was given comes along
    got = clone.transform(make_batch(corpus, rows, queries))
    assert got.doc_idx.tolist() == want.doc_idx.tolist()
    np.testing.assert_array_equal(got.scores, want.scores)
    assert got.stats.counts["ce_pairs"] == 0 and got.stats.counts["ce_cache_hits"] == 11
    assert clone.artifacts() == [dict(a, created=False) for a in fitted.artifacts()]


def test_duplicate_pairs_scored_once(tiny_ce, corpus, tmp_path):
    ce = CrossEncoderReranker(model=str(tiny_ce), max_length=64, device="cpu", cache=False)
    from ragopt.types import Stats

    st = Stats()
    s = ce.score_pairs(["cat", "cat", "dog"], ["the cat", "the cat", "the cat"], st)
    assert s[0] == s[1] and st.counts["ce_pairs"] == 2 and st.counts["ce_cache_hits"] == 0
    m = ce.score_matrix(["cat", "dog"], ["the cat", "science", "music"])
    assert m.shape == (2, 3) and m.dtype == np.float32
    np.testing.assert_allclose([m[0, 0], m[1, 0]], [s[0], s[2]], atol=1e-5)  # padding differs: not bitwise
    assert ce.score_pairs([], []).shape == (0,)
    with pytest.raises(StageError, match="2 queries but 1 passages"):
        ce.score_pairs(["a", "b"], ["c"])


def test_cache_survives_new_objects(tiny_ce, corpus, tmp_path):
    import sqlite3

    ce = CrossEncoderReranker(model=str(tiny_ce), max_length=64, device="cpu").fit(corpus, ArtifactStore(tmp_path))
    s = ce.score_pairs(["capital of france"] * 2, corpus.texts[:2])
    path = ce._score_cache().path
    ce._score_cache().close()
    with sqlite3.connect(path) as db:  # a plain SQLite file another process can read
        assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 2
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    from ragopt.types import Stats

    fresh = CrossEncoderReranker(model=str(tiny_ce), max_length=64, device="cpu").fit(
        corpus, ArtifactStore(str(tmp_path))
    )
    st = Stats()
    np.testing.assert_array_equal(fresh.score_pairs(["capital of france"] * 2, corpus.texts[:2], st), s)
    assert st.counts["ce_pairs"] == 0 and st.counts["ce_cache_hits"] == 2


def test_truncated_pairs_are_counted(tiny_ce, tmp_path):
    long_text = " ".join(["mountain"] * 40)
    corpus = Corpus(["short", "long"], ["paris", long_text], name="t")
    ce = CrossEncoderReranker(model=str(tiny_ce), max_length=16, device="cpu").fit(corpus, ArtifactStore(tmp_path))
    out = ce.transform(make_batch(corpus, [[0, 1]], ["what is the capital of france"]))
    assert out.stats.counts["ce_truncated"] == 1 and out.stats.counts["ce_pairs"] == 2
    # the truncated pair scores as its first 16 tokens do
    cut = " ".join(["mountain"] * (16 - 3 - 6))
    ref = reference_scores(tiny_ce, [("what is the capital of france", cut)], max_length=16)
    row = out.doc_idx[0].tolist().index(1)
    assert out.scores[0, row] == pytest.approx(float(ref[0]), abs=1e-5)
    again = ce.transform(make_batch(corpus, [[0, 1]], ["what is the capital of france"]))
    assert again.stats.counts["ce_truncated"] == 1 and again.stats.counts["ce_cache_hits"] == 2  # from the cache


def test_empty_rows_pass_through(tiny_ce, corpus, tmp_path):
    ce = CrossEncoderReranker(model=str(tiny_ce), max_length=64, device="cpu").fit(corpus, ArtifactStore(tmp_path))
    batch = make_batch(corpus, [[1, 2], [0]], ["capital", ""])
    batch.doc_idx[1] = -1
    batch.scores[1] = -np.inf
    out = ce.transform(batch)
    assert out.doc_idx[1].tolist() == [-1, -1] and np.all(np.isneginf(out.scores[1]))
    assert out.stats.counts["ce_pairs"] == 2
    empty = Batch(Queries(["q"], ["x"]), corpus, np.zeros((1, 0), np.int64), np.zeros((1, 0), np.float32))
    assert ce.transform(empty).doc_idx.shape == (1, 0)
    with pytest.raises(StageError, match="no candidates"):
        ce.transform(Batch(Queries(["q"], ["x"])))


def test_pipeline_check_and_config_round_trip(tiny_ce):
    ce = CrossEncoderReranker(model=str(tiny_ce), depth=50, activation="sigmoid")
    cfg = ce.to_config()
    assert cfg["type"] == "cross_encoder" and cfg["depth"] == 50
    again = from_config(yaml.safe_load(yaml.safe_dump(cfg)))
    assert again == ce
    assert isinstance(ce, Stage) and ce.requires == {"queries", "candidates"}
    with pytest.raises(StageError, match="put a retriever before it"):
        from_config({"type": "pipeline", "stages": [cfg]}).check(frozenset({"queries"}))
    with pytest.raises(ConfigError, match="activation"):
        from_config({**cfg, "activation": "tanh"})
    spec = ce.cache_spec()
    assert spec["scorer"]["model_fingerprint"] and "batch_size" not in spec["config"]
    assert ce.clone(batch_size=4, device="cpu", cache=False).cache_spec() == spec
    assert ce.clone(depth=20).cache_spec() != spec  # depth changes the output


def test_sigmoid_activation(tiny_ce, tmp_path):
    raw = CrossEncoderReranker(model=str(tiny_ce), max_length=64, device="cpu", cache=False)
    sig = raw.clone(activation="sigmoid")
    a = raw.score_pairs(["cat"], ["the dog"])
    b = sig.score_pairs(["cat"], ["the dog"])
    assert b[0] == pytest.approx(1 / (1 + np.exp(-a[0])), rel=1e-5)


def test_bad_model_paths(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as e:
        CrossEncoderReranker(model=str(tmp_path / "no-such-model"))
    assert e.value.path == "model"
    with pytest.raises(ConfigError, match=r"stages\[1\].model"):
        from_config(
            {"type": "pipeline", "stages": [{"type": "bm25"}, {"type": "cross_encoder", "model": "./missing/ce"}]}
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        CrossEncoderReranker(model=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="not a cross-encoder"):
        CrossEncoderReranker(model="all-MiniLM-L6-v2")  # the packaged bi-encoder


def test_unloadable_hub_id_offline_is_a_clear_error(monkeypatch, corpus, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ce = CrossEncoderReranker(model="no-such-org/no-such-cross-encoder", device="cpu")
    with pytest.raises(ConfigError, match="cannot load cross-encoder 'no-such-org/no-such-cross-encoder'"):
        ce.fit(corpus, ArtifactStore(tmp_path))


def test_tuning_trials_reuse_stage_outputs_and_pair_scores(tiny_ce, corpus, tmp_path):
    from ragopt.cache import StageCache
    from ragopt.retrievers.bm25 import BM25

    store = ArtifactStore(tmp_path)
    queries = Queries(["a", "b"], ["capital of france", "tall cat"])

    def trial(depth: int, batch_size: int = 32):
        pipe = BM25(top_k=8, stemmer=None, stopwords=None) >> CrossEncoderReranker(
            model=str(tiny_ce), depth=depth, batch_size=batch_size, max_length=64, device="cpu"
        )
        pipe.fit(corpus, store)
        with StageCache(store).active():
            return pipe.transform(Batch(queries))

    first = trial(4)
    n = first.stats.counts["ce_pairs"]
    assert n > 0 and first.stats.counts["ce_cache_hits"] == 0
    same = trial(4, batch_size=2)  # batch size is not part of the key: the stage output is reused
    assert same.stats.counts["cache_hits:cross_encoder"] == 1 and same.stats.counts["ce_pairs"] == 0
    np.testing.assert_array_equal(same.doc_idx, first.doc_idx)
    deeper = trial(3)  # another depth: a new stage output, every pair already scored
    assert deeper.stats.counts["ce_pairs"] == 0 and deeper.stats.counts["ce_cache_hits"] > 0


# -- ONNX Runtime backend ------------------------------------------------------------------------------------
def _needs_onnx():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")


def test_onnx_fp32_matches_torch_and_is_exported_once(tiny_ce, corpus, tmp_path):
    _needs_onnx()
    store = ArtifactStore(tmp_path)
    q = ["what is the capital of france", "who was the tall cat"]
    rows = [list(range(8)), [7, 2, 0, 5]]
    torch_out = (
        CrossEncoderReranker(model=str(tiny_ce), max_length=64, device="cpu")
        .fit(corpus, store)
        .transform(make_batch(corpus, rows, q))
    )
    onnx_ce = CrossEncoderReranker(model=str(tiny_ce), max_length=64, backend="onnx").fit(corpus, store)
    out = onnx_ce.transform(make_batch(corpus, rows, q))
    assert out.doc_idx.tolist() == torch_out.doc_idx.tolist()
    np.testing.assert_allclose(out.scores, torch_out.scores, atol=1e-4)
    assert out.stats.counts["ce_pairs"] == 12 and out.stats.counts["ce_cache_hits"] == 0  # its own cache key
    kinds = {a["kind"]: a for a in onnx_ce.artifacts()}
    assert kinds["ce-onnx"]["created"] is True and Path(kinds["ce-onnx"]["path"], "model.onnx").is_file()
    again = CrossEncoderReranker(model=str(tiny_ce), max_length=32, backend="onnx").fit(corpus, store)
    assert {a["kind"]: a for a in again.artifacts()}["ce-onnx"]["created"] is False  # one export per model
    # over-long pairs are truncated as the torch backend truncates them
    long_q = " ".join(WORDS) * 2
    a = again.score_pairs([long_q], ["the cat and the dog " * 10])
    b = CrossEncoderReranker(model=str(tiny_ce), max_length=32, device="cpu", cache=False).score_pairs(
        [long_q], ["the cat and the dog " * 10]
    )
    np.testing.assert_allclose(a, b, atol=1e-4)
    sig = again.clone(activation="sigmoid", cache=False).score_pairs([long_q], ["the cat and the dog " * 10])
    assert sig[0] == pytest.approx(1 / (1 + np.exp(-a[0])), rel=1e-5)


def test_onnx_int8_is_close_and_keyed_apart(tiny_ce, corpus, tmp_path):
    _needs_onnx()
    store = ArtifactStore(tmp_path)
    fp32 = CrossEncoderReranker(model=str(tiny_ce), max_length=64, backend="onnx").fit(corpus, store)
    int8 = CrossEncoderReranker(model=str(tiny_ce), max_length=64, backend="onnx", precision="int8").fit(corpus, store)
    q = ["capital city"] * 8
    a, b = fp32.score_pairs(q, corpus.texts), int8.score_pairs(q, corpus.texts)
    assert not np.array_equal(a, b)  # quantised weights: other scores...
    assert np.corrcoef(a, b)[0, 1] > 0.95  # ...close to the fp32 ones on any CPU: the scheme cannot saturate
    assert int8._score_cache().path != fp32._score_cache().path
    assert int8.cache_spec() != fp32.cache_spec()
    onnx_arts = [Path(x["path"]) for s in (fp32, int8) for x in s.artifacts() if x["kind"] == "ce-onnx"]
    assert len(set(onnx_arts)) == 2
    import onnx

    ops = [{n.op_type for n in onnx.load(str(p / "model.onnx")).graph.node} for p in onnx_arts]
    assert "MatMulInteger" not in ops[0] and {"MatMulInteger", "DynamicQuantizeLinear"} <= ops[1]


def test_backend_and_precision_combinations_are_checked(tiny_ce):
    with pytest.raises(ConfigError, match="int8 runs on the onnx backend") as e:
        CrossEncoderReranker(model=str(tiny_ce), precision="int8")
    assert e.value.path == "precision"
    with pytest.raises(ConfigError, match="onnx runs on the CPU"):
        CrossEncoderReranker(model=str(tiny_ce), backend="onnx", device="cuda")
    with pytest.raises(ConfigError, match=r"stages\[1\].precision"):
        from_config(
            {
                "type": "pipeline",
                "stages": [
                    {"type": "bm25"},
                    {"type": "cross_encoder", "model": str(tiny_ce), "backend": "onnx", "precision": "fp16"},
                ],
            }
        )
    with pytest.raises(ConfigError, match="backend"):
        CrossEncoderReranker(model=str(tiny_ce), backend="tensorrt")


def test_corrupt_onnx_export_is_refused_then_rebuilt(tiny_ce, corpus, tmp_path):
    _needs_onnx()
    from ragopt.errors import ArtifactError

    store = ArtifactStore(tmp_path)
    ce = CrossEncoderReranker(model=str(tiny_ce), max_length=64, backend="onnx", cache=False).fit(corpus, store)
    before = ce.score_pairs(["capital city"], ["paris is the capital of france"])
    path = Path(next(a["path"] for a in ce.artifacts() if a["kind"] == "ce-onnx"))
    (path / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ArtifactError, match="model.onnx"):
        CrossEncoderReranker(model=str(tiny_ce), max_length=64, backend="onnx").fit(corpus, store)
    fixed = CrossEncoderReranker(model=str(tiny_ce), max_length=64, backend="onnx", cache=False).fit(
        corpus, store, rebuild=True
    )
    assert fixed.score_pairs(["capital city"], ["paris is the capital of france"])[0] == pytest.approx(before[0])


def test_int8_weight_bits_are_part_of_the_keys(tiny_ce, corpus, tmp_path, monkeypatch):
    """7- and 8-bit int8 exports (chosen by the CPU, or by $RAGOPT_ONNX_INT8_WEIGHT_BITS) never share an artifact
    or a pair-score cache; both stay close to fp32 on this model (neither can saturate where it is chosen)."""
    _needs_onnx()
    from ragopt.errors import ConfigError as CfgError
    from ragopt.rerankers import onnx_backend as ob

    store = ArtifactStore(tmp_path)
    fp32 = CrossEncoderReranker(model=str(tiny_ce), max_length=64, backend="onnx", cache=False).fit(corpus, store)
    q = ["capital city"] * 8
    ref = fp32.score_pairs(q, corpus.texts)
    specs, caches, scores = [], [], []
    for bits in ("7", "8"):
        monkeypatch.setenv(ob.WEIGHT_BITS_ENV, bits)
        ce = CrossEncoderReranker(model=str(tiny_ce), max_length=64, backend="onnx", precision="int8").fit(
            corpus, store
        )
        specs.append(ce.scorer_spec())
        caches.append(ce._score_cache().path)
        scores.append(ce.score_pairs(q, corpus.texts))
    assert specs[0]["quantization"]["weight_bits"] == 7 and specs[1]["quantization"]["weight_bits"] == 8
    assert caches[0] != caches[1]
    if not ob.cpu_has_vnni():  # 8-bit weights saturate here; only the 7-bit export is accurate on this CPU
        scores = scores[:1]
    for s in scores:
        assert np.corrcoef(ref, s)[0, 1] > 0.95
    monkeypatch.setenv(ob.WEIGHT_BITS_ENV, "6")
    with pytest.raises(CfgError, match="RAGOPT_ONNX_INT8_WEIGHT_BITS"):
        ob.quantization_scheme()
