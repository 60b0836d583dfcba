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
