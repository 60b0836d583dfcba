"""Fuzzing artifact manifests (hypothesis): whatever ``manifest.json`` holds (any bytes, any JSON, a real manifest
with fields damaged), opening, finding, reusing and listing artifacts either works or raises a one-line
ArtifactError naming the artifact's folder, never another exception; the store is only read (nothing is
written, nothing removed), and a manifest whose files do not match is never trusted."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st

from ragopt._hashing import sha256_file
from ragopt.errors import ArtifactError
from ragopt.store import MANIFEST, ArtifactStore
from tests.fuzzing import fuzz_settings

pytestmark = pytest.mark.fuzz
SETTINGS = fuzz_settings(80, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
_BASE = Path(tempfile.mkdtemp(prefix="ragopt-fuzz-manifest-"))
SPEC, KIND, FORMAT = {"k1": 0.9, "corpus": "abc"}, "thing", 3


def _fresh() -> tuple[ArtifactStore, Path, dict]:
    root = _BASE / "store"
    shutil.rmtree(root, ignore_errors=True)
    store = ArtifactStore(root)
    art = store.get_or_create(KIND, SPEC, FORMAT, lambda d: np.save(d / "vectors.npy", np.arange(6.0).reshape(2, 3)))
    return store, art.path, json.loads((art.path / MANIFEST).read_text())


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(allow_nan=False),
        st.text(max_size=12),
        st.sampled_from(["vectors.npy", "../vectors.npy", "/etc/hostname", "", KIND, "sha256"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
FIELDS = ["kind", "format", "spec", "files", "key", "ragopt_version", "created_at", "build_seconds"]
file_entry = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"size": json_values, "sha256": json_values}),
)
damaged = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),  # top-level fields replaced
    st.fixed_dictionaries({"files": st.dictionaries(json_values.filter(lambda v: isinstance(v, str)), file_entry)}),
    st.fixed_dictionaries({"files": st.fixed_dictionaries({"vectors.npy": file_entry})}),
)


def _exercise(store: ArtifactStore, path: Path) -> None:
    before = _tree(store.root)
    for call in (
        lambda: store.open(path),
        lambda: store.open(path, KIND, SPEC, FORMAT),
        lambda: store.find(KIND, SPEC, FORMAT),
        lambda: store.get_or_create(KIND, SPEC, FORMAT, lambda d: None),
    ):
        try:
            art = call()
        except ArtifactError as e:
            assert str(path) in str(e), f"the error does not name the artifact: {e}"
            assert "\n" not in str(e), f"the error is not one line: {e!r}"
        else:  # trusted: then its files are what a real manifest of this artifact lists
            assert art.path == path
            assert np.load(art.file("vectors.npy"), allow_pickle=False).shape == (2, 3)
    listed = store.list()
    assert all(a.path == path for a in listed)
    assert _tree(store.root) == before  # reading never writes or removes anything


@SETTINGS
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_manifest_bytes_open_or_fail_naming_the_artifact(raw):
    store, path, _ = _fresh()
    (path / MANIFEST).write_bytes(raw)
    _exercise(store, path)


@SETTINGS
@given(damaged)
@example({"spec": {"\n": False}})  # found by random runs: a key holding a newline broke the error's line,
@example({"spec": float("inf")})  # and Infinity (which json reads) escaped as a ValueError
@example({"format": "3\nrebuild"})
def test_a_real_manifest_with_damaged_fields_opens_or_fails_naming_the_artifact(over):
    store, path, manifest = _fresh()
    (path / MANIFEST).write_text(json.dumps({**manifest, **over}), encoding="utf-8")
    _exercise(store, path)


@fuzz_settings(40, SETTINGS)
@given(
    st.dictionaries(st.sampled_from(["depth", "corpus", "stage", "kind", "format", "spec"]), json_values, max_size=3)
)
def test_a_stage_output_with_a_damaged_manifest_is_recomputed_or_reused_never_a_crash(over):
    from ragopt import BM25
    from ragopt.cache import StageCache
    from ragopt.types import Batch, Corpus, Queries

    root = _BASE / "stage-store"
    shutil.rmtree(root, ignore_errors=True)
    store = ArtifactStore(root)
    stage = BM25().fit(Corpus(["a", "b", "c"], ["red apple", "green apple", "red car"]))
    queries = Queries(["q1", "q2"], ["red", "apple"])
    with StageCache(store, persist="always").active() as cache:
        want = cache.run(stage, Batch(queries))
    (mpath,) = root.glob("stage-output/*/" + MANIFEST)
    mpath.write_text(json.dumps({**json.loads(mpath.read_text()), **over}), encoding="utf-8")
    with StageCache(store, persist="always").active() as cache:  # a new process: nothing in memory
        got = cache.run(stage, Batch(queries))
        assert cache.hits + cache.misses == 1
    np.testing.assert_array_equal(got.doc_idx, want.doc_idx)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_a_manifest_cannot_vouch_for_files_outside_the_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.get_or_create(KIND, SPEC, FORMAT, lambda d: (d / "a.txt").write_text("a") and None)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not part of the artifact")
    manifest = json.loads((art.path / MANIFEST).read_text())
    for name in ("../../elsewhere.txt", str(outside)):
        entry = {"size": outside.stat().st_size, "sha256": sha256_file(outside)}
        (art.path / MANIFEST).write_text(
            json.dumps({**manifest, "files": {"a.txt": manifest["files"]["a.txt"], name: entry}})
        )
        with pytest.raises(ArtifactError, match=r"outside the artifact"):
            store.open(art.path)
