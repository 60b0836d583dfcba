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


def test_eval_json_is_the_only_stdout_and_index_is_reused(data_dir, tmp_path, reference_bm25):
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
    # the bm25 pipeline (k1=0.9, b=0.4) against an independent BM25 + trec_eval computation (tests/conftest.py)
    assert first["metrics"]["ndcg@10"] == pytest.approx(reference_bm25(data_dir / "adi", 0.9, 0.4), abs=1e-4)
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
    assert main(["eval", "-d", "adi", "--metrics", " , "]) == 2  # was: the default metrics, silently
    assert capfd.readouterr().err.startswith("ragopt: error: --metrics: no metric named in ' , '")
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


def test_an_output_path_the_system_refuses_is_one_line(data_dir, tmp_path, capfd, monkeypatch):
    # --output naming a folder was an IsADirectoryError traceback after the run was written to a temporary file
    search = ["search", "-d", str(data_dir / "adi"), "-q", "computer", "--index-dir", str(tmp_path / "idx"), "-o"]
    assert main([*search, str(tmp_path)]) == 2
    assert capfd.readouterr().err == f"ragopt: error: cannot write {tmp_path}: it is a folder; name a file\n"
    (tmp_path / "f").write_text("keep")
    assert main([*search, str(tmp_path / "f" / "sub" / "r.trec")]) == 2
    assert (
        capfd.readouterr().err
        == f"ragopt: error: cannot write {tmp_path}/f/sub/r.trec: {tmp_path}/f is a file, not a folder\n"
    )
    assert (tmp_path / "f").read_text() == "keep"
    # any other OSError (an output under /proc, a folder not writable) is one line naming it, not a traceback
    import ragopt.evaluation

    def refused(run, path, tag):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ragopt.evaluation, "write_run", refused)
    assert main([*search, str(tmp_path / "r.trec")]) == 2
    err = capfd.readouterr().err
    assert err == f"ragopt: error: PermissionError: [Errno 13] Permission denied: '{tmp_path}/r.trec'\n"


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


def _read_trec(path):
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    return run


