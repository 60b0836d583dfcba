"""Secrets and code: an API key named by an environment variable never reaches the study database, the LLM call
cache, logs or the HTML report; configurations cannot name arbitrary code; artifacts never unpickle."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import pytest

pytest.importorskip("optuna")

import optuna

from ragopt.config import from_config
from ragopt.errors import ConfigError
from ragopt.llm.scripted import ScriptedLLM
from ragopt.store import ArtifactStore
from ragopt.testing.openai_server import OpenAITestServer
from ragopt.tuning.report import write_report
from ragopt.tuning.study import StudyConfig, run_study

KEY = "sk-planted-7c1e9a4b2d8f6035e4a1"
ENV = "RAGOPT_TEST_PLANTED_KEY"
ROOT = Path(__file__).resolve().parents[3]


def test_planted_api_key_reaches_no_database_cache_log_or_report(data_dir, tmp_path, monkeypatch, caplog, capfd):
    if not (data_dir / "nq-open-oracle-dev" / "answers.jsonl").is_file():
        pytest.skip("nq-open-oracle-dev not in the shared data")
    monkeypatch.setenv(ENV, KEY)
    monkeypatch.setattr("ragopt.llm.openai_backend.time.sleep", lambda s: None)  # no real backoff waits
    caplog.set_level(logging.DEBUG)  # every logger, ragopt's and the HTTP client's, at its most talkative
    double = ScriptedLLM(rules=[{"match": r"\[1\] (\w+ \w+)", "output": r"\1"}])
    with OpenAITestServer(double, api_key=KEY, model_name="test-model") as server:
        llm = {
            "type": "openai",
            "model": "test-model",
            "base_url": server.base_url,
            "api_key_env": ENV,
            "max_retries": 1,
            "backoff_s": 0.0,
            "concurrency": 1,  # one request at a time: the two faults below hit one prompt's two attempts
        }
        d = {
            "study": "secret",
            "dataset": str(data_dir / "nq-open-oracle-dev"),
            "queries": {"limit": 8, "seed": 0},
            "pipeline": [
                {"type": "bm25", "top_k": 20},
                {"type": "generate", "llm": llm, "context_k": 1, "template": "qa", "chat": True},
            ],
            "space": [{"name": "k", "path": "stages.1.context_k", "choices": [1, 2, 3]}],
            "objective": {"metrics": ["f1"]},
            "tuner": {"name": "grid_native", "seed": 0},
            "budget": {"trials": 3},
            "holdout": {"fraction": 0.25, "seed": 0},
        }
        # the first trial's first prompt meets a server that echoes the Authorization header in its error, on
        # every attempt: the trial fails and its (scrubbed) error goes into the study database
        server.inject("leak", "leak")
        url = f"sqlite:///{tmp_path / 'studies.db'}"
        res = run_study(
            StudyConfig.from_dict(d),
            storage=url,
            store=ArtifactStore(tmp_path / "store"),
            progress=False,
            out_dir=tmp_path / "out",
        )
        assert all(r["authorized"] for r in server.requests)  # the key did reach the server
    assert res.n_failed == 1 and res.n_complete == 2
    failed = [t for t in optuna.load_study(study_name="secret", storage=url).trials if "error" in t.user_attrs]
    assert "***" in failed[0].user_attrs["error"]  # the echoed header, scrubbed
    report = write_report("secret", url, tmp_path / "report.html")

    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    names = {f.name for f in files}
    assert "studies.db" in names and "summary.json" in names and report in files
    assert any(f.suffix == ".sqlite" for f in files), "no LLM call cache was written"
    for f in files:
        assert KEY.encode() not in f.read_bytes(), f
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert caplog.records and KEY not in logged
    out = capfd.readouterr()
    assert KEY not in out.out + out.err


@pytest.mark.parametrize(
    "type_name",
    ["os.system", "os:system", "subprocess.Popen", "builtins:eval", "ragopt.retrievers.bm25:BM25Retriever"],
)
def test_configs_cannot_name_code_to_import(type_name, monkeypatch):
    """Only registered short names and declared entry points resolve: a dotted or ``module:attr`` path in a
    config is an unknown component, refused with the key's path before anything is imported."""
    import sys

    monkeypatch.delitem(sys.modules, "subprocess", raising=False)  # would come back if the path were imported
    with pytest.raises(ConfigError, match=rf"stages\[0\]\.type: unknown component type '{re.escape(type_name)}'"):
        from_config({"type": "pipeline", "stages": [{"type": type_name}]})
    assert "subprocess" not in sys.modules or type_name != "subprocess.Popen"


def test_pipeline_yaml_cannot_construct_python_objects(tmp_path):
    """YAML tags that build Python objects are refused by the safe loader, with the file named."""
    from ragopt.pipeline_io import load_pipeline

    f = tmp_path / "evil.yaml"
    f.write_text("pipeline:\n  - !!python/object/apply:os.system ['echo pwned > /dev/null']\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_pipeline(f)


def _keyword(call: ast.Call, name: str) -> object:
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


def test_no_code_path_unpickles():
    """Artifacts are arrays, JSON and SQLite: no pickle (or dill, joblib, marshal, shelve), every ``np.load`` with
    ``allow_pickle=False``, every ``torch.load`` with ``weights_only=True``, YAML only through the safe loader,
    anywhere in the library."""
    offenders = []
    unsafe_modules = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}
    for path in sorted((ROOT / "ragopt").rglob("*.py")):
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] in unsafe_modules for n in names):
                    offenders.append(f"{where}:{node.lineno}: imports {names}")
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            attr = node.func.attr
            if owner in ("np", "numpy") and attr == "load" and _keyword(node, "allow_pickle") is not False:
                offenders.append(f"{where}:{node.lineno}: np.load without allow_pickle=False")
            if owner == "torch" and attr == "load" and _keyword(node, "weights_only") is not True:
                offenders.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            if owner == "yaml" and attr in ("load", "load_all", "unsafe_load", "full_load", "full_load_all"):
                offenders.append(f"{where}:{node.lineno}: yaml.{attr} (use yaml.safe_load)")
            if attr == "read_pickle":
                offenders.append(f"{where}:{node.lineno}: read_pickle")
    assert not offenders, "\n".join(offenders)
