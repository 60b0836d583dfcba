"""fit_pipeline / run_pipeline / evaluate_pipeline: the one fit -> run -> evaluate path."""

from __future__ import annotations

import pytest

from ragopt.config import from_config
from ragopt.data import load_dataset
from ragopt.errors import StageError
from ragopt.evaluation.metrics import DEFAULT_METRICS as METRICS_DEFAULT
from ragopt.evaluation.run import DEFAULT_METRICS, evaluate_pipeline, fit_pipeline, run_pipeline
from ragopt.store import ArtifactStore
from ragopt.types import Queries


def _bm25(**params):
    return from_config({"type": "bm25", **params})


def _fused():
    return from_config({"type": "rrf", "inputs": [{"type": "bm25"}, {"type": "bm25", "k1": 1.5}]})


def test_one_default_metrics():
    assert DEFAULT_METRICS is METRICS_DEFAULT


def test_fit_pipeline_reports_nested_artifacts(data_dir, tmp_path):
    store = ArtifactStore(tmp_path)
    pipe = _fused()
    fit = fit_pipeline(pipe, data_dir / "adi", store)  # a Path is loaded like a name
    assert (fit.dataset, fit.n_docs) == ("adi", 82)
    assert fit.fingerprint == load_dataset(data_dir / "adi").corpus.fingerprint
    assert [(a["kind"], a["created"]) for a in fit.artifacts] == [("bm25-bm25s", True), ("bm25-bm25s", True)]
    again = fit_pipeline(_fused(), str(data_dir / "adi"), store)
    assert [a["created"] for a in again.artifacts] == [False, False]
    assert set(again.to_dict()) == {"dataset", "n_docs", "fingerprint", "artifacts", "seconds"}


def test_run_pipeline_on_given_queries(data_dir, tmp_path):
    store = ArtifactStore(tmp_path)
    ds = load_dataset(data_dir / "adi")
    batch = run_pipeline(_bm25(top_k=5), ds, store=store, queries=Queries(["x", "y"], ["indexing", "retrieval"]))
    assert batch.queries.ids == ["x", "y"] and [len(batch.ranked(i)) for i in range(2)] == [5, 5]
    judged = run_pipeline(_bm25(top_k=5), ds, store=store)
    assert len(judged) == 35
    with pytest.raises(StageError, match="must start from queries"):
        run_pipeline(from_config({"type": "cutoff", "k": 3}), ds, store=store)


def test_evaluate_pipeline_artifacts_come_from_the_fit(data_dir, tmp_path, reference_bm25):
    rep = evaluate_pipeline(_bm25(), str(data_dir / "adi"), metrics=["ndcg@10"], store=ArtifactStore(tmp_path))
    # against an independent BM25 + trec_eval computation (tests/conftest.py): 0.4802 both; float ties only
    assert rep.metrics["ndcg@10"] == pytest.approx(reference_bm25(data_dir / "adi", 0.9, 0.4), abs=1e-4)
    assert [a["created"] for a in rep.artifacts] == [True]
    assert {"load_s", "fit_s", "search_s", "evaluate_s", "total_s", "qps"} == set(rep.timings)


def test_metrics_given_as_one_name_or_none_at_all(data_dir, tmp_path):
    from ragopt.errors import ConfigError

    adi, store = data_dir / "adi", ArtifactStore(tmp_path)
    # one name as a string was read letter by letter ("unknown metric 'n'"); an empty list reported nothing
    one = evaluate_pipeline(_bm25(), adi, metrics="ndcg@10", store=store)
    assert list(one.metrics) == ["ndcg@10"]
    assert (
        one.metrics["ndcg@10"] == evaluate_pipeline(_bm25(), adi, metrics=["ndcg@10"], store=store).metrics["ndcg@10"]
    )
    with pytest.raises(ConfigError, match=r"^metrics: no metrics requested$"):
        evaluate_pipeline(_bm25(), adi, metrics=[], store=store)
    with pytest.raises(ConfigError, match=r"^metrics: unknown metric 'ndcg@x'"):  # the location once
        evaluate_pipeline(_bm25(), adi, metrics=["ndcg@x"], store=store)