@pytest.mark.parametrize(
    "metric,trec_name,test",
    [("ndcg@10", "ndcg_cut_10", "t"), ("map", "map", "wilcoxon"), ("p@5", "P_5", "randomization")],
)
def test_compare_two_different_runs_against_an_independent_computation(
    data_dir, tmp_path, capfd, metric, trec_name, test
):
    """Run B is run A with each query's ranks 1-5 and 6-10 swapped: compare's means, difference and p-value must equal
    pytrec_eval's per-query values (qrels read by hand) put through scipy's paired tests."""
    import numpy as np
    import pytrec_eval
    from scipy import stats

    adi = data_dir / "adi"
    a_path, b_path = tmp_path / "a.trec", tmp_path / "b.trec"
    assert main(["search", "-d", str(adi), "-k", "50", "-o", str(a_path), "--index-dir", str(tmp_path / "i")]) == 0
    run_a = _read_trec(a_path)
    run_b = {}
    lines = []
    for qid, row in run_a.items():
        docs = [d for d, _ in sorted(row.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]
        docs = docs[5:10] + docs[:5] + docs[10:]
        run_b[qid] = {d: float(len(docs) - r) for r, d in enumerate(docs)}
        lines += [f"{qid} Q0 {d} {r + 1} {len(docs) - r} b" for r, d in enumerate(docs)]
    b_path.write_text("\n".join(lines) + "\n")
    capfd.readouterr()

    assert (
        main(["compare", str(a_path), str(b_path), "-d", str(adi), "--metric", metric, "--test", test, "--json"]) == 0
    )
    got = json.loads(capfd.readouterr().out)

    qrels: dict[str, dict[str, int]] = {}
    for line in (adi / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    ev = pytrec_eval.RelevanceEvaluator(qrels, {trec_name})
    pa, pb = ev.evaluate(run_a), ev.evaluate(run_b)
    qids = sorted(set(pa) & set(pb))
    xa = np.array([pa[q][trec_name] for q in qids])
    xb = np.array([pb[q][trec_name] for q in qids])
    assert got["n"] == len(qids) == 35
    assert got["mean_a"] == pytest.approx(xa.mean(), abs=1e-9) and got["mean_b"] == pytest.approx(xb.mean(), abs=1e-9)
    assert got["diff"] == pytest.approx(xb.mean() - xa.mean(), abs=1e-9) and got["diff"] < -0.01
    if test == "t":
        assert got["p_value"] == pytest.approx(stats.ttest_rel(xb, xa).pvalue, rel=1e-9)
    elif test == "wilcoxon":
        assert got["p_value"] == pytest.approx(stats.wilcoxon(xb, xa).pvalue, rel=1e-9)
    else:  # Monte Carlo on both sides (10,000 sign flips each): agree within sampling error
        ref = stats.permutation_test(
            (xb - xa,), np.mean, permutation_type="samples", n_resamples=10000, random_state=1
        ).pvalue
        assert got["p_value"] == pytest.approx(ref, abs=0.01)
    assert got["significant"] == (got["p_value"] < 0.05)
    assert 0 < got["p_value"] < 1


def _bad_inputs(tmp_path, adi):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("pipeline:\n  - {type: bm25\n")
    unknown_key = tmp_path / "unknown.yaml"
    unknown_key.write_text("pipeline:\n  - {type: bm25, k9: 1}\n")
    study = tmp_path / "study.yaml"
    study.write_text(f"study: s\ndataset: {adi}\npipeline: bm25\nspace: []\nbudgett: {{trials: 2}}\n")
    bad_run = tmp_path / "bad.trec"
    bad_run.write_text("1 Q0 17 1\n")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("pipeline:\n  - {type: bm25}  # caf\u00e9\n".encode("latin-1"))
    nul = tmp_path / "nul.yaml"
    nul.write_text("pipeline: \x00\n")
    return {
        "pipeline file not UTF-8": (["eval", "-d", adi, "-p", str(latin1)], "latin1.yaml"),
        "NUL in pipeline YAML": (["eval", "-d", adi, "-p", str(nul)], "nul.yaml"),
        "--set value not YAML": (["eval", "-d", adi, "--set", "stages.0.k1=["], "stages.0.k1"),
        "malformed pipeline YAML": (["eval", "-d", adi, "-p", str(bad_yaml)], str(bad_yaml)),
        "unknown stage key": (["eval", "-d", adi, "-p", str(unknown_key)], "k9"),
        "unknown study key": (["tune", str(study)], "budgett"),
        "missing study file": (["tune", str(tmp_path / "none.yaml")], "none.yaml"),
        "malformed TREC run": (["compare", str(bad_run), str(bad_run), "-d", adi], "bad.trec"),
        "missing run file": (["compare", str(tmp_path / "x.trec"), str(bad_run), "-d", adi], "x.trec"),
        "bad metric": (["eval", "-d", adi, "--metrics", "ndcg@ten"], "ndcg@ten"),
        "report of a missing study": (["report", "nostudy", "--storage", f"sqlite:///{tmp_path / 'x.db'}"], "x.db"),
    }


BAD_INPUTS = [
    "pipeline file not UTF-8",
    "NUL in pipeline YAML",
    "--set value not YAML",
    "malformed pipeline YAML",
    "unknown stage key",
    "unknown study key",
    "missing study file",
    "malformed TREC run",
    "missing run file",
    "bad metric",
    "report of a missing study",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_exactly_one_error_line(data_dir, tmp_path, capfd, case):
    if case == "report of a missing study":
        pytest.importorskip("optuna")
    args, names = _bad_inputs(tmp_path, str(data_dir / "adi"))[case]
    capfd.readouterr()
    assert main(args) == 2
    captured = capfd.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ragopt: error: "), captured.err
    assert names in lines[0] and "Traceback" not in captured.err and captured.out == ""


def test_bad_input_in_a_real_process_prints_no_traceback(data_dir, tmp_path):
    args, names = _bad_inputs(tmp_path, str(data_dir / "adi"))["malformed TREC run"]
    proc = _cli(*args, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ragopt: error: ") and names in proc.stderr
