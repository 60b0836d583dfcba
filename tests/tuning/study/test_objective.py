"""The trial objective: one fit-run-evaluate path (ragopt.evaluation.run), the seeded query split, and reuse
of fitted stages (fitted_state/restore), indexes and stage outputs across trials and processes."""

from __future__ import annotations

import pytest

from ragopt.data.splits import split_queries
from ragopt.evaluation.run import evaluate_pipeline
from ragopt.retrievers.bm25 import BM25Retriever
from ragopt.store import ArtifactStore
from ragopt.tuning.study import PipelineObjective, StudyConfig


@pytest.fixture
def work(monkeypatch):
    """Counts of the work reuse should save: BM25 ``fit`` calls, and BM25 indexes built vs found in the store."""
    counts = {"fit": 0, "built": 0, "found": 0}
    fit, get_or_create = BM25Retriever.fit, ArtifactStore.get_or_create

    def counting_fit(self, *a, **k):
        counts["fit"] += 1
        return fit(self, *a, **k)

    def counting_get_or_create(self, kind, spec, version, build, **k):
        if not kind.startswith("bm25"):  # indexes, not the stage-output cache's entries
            return get_or_create(self, kind, spec, version, build, **k)
        built = []

        def counting_build(tmp):
            built.append(tmp)
            return build(tmp)

        art = get_or_create(self, kind, spec, version, counting_build, **k)
        counts["built" if built else "found"] += 1
        return art

    monkeypatch.setattr(BM25Retriever, "fit", counting_fit)
    monkeypatch.setattr(ArtifactStore, "get_or_create", counting_get_or_create)
    return counts


def test_split_is_seeded_and_order_free():
    ids = [str(i) for i in range(100)]
    a = split_queries(ids, 0.3, 0)
    assert split_queries(list(reversed(ids)), 0.3, 0)[1] == sorted(a[1], key=lambda q: ids[::-1].index(q))
    assert len(a[1]) == 30 and not set(a[0]) & set(a[1])
    assert split_queries(ids, 0.3, 1)[1] != a[1]


def test_the_split_is_the_one_tuning_and_training_use():
    import ragopt.data
    import ragopt.tuning.study

    assert ragopt.tuning.study.split_queries is split_queries is ragopt.data.split_queries


@pytest.mark.parametrize("reuse", [True, False])
def test_objective_evaluates_as_evaluate_pipeline_does(study_dict, tmp_path, reuse):
    cfg = StudyConfig.from_dict(study_dict(holdout=None, objective={"metrics": ["ndcg@10", "recall@100"]}))
    obj = PipelineObjective(cfg, store=ArtifactStore(tmp_path / "a"), reuse=reuse)
    pipe_cfg = obj.config_for({"k1": 1.0, "b": 0.6})
    ev = obj.evaluate(pipe_cfg)
    report = evaluate_pipeline(
        obj.build(pipe_cfg),
        cfg.dataset,
        cfg.split,
        ["ndcg@10", "recall@100"],
        store=ArtifactStore(tmp_path / "b"),
        progress=False,
    )
    assert ev["metrics"] == report.metrics and ev["n_queries"] == report.n_queries == 35
    assert ev["per_query"] == report.per_query
    assert ev["costs"]["bm25_queries"] == 35 and set(ev["stage_seconds"]) >= {"0:bm25"}
    assert ev["latency_ms"] >= 0 and ev["total_s"] >= ev["fit_s"] + ev["search_s"] - 1e-3


