"""`import ragopt` stays light: no torch, no heavy backends, and fast."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_is_torch_free_and_fast():
    # CPU time, not wall time: on a busy machine (the suite's other processes, CI neighbours) wall time measures the
    # scheduler; the CPU the import itself burns (0.3-0.4 s on a 2-core AMD EPYC) does not depend on the load
    out = _run(
        "import sys, time, json\n"
        "t = time.process_time()\n"
        "import ragopt\n"
        "from ragopt.pipeline_io import load_pipeline\n"
        "p = load_pipeline('bm25')\n"
        "import ragopt.cli, ragopt.evaluation.run, ragopt.evaluation, ragopt.data\n"
        "dt = time.process_time() - t\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'faiss', 'chromadb', 'optuna',"
        " 'mcp', 'pyserini', 'jnius', 'bm25s') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'seconds': dt}))\n"
    )
    res = json.loads(out)
    assert res["heavy"] == []
    assert res["seconds"] < 2.0


def test_lazy_public_names():
    out = _run("import ragopt; print(ragopt.BM25.type_name, ragopt.Pipeline.type_name, ragopt.__version__)")
    assert out.split()[:2] == ["bm25", "pipeline"]
