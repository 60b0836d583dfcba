"""registry.describe: what a config may say about a component."""

from __future__ import annotations

import pytest

from ragopt import registry
from ragopt.config import Component, param
from ragopt.errors import ConfigError
from ragopt.registry import describe, register, resolve


def test_describe_builtin():
    d = describe("bm25")
    cls = resolve("bm25")
    assert d["name"] == "bm25" and d["class"] == f"ragopt.retrievers.bm25:{cls.__qualname__}"
    assert d["summary"] == 'Okapi BM25 over the corpus text (``title + " " + text`` by default).'
    k1 = next(p for p in d["params"] if p["name"] == "k1")
    assert k1 == {"name": "k1", "default": 0.9, "required": False, "doc": "term-frequency saturation"}
    assert [p["name"] for p in d["params"]][:3] == ["backend", "k1", "b"]


def test_describe_required_factory_and_undocumented(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))  # the probe stays in this test

    @register("_describe_probe")
    class Probe(Component):
        """First paragraph,
        on two lines.

        More text."""

        needed: int = param(doc="must be given")
        items: list = param(default_factory=lambda: [1, 2], doc="from a factory")
        plain: str = "x"

    d = describe("_describe_probe")
    assert d["summary"] == "First paragraph, on two lines."
    assert d["class"] == f"{__name__}:test_describe_required_factory_and_undocumented.<locals>.Probe"
    assert d["params"] == [
        {"name": "needed", "default": None, "required": True, "doc": "must be given"},
        {"name": "items", "default": [1, 2], "required": False, "doc": "from a factory"},
        {"name": "plain", "default": "x", "required": False, "doc": ""},
    ]


def test_describe_unknown_name():
    with pytest.raises(ConfigError, match="unknown component type 'bm26'; did you mean 'bm25'"):
        describe("bm26")


def test_third_party_components_come_from_entry_points(monkeypatch, tmp_path):
    """A plugin package declares ``[project.entry-points."ragopt.components"] name = "module:Class"``: the
    name is listed, resolves lazily (the module is imported on first use), builds from a config and runs in
    a pipeline; names that are not declared are never imported."""
    import importlib.metadata
    import sys

    import numpy as np

    from ragopt.config import from_config
    from ragopt.types import Corpus, Queries

    plugin = tmp_path / "ragopt_fake_plugin.py"
    plugin.write_text(
        "import numpy as np\n"
        "from ragopt.config import param\n"
        "from ragopt.pipeline import Stage\n\n"
        "class Constant(Stage):\n"
        '    """Every document scores `value` (a third-party stage)."""\n'
        "    provides = frozenset({'candidates'})\n"
        "    value: float = param(1.0)\n\n"
        "    def transform(self, batch):\n"
        "        n, m = len(batch.queries), len(self.corpus)\n"
        "        idx = np.tile(np.arange(m, dtype=np.int64), (n, 1))\n"
        "        return batch.with_candidates(idx, np.full((n, m), self.value, np.float32), self.corpus)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points
    fake = importlib.metadata.EntryPoint("fake_constant", "ragopt_fake_plugin:Constant", "ragopt.components")

    def entry_points(**kw):
        if kw.get("group") == "ragopt.components":
            return importlib.metadata.EntryPoints([fake])
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_ENTRY_POINTS", None)
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    monkeypatch.delitem(sys.modules, "ragopt_fake_plugin", raising=False)

    assert "fake_constant" in registry.available()
    assert "ragopt_fake_plugin" not in sys.modules  # listed without importing it
    stage = from_config({"type": "fake_constant", "value": 2.5})
    assert type(stage).__module__ == "ragopt_fake_plugin" and stage.to_config() == {
        "type": "fake_constant",
        "value": 2.5,
    }
    assert describe("fake_constant")["summary"] == "Every document scores `value` (a third-party stage)."
    with pytest.raises(ConfigError, match=r"x\.value"):
        from_config({"type": "fake_constant", "value": "high"}, path="x")
    stage.fit(Corpus(["d1", "d2"], ["a", "b"]))
    from ragopt.types import Batch

    out = stage.transform(Batch(Queries(["q"], ["a"])))
    assert out.doc_idx.shape == (1, 2) and np.all(out.scores == 2.5)
    with pytest.raises(ConfigError, match="unknown component type 'fake_constan'; did you mean 'fake_constant'"):
        resolve("fake_constan")


def test_an_entry_point_that_is_not_a_component_is_refused(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.entry_points
    evil = importlib.metadata.EntryPoint("evil", "os:system", "ragopt.components")
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda **kw: importlib.metadata.EntryPoints([evil]) if kw.get("group") == "ragopt.components" else real(**kw),
    )
    monkeypatch.setattr(registry, "_ENTRY_POINTS", None)
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    with pytest.raises(ConfigError, match="evil.*not a ragopt component"):
        resolve("evil")
