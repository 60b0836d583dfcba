"""The `ragopt` CLI contract: --help, eval --json (only JSON on stdout), search, index reuse, errors."""

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


@pytest.mark.parametrize("cmd", ["index", "search", "eval", "compare", "datasets", "pipelines"])
def test_help_explains_every_option(cmd, capfd):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    text = capfd.readouterr().out
    import ragopt.cli as cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[cmd]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{cmd} {action.option_strings} has no help"
            assert action.option_strings[-1] in text


def test_eval_json_is_the_only_stdout_and_index_is_reused(data_dir, tmp_path):
    env = {"RAGOPT_INDEX_DIR": str(tmp_path / "idx")}
    args = ["eval", "--dataset", str(data_dir / "adi"), "--pipeline", "bm25", "--metrics",
            "ndcg@10,recall@100,mrr@10,map,p@5", "--json"]
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
    rc = main(["eval", "-d", "adi", "--set", "stages.0.k1=1.5", "--set", "stages.0.b=0.75",
               "--index-dir", str(tmp_path / "i"), "--per-query", str(pq), "--save-run", str(run), "--json"])
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


def test_search_ad_hoc_query(data_dir, tmp_path, capfd):
    rc = main(["search", "-d", str(data_dir / "adi"), "-q", "information retrieval evaluation", "-k", "3",
               "--index-dir", str(tmp_path), "--json"])
    assert rc == 0
    out = json.loads(capfd.readouterr().out)
    hits = out["results"][0]["hits"]
    assert len(hits) == 3 and hits[0]["rank"] == 1 and hits[0]["score"] >= hits[1]["score"]


def test_search_writes_trec_run(data_dir, tmp_path, capfd):
    out = tmp_path / "adi.run"
    assert main(["search", "-d", str(data_dir / "adi"), "-k", "5", "-o", str(out),
                 "--index-dir", str(tmp_path)]) == 0
    lines = out.read_text().strip().split("\n")
    assert len({l.split()[0] for l in lines}) == 35 and all(len(l.split()) == 6 for l in lines)


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


def test_listings(capfd):
    assert main(["pipelines", "--json"]) == 0
    assert "bm25" in json.loads(capfd.readouterr().out)["pipelines"]
    assert main(["components", "bm25"]) == 0
    assert "k1 = 0.9" in capfd.readouterr().out
