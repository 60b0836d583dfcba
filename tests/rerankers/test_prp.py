"""The prp stage over the scripted test double: an oracle LLM gives the oracle's order with the theory's comparison
counts; position bias cancels over both orders; generation mode and unparseable answers; the call cache across
runs and methods; bad input. The slow test runs the packaged SmolLM2 on real nq-open-oracle-dev queries for the
mechanics (counts, determinism, the score equal to plain transformers'), not quality."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ragopt.config import from_config
from ragopt.errors import ConfigError, StageError
from ragopt.kernels.prp import comparison_bounds
from ragopt.llm.openai_backend import OpenAIBackend
from ragopt.llm.scripted import ScriptedLLM
from ragopt.pipeline_io import load_pipeline
from ragopt.rerankers.prp import TEMPLATES, PRPReranker, parse_label, parse_labels
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Queries

N = 8
TRUE_RANK = [5, 2, 7, 0, 4, 1, 6, 3]  # true rank of doc i (0 = most relevant)
IDEAL = sorted(range(N), key=lambda i: TRUE_RANK[i])
TOPICS = ["rivers", "mountains", "deserts", "oceans", "forests", "glaciers", "volcanoes", "islands"]


@pytest.fixture()
def corpus():
    return Corpus(
        [f"d{i}" for i in range(N)], [f"doc{i} is a passage about {t}." for i, t in enumerate(TOPICS)], name="tiny"
    )


def oracle_llm(labels=("A", "B"), names=("A", "B")) -> ScriptedLLM:
    """Prefers the passage of lower TRUE_RANK whichever slot it is in (a consistent total order); ``names`` are
    the labels the prompt gives the passages, ``labels`` the continuations scored."""
    score_rules, rules = [], []
    for a, b in itertools.permutations(range(N), 2):
        match = rf'Passage {names[0]}: "doc{a} [\s\S]*Passage {names[1]}: "doc{b} '
        first = TRUE_RANK[a] < TRUE_RANK[b]
        score_rules += [
            {"match": match, "continuation": labels[0], "logprob": -0.05 if first else -3.0},
            {"match": match, "continuation": labels[1], "logprob": -3.0 if first else -0.05},
        ]
        rules.append({"match": match, "output": names[0] if first else f"Passage {names[1]} is more relevant."})
    return ScriptedLLM(name="oracle", rules=rules, score_rules=score_rules)


def always_a() -> ScriptedLLM:
    """Position bias only: prefers whichever passage comes first."""
    return ScriptedLLM(
        name="always-a",
        default="A",
        score_rules=[
            {"match": "Passage A", "continuation": "A", "logprob": -0.1},
            {"match": "Passage A", "continuation": "B", "logprob": -2.5},
        ],
    )


def batch_for(corpus, rows, queries=None):
    width = max(len(r) for r in rows)
    idx = np.full((len(rows), width), -1, np.int64)
    sc = np.full((len(rows), width), -np.inf, np.float32)
    for i, r in enumerate(rows):
        idx[i, : len(r)] = r
        sc[i, : len(r)] = np.arange(len(r), 0, -1) * 0.5
    queries = queries or [f"query {i}" for i in range(len(rows))]
    return Batch(Queries([f"q{i}" for i in range(len(rows))], queries), corpus, idx, sc)


def stage(llm, store, corpus, **kw):
    return PRPReranker(llm=llm, **kw).fit(corpus, store)


SHUFFLED = [6, 0, 3, 7, 1, 4, 2, 5]  # the first stage's order


@pytest.mark.parametrize("mode", ["score", "generate"])
@pytest.mark.parametrize(
    "method,sort", [("allpair", "heap"), ("sorting", "heap"), ("sorting", "bubble"), ("sliding", "heap")]
)
def test_oracle_llm_gives_the_oracle_order(corpus, tmp_path, method, sort, mode):
    k = N if method == "allpair" else 3
    st = stage(oracle_llm(), ArtifactStore(tmp_path), corpus, method=method, sort=sort, mode=mode, depth=N, top_k=k)
    out = st.transform(batch_for(corpus, [SHUFFLED, SHUFFLED[::-1]]))
    for r in range(2):
        assert out.doc_idx[r, :k].tolist() == IDEAL[:k]
        assert sorted(out.doc_idx[r].tolist()) == list(range(N))
        assert np.all(np.diff(out.scores[r]) < 0)
    c = out.stats.counts
    low, high = comparison_bounds(method, N, k, sort)
    assert 2 * low <= c["prp_comparisons"] <= 2 * high
    if method in ("allpair", "sliding"):  # deterministic counts
        assert c["prp_comparisons"] == 2 * low
    assert c["prp_inconsistent"] == 0 and c["prp_unparseable"] == 0
    if method == "allpair":  # every pair once, both orders: two prompts a pair (two label rows each in score mode)
        assert c["prp_prompts"] == 2 * c["prp_comparisons"]
        assert c["llm_calls"] == c["prp_prompts"] * (2 if mode == "score" else 1)
    assert c["prp_reranked"] == 2 * N and c["prp_short_lists"] == 0
    assert c["prp_rounds"] >= 1 and out.stats.seconds["prp"] > 0


def test_tail_keeps_its_order_below_the_reranked_head(corpus, tmp_path):
    st = stage(oracle_llm(), ArtifactStore(tmp_path), corpus, method="allpair", depth=5)
    out = st.transform(batch_for(corpus, [SHUFFLED, [3, 1]]))
    head = sorted(SHUFFLED[:5], key=lambda i: TRUE_RANK[i])
    assert out.doc_idx[0].tolist() == head + SHUFFLED[5:]
    assert out.scores[0].tolist() == [5, 4, 3, 2, 1, 0, -0.5, -1]  # tail: original gaps, shifted below
    assert out.doc_idx[1].tolist()[:2] == [3, 1] and out.doc_idx[1, 2] == -1
    assert out.stats.counts["prp_short_lists"] == 1 and out.stats.counts["prp_comparisons"] == 10 + 1


@pytest.mark.parametrize("mode", ["score", "generate"])
@pytest.mark.parametrize(
    "method,sort", [("allpair", "heap"), ("sorting", "heap"), ("sorting", "bubble"), ("sliding", "heap")]
)
def test_position_bias_cancels_over_both_orders(corpus, tmp_path, method, sort, mode):
    st = stage(always_a(), ArtifactStore(tmp_path), corpus, method=method, sort=sort, mode=mode, depth=N, top_k=3)
    b = batch_for(corpus, [SHUFFLED])
    out = st.transform(b)
    assert out.doc_idx[0].tolist() == SHUFFLED  # every pair a tie: the input order is kept
    c = out.stats.counts
    assert c["prp_comparisons"] > 0 and c["prp_inconsistent"] == c["prp_comparisons"]
    assert c["prp_unparseable"] == 0


def test_inconsistent_mean_keeps_the_debiased_preference(corpus, tmp_path):
    """A model that says A in every prompt, more surely when the better passage is first: every pair is
    inconsistent; the paper's rule ties them all, ``inconsistent: mean`` recovers the oracle's order."""
    rules = []
    for a, b in itertools.permutations(range(N), 2):
        match = rf'Passage A: "doc{a} [\s\S]*Passage B: "doc{b} '
        la, lb = (-0.05, -3.0) if TRUE_RANK[a] < TRUE_RANK[b] else (-0.5, -1.0)
        rules += [
            {"match": match, "continuation": "A", "logprob": la},
            {"match": match, "continuation": "B", "logprob": lb},
        ]
    store = ArtifactStore(tmp_path)
    for rule, expect in (("tie", SHUFFLED), ("mean", IDEAL)):
        llm = ScriptedLLM(name="biased", score_rules=rules)
        out = stage(llm, store, corpus, method="allpair", depth=N, inconsistent=rule).transform(
            batch_for(corpus, [SHUFFLED])
        )
        assert out.doc_idx[0].tolist() == expect, rule
        assert out.stats.counts["prp_inconsistent"] == out.stats.counts["prp_comparisons"] == 28


def test_one_order_asks_one_prompt_with_the_higher_ranked_passage_first(corpus, tmp_path):
    llm = always_a()
    st = stage(llm, ArtifactStore(tmp_path), corpus, method="allpair", depth=4, both_orders=False)
    out = st.transform(batch_for(corpus, [SHUFFLED]))
    assert out.doc_idx[0].tolist() == SHUFFLED  # the first-listed passage always wins: the input order
    c = out.stats.counts
    assert c["prp_comparisons"] == 6 and c["prp_prompts"] == 6 and c["prp_inconsistent"] == 0
    first = [p[-1]["content"] for kind, p in llm.calls[::2]]
    for text in first:  # passage A is always the one the first stage ranked higher
        a, b = (int(text.split(f'Passage {s}: "doc')[1][0]) for s in "AB")
        assert SHUFFLED.index(a) < SHUFFLED.index(b)


def test_unparseable_answers_are_counted_and_tie(corpus, tmp_path):
    llm = ScriptedLLM(name="mumble", default="I cannot tell which one.")
    st = stage(llm, ArtifactStore(tmp_path), corpus, method="sliding", mode="generate", depth=5, top_k=2)
    out = st.transform(batch_for(corpus, [SHUFFLED]))
    c = out.stats.counts
    assert out.doc_idx[0].tolist() == SHUFFLED
    assert c["prp_comparisons"] == 2 * 4 and c["prp_unparseable"] == 2 * c["prp_comparisons"]
    assert c["prp_inconsistent"] == 0


def test_parse_label():
    for text, label in [
        ("A", "A"),
        (" B.", "B"),
        ("Passage A", "A"),
        ("**B**", "B"),
        ("(A) is better", "A"),
        ('"B"', "B"),
        ("I think Passage B is more relevant", "B"),
        ("passage A", "A"),
        ("Passage A and Passage B are both fine", None),
        ("Both", None),
        ("", None),
        ("Apples", None),
        ("Neither passage", None),
    ]:
        assert parse_label(text) == label, text


def test_parse_label_with_other_labels():
    assert parse_labels("1/2") == ("1", "2") and parse_labels(" X / Y ") == ("X", "Y")
    for text, label in [
        ("1", "1"),
        (" 2.", "2"),
        ("Passage 2", "2"),
        ("**1**", "1"),
        ("I prefer passage 1", "1"),
        ("12", None),  # not a label followed by a non-word
        ("Passage 1 and Passage 2", None),
        ("A", None),
    ]:
        assert parse_label(text, ("1", "2")) == label, text
    assert parse_label("first, clearly", ("first", "second")) == "first"
    assert parse_label("Passage A", ("1", "2")) is None


@pytest.mark.parametrize("mode", ["score", "generate"])
@pytest.mark.parametrize("chat", [True, False])
def test_other_labels_rank_like_a_b(corpus, tmp_path, mode, chat):
    """Labels 1/2 in the built-in prompt (which then says "one number, 1 or 2") give the oracle's order, in both
    modes. The scripted model scores only the new labels (spaced after plain text), so scoring "A"/"B" would tie
    every pair and keep the shuffled order."""
    cont = ("1", "2") if chat else (" 1", " 2")
    llm = oracle_llm(labels=cont, names=("1", "2"))
    st = stage(llm, ArtifactStore(tmp_path), corpus, method="allpair", depth=N, labels="1/2", mode=mode, chat=chat)
    out = st.transform(batch_for(corpus, [SHUFFLED]))
    assert out.doc_idx[0].tolist() == IDEAL
    c = out.stats.counts
    assert c["prp_inconsistent"] == 0 and c["prp_unparseable"] == 0
    text = llm.calls[0][1][0]["content"] if chat else llm.calls[0][1]
    assert 'Passage 1: "doc' in text and "Answer with one number, 1 or 2:" in text and "Passage A" not in text


def test_cache_second_run_and_another_method_are_free(corpus, tmp_path):
    store = ArtifactStore(tmp_path)
    first = stage(oracle_llm(), store, corpus, method="allpair", depth=N)
    a = first.transform(batch_for(corpus, [SHUFFLED]))
    assert a.stats.counts["llm_calls"] == 4 * 28 and a.stats.counts["llm_cache_hits"] == 0
    again = stage(oracle_llm(), store, corpus, method="allpair", depth=N)  # a new object, a new trial
    b = again.transform(batch_for(corpus, [SHUFFLED]))
    assert b.doc_idx.tolist() == a.doc_idx.tolist()
    assert b.stats.counts["llm_calls"] == 0 and b.stats.counts["llm_cache_hits"] == 4 * 28
    assert again.llm.calls == [] and b.stats.counts["prp_prompts"] == 2 * 28  # needed, though the cache paid
    assert b.stats.counts["prp_prompt_tokens"] == a.stats.counts["prp_prompt_tokens"] > 0
    # allpair asked every pair in both orders: sliding and sorting over the same candidates cost nothing
    for kw in ({"method": "sliding", "top_k": 3}, {"method": "sorting", "top_k": 4}, {"method": "sliding", "depth": 5}):
        other = stage(oracle_llm(), store, corpus, **({"depth": N} | kw))
        c = other.transform(batch_for(corpus, [SHUFFLED]))
        assert c.stats.counts["prp_comparisons"] > 0 and c.stats.counts["llm_calls"] == 0, kw
        assert c.doc_idx[0, :3].tolist() == IDEAL[:3] or kw.get("depth") == 5
    # without the cache every run pays; pairs repeated within a run are still asked once
    nocache = stage(oracle_llm(), store, corpus, method="sliding", depth=N, top_k=4, cache=False)
    d = nocache.transform(batch_for(corpus, [SHUFFLED]))
    assert d.stats.counts["prp_comparisons"] == 4 * 7
    assert 0 < d.stats.counts["prp_prompts"] < 2 * d.stats.counts["prp_comparisons"]


def test_plain_text_prompts_score_spaced_labels(corpus, tmp_path):
    llm = oracle_llm(labels=(" A", " B"))
    st = stage(
        llm,
        ArtifactStore(tmp_path),
        corpus,
        method="allpair",
        depth=4,
        chat=False,
        template='Query: {query}\nPassage A: "{passage_a}"\nPassage B: "{passage_b}"\nBetter passage:',
    )
    out = st.transform(batch_for(corpus, [SHUFFLED]))
    assert out.doc_idx[0, :4].tolist() == sorted(SHUFFLED[:4], key=lambda i: TRUE_RANK[i])
    assert isinstance(llm.calls[0][1], str) and llm.calls[0][1].startswith("Query: query 0\n")


def test_passages_are_cut_to_passage_max_tokens(corpus, tmp_path):
    llm = always_a()
    st = stage(llm, ArtifactStore(tmp_path), corpus, method="allpair", depth=2, passage_max_tokens=3, with_title=False)
    st.transform(batch_for(corpus, [[0, 1]]))
    assert 'Passage A: "doc0 is a"' in llm.calls[0][1][0]["content"]


def test_bad_input_errors_before_any_call(corpus, tmp_path):
    no_logprobs = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m", logprobs=False)
    with pytest.raises(ConfigError, match=r"mode: mode 'score' reads label log-probabilities.*set mode: generate"):
        PRPReranker(llm=no_logprobs)
    PRPReranker(llm=no_logprobs, mode="generate")  # generation mode needs no logprobs
    with pytest.raises(ConfigError) as e:
        from_config(
            {
                "type": "pipeline",
                "stages": [
                    {"type": "bm25"},
                    {
                        "type": "prp",
                        "mode": "score",
                        "llm": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "logprobs": False},
                    },
                ],
            }
        )
    assert e.value.path == "stages[1].mode"
    with pytest.raises(ConfigError, match=r"template: the template has no \{passage_b\}"):
        PRPReranker(llm=always_a(), template="Query {query}: A {passage_a} or B?")
    with pytest.raises(ConfigError, match=r"template: unknown field\(s\) \{doc\}"):
        PRPReranker(llm=always_a(), template="{query} {passage_a} {passage_b} {doc}")
    with pytest.raises(ConfigError, match="unknown template 'pairwse'; did you mean 'pairwise'"):
        PRPReranker(llm=always_a(), template="pairwse")
    with pytest.raises(ConfigError, match="malformed template"):
        PRPReranker(llm=always_a(), template="{query} {passage_a} {passage_b")
    for bad in ("A", "A/B/C", "A/a", "A/", "Passage A/Passage B", "A/B?"):
        with pytest.raises(ConfigError, match=r"labels: .*(two labels|must differ)"):
            PRPReranker(llm=always_a(), labels=bad)
    # a user template may name the labels
    PRPReranker(llm=always_a(), labels="X/Y", template="{query}\n{label_a}: {passage_a}\n{label_b}: {passage_b}")
    st = stage(always_a(), ArtifactStore(tmp_path), corpus, depth=50)
    with pytest.raises(StageError, match="no candidates"):
        st.transform(Batch(Queries(["q"], ["x"])))
    # depth beyond the list: what is there is reranked, and the stats say how many lists were short
    out = st.transform(batch_for(corpus, [SHUFFLED, [2], [4, 5, 6]]))
    c = out.stats.counts
    assert c["prp_short_lists"] == 3 and c["prp_reranked"] == 8 + 1 + 3
    assert out.doc_idx[1].tolist()[0] == 2 and out.scores[1, 0] == 1.0


def test_config_round_trip_and_pipelines(corpus):
    st = from_config({"type": "prp", "llm": {"type": "scripted"}, "method": "sorting", "sort": "bubble"})
    assert isinstance(st, PRPReranker) and from_config(st.to_config()) == st
    assert st.llm.supports_logprobs and "pairwise" in TEMPLATES
    p = load_pipeline("bm25_prp")
    assert p.stages[1].method == "sliding" and p.stages[1].depth == 10
    q = load_pipeline("bm25_ce_prp")
    assert [s.type_name for s in q.stages] == ["bm25", "cross_encoder", "prp"]
    assert q.stages[1].model == load_pipeline("bm25_ce").stages[1].model


# -- the packaged SmolLM2 on real queries (mechanics, not quality) ------------------------------------------------
@pytest.fixture(scope="module")
def nq_bm25(data_dir, session_store):
    from ragopt.data import load_dataset
    from ragopt.evaluation.run import sample_queries
    from ragopt.retrievers.bm25 import BM25Retriever

    if not (data_dir / "nq-open-oracle-dev" / "corpus.jsonl").is_file():
        pytest.skip("nq-open-oracle-dev not in the shared data")
    ds = load_dataset(str(data_dir / "nq-open-oracle-dev"))
    queries = sample_queries(ds.queries_for("test"), 2, seed=0)
    bm25 = BM25Retriever(top_k=10).fit(ds.corpus, session_store)
    return ds, bm25.search(queries)


@pytest.mark.slow
def test_smollm2_mechanics_on_nq(smollm2, nq_bm25, session_store, tmp_path):
    import torch

    ds, base = nq_bm25
    store = ArtifactStore(tmp_path)
    kw = dict(llm=smollm2, method="sliding", depth=4, top_k=2, passage_max_tokens=64)
    st = PRPReranker(**kw).fit(ds.corpus, store)
    out = st.transform(Batch(base.queries, base.corpus, base.doc_idx, base.scores))
    c = out.stats.counts
    assert c["prp_comparisons"] == 2 * 2 * 3 and c["prp_reranked"] == 8
    assert 0 < c["prp_prompts"] <= 2 * c["prp_comparisons"] and c["llm_calls"] == 2 * c["prp_prompts"]
    assert c["prp_inconsistent"] <= c["prp_comparisons"] and c["prompt_tokens"] > 0
    for r in range(2):  # the head is a permutation of BM25's top 4; the tail is BM25's order
        assert sorted(out.doc_idx[r, :4].tolist()) == sorted(base.doc_idx[r, :4].tolist())
        assert out.doc_idx[r, 4:].tolist() == base.doc_idx[r, 4:].tolist()
        assert np.all(np.diff(out.scores[r, :5]) < 0) and np.all(np.diff(out.scores[r]) <= 0)  # BM25 ties stay
    # deterministic: a fresh store (no cache) gives the same order and counts; the same store costs nothing
    fresh = PRPReranker(**kw).fit(ds.corpus, ArtifactStore(tmp_path / "fresh"))
    out2 = fresh.transform(Batch(base.queries, base.corpus, base.doc_idx, base.scores))
    assert out2.doc_idx.tolist() == out.doc_idx.tolist()
    assert out2.stats.counts["prp_inconsistent"] == c["prp_inconsistent"]
    out3 = (
        PRPReranker(**kw).fit(ds.corpus, store).transform(Batch(base.queries, base.corpus, base.doc_idx, base.scores))
    )
    assert out3.doc_idx.tolist() == out.doc_idx.tolist() and out3.stats.counts["llm_calls"] == 0
    # one judgement against plain transformers: softmax over the logits of "A" and "B" after the chat prompt
    q = base.queries.texts[0]
    a, b = (ds.corpus.text(int(i)) for i in base.doc_idx[0, :2])
    single = PRPReranker(llm=smollm2, both_orders=False, passage_max_tokens=10_000).fit(ds.corpus, store)
    p = single.judge([(q, a, b)])[0]
    model, tok = smollm2.load()
    text = tok.apply_chat_template(single.prompt(q, a, b), tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, -1].float()
    la, lb = (logits[tok(x, add_special_tokens=False)["input_ids"][0]].item() for x in ("A", "B"))
    assert p == pytest.approx(1 / (1 + math.exp(lb - la)), abs=1e-4)
