"""Pipelines as YAML: by name or path, round trip, and errors that name file, line and key."""

from __future__ import annotations

import pytest

from ragopt.errors import ConfigError
from ragopt.ops import Cutoff
from ragopt.pipeline_io import list_pipelines, load_pipeline, save_pipeline
from ragopt.retrievers.bm25 import BM25


def test_save_and_load_give_equal_objects(tmp_path):
    p = BM25(k1=1.1, b=0.6, stemmer=None) % 20
    path = save_pipeline(p, tmp_path / "mine.yaml", name="mine", description="test")
    q = load_pipeline(path)
    assert q == p
    assert q.stages[1] == Cutoff(k=20)
    assert "k1: 1.1" in path.read_text()


def test_saving_something_that_is_not_a_component_is_refused(tmp_path):
    # was: "'str' object has no attribute 'to_config'"
    with pytest.raises(ConfigError, match=r"^pipeline: save_pipeline takes a component, got str$"):
        save_pipeline("bm25", tmp_path / "x.yaml")
    assert not (tmp_path / "x.yaml").exists()


def test_shipped_pipelines_load_and_round_trip(tmp_path):
    names = list_pipelines()
    assert {"bm25", "bm25_pyserini"} <= set(names)
    for name in names:
        p = load_pipeline(name)
        again = load_pipeline(save_pipeline(p, tmp_path / f"{name}.yaml"))
        assert again == p, name


def test_name_lookup_through_env(tmp_path, monkeypatch):
    save_pipeline(BM25(top_k=7), tmp_path / "custom.yaml")
    monkeypatch.setenv("RAGOPT_PIPELINE_PATH", str(tmp_path))
    assert load_pipeline("custom") == BM25(top_k=7)


def test_unknown_name_lists_known_and_places():
    with pytest.raises(ConfigError, match="no pipeline named 'bm26'.*bm25.*looked in"):
        load_pipeline("bm26")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: pipeline file not found"):
        load_pipeline("nope.yaml")
    with pytest.raises(ConfigError, match=r": a folder, not a pipeline file$"):  # was "pipeline file not found"
        load_pipeline(tmp_path)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("pipeline:\n  - type: bm25\n    k1: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
        load_pipeline(f)


def test_unknown_keys_name_file_and_path(tmp_path):
    f = tmp_path / "typo.yaml"
    f.write_text("pipeline:\n  - type: bm25\n    k1: 0.9\n    stemer: english\n")
    with pytest.raises(ConfigError) as e:
        load_pipeline(f)
    assert "typo.yaml:pipeline.stages[0].stemer" in str(e.value)
    assert "did you mean 'stemmer'" in str(e.value)
    f.write_text("pipelin:\n  - type: bm25\n")
    with pytest.raises(ConfigError, match="missing 'pipeline' key"):
        load_pipeline(f)
    f.write_text("name: x\nowner: me\npipeline:\n  - type: bm25\n")
    with pytest.raises(ConfigError, match="typo.yaml:owner: unknown top-level key"):
        load_pipeline(f)


def test_tools_ce_is_the_tools_pipeline_fused_with_its_own_reranking():
    from ragopt.tuning.space import set_path

    tools, p = load_pipeline("tools"), load_pipeline("tools_ce")
    fusion = p.stages[0]
    assert fusion.type_name == "weighted" and fusion.normalize == "zscore" and fusion.weights is None
    first, reranked = fusion.inputs
    assert first.stages == tools.stages  # the same first stage as the service's default, on both sides
    assert reranked.stages[:-1] == tools.stages
    ce = reranked.stages[-1]
    assert ce.type_name == "cross_encoder" and ce.depth == 10 and ce.max_length == 128
    # the path the description tells users to override reaches that model
    cfg = p.to_config()
    set_path(cfg, "stages.0.inputs.1.stages.2.model", "/trained/ce")
    assert cfg["stages"][0]["inputs"][1]["stages"][2]["model"] == "/trained/ce"


def test_tools_onnx_is_the_tools_pipeline_with_an_int8_onnx_encoder():
    tools, fast = load_pipeline("tools").to_config(), load_pipeline("tools_onnx").to_config()
    encoder = fast["stages"][0]["inputs"][1]["encoder"]
    assert (encoder.pop("backend"), encoder.pop("precision")) == ("onnx", "int8")
    tools["stages"][0]["inputs"][1]["encoder"].pop("backend", None)
    tools["stages"][0]["inputs"][1]["encoder"].pop("precision", None)
    assert fast == tools  # nothing else differs
