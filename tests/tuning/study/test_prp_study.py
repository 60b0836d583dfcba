"""A tuning study over the prp stage on real nq-open-oracle-dev queries and BM25 candidates, with a scripted LLM
that knows each query's gold passage (prefers it in either slot, no preference between two others). What follows
from the method, not from our figures: PRP puts the gold passage first exactly when it is within the reranked depth
(P@1 = BM25's hit rate at that depth, counted here from BM25's own ranking); comparisons per query match each
method's count; a pair asked in one trial is never paid again in a later one; the two objectives give a Pareto
front of quality against prompt tokens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("optuna")

import optuna

from ragopt.config import from_config
from ragopt.store import ArtifactStore
from ragopt.tuning.study import PipelineObjective, StudyConfig, run_study

ROOT = Path(__file__).resolve().parents[3]


def gold_oracle(ds, query_ids) -> dict:
    """Score rules: the passage whose text starts with a query's gold passage wins, in slot A or B."""
    qrels = ds.qrels("test")
    rules = []
    for q in query_ids:
        for doc_id, grade in qrels[q].items():
            if grade <= 0:
                continue
            words = ds.corpus.text(ds.corpus.index_of(doc_id), with_title=False).split()[:12]
            head = r"\s+".join(re.escape(w) for w in words)
            for slot, win, lose in (("A", "A", "B"), ("B", "B", "A")):
                match = rf'Passage {slot}: "{head}'
                rules += [
                    {"match": match, "continuation": win, "logprob": -0.05},
                    {"match": match, "continuation": lose, "logprob": -3.0},
                ]
    return {"type": "scripted", "name": "gold-oracle", "score_rules": rules}


@pytest.fixture()
def prp_study(data_dir):
    if not (data_dir / "nq-open-oracle-dev" / "corpus.jsonl").is_file():
        pytest.skip("nq-open-oracle-dev not in the shared data")
    from ragopt.data import load_dataset
    from ragopt.evaluation.run import sample_queries

    path = data_dir / "nq-open-oracle-dev"
    ds = load_dataset(str(path))
    ids = sample_queries(ds.queries_for("test"), 20, seed=0).ids
    d = {
        "study": "prp",
        "dataset": str(path),
        "queries": {"limit": 20, "seed": 0},
        "holdout": {"fraction": 0.3, "seed": 0},
        "pipeline": [
            {"type": "bm25", "top_k": 100},
            {
                "type": "prp",
                "llm": gold_oracle(ds, ids),
                "method": "sliding",
                "top_k": 1,
                "depth": 5,
                "with_title": False,
            },
        ],
        "space": [
            {"name": "method", "path": "stages.1.method", "choices": ["sliding", "allpair"]},
            {"name": "depth", "path": "stages.1.depth", "choices": [5, 20]},
        ],
        "objective": {"metrics": ["p@1", "cost.prp_prompt_tokens_per_query"]},
        "tuner": {"name": "grid_native", "seed": 0},
        "budget": {"trials": 4},
    }
    return ds, d


def test_prp_study_on_real_candidates(prp_study, tmp_path):
    ds, d = prp_study
    cfg = StudyConfig.from_dict(d)
    assert cfg.objective.directions == ["maximize", "minimize"]
    store = ArtifactStore(tmp_path / "store")
    res = run_study(cfg, storage=f"sqlite:///{tmp_path / 's.db'}", store=store, progress=False)
    assert res.n_complete == 4 and res.n_failed == 0
    trials = optuna.load_study(study_name="prp", storage=res.storage).trials
    by = {(t.params["method"], t.params["depth"]): t for t in trials}
    assert len(by) == 4

    # BM25's own ranking of the tuned queries: is the gold passage within the top 5 / 20?
    obj = PipelineObjective(cfg, store=store)
    tune = obj.tune_queries
    n = len(tune)
    bm25 = cfg.pipeline["stages"][0]
    base = from_config(dict(bm25)).fit(ds.corpus, store).search(tune)
    qrels = ds.qrels("test")
    gold_rank = []
    for r, q in enumerate(tune.ids):
        ranked = [ds.corpus.doc_ids[i] for i in base.doc_idx[r] if i >= 0]
        gold_rank.append(next((k for k, doc in enumerate(ranked) if qrels[q].get(doc, 0) > 0), None))
    hits = {k: sum(g is not None and g < k for g in gold_rank) / n for k in (5, 20)}
    assert hits[5] < hits[20]  # the deeper head holds more gold passages: the two depths differ
    for (method, depth), t in by.items():
        assert t.user_attrs["metrics"]["p@1"] == pytest.approx(hits[depth]), (method, depth)

    # comparisons per query follow each method; both orders make two prompts per comparison
    for (method, depth), t in by.items():
        c = t.user_attrs["costs"]
        want = depth * (depth - 1) // 2 if method == "allpair" else depth - 1  # sliding, one pass
        assert c["prp_comparisons"] == n * want, (method, depth)
        assert c["prp_prompts"] == 2 * c["prp_comparisons"]
    # a pair asked once is never paid again: all pairs of the top 20 cover every other trial's pairs
    order = [(t.params["method"], t.params["depth"]) for t in trials]
    after = order[order.index(("allpair", 20)) + 1 :]
    assert all(by[k].user_attrs["costs"].get("llm_calls", 0) == 0 for k in after)
    # over the study every ordered pair of the top 20 is paid exactly once (two label scores a prompt)
    assert sum(t.user_attrs["costs"].get("llm_calls", 0) for t in trials) == 2 * n * 20 * 19

    # the same configuration again (its output now served by the stage cache) reads the same costs, paying nothing
    t = by[("sliding", 20)]
    for _ in range(2):
        ev = obj.evaluate(obj.config_for(t.params))
        assert obj.metric_value(ev, "cost.prp_prompt_tokens_per_query") == pytest.approx(t.values[1])
        assert ev["costs"]["prp_comparisons"] == n * 19 and ev["costs"].get("llm_calls", 0) == 0
    assert obj.cache.hits >= 2  # BM25 and PRP at least once

    # Pareto front: sliding is the cheaper method at each depth, with the same P@1, so allpair is dominated
    front = {(p["params"]["method"], p["params"]["depth"]) for p in res.pareto}
    assert front == {("sliding", 5), ("sliding", 20)}


def test_bundled_prp_study_config():
    cfg = StudyConfig.load(ROOT / "configs" / "prp_pareto.yaml")
    assert cfg.objective.metrics == ["ndcg@10", "cost.prp_prompt_tokens_per_query"]
    assert cfg.objective.directions == ["maximize", "minimize"] and cfg.tuner == "nsga2"
    assert cfg.pipeline["stages"][1]["type"] == "prp"
    assert [p.name for p in cfg.space.params] == ["method", "depth", "top_k", "inconsistent"]
    # every method compares only passages within the largest depth: the study's prompts are bounded by allpair's
    depths = next(p for p in cfg.space.params if p.name == "depth").choices
    assert max(depths) == 10