def test_stage_reuse_gives_identical_values_without_repeating_work(study_dict, tmp_path, work):
    d = study_dict(
        pipeline=[{"type": "bm25", "top_k": 100}],
        space=[{"name": "top_k", "path": "stages.0.top_k", "choices": [100, 10, 50, 5]}],
    )
    cfg = StudyConfig.from_dict(d)
    reuse = PipelineObjective(cfg, store=ArtifactStore(tmp_path / "a"), reuse=True)
    fresh = PipelineObjective(cfg, store=ArtifactStore(tmp_path / "b"), reuse=False)
    for k in (100, 10, 50, 5):
        cfg_k = reuse.config_for({"top_k": k})
        before = dict(work)
        a = reuse.evaluate(cfg_k)
        # reuse: one fit and one index build in all; later trials neither fit nor open the store
        assert (work["fit"] - before["fit"], work["built"] - before["built"]) == ((1, 1) if k == 100 else (0, 0))
        assert work["found"] == before["found"]
        before = dict(work)
        b = fresh.evaluate(cfg_k)
        assert (work["fit"] - before["fit"], work["built"] - before["built"]) == (1, 1)  # no reuse: a full refit
        assert a["metrics"] == b["metrics"]
        if k != 100:  # only the first trial searched: the others were cut from the cached depth-100 run
            assert a["costs"].get("bm25_queries", 0) == 0 and a["costs"]["cache_hits:bm25"] == 1
        assert b["costs"]["bm25_queries"] == 25
    assert reuse.cache.hits == 3 and reuse.cache.misses == 1
    assert reuse.memo.restored == 3  # BM25 fitted once, its fitted state restored into the three others


def test_stage_outputs_persist_across_processes(study_dict, tmp_path, work):
    # "always": this BM25 run is cheaper to recompute than to write, so "auto" would keep it in memory only
    cfg = StudyConfig.from_dict(study_dict(stage_outputs="always"))
    first = PipelineObjective(cfg, store=ArtifactStore(tmp_path))
    c = first.config_for({"k1": 1.0, "b": 0.6})
    v1 = first.evaluate(c)
    assert work == {"fit": 1, "built": 1, "found": 0}
    second = PipelineObjective(cfg, store=ArtifactStore(tmp_path))  # a new worker: empty memory
    v2 = second.evaluate(c)
    assert v2["metrics"] == v1["metrics"] and v2["costs"].get("bm25_queries", 0) == 0
    assert v2["costs"]["cache_hits:bm25"] == 1 and second.cache.hits == 1 and second.cache.misses == 0
    assert work == {"fit": 2, "built": 1, "found": 1}  # the new worker loaded the index the first one built


def test_fit_reuse_restores_nested_stages(study_dict, tmp_path, work):
    """A fusion stage met again must come back with its inputs fitted, not only itself."""
    d = study_dict(
        pipeline=[{"type": "rrf", "inputs": [{"type": "bm25"}, {"type": "test_bag"}]}],
        space=[{"name": "k", "path": "stages.0.k", "choices": [10, 60]}],
    )
    obj = PipelineObjective(StudyConfig.from_dict(d), store=ArtifactStore(tmp_path))
    first = obj.evaluate(obj.config_for({"k": 60}))
    other = obj.evaluate(obj.config_for({"k": 10}))
    again = obj.evaluate(obj.config_for({"k": 60}))  # fitted state restored from the fit memo
    assert again["metrics"] == first["metrics"] and other["metrics"]["ndcg@10"] > 0
    assert obj.memo.restored == 1
    assert work == {"fit": 2, "built": 1, "found": 1}  # rrf's k is fit-relevant: k=10 fitted again (index found)
    obj.cache = type(obj.cache)(None)  # with the stage outputs forgotten, the restored inputs run again
    third = obj.evaluate(obj.config_for({"k": 60}))
    assert third["metrics"] == first["metrics"] and obj.memo.restored == 2
    assert third["costs"]["bm25_queries"] == 25
    assert work == {"fit": 2, "built": 1, "found": 1}  # still no third fit: the restored bm25 ran


def test_fit_reuse_restores_nested_components(tmp_path):
    """Dense retrievers keep their loaded vector index in a nested component: it must come back too."""
    from ragopt.config import walk
    from ragopt.retrievers.dense import DenseRetriever

    r = DenseRetriever()
    # what fitted_state() snapshots and restore() puts back: the retriever, its encoder and its index
    assert [id(c) for c in walk(r)] == [id(r), id(r.encoder), id(r.index)]
