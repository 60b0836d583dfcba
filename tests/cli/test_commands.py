"""Each `ragopt` command end to end: eval --json (only JSON on stdout), index reuse, search, compare, listings,
errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ragopt.cli import main


def _cli(*args, env=None, check=True):
    e = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "ragopt.cli", *args], capture_output=True, text=True, env=e)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def test_eval_json_is_the_only_stdout_and_index_is_reused(data_dir, tmp_path):
    env = {"RAGOPT_INDEX_DIR": str(tmp_path / "idx")}
    args = [
        "eval",
        "--dataset",
        str(data_dir / "adi"),
        "--pipeline",
        "bm25",
        "--metrics",
        "ndcg@10,recall@100,mrr@10,map,p@5",
        "--json",
    ]
    first = json.loads(_cli(*args, env=env).stdout)  # json.loads fails on any stray output
    assert first["n_queries"] == 35
    assert set(first["metrics"]) == {"ndcg@10", "recall@100", "mrr@10", "map", "p@5"}
    assert first["metrics"]["ndcg@10"] == pytest.approx(0.4802, abs=0.002)
    assert {"fit_s", "search_s", "total_s", "qps"} <= set(first["timings"])
    assert first["artifacts"][0]["created"] is True
    second = json.loads(_cli(*args, env=env).stdout)
    assert second["artifacts"][0]["created"] is False
    assert second["artifacts"][0]["path"] == first["artifacts"][0]["path"]
    assert second["metrics"] == first["metrics"]


def test_eval_by_name_with_overrides_per_query_and_run(data_dir, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("RAGOPT_DATA_PATH", str(data_dir))
    pq, run = tmp_path / "pq.json", tmp_path / "run.trec"
    rc = main(
        [
            "eval",
            "-d",
            "adi",
            "--set",
            "stages.0.k1=1.5",
            "--set",
            "stages.0.b=0.75",
            "--index-dir",
            str(tmp_path / "i"),
            "--per-query",
            str(pq),
            "--save-run",
            str(run),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capfd.readouterr().out)
    assert out["pipeline"]["stages"][0]["k1"] == 1.5
    per_query = json.loads(pq.read_text())
    assert len(per_query["ndcg@10"]) == 35
    assert run.read_text().split("\n")[0].split()[1] == "Q0"
    # compare the run against itself: no difference
    rc = main(["compare", str(run), str(run), "-d", "adi", "--json"])
    res = json.loads(capfd.readouterr().out)
    assert rc == 0 and res["diff"] == 0 and res["p_value"] == 1.0


def test_eval_default_metrics_and_text_output(data_dir, tmp_path, capfd):
    assert main(["eval", "-d", str(data_dir / "adi"), "--index-dir", str(tmp_path)]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[0] == "adi [test] 35 queries, pipeline bm25"
    assert [line.split()[0] for line in lines[1:5]] == ["ndcg@10", "recall@100", "mrr@10", "map"]
    assert lines[5].startswith("  fit ") and lines[6].startswith("  built  bm25-bm25s: ")


def test_index_builds_then_reuses_nested_artifacts(data_dir, tmp_path, capfd):
    """Artifacts of stages nested in a fusion are listed, built on the first run and reused on the second."""
    pipe = tmp_path / "fused.yaml"
    pipe.write_text("pipeline:\n  type: rrf\n  inputs:\n    - {type: bm25}\n    - {type: bm25, k1: 1.5}\n")
    args = ["index", "-d", str(data_dir / "adi"), "-p", str(pipe), "--index-dir", str(tmp_path / "i"), "--json"]
    assert main(args) == 0
    first = json.loads(capfd.readouterr().out)
    assert first["dataset"] == "adi" and first["n_docs"] == 82 and len(first["fingerprint"]) >= 12
    assert [a["created"] for a in first["artifacts"]] == [True, True]
    assert len({a["path"] for a in first["artifacts"]}) == 2
    assert main(args) == 0
    second = json.loads(capfd.readouterr().out)
    assert [a["created"] for a in second["artifacts"]] == [False, False]
    assert [a["path"] for a in second["artifacts"]] == [a["path"] for a in first["artifacts"]]
    assert main(args[:-1]) == 0
    text = capfd.readouterr().out.splitlines()
    assert text[0].startswith("adi: 82 documents, fingerprint ") and text[1].startswith("  reused bm25-bm25s: ")


def test_search_ad_hoc_query(data_dir, tmp_path, capfd):
    rc = main(
        [
            "search",
            "-d",
            str(data_dir / "adi"),
            "-q",
            "information retrieval evaluation",
            "-k",
            "3",
            "--index-dir",
            str(tmp_path),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capfd.readouterr().out)
    hits = out["results"][0]["hits"]
    assert len(hits) == 3 and hits[0]["rank"] == 1 and hits[0]["score"] >= hits[1]["score"]


def test_search_writes_trec_run(data_dir, tmp_path, capfd):
    out = tmp_path / "adi.run"
    assert main(["search", "-d", str(data_dir / "adi"), "-k", "5", "-o", str(out), "--index-dir", str(tmp_path)]) == 0
    lines = out.read_text().strip().split("\n")
    assert len({l.split()[0] for l in lines}) == 35 and all(len(l.split()) == 6 for l in lines)


def test_search_queries_file(data_dir, tmp_path, capfd):
    qfile = tmp_path / "q.tsv"
    qfile.write_text("a1\tcomputer indexing\n\nb2\tlibrary automation\n")
    assert (
        main(
            [
                "search",
                "-d",
                str(data_dir / "adi"),
                "--queries",
                str(qfile),
                "-k",
                "2",
                "--index-dir",
                str(tmp_path),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capfd.readouterr().out)
    assert out["n_queries"] == 2 and out["output"] is None
    assert [(r["query_id"], r["query"], len(r["hits"])) for r in out["results"]] == [
        ("a1", "computer indexing", 2),
        ("b2", "library automation", 2),
    ]
    assert (
        main(["search", "-d", str(data_dir / "adi"), "--queries", str(qfile), "-k", "1", "--index-dir", str(tmp_path)])
        == 0
    )
    text = capfd.readouterr().out.splitlines()
    assert text[0] == "[a1] computer indexing" and text[1].startswith("    1. ")
    assert text[2] == "[b2] library automation"


def test_errors_are_one_line_with_status_2(tmp_path, capfd):
    assert main(["eval", "-d", str(tmp_path / "missing"), "--json"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("ragopt: error:") and "missing" in err
    assert main(["eval", "-d", "adi", "--metrics", "ndcg@ten"]) == 2
    assert "ndcg@ten" in capfd.readouterr().err
    assert main(["eval", "-d", "adi", "--set", "stages.0.k9=1"]) == 2
    assert "stages.0.k9" in capfd.readouterr().err
    assert main(["eval", "-d", "adi", "-p", "nonexistent"]) == 2
    assert "no pipeline named 'nonexistent'" in capfd.readouterr().err


def test_search_errors(data_dir, tmp_path, capfd):
    adi = str(data_dir / "adi")
    assert main(["search", "-d", adi, "-q", "x", "-k", "0"]) == 2
    assert capfd.readouterr().err == "ragopt: error: -k: must be >= 1, got 0\n"
    assert main(["search", "-d", adi, "-q", "  "]) == 2
    assert capfd.readouterr().err == "ragopt: error: --query: empty query text\n"
    assert main(["search", "-d", adi, "--queries", str(tmp_path / "none.tsv")]) == 2
    assert "queries file not found" in capfd.readouterr().err
    assert main(["search", "-d", adi, "-q", "x", "--set", "stages.0.k1"]) == 2
    assert capfd.readouterr().err == "ragopt: error: --set: expected PATH=VALUE, got 'stages.0.k1'\n"


def test_listings(capfd):
    assert main(["pipelines", "--json"]) == 0
    assert "bm25" in json.loads(capfd.readouterr().out)["pipelines"]
    assert main(["components", "bm25"]) == 0
    assert "k1 = 0.9" in capfd.readouterr().out


def test_datasets_lists_the_search_path(tmp_path, monkeypatch, capfd):
    for name in ("zeta", "alpha"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (tmp_path / "not-a-dataset").mkdir()
    monkeypatch.setenv("RAGOPT_DATA_PATH", str(tmp_path))
    assert main(["datasets", "--json"]) == 0
    out = json.loads(capfd.readouterr().out)
    assert list(out["datasets"])[:2] == ["alpha", "zeta"] and out["datasets"]["alpha"] == str(tmp_path / "alpha")
    assert out["search_path"][0] == str(tmp_path)
    assert main(["datasets"]) == 0
    text = capfd.readouterr().out.splitlines()
    assert text[0].split() == ["alpha", str(tmp_path / "alpha")] and text[-1].startswith("search path: ")


def test_components_lists_and_describes(capfd):
    assert main(["components"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert 'bm25: Okapi BM25 over the corpus text (``title + " " + text`` by default).' in lines
    assert any(line.startswith("pipeline: Stages applied in order (``a >> b >> c``).") for line in lines)
    assert main(["components", "pipeline"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[0].startswith("pipeline: ") and lines[1:] == ["  stages = []  the stages, applied in order"]
    assert main(["components", "rrf"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[1].startswith("  inputs = '(required)'  the retrievers")
    assert any(line.startswith("  k = 60  rank offset") for line in lines)
    assert main(["components", "bm26"]) == 2
    assert "did you mean 'bm25'" in capfd.readouterr().err
