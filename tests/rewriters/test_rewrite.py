"""The rewrite stage over the scripted test double: exact rewrites in both modes, a BM25 retriever after it that
finds a tool only the rewrite names, answer clean-up and the empty-answer fallback, the LLM call cache across runs,
the stage-output cache around it, bad input, config round trips and the shipped pipeline. The slow test runs the
packaged SmolLM2 on toollens tasks for the mechanics (non-empty, cached, deterministic), not quality."""

from __future__ import annotations

import json

import pytest
import yaml

from ragopt.cache import StageCache
from ragopt.config import from_config
from ragopt.errors import ConfigError, StageError
from ragopt.llm.scripted import ScriptedLLM
from ragopt.pipeline_io import load_pipeline
from ragopt.registry import resolve
from ragopt.retrievers.bm25 import BM25Retriever
from ragopt.rewriters import QueryRewriter
from ragopt.rewriters.llm_rewrite import TEMPLATES, clean_rewrite
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Queries

TOOLS = Corpus(
    ["t_mail", "t_weather", "t_table", "t_maps"],
    [
        "Send an email message to a recipient address, with subject and body.",
        "Weather forecast for a city: temperature, rain and wind for the coming days.",
        "Restaurant reservation API: book a table at a restaurant for a party size and time.",
        "Driving directions and travel times between two places.",
    ],
    ["Email sender", "Weather", "Restaurant reservation", "Directions"],
    name="tools",
)
# tasks that share no word with the description of the tool they need
QUERIES = Queries(["a7", "b3"], ["let my boss know I am running late", "will I need an umbrella in Oslo tomorrow"])
RULES = [
    {"match": r"Task: let my boss know", "output": "send email"},
    {"match": r"Task: will I need an umbrella", "output": "weather forecast"},
]


def scripted(rules=RULES, **kw) -> ScriptedLLM:
    return ScriptedLLM(name="rewriter", rules=list(rules), **kw)


def rewriter(tmp_path, llm=None, **kw) -> QueryRewriter:
    return QueryRewriter(llm=llm if llm is not None else scripted(), **kw).fit(TOOLS, ArtifactStore(tmp_path))


def run(stage, queries=QUERIES) -> Batch:
    return stage.transform(Batch(queries))


# -- rewriting ----------------------------------------------------------------------------------------------------
def test_replace_mode_makes_the_rewrite_the_query(tmp_path):
    llm = scripted()
    batch = Batch(QUERIES)
    out = rewriter(tmp_path, llm, mode="replace").transform(batch)
    assert out.queries.ids == ["a7", "b3"]
    assert out.queries.texts == ["send email", "weather forecast"]
    assert out.doc_idx is None and out.answers is None and out.fields == {"queries"}
    assert out.stats is batch.stats
    c = out.stats.counts
    assert c["rewrite_queries"] == 2 and c["rewrite_empty"] == 0
    assert c["llm_calls"] == 2 and c["llm_cache_hits"] == 0 and c["prompt_tokens"] > 0
    assert c["completion_tokens"] == 2 + 2
    assert out.stats.seconds["rewrite"] > 0
    assert QUERIES.texts == ["let my boss know I am running late", "will I need an umbrella in Oslo tomorrow"]
    # one greedy chat per query: the built-in system text, then the task and the "Capability:" cue
    assert len(llm.calls) == 2
    kind, messages = llm.calls[0]
    assert kind == "generate" and [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == TEMPLATES["capability"].system
    assert messages[1]["content"].startswith("Task: let my boss know I am running late\n")
    assert messages[1]["content"].endswith("\nCapability:")


def test_append_mode_keeps_the_original_text_first(tmp_path):
    out = run(rewriter(tmp_path))  # append is the default
    assert out.queries.ids == ["a7", "b3"]
    assert out.queries.texts == [
        "let my boss know I am running late send email",
        "will I need an umbrella in Oslo tomorrow weather forecast",
    ]


def test_plain_prompt_keywords_template_and_a_system_text(tmp_path):
    llm = scripted([{"match": "Keywords:$", "output": "email, message"}])
    out = run(rewriter(tmp_path, llm, template="keywords", chat=False, system="Be brief."), QUERIES[[0]])
    assert out.queries.texts == ["let my boss know I am running late email, message"]
    (kind, prompt), *_ = llm.calls
    assert prompt == "Be brief.\n\n" + TEMPLATES["keywords"].user.format(query=QUERIES.texts[0])


def test_user_template_has_no_system_message(tmp_path):
    llm = scripted([{"match": r"^user: Tool for \[let my boss", "output": "email"}])
    out = run(rewriter(tmp_path, llm, template="Tool for [{query}]? One line:", mode="replace"), QUERIES[[0]])
    assert out.queries.texts == ["email"]
    assert llm.calls[0][1] == [{"role": "user", "content": "Tool for [let my boss know I am running late]? One line:"}]


def test_bm25_after_the_rewrite_finds_what_only_the_rewrite_names(tmp_path):
    store = ArtifactStore(tmp_path)
    plain = BM25Retriever(top_k=3).fit(TOOLS, store).search(QUERIES)
    assert plain.ranked(0) == [] and plain.ranked(1) == []  # the tasks alone match no tool
    for mode in ("replace", "append"):
        pipe = (QueryRewriter(llm=scripted(), mode=mode) >> BM25Retriever(top_k=3)).fit(TOOLS, store)
        out = pipe.search(QUERIES)
        assert out.queries.ids == ["a7", "b3"]
        assert [d for d, _ in out.ranked(0)][:1] == ["t_mail"], mode
        assert [d for d, _ in out.ranked(1)][:1] == ["t_weather"], mode
        assert out.stats.counts["rewrite_queries"] == 2 and out.stats.counts["bm25_queries"] == 2


# -- answer clean-up ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw,clean",
    [
        ("Capability: send email.", "send email"),
        ('"send email"', "send email"),
        ("**Capability:** send email", "send email"),
        ("  capability:  'weather forecast'. ", "weather forecast"),
        ("Keywords: email, message", "email, message"),
        ("\nsend email\nmore text", "send email"),
        ("U.S. weather", "U.S. weather"),
        ("Capability:", ""),
        ("   ", ""),
    ],
)
def test_clean_rewrite(raw, clean):
    assert clean_rewrite(raw) == clean


