"""Content-addressed artifact store: keys, atomic builds, manifests, corruption and mismatch errors."""

from __future__ import annotations

import json

import pytest

from ragopt.errors import ArtifactError
from ragopt.store import MANIFEST, ArtifactStore


def _writer(text: str, calls: list):
    def build(d):
        calls.append(d)
        (d / "data.txt").write_text(text)
        return {"note": "hello"}

    return build


def test_build_once_then_reuse(tmp_path):
    store = ArtifactStore(tmp_path)
    calls: list = []
    spec = {"k1": 0.9, "corpus": "abc"}
    a = store.get_or_create("thing", spec, 1, _writer("x", calls))
    b = store.get_or_create("thing", spec, 1, _writer("y", calls))
    assert a.created and not b.created and len(calls) == 1
    assert a.path == b.path and (b.path / "data.txt").read_text() == "x"
    m = json.loads((a.path / MANIFEST).read_text())
    assert m["spec"] == spec and m["format"] == 1 and m["note"] == "hello"
    assert m["files"]["data.txt"]["size"] == 1 and len(m["files"]["data.txt"]["sha256"]) == 64
    assert not [p for p in a.path.parent.iterdir() if p.name.startswith(".tmp")]


def test_key_depends_on_spec_kind_and_format(tmp_path):
    store = ArtifactStore(tmp_path)
    k = store.key("t", {"a": 1, "b": 2}, 1)
    assert k == store.key("t", {"b": 2, "a": 1}, 1)  # canonical: key order does not matter
    assert k != store.key("t", {"a": 1, "b": 3}, 1)
    assert k != store.key("u", {"a": 1, "b": 2}, 1)
    assert k != store.key("t", {"a": 1, "b": 2}, 2)


def test_failed_build_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)

    def boom(d):
        (d / "half.bin").write_bytes(b"123")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.get_or_create("thing", {"x": 1}, 1, boom)
    assert list((tmp_path / "thing").iterdir()) == []
    calls: list = []
    assert store.get_or_create("thing", {"x": 1}, 1, _writer("ok", calls)).created


def test_corrupt_artifact_is_reported_not_reused(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.get_or_create("thing", {"x": 1}, 1, _writer("abc", []))
    (art.path / "data.txt").write_text("abd")  # same size, other content
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        store.get_or_create("thing", {"x": 1}, 1, _writer("abc", []))
    (art.path / "data.txt").write_text("abcdef")
    with pytest.raises(ArtifactError, match="has 6 bytes, manifest says 3"):
        store.find("thing", {"x": 1}, 1)
    (art.path / "data.txt").unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        store.find("thing", {"x": 1}, 1)
    (art.path / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest.json"):
        store.find("thing", {"x": 1}, 1)


def test_rebuild_replaces_corrupt_artifact_atomically(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.get_or_create("thing", {"x": 1}, 1, _writer("abc", []))
    (art.path / "data.txt").write_text("zzz")
    new = store.get_or_create("thing", {"x": 1}, 1, _writer("fresh", []), rebuild=True)
    assert new.created and new.path == art.path
    assert (new.path / "data.txt").read_text() == "fresh"
    store.open(new.path, "thing", {"x": 1}, 1)  # verifies
    assert [p.name for p in (tmp_path / "thing").iterdir()] == [art.path.name]


def test_open_checks_kind_format_and_spec(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.get_or_create("thing", {"k1": 0.9, "corpus": "c1"}, 1, _writer("a", []))
    with pytest.raises(ArtifactError, match="format version 1, this ragopt reads version 2"):
        store.open(art.path, "thing", {"k1": 0.9, "corpus": "c1"}, 2)
    with pytest.raises(ArtifactError, match="is a 'thing', expected a 'other'"):
        store.open(art.path, "other")
    with pytest.raises(ArtifactError, match="k1: built with 0.9, wanted 1.2"):
        store.open(art.path, "thing", {"k1": 1.2, "corpus": "c1"}, 1)
    with pytest.raises(ArtifactError, match="not a ragopt artifact"):
        store.open(tmp_path, "thing")


def test_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGOPT_INDEX_DIR", str(tmp_path / "elsewhere"))
    assert ArtifactStore().root == tmp_path / "elsewhere"
    monkeypatch.delenv("RAGOPT_INDEX_DIR")
    assert str(ArtifactStore().root) == "indexes"


def test_a_root_that_is_a_file_is_refused_and_kept(tmp_path, capfd):
    # was: a NotADirectoryError traceback at the first artifact written under it
    root = tmp_path / "store"
    root.write_text("notes")
    with pytest.raises(ArtifactError, match=r"^artifact store .*/store is a file, not a folder \(--index-dir"):
        ArtifactStore(root)
    from ragopt.cli import main

    assert main(["search", "-d", "adi", "-q", "computer", "--index-dir", str(root)]) == 2
    assert (
        capfd.readouterr().err
        == f"ragopt: error: artifact store {root} is a file, not a folder (--index-dir, RAGOPT_INDEX_DIR)\n"
    )
    assert root.read_text() == "notes"


def test_list(tmp_path):
    store = ArtifactStore(tmp_path)
    store.get_or_create("a", {"x": 1}, 1, _writer("1", []))
    store.get_or_create("b", {"x": 1}, 1, _writer("1", []))
    assert sorted(a.manifest["kind"] for a in store.list()) == ["a", "b"]
    assert [a.manifest["kind"] for a in store.list("a")] == ["a"]


@pytest.mark.parametrize("rebuild", [False, True])
def test_another_process_publishing_first_is_not_an_error(tmp_path, monkeypatch, rebuild):
    """Two workers building the same artifact (say, the held-out run of the same best pipeline): the one whose
    rename comes second finds the other's finished folder in place and keeps it (the key names the content)."""
    import os

    import ragopt.store as store_mod

    store = ArtifactStore(tmp_path)
    spec = {"x": 1}
    if rebuild:  # an older copy exists and is being replaced by both
        store.get_or_create("thing", spec, 1, lambda d: (d / "v.txt").write_text("old") and None)
    real_rename = os.rename
    raced = []

    def rename(src, dst):
        src, dst = str(src), str(dst)
        if "/.tmp-" in src and not raced:  # just before our rename, the other worker publishes its copy
            raced.append(True)
            other = ArtifactStore(tmp_path)
            other.get_or_create("thing", spec, 1, lambda d: (d / "v.txt").write_text("theirs") and None, rebuild=True)
        return real_rename(src, dst)

    monkeypatch.setattr(store_mod.os, "rename", rename)
    art = store.get_or_create("thing", spec, 1, lambda d: (d / "v.txt").write_text("ours") and None, rebuild=True)
    assert raced and (art.path / "v.txt").read_text() == "theirs"
    store.open(art.path, "thing", spec, 1)  # a complete, checked artifact
    leftovers = [p.name for p in art.path.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    assert leftovers == []
