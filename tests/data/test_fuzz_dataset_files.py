"""Fuzzing dataset files (hypothesis): a BEIR folder whose corpus, queries, qrels or answers hold anything loads,
or fails with a one-line ragopt error naming the file, never another exception."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from ragopt.data import load_dataset
from ragopt.errors import RagoptError
from tests.fuzzing import fuzz_settings

pytestmark = pytest.mark.fuzz
SETTINGS = fuzz_settings(100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_ROOT = Path(tempfile.mkdtemp(prefix="ragopt-fuzz-data-"))

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10,
)
record_keys = st.sampled_from(["_id", "title", "text", "query-id", "answers", "id"])
records = st.one_of(
    json_values,
    st.dictionaries(record_keys, json_values, max_size=4),
    st.fixed_dictionaries({"_id": st.one_of(st.text(max_size=4), st.integers(0, 5))}, optional={"text": json_values}),
    st.fixed_dictionaries(
        {"query-id": st.one_of(json_values, st.sampled_from(["q1", "q2"]))}, optional={"answers": json_values}
    ),
)
json_lines = st.lists(
    st.one_of(records.map(json.dumps), st.text(max_size=20), st.just(""), st.just("{"), st.just("\ufeff{}")),
    max_size=6,
)
tsv_lines = st.lists(
    st.one_of(
        st.lists(
            st.one_of(st.text(max_size=5), st.sampled_from(["q1", "d1", "1", "0", "-1", "2.5", "x"])), max_size=5
        ).map("\t".join),
        st.text(max_size=15),
    ),
    max_size=6,
)

GOOD = {
    "corpus.jsonl": '{"_id": "d1", "title": "T", "text": "cats sit"}\n{"_id": "d2", "text": "dogs run"}\n',
    "queries.jsonl": '{"_id": "q1", "text": "cats"}\n{"_id": "q2", "text": "dogs"}\n',
    "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n",
    "answers.jsonl": '{"query-id": "q1", "answers": ["cats"]}\n',
}


def _exercise(folder: Path) -> None:
    """Everything a study or `ragopt eval` reads from a dataset."""
    ds = load_dataset(folder)
    ds.corpus, ds.queries, ds.qrels("test"), ds.queries_for("test"), ds.answers, ds.qrels_report("test")
    # what loads is usable: ids are non-blank strings, texts strings, answers lists of strings
    for docs in (ds.corpus, ds.queries):
        assert all(isinstance(i, str) and i.strip() for i in docs.ids), docs.ids
        assert all(isinstance(t, str) for t in docs.texts)
    assert all(type(g) is int for row in ds.qrels("test").values() for g in row.values())
    for qid, answers in (ds.answers or {}).items():
        assert isinstance(qid, str) and qid.strip() and all(isinstance(a, str) for a in answers), (qid, answers)


@pytest.mark.filterwarnings("ignore:.*dropped .* judgments:UserWarning")  # qrels naming unknown ids: warned
@SETTINGS
@given(
    st.sampled_from(sorted(GOOD)),
    st.one_of(json_lines.map("\n".join), tsv_lines.map(lambda ls: "\n".join(["query-id\tcorpus-id\tscore", *ls]))),
    st.sampled_from(["utf-8", "latin-1", "bytes"]),
)
def test_a_damaged_file_loads_or_fails_naming_it(which, content, encoding):
    folder = _ROOT / "ds"
    shutil.rmtree(folder, ignore_errors=True)
    for name, text in GOOD.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    raw = content.encode("utf-8", "surrogatepass") if encoding != "latin-1" else content.encode("latin-1", "replace")
    if encoding == "bytes":
        raw = raw[: len(raw) // 2] + b"\xff\xfe" + raw[len(raw) // 2 :]
    (folder / which).write_bytes(raw)
    try:
        _exercise(folder)
    except RagoptError as e:
        assert Path(which).name in str(e), f"the error does not name {which}: {e}"
        assert "\n" not in str(e), f"the error is not one line: {e!r}"
