"""Fuzzing study YAML files (hypothesis): any document gives a StudyConfig or a one-line ragopt error naming the
file, never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st

from ragopt.errors import RagoptError
from ragopt.tuning.study import StudyConfig
from tests.fuzzing import fuzz_settings

_DIR = Path(tempfile.mkdtemp(prefix="ragopt-fuzz-study-"))
KEYS = ["study", "dataset", "split", "pipeline", "space", "objective", "tuner", "budget", "holdout", "queries"]
KEYS += ["selection", "batch_size", "description", "stage_outputs"]
SUB = ["name", "path", "type", "low", "high", "levels", "log", "step", "choices", "values", "when", "group"]
SUB += ["metrics", "metric", "direction", "constraints", "max", "min", "seed", "trials", "fraction", "limit", "rule"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**66), 2**66),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(["ndcg@10", "cost.bm25_queries", "latency_ms", "stages.0.k1", "bm25", "tpe", "random", "float"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(SUB + KEYS), inner, max_size=5)
    ),
    max_leaves=30,
)


VALID = {
    "study": "s",
    "pipeline": "bm25",
    "space": [{"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0, "levels": 4}],
    "objective": {"metrics": ["ndcg@10"], "constraints": [{"metric": "latency_ms", "max": 50}]},
    "tuner": {"name": "tpe", "seed": 0},
    "budget": {"trials": 5, "timeout": 60},
    "holdout": {"fraction": 0.3, "seed": 0},
    "queries": {"limit": 10, "seed": 0},
}
# a valid study with some keys (or keys of its sections) replaced by anything
overrides = st.dictionaries(st.sampled_from(KEYS), values, max_size=3)
section_overrides = st.tuples(
    st.sampled_from(["objective", "tuner", "budget", "holdout", "queries"]),
    st.dictionaries(st.sampled_from(SUB), values, min_size=1, max_size=2),
)
space_overrides = st.dictionaries(st.sampled_from(SUB), values, min_size=1, max_size=3)


def _check(doc) -> None:
    path = _DIR / "study.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    try:
        StudyConfig.load(path)
    except RagoptError as e:
        assert "study.yaml" in str(e), f"the error does not name the file: {e}"
        assert "\n" not in str(e), f"the error is not one line: {e!r}"


pytestmark = pytest.mark.fuzz
SETTINGS = fuzz_settings(100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.one_of(values, st.dictionaries(st.sampled_from(KEYS), values, max_size=len(KEYS))))
def test_any_study_document_loads_or_fails_naming_the_file(doc):
    if isinstance(doc, dict):
        doc.setdefault("dataset", str(_DIR))
        doc.setdefault("pipeline", "bm25")
    _check(doc)


@SETTINGS
@given(overrides, section_overrides, space_overrides)
# found by `make fuzz`: a parameter path naming a key '\n' gave a two-line error (the key printed raw)
@example(top={}, section=("tuner", {"seed": 0}), space_item={"path": "\n"})
def test_a_valid_study_with_damaged_values_loads_or_fails_naming_the_file(top, section, space_item):
    doc = {**VALID, "dataset": str(_DIR), **top}
    name, over = section
    if isinstance(doc.get(name), dict):
        doc[name] = {**doc[name], **over}
    if isinstance(doc.get("space"), list) and doc["space"] and isinstance(doc["space"][0], dict):
        doc["space"] = [{**doc["space"][0], **space_item}]
    _check(doc)
