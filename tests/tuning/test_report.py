"""HTML study reports (ragopt.tuning.report) on real studies stored by run_study, and the stored studies'
compatibility with plain Optuna (what optuna-dashboard reads)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ragopt.errors import ConfigError
from ragopt.store import ArtifactStore
from ragopt.tuning.report import write_report
from ragopt.tuning.study import StudyConfig, run_study

SPACE = [
    {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.3, "high": 2.0},
    {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.1, "high": 1.0},
    {"name": "stemmer", "path": "stages.0.stemmer", "choices": ["english", None]},
]


def _study(data_dir: Path, name: str, metrics: list[str]) -> StudyConfig:
    return StudyConfig.from_dict(
        {
            "study": name,
            "dataset": str(data_dir / "adi"),
            "pipeline": "bm25",
            "space": SPACE,
            "objective": {"metrics": metrics},
            "tuner": "random",
            "budget": {"trials": 6},
        }
    )


@pytest.fixture(scope="module")
def studies(data_dir, tmp_path_factory):
    """Two studies in one SQLite storage: nDCG@10 alone, and nDCG@10 against latency."""
    root = tmp_path_factory.mktemp("report")
    store = ArtifactStore(root / "store")
    url = f"sqlite:///{root / 'studies.db'}"
    single = run_study(_study(data_dir, "single", ["ndcg@10"]), storage=url, store=store, progress=False)
    multi = run_study(_study(data_dir, "multi", ["ndcg@10", "latency_ms"]), storage=url, store=store, progress=False)
    return {"url": url, "root": root, "single": single, "multi": multi}


def _sections(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', html)


def test_single_objective_report(studies) -> None:
    out = studies["root"] / "out" / "single.html"  # the folder does not exist yet
    path = write_report("single", studies["url"], out)
    assert path == out and out.is_file()
    html = out.read_text()
    assert _sections(html) == ["summary", "history", "importances", "parallel", "cost", "trials"]
    for div in ("plot-history", "plot-importances", "plot-parallel", "plot-cost"):
        assert f'id="{div}"' in html, div
    assert "Not shown" not in html
    # plotly.js embedded exactly once, no CDN: the file works offline
    assert html.count("* plotly.js v") == 1 and not re.search(r"<script[^>]*\ssrc=", html)
    res = studies["single"]
    assert res.n_complete == 6
    assert "Trials (6)" in html and html.count("<td>COMPLETE</td>") == 6
    assert f"ndcg@10 = {res.best_value:.6g}" in html
    best_number = int(re.search(r"<th></th>.*?best trial</td><td>(\d+)</td>", html, re.S).group(1))
    assert f'<tr class="best"><td>{best_number}</td>' in html
    assert "ndcg@10 (maximize)" in html
    # the study's ragopt config, pretty-printed
    assert "&quot;dataset&quot;:" in html and "adi" in html and "&quot;space&quot;:" in html
    # cost per stage: stacked seconds per stage, and the counters' totals (6 trials x 25 tuning queries)
    assert "0:bm25" in html
    costs = re.search(r'<table class="costs">.*?</table>', html, re.S).group(0)
    assert "<td>bm25_queries</td><td>150</td><td>25</td><td>6</td>" in costs
    assert "Pareto" not in html


def test_multi_objective_report_has_a_pareto_front(studies) -> None:
    html = write_report("multi", studies["url"], studies["root"] / "multi.html").read_text()
    secs = _sections(html)
    assert "pareto" in secs and 'id="plot-pareto"' in html
    assert {"history-0", "history-1", "importances-0", "importances-1"} <= set(secs)
    assert "ndcg@10 (maximize), latency_ms (minimize)" in html
    front = {p["number"] for p in studies["multi"].pareto}
    assert front and f"Pareto-optimal trials</td><td>{', '.join(map(str, sorted(front)))}" in html
    assert html.count('<tr class="best">') == len(front)


def test_unknown_study_lists_the_existing_ones(studies, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"no study named 'nope'.*studies there: multi, single"):
        write_report("nope", studies["url"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    missing = tmp_path / "missing.db"
    with pytest.raises(ConfigError, match="no study database at"):
        write_report("single", f"sqlite:///{missing}", tmp_path / "r.html")
    assert not missing.exists()  # the check does not create an empty database


def test_failed_trials_and_empty_studies(tmp_path) -> None:
    import optuna

    url = f"sqlite:///{tmp_path / 'f.db'}"
    study = optuna.create_study(study_name="broken", storage=url)

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("error", "StageError: <bad> config")
        raise RuntimeError("boom")

    study.optimize(objective, n_trials=2, catch=(RuntimeError,))
    optuna.create_study(study_name="empty", storage=url)
    html = write_report("broken", url, tmp_path / "b.html").read_text()
    assert html.count("<td>FAIL</td>") == 2 and "StageError: &lt;bad&gt; config" in html
    assert "no complete trial yet" in html and "needs at least 2 complete trials" in html
    assert "No cost counters recorded" in html
    html = write_report("empty", url, tmp_path / "e.html").read_text()
    assert "Trials (0)" in html and "objective 0 (minimize)" in html


def test_studies_stay_readable_by_plain_optuna(studies) -> None:
    """optuna-dashboard reads plain Optuna studies: params, values, user attributes, study attributes."""
    import optuna

    study = optuna.load_study(study_name="single", storage=studies["url"])
    assert len(study.trials) == 6 and study.best_value == pytest.approx(studies["single"].best_value)
    cfg = study.user_attrs["ragopt_config"]
    assert cfg["objective"]["metrics"] == ["ndcg@10"] and cfg["tuner"] == "random"
    for t in study.trials:
        assert set(t.params) == {"k1", "b", "stemmer"}
        assert {"pipeline", "metrics", "costs", "stage_seconds", "latency_ms"} <= set(t.user_attrs)
        assert json.loads(t.user_attrs["pipeline"])["stages"][0]["type"] == "bm25"
        assert t.user_attrs["metrics"]["ndcg@10"] == pytest.approx(t.value)
    multi = optuna.load_study(study_name="multi", storage=studies["url"])
    assert [d.name for d in multi.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert {t.number for t in multi.best_trials} == {p["number"] for p in studies["multi"].pareto}


def test_report_command_writes_the_study_report(studies, tmp_path, capfd) -> None:
    from ragopt.cli import main

    out = tmp_path / "cli" / "single.html"
    assert main(["report", "single", "--storage", studies["url"], "-o", str(out), "--json"]) == 0
    got = json.loads(capfd.readouterr().out)
    assert got == {"report": str(out), "study": "single", "storage": studies["url"]}
    html = out.read_text()
    assert f"ndcg@10 = {studies['single'].best_value:.6g}" in html and "Trials (6)" in html
    assert main(["report", "nope", "--storage", studies["url"], "-o", str(tmp_path / "n.html")]) == 2
    assert "no study named 'nope'" in capfd.readouterr().err and not (tmp_path / "n.html").exists()
