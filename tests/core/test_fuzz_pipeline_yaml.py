"""Fuzzing pipeline YAML files (hypothesis): whatever a file holds, loading it gives a pipeline or a ragopt error
that names the file, never another exception (which the CLI would print as a traceback)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from ragopt.config import canonical_json
from ragopt.errors import RagoptError
from ragopt.pipeline import Stage
from ragopt.pipeline_io import load_pipeline
from tests.fuzzing import fuzz_settings

pytestmark = pytest.mark.fuzz
SETTINGS = fuzz_settings(100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="ragopt-fuzz-yaml-"))

KEYS = ["pipeline", "name", "description", "type", "stages", "inputs", "weights", "k1", "b", "top_k", "k", "method"]
KEYS += ["stemmer", "stopwords", "encoder", "index", "model", "scorer", "backend", "depth", "max_length", "x"]
TYPES = ["bm25", "rrf", "weighted", "cutoff", "pipeline", "dense", "chunker", "cross_encoder", "cur", "splade"]
TYPES += ["generate", "scripted", "faiss_flat", "sentence_transformer", "os.system", "nope", ""]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(TYPES),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=25,
)
stage = st.fixed_dictionaries({"type": st.sampled_from(TYPES)}, optional={k: values for k in KEYS[4:]})
documents = st.one_of(
    values,
    st.fixed_dictionaries({"pipeline": st.one_of(values, stage, st.lists(stage, max_size=4))}, optional={"x": values}),
)


def _load_or_error(path: Path) -> None:
    try:
        got = load_pipeline(path)
    except RagoptError as e:
        assert path.name in str(e), f"the error does not name the file: {e}"
        assert "\n" not in str(e), f"the error is not one line: {e!r}"
        return
    assert isinstance(got, Stage)
    canonical_json(got.to_config())  # what keys its artifacts and stage outputs: a loaded pipeline can be hashed


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 10**400])
def test_a_number_that_cannot_be_hashed_is_refused_at_load(value):
    # found by trying `ragopt eval --set stages.0.k1=.inf`: it passed `ge: 0`, then hashing the config raised
    # ValueError (not JSON compliant), printed as a traceback; 10**400 made float() overflow in the bounds check
    path = _DIR / "inf.yaml"
    path.write_text(yaml.safe_dump({"pipeline": [{"type": "bm25", "k1": value}]}), encoding="utf-8")
    with pytest.raises(RagoptError, match=r"inf\.yaml.*k1: expected a finite number"):
        load_pipeline(path)


@SETTINGS
@given(documents)
def test_any_yaml_document_loads_or_fails_naming_the_file(doc):
    path = _DIR / "fuzz_doc.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    _load_or_error(path)


VALID = (
    b"name: p\npipeline:\n  - type: rrf\n    k: 5\n    inputs:\n      - {type: bm25, k1: 1.2}\n"
    b"      - {type: bm25, b: 0.3}\n  - type: cutoff\n    k: 10\n"
)


@SETTINGS
@given(st.data())
def test_damaged_bytes_load_or_fail_naming_the_file(data):
    """A valid file with bytes inserted, deleted or replaced (encoding damage, stray tabs, NULs, cut lines)."""
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(st.sampled_from([0, 9, 10, 0x22, 0x3A, 0x5B, 0x7B, 0x26, 0x2A, 0x21, 0xFF, 0xC3]))
        if op == "insert":
            raw.insert(i, byte)
        elif i < len(raw):
            if op == "delete":
                del raw[i]
            else:
                raw[i] = byte
    path = _DIR / "fuzz_bytes.yaml"
    path.write_bytes(bytes(raw))
    _load_or_error(path)