def test_answer_is_cleaned_and_an_empty_one_falls_back(tmp_path):
    llm = scripted(
        [
            {"match": "Task: let my boss know", "output": "Capability: send email.\nNext task: something else"},
            {"match": "Task: will I need", "output": '"Capability:"'},
        ]
    )
    out = run(rewriter(tmp_path, llm, mode="replace"))
    assert out.queries.texts == ["send email", "will I need an umbrella in Oslo tomorrow"]
    assert out.stats.counts["rewrite_empty"] == 1 and out.stats.counts["rewrite_queries"] == 2
    out = run(rewriter(tmp_path / "b", scripted([], default="")))  # append mode: no trailing space
    assert out.queries.texts == QUERIES.texts and out.stats.counts["rewrite_empty"] == 2


# -- caches -------------------------------------------------------------------------------------------------------
def test_second_run_is_served_by_the_llm_call_cache(tmp_path):
    first = run(rewriter(tmp_path, mode="replace"))
    llm2 = scripted()  # the same model (config, hence fingerprint), a fresh stage over the same store
    again = run(rewriter(tmp_path, llm2, mode="replace"))
    assert again.queries.texts == first.queries.texts == ["send email", "weather forecast"]
    c = again.stats.counts
    assert c["llm_calls"] == 0 and c["llm_cache_hits"] == 2 and c["prompt_tokens"] == 0 and llm2.calls == []
    # the mode does not change the prompt: append is served by the same cached answers
    appended = run(rewriter(tmp_path, scripted(), mode="append"))
    assert appended.stats.counts["llm_calls"] == 0 and appended.queries.texts[0].endswith(" send email")
    # a query repeated in one batch is asked once
    dup = run(rewriter(tmp_path / "dup"), Queries(["x", "y"], [QUERIES.texts[0]] * 2))
    assert dup.stats.counts["llm_calls"] == 1 and dup.stats.counts["llm_cache_hits"] == 1


def test_stage_output_cache_keeps_the_rewritten_texts(tmp_path):
    store = ArtifactStore(tmp_path)
    pipe = (QueryRewriter(llm=scripted(), mode="replace") >> BM25Retriever(top_k=3)).fit(TOOLS, store)
    cache = StageCache()
    with cache.active():
        first = pipe.transform(Batch(QUERIES))
        second = pipe.transform(Batch(QUERIES))
        other = (QueryRewriter(llm=scripted(), mode="append") >> BM25Retriever(top_k=3)).fit(TOOLS, store)
        third = other.transform(Batch(QUERIES))
    assert second.queries.texts == first.queries.texts == ["send email", "weather forecast"]
    assert second.ranked(0) == first.ranked(0) and second.stats.counts["cache_hits:bm25"] == 1
    assert second.stats.counts["llm_calls"] == 0 and second.stats.counts["llm_cache_hits"] == 2
    # another rewrite config chains another key: the retriever after it runs again
    assert third.stats.counts.get("cache_hits:bm25", 0) == 0
    assert third.queries.texts[0] == "let my boss know I am running late send email"


# -- bad input ----------------------------------------------------------------------------------------------------
def test_bad_templates_and_params_name_their_path():
    with pytest.raises(ConfigError, match="template: unknown template 'capabilty'; did you mean 'capability'") as e:
        QueryRewriter(llm=scripted(), template="capabilty")
    assert e.value.path == "template"
    with pytest.raises(ConfigError, match=r"template: unknown field\(s\) \{task\}") as e:
        QueryRewriter(llm=scripted(), template="{query} for {task}")
    assert e.value.path == "template"
    with pytest.raises(ConfigError, match=r"template: the template has no \{query\}"):
        QueryRewriter(llm=scripted(), template="literal {{query}} braces only")
    with pytest.raises(ConfigError, match="template: malformed template"):
        QueryRewriter(llm=scripted(), template="Task: {query")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \{query.upper\}"):
        QueryRewriter(llm=scripted(), template="{query.upper}")
    with pytest.raises(ConfigError) as e:
        from_config({"type": "pipeline", "stages": [{"type": "rewrite", "template": "kewords"}, {"type": "bm25"}]})
    assert e.value.path == "stages[0].template" and "did you mean 'keywords'" in str(e.value)
    with pytest.raises(ConfigError, match="must be one of") as e:
        from_config({"type": "rewrite", "mode": "prepend"})
    assert e.value.path == "mode"
    with pytest.raises(ConfigError, match=">= 1") as e:
        from_config({"type": "rewrite", "max_new_tokens": 0})
    assert e.value.path == "max_new_tokens"
    with pytest.raises(ConfigError, match="did you mean 'template'") as e:
        from_config({"type": "rewrite", "templat": "keywords"})
    assert e.value.path == "templat"


