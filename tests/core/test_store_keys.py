"""Artifact keys are stable across releases (a changed key silently rebuilds every artifact in every store), and
``find`` refuses an artifact whose manifest says it is something else. Added for surviving mutants of
``ArtifactStore.key`` and ``ArtifactStore.find`` (benchmarks/MUTATION.md)."""

from __future__ import annotations

import json

import pytest

from ragopt.errors import ArtifactError
from ragopt.store import MANIFEST, ArtifactStore


def test_keys_are_pinned():
    # sha256 of canonical JSON {"format", "kind", "spec"}, first 24 hex digits: changing this breaks every store
    assert ArtifactStore.key("bm25", {"k1": 0.9, "b": 0.4}, 1) == "1c7465a4a24fab479bcb2ca9"
    assert ArtifactStore.key("embeddings", {"encoder": {"model": "m"}, "corpus": "c"}, 2) == "bcf7e0b21dfb3b124d72cb72"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kind", "other", "is a 'other', expected a 'thing'"),
        ("format", 9, "format version 9"),
        ("spec", {"v": 2}, "built for another configuration"),
    ],
)
def test_find_refuses_an_artifact_whose_manifest_disagrees(tmp_path, field, value, message):
    store = ArtifactStore(tmp_path)
    art = store.get_or_create("thing", {"v": 1}, 1, lambda d: (d / "x.txt").write_text("x") and None)
    manifest = json.loads((art.path / MANIFEST).read_text())
    (art.path / MANIFEST).write_text(json.dumps({**manifest, field: value}))
    with pytest.raises(ArtifactError, match=message):
        store.find("thing", {"v": 1}, 1)
