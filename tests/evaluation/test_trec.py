"""TREC run / qrels files."""

from __future__ import annotations

import pytest

from ragopt.errors import ConfigError, DataError
from ragopt.evaluation import evaluate, read_qrels_trec, read_run, write_qrels, write_run

RUN = {
    "q1": {"d1": 0.5, "d2": 1.25, "d3": 0.5, "d10": 0.30000001192092896},
    "q2": {"e": -3.0, "f": 1e-9},
}


def test_run_round_trip(tmp_path):
    path = tmp_path / "run.txt"
    write_run(RUN, path)
    assert read_run(path) == RUN
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_run_file_order_and_ranks(tmp_path):
    path = tmp_path / "run.txt"
    write_run(RUN, path, tag="bm25")
    rows = [line.split() for line in path.read_text().splitlines()]
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("q1", "d2", "1"),
        ("q1", "d3", "2"),
        ("q1", "d1", "3"),
        ("q1", "d10", "4"),  # tie: docid descending
        ("q2", "f", "1"),
        ("q2", "e", "2"),
    ]
    assert all(r[1] == "Q0" and r[5] == "bm25" for r in rows)


def test_max_rank_and_gzip(tmp_path):
    path = tmp_path / "run.txt.gz"
    write_run(RUN, path, max_rank=2)
    assert read_run(path) == {"q1": {"d2": 1.25, "d3": 0.5}, "q2": RUN["q2"]}
    assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_file_round_trip_evaluates_the_same(tmp_path):
    qrels = {"q1": {"d1": 1, "d3": 2}, "q2": {"f": 1}}
    write_run(RUN, tmp_path / "r")
    write_qrels(qrels, tmp_path / "q")
    assert evaluate(read_run(tmp_path / "r"), read_qrels_trec(tmp_path / "q")).metrics == evaluate(RUN, qrels).metrics


@pytest.mark.parametrize("bad", ["q1 Q0 d1 1 0.5", "q1 Q0 d1 one 0.5 tag", "q1 Q0 d1 1 high tag"])
def test_malformed_run_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "broken.run"
    path.write_text("q1 Q0 d0 1 0.9 t\n\n" + bad + "\n")
    with pytest.raises(DataError) as err:
        read_run(path)
    assert "broken.run:3" in str(err.value)


def test_duplicate_run_entry(tmp_path):
    path = tmp_path / "dup.run"
    path.write_text("q1 Q0 d0 1 0.9 t\nq1 Q0 d0 2 0.8 t\n")
    with pytest.raises(DataError, match=r"dup.run:2: document 'd0' appears twice"):
        read_run(path)


def test_a_nan_score_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "nan.run"
    path.write_text("q1 Q0 d0 1 0.9 t\nq1 Q0 d1 2 nan t\nq1 Q0 d2 3 -inf t\n")
    with pytest.raises(DataError, match=r"nan.run:2: document 'd1' of query 'q1' has the score NaN"):
        read_run(path)
    path.write_text("q1 Q0 d0 1 0.9 t\nq1 Q0 d2 3 -inf t\n")
    assert read_run(path) == {"q1": {"d0": 0.9, "d2": float("-inf")}}  # an infinity is a score


def test_whitespace_ids_rejected_and_target_untouched(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("old\n")
    with pytest.raises(DataError, match="whitespace"):
        write_run({"q1": {"a": 1.0, "bad doc": 0.5}}, path)
    assert path.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [path]
    with pytest.raises(ConfigError, match="tag"):
        write_run(RUN, path, tag="my run")
    with pytest.raises(DataError, match="non-finite"):
        write_run({"q1": {"a": float("nan")}}, path)


def test_qrels_round_trip_and_errors(tmp_path):
    qrels = {"q1": {"d1": 2, "d2": 0, "d3": -1}, "q2": {"x": 1}}
    path = tmp_path / "qrels.txt"
    write_qrels(qrels, path)
    assert path.read_text().splitlines()[0] == "q1 0 d1 2"
    assert read_qrels_trec(path) == qrels
    path.write_text("q1 0 d1 1\nq1 0 d1 1\nq1 0 d2 1.5\n")
    with pytest.raises(DataError, match=r"qrels.txt:3"):
        read_qrels_trec(path)
    path.write_text("q1 0 d1 1\nq1 0 d1 0\n")
    with pytest.raises(DataError, match=r"qrels.txt:2"):
        read_qrels_trec(path)
    path.write_text("q1 0 d1 1\nq1 0 d2 2147483647\n")  # trec_eval would allocate 16 GB for this grade
    with pytest.raises(DataError, match=r"qrels.txt:2: relevance '2147483647' is outside the grades"):
        read_qrels_trec(path)
    with pytest.raises(DataError, match="absent: file not found$"):
        read_run(tmp_path / "absent")
    with pytest.raises(DataError, match=r": a folder, not a file$"):  # was "no such file"
        read_run(tmp_path)