def test_empty_queries_and_a_late_position_fail_before_any_llm_call(tmp_path):
    llm = scripted()
    st = rewriter(tmp_path, llm)
    with pytest.raises(StageError, match="rewrite: query 'b' is empty"):
        st.transform(Batch(Queries(["a", "b"], ["find a hotel", "   "])))
    with pytest.raises(ConfigError, match=r"stages\[1\].*'rewrite'.*already has \['candidates'\]; put it before"):
        from_config({"type": "pipeline", "stages": [{"type": "bm25"}, {"type": "rewrite"}]})
    retrieved = BM25Retriever(top_k=2).fit(TOOLS, ArtifactStore(tmp_path)).search(["send an email"])
    with pytest.raises(StageError, match="put it before the retriever"):
        st.transform(retrieved)
    assert llm.calls == []
    empty = st.transform(Batch(Queries([], [])))
    assert len(empty) == 0 and llm.calls == []


# -- configs ------------------------------------------------------------------------------------------------------
def test_config_round_trip_and_registry():
    assert resolve("rewrite") is QueryRewriter
    st = QueryRewriter(
        llm=scripted(), template="Tool: {query}", system="Short.", mode="replace", max_new_tokens=8, chat=False
    )
    assert from_config(st.to_config()) == st
    assert from_config(yaml.safe_load(yaml.safe_dump(st.to_config()))) == st
    default = QueryRewriter()
    assert default.mode == "append" and default.template == "capability" and default.max_new_tokens == 32
    assert default.chat is True and default.llm.type_name == "transformers"
    assert from_config(default.to_config()) == default
    spec = st.cache_spec()
    assert spec["template_version"] == 1 and "cache" not in json.loads(
        spec["config"]
    )  # the cache flag changes no output


def test_shipped_tools_rewrite_pipeline():
    p = load_pipeline("tools_rewrite")
    assert [s.type_name for s in p.stages] == ["rewrite", "rrf", "cutoff"]
    rw = p.stages[0]
    assert rw.template == "capability" and rw.mode == "append" and rw.chat is True
    assert rw.llm.type_name == "transformers" and rw.llm.model == "smollm2-135m-instruct" and rw.llm.device == "cpu"
    # everything after the rewrite is the tools pipeline as shipped
    assert p.stages[1:] == load_pipeline("tools").stages


# -- the packaged SmolLM2 -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_rewrites_toollens_tasks(smollm2, data_dir, tmp_path):
    from ragopt.data import load_dataset
    from ragopt.evaluation.run import sample_queries

    if not (data_dir / "toollens" / "corpus.jsonl").is_file():
        pytest.skip("toollens not in the shared data")
    ds = load_dataset(str(data_dir / "toollens"))
    queries = sample_queries(ds.queries_for("test"), 3, seed=0)
    store = ArtifactStore(tmp_path)
    kw = dict(llm=smollm2, mode="replace", max_new_tokens=16)
    out = QueryRewriter(**kw).fit(ds.corpus, store).transform(Batch(queries))
    c = out.stats.counts
    assert out.queries.ids == queries.ids
    assert all(isinstance(t, str) and t.strip() and "\n" not in t for t in out.queries.texts), out.queries.texts
    assert c["rewrite_queries"] == 3 and c["rewrite_empty"] == 0, out.queries.texts
    assert c["llm_calls"] == 3 and 0 < c["completion_tokens"] <= 3 * 16 and c["prompt_tokens"] > 0
    # a second run (a fresh stage, the same store) is served by the cache and gives the same texts
    again = QueryRewriter(**kw).fit(ds.corpus, store).transform(Batch(queries))
    assert again.queries.texts == out.queries.texts
    assert again.stats.counts["llm_calls"] == 0 and again.stats.counts["llm_cache_hits"] == 3
    # in front of BM25 (append mode: the same prompts and decoding, so still no model call) every task gets candidates
    pipe = (QueryRewriter(**{**kw, "mode": "append"}) >> BM25Retriever(top_k=10)).fit(ds.corpus, store)
    res = pipe.search(queries)
    assert res.stats.counts["llm_calls"] == 0
    assert [t.startswith(q) for t, q in zip(res.queries.texts, queries.texts)] == [True] * 3
    assert res.doc_idx is not None and all(len(res.ranked(r)) > 0 for r in range(3))
