"""Dataset loading: real BEIR-layout data from ../shared/data, validation errors, qrels filtering, resolution."""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest

from ragopt.data import Dataset, dataset_search_path, load_corpus, load_dataset, load_qrels, resolve_dataset
from ragopt.errors import DataError, DatasetNotFoundError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def shared(name: str) -> Path:
    path = SHARED / name
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"shared dataset {name!r} not found at {path.resolve()} (see GUIDE.md section 3)")
    return path


def make_dataset(root: Path, docs=None, queries=None, qrels: str | None = None, name: str = "toy") -> Path:
    """Write a small BEIR-layout dataset and return its folder."""
    d = root / name
    (d / "qrels").mkdir(parents=True)
    docs = (
        docs
        if docs is not None
        else [
            {"_id": "d1", "title": "T1", "text": "alpha"},
            {"_id": "d2", "title": "", "text": "beta"},
            {"_id": 3, "text": "gamma"},
        ]
    )
    queries = (
        queries
        if queries is not None
        else [{"_id": "q1", "text": "alpha?"}, {"_id": "q2", "text": "beta?"}, {"_id": "q3", "text": "unjudged"}]
    )
    (d / "corpus.jsonl").write_text("".join(json.dumps(o) + "\n" for o in docs))
    (d / "queries.jsonl").write_text("".join(json.dumps(o) + "\n" for o in queries))
    (d / "qrels" / "test.tsv").write_text(
        qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq2\td2\t1\nq1\td1\t2\nq1\t3\t0\n"
    )
    return d


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGOPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RAGOPT_DATA_PATH", raising=False)
    monkeypatch.delenv("RAGOPT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


# --- real data ------------------------------------------------------------------------------------------


def test_adi_counts():
    ds = load_dataset(shared("adi"))
    assert ds.name == "adi"
    assert len(ds.corpus) == 82 and len(ds.queries) == 35
    assert ds.corpus.name == "adi"
    assert ds.splits == ["test"]
    assert len(ds.queries_for("test")) == 35
    assert ds.qrels_report("test")["unknown_query_ids"] == 0
    assert ds.answers is None and ds.tools is None
    assert "adi" in repr(ds)


def test_scifact_counts():
    path = shared("scifact")
    corpus = load_corpus(path / "corpus.jsonl")
    assert len(corpus) == 5183  # the data README's count
    ds = Dataset(path)
    assert len(ds.corpus) == 5183
    test_q = ds.queries_for("test")
    assert len(test_q) == 300
    qrels = ds.qrels("test")
    assert set(test_q.ids) == set(qrels)
    assert test_q.ids == [q for q in ds.queries.ids if q in qrels]  # file order
    assert ds.qrels("test") is qrels  # cached


def test_cranfield_empty_docs_kept_and_counted():
    ds = load_dataset(shared("cranfield"))
    assert len(ds.corpus) == 1400
    assert ds.corpus_stats["n_empty"] == 2
    assert ds.corpus_stats["n_empty_text"] == 2
    assert "471" in ds.corpus and ds.corpus.text(ds.corpus.index_of("471")) == ""


def test_metatool_splits_and_tools():
    ds = load_dataset(shared("metatool-toole"))
    assert "multi_tool" in ds.splits and "test" in ds.splits
    assert len(ds.queries) == 21041
    assert len(ds.tools) == len(ds.corpus) == 199
    assert 0 < len(ds.queries_for("multi_tool")) < len(ds.queries_for("test"))


def test_nq_answers():
    ds = load_dataset(shared("nq-open-oracle-dev"))
    assert len(ds.answers) == 1621
    assert all(isinstance(a, list) and a for a in ds.answers.values())


def test_fingerprint_stable_and_content_sensitive(tmp_path):
    src = shared("adi")
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(src, a)
    shutil.copytree(src, b)
    fp = Dataset(a).fingerprint
    assert Dataset(a).fingerprint == fp == Dataset(b).fingerprint
    lines = (b / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    obj = json.loads(lines[10])
    obj["text"] += " changed"
    lines[10] = json.dumps(obj) + "\n"
    (b / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
    assert Dataset(b).fingerprint != fp


# --- synthetic datasets ---------------------------------------------------------------------------------


def test_toy_dataset(tmp_path):
    ds = Dataset(make_dataset(tmp_path))
    assert ds.corpus.ids == ["d1", "d2", "3"]  # ids are str(_id)
    assert ds.corpus.titles == ["T1", "", ""]
    assert ds.qrels() == {"q2": {"d2": 1}, "q1": {"d1": 2, "3": 0}}
    assert ds.queries_for().ids == ["q1", "q2"]  # queries.jsonl order, unjudged q3 left out
    assert ds.queries.ids == ["q1", "q2", "q3"]


def test_qrels_without_header_and_trec_form(tmp_path):
    d = make_dataset(tmp_path, qrels="q1\td1\t1\nq2 0 d2 1\n")
    assert Dataset(d).qrels() == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_qrels_malformed_line(tmp_path):
    d = make_dataset(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\n")
    with pytest.raises(DataError, match=r"test\.tsv:3:"):
        Dataset(d).qrels()
    d2 = make_dataset(tmp_path, qrels="q1\td1\t1\nq2\td2\tyes\n", name="toy2")
    with pytest.raises(DataError, match=r"test\.tsv:2: score 'yes'"):
        Dataset(d2).qrels()


def test_qrels_grades_are_integers_and_a_pair_is_judged_once(tmp_path):
    # before: 2.5 was cut to 2 and a pair judged 1 then 2 kept the 2, both silently (the TREC reader refused both)
    d = make_dataset(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t2.5\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: score '2\.5' is not an integer relevance grade"):
        Dataset(d).qrels()
    d = make_dataset(tmp_path, qrels="q1\td1\t4294967296\n", name="huge")  # 2**32: trec_eval read it as 0
    with pytest.raises(
        DataError, match=r"test\.tsv:1: score '4294967296' is outside the grades -2147483648\.\.1000000"
    ):
        Dataset(d).qrels()
    d = make_dataset(tmp_path, qrels="q1\td1\t1\nq2\td2\t1\nq1\td1\t2\n", name="conflict")
    with pytest.raises(DataError, match=r"test\.tsv:3: query 'q1', document 'd1' judged 2 here and 1 on line 1"):
        Dataset(d).qrels()
    d = make_dataset(tmp_path, qrels="q1\td1\t1.0\nq2\td2\t1\nq1\td1\t1\n", name="repeat")
    q, report = load_qrels(d / "qrels" / "test.tsv")
    assert q == {"q1": {"d1": 1}, "q2": {"d2": 1}}  # 1.0 is the grade 1; the repeat is read once
    assert report["n_pairs"] == report["n_kept"] == 2


def test_qrels_unknown_ids_dropped_counted_warned(tmp_path):
    d = make_dataset(
        tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nqX\td1\t1\nqY\td1\t1\nq2\tdX\t1\nqX\tdZ\t1\n"
    )
    ds = Dataset(d)
    with pytest.warns(UserWarning, match=r"test\.tsv: dropped 4 of 5 judgments.*2 unknown query ids.*2 unknown doc"):
        qrels = ds.qrels("test")
    assert qrels == {"q1": {"d1": 1}}
    rep = ds.qrels_report("test")
    assert rep["n_pairs"] == 5 and rep["n_dropped"] == 4
    assert rep["unknown_query_ids"] == 2 and rep["unknown_doc_ids"] == 2
    assert rep["examples"][0]["query_id"] == "qX" and rep["examples"][0]["line"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cached: no second warning
        ds.qrels("test")
    # the standalone loader filters only what it is told about
    q, r = load_qrels(d / "qrels" / "test.tsv")
    assert r["n_dropped"] == 0 and len(q) == 4


def test_missing_id(tmp_path):
    d = make_dataset(tmp_path, docs=[{"_id": "a", "text": "x"}, {"_id": "b", "text": "y"}, {"text": "no id"}])
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: .*_id"):
        Dataset(d).corpus


def test_duplicate_id(tmp_path):
    d = make_dataset(tmp_path, docs=[{"_id": "a", "text": "x"}, {"_id": "b"}, {"_id": "a", "text": "z"}])
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: duplicate _id 'a' \(first on line 1\)"):
        Dataset(d).corpus
    d2 = make_dataset(tmp_path, queries=[{"_id": 1, "text": "x"}, {"_id": "1", "text": "y"}], name="toy2")
    with pytest.raises(DataError, match=r"queries\.jsonl:2: duplicate"):
        Dataset(d2).queries


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"_id": None, "text": "x"}, r'corpus\.jsonl:2: corpus "_id" must be a string or an integer, got null'),
        ({"_id": 1.0, "text": "x"}, r'corpus\.jsonl:2: corpus "_id" must be a string or an integer, got a float'),
        ({"_id": True, "text": "x"}, r'"_id" must be a string or an integer, got a boolean'),
        ({"_id": ["b"], "text": "x"}, r'"_id" must be a string or an integer, got a list'),
        ({"_id": " ", "text": "x"}, r'corpus\.jsonl:2: corpus "_id" is empty'),
        ({"_id": "b", "text": {"en": "x"}}, r'corpus\.jsonl:2: corpus "text" must be a string, got an object'),
        ({"_id": "b", "title": False}, r'corpus\.jsonl:2: corpus "title" must be a string, got a boolean'),
    ],
)
def test_an_id_or_text_that_is_not_one_fails_naming_file_and_line(tmp_path, record, message):
    # before, str() made them ids 'None', '1.0', 'True', "['b']" (which no qrels line names) and texts "{'en': 'x'}"
    d = make_dataset(tmp_path, docs=[{"_id": "a", "text": "x"}, record])
    with pytest.raises(DataError, match=message):
        Dataset(d).corpus


def test_numbers_are_written_out_and_null_text_is_empty(tmp_path):
    d = make_dataset(tmp_path, docs=[{"_id": 7, "title": 1984, "text": None}, {"_id": "b", "text": 2.5}])
    corpus = Dataset(d).corpus
    assert corpus.ids == ["7", "b"] and corpus.titles == ["1984", ""] and corpus.texts == ["", "2.5"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"query-id": "q1", "answers": 5}, r'answers\.jsonl:2: "answers" must be a list of strings.*got 5'),
        ({"query-id": "q1", "answers": None}, r'"answers" must be a list of strings.*got None'),
        ({"query-id": "q1", "answers": ["x", None]}, r'"answers" must be a list of strings'),
        (
            {"query-id": "q1", "answers": [{"a": 1}]},
            r'answers\.jsonl:2: each of "answers" must be a string, got an obj',
        ),
        ({"query-id": None, "answers": ["x"]}, r'answers\.jsonl:2: answer "query-id" must be a string or an integer'),
        ({"query-id": "q2", "answers": ["y"]}, r"answers\.jsonl:2: a second answer record for query 'q2' \(first on"),
    ],
)
def test_bad_answer_records_fail_naming_file_and_line(tmp_path, line, message):
    # before: an int or null list crashed with TypeError, a dict gave its keys, a null query id became 'None'
    d = make_dataset(tmp_path)
    rows = [{"query-id": "q2", "answers": ["b"]}, line]
    (d / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match=message):
        Dataset(d).answers
    rows[1] = {"query-id": 1, "answers": ["x", 3]}  # integer id and number answer are written out
    (d / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert Dataset(d).answers == {"q2": ["b"], "1": ["x", "3"]}


def test_empty_corpus(tmp_path):
    d = make_dataset(tmp_path, docs=[])
    with pytest.raises(DataError, match=r"corpus .*corpus\.jsonl is empty"):
        Dataset(d).corpus


def test_malformed_corpus_line(tmp_path):
    d = make_dataset(tmp_path)
    with open(d / "corpus.jsonl", "a") as f:
        f.write("{oops\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:4: invalid JSON"):
        Dataset(d).corpus


def test_missing_corpus_file(tmp_path):
    d = make_dataset(tmp_path)
    (d / "corpus.jsonl").unlink()
    with pytest.raises(DataError, match="corpus.jsonl"):
        load_dataset(d)
    with pytest.raises(DataError, match="corpus.jsonl"):
        Dataset(d)


def test_missing_split_lists_available(tmp_path):
    d = make_dataset(tmp_path)
    (d / "qrels" / "dev.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(DataError, match=r"no split 'train'.*available splits: dev, test"):
        Dataset(d).qrels("train")


# --- resolution -----------------------------------------------------------------------------------------


def test_load_by_name_through_data_path(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    make_dataset(root, name="toyset")
    monkeypatch.setenv("RAGOPT_DATA_PATH", os.pathsep.join([str(tmp_path / "empty"), str(root)]))
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("toyset")
    assert ds.name == "toyset" and ds.path == root.resolve() / "toyset"
    assert len(ds.corpus) == 3 and ds.corpus.name == "toyset"


def test_search_path_order_and_dedup(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("RAGOPT_DATA_PATH", os.pathsep.join([str(a), str(b), str(a)]))
    monkeypatch.chdir(tmp_path)
    path = dataset_search_path()
    assert path[:2] == [a.resolve(), b.resolve()]
    assert len(path) == len(set(path))
    assert path[-1] == (tmp_path / "cache" / "datasets").resolve()
    assert (tmp_path / ".." / "shared" / "data").resolve() in path


def test_unknown_name_offline_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGOPT_DATA_PATH", str(tmp_path / "here"))
    monkeypatch.setenv("RAGOPT_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError) as e:
        resolve_dataset("no-such-dataset")
    msg = str(e.value)
    for d in dataset_search_path():
        assert str(d / "no-such-dataset") in msg
    assert isinstance(e.value, FileNotFoundError)


def test_a_path_that_is_a_file_or_missing_is_named_once(tmp_path, monkeypatch):
    # was: "looked in:" the same absolute path once per search folder, then "'' is not a standard BEIR dataset"
    monkeypatch.setenv("RAGOPT_DATA_PATH", str(tmp_path / "here"))
    monkeypatch.setenv("RAGOPT_OFFLINE", "1")
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    with pytest.raises(DataError, match=r"^" + re.escape(f"{tmp_path / 'corpus.jsonl'}: a file, not a dataset folder")):
        resolve_dataset(tmp_path / "corpus.jsonl")
    with pytest.raises(DatasetNotFoundError) as e:
        resolve_dataset(tmp_path / "nope")
    assert str(e.value) == f"dataset folder {tmp_path / 'nope'} not found"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"^dataset folder nope not found$"):
        resolve_dataset("./nope")
    assert resolve_dataset(str(tmp_path)) == tmp_path  # a folder holding corpus.jsonl is taken as it is


@pytest.mark.parametrize(("name", "message"), [(None, "got NoneType"), (5, "got int"), ("", "empty"), ("  ", "empty")])
def test_a_dataset_name_that_is_not_one_is_refused(name, message):
    # None and 5 raised os.fspath's TypeError; "" was the current folder ("corpus.jsonl: missing")
    from ragopt.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^dataset: .*{message}"):
        load_dataset(name)


def test_beir_name_offline_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGOPT_DATA_PATH", str(tmp_path / "here"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RAGOPT_BEIR_URL", "http://127.0.0.1:9/{name}.zip")
    with pytest.raises(DatasetNotFoundError, match="download disabled"):
        resolve_dataset("nfcorpus")
    assert not (tmp_path / "cache" / "datasets" / "nfcorpus").exists()
