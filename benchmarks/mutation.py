"""Mutation testing of core modules with mutmut (a benchmark, not a CI job): how many small changes to the code
(``<`` for ``<=``, ``+ 1`` for ``+ 2``, a dropped argument, ``None`` for a value, ...) the tests notice.

mutmut 3 copies the source into ``<workdir>/mutants/``, runs the selected tests once to learn which test reaches
which function, then, for every mutant, reruns only the tests that reach the mutated function. This script
builds the work folder (a copy of ``ragopt/`` and ``tests/``, and a ``pyproject.toml`` holding the pytest
settings and the ``[tool.mutmut]`` section below), so the repository itself never gets a ``mutants/`` folder,
runs ``mutmut run`` there (niced, one thread per process), and reads each mutant's verdict from mutmut's
``.meta`` files into the ``--label`` section of ``benchmarks/results/mutation.json``: per module killed / survived / timeout / no tests,
the survival rate (survived / (killed + survived + timeout)), the wall time, and the diff of every surviving
mutant (``--show-survivors`` prints them).

    pip install -e ".[mutation]"        # mutmut (not part of the `all` extra)
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/mutation.py [--modules ragopt/store.py ...] [--label after]
    python benchmarks/mutation.py --report-only [--label after] [--show-survivors]   # re-read a work folder

Modules and the tests run against them are :data:`MODULES`; tests are restricted to those files so that a run
takes tens of minutes on one core. A survivor is either a gap in the tests or an equivalent mutant (a change
that cannot alter behaviour, e.g. on a default that is always overridden); ``benchmarks/MUTATION.md`` sorts
the ones looked at.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, load, machine_info, merge_result

RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"

#: module -> the test files run against it (their union is what mutmut runs; it picks per mutated function the
#: tests that reach it)
MODULES: dict[str, list[str]] = {
    "ragopt/evaluation/metrics.py": ["tests/evaluation/test_metrics.py", "tests/evaluation/test_metrics_coercion.py"],
    "ragopt/evaluation/trec.py": ["tests/evaluation/test_trec.py", "tests/evaluation/test_fuzz_trec.py"],
    "ragopt/evaluation/significance.py": ["tests/evaluation/test_significance.py"],
    "ragopt/store.py": [
        "tests/core/test_store.py",
        "tests/core/test_store_keys.py",
        "tests/core/test_faults_store.py",
        "tests/core/test_fuzz_manifest.py::test_a_manifest_cannot_vouch_for_files_outside_the_artifact",
    ],
    "ragopt/cache.py": ["tests/core/test_stage_cache.py"],
    "ragopt/sqlite_cache.py": [
        "tests/rerankers/test_score_cache.py",
        "tests/llm/test_base_cache.py",
        "tests/core/test_faults_store.py",
    ],
    "ragopt/_io.py": ["tests/core/test_io_atomic.py", "tests/core/test_faults_store.py"],
}
#: tests left out: wall-clock assertions (a mutant's slowdown or the machine's load would decide them) and
#: tests that only spawn a fresh interpreter (it imports the unmutated package)
DESELECT = [
    "tests/evaluation/test_metrics.py::test_large_evaluation_is_fast",
    "tests/llm/test_base_cache.py::test_import_stays_light",
    "tests/core/test_faults_store.py::test_a_real_write_limit_gives_clear_errors_and_corrupts_nothing",
]
STATUS = {  # mutmut's exit codes (mutmut.stats.status_by_exit_code)
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no_tests",
    33: "no_tests",
    34: "skipped",
    36: "timeout",
    37: "caught_by_type_check",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
    None: "not_checked",
}


def _toml_list(xs: list[str]) -> str:
    return "[" + ", ".join(json.dumps(x) for x in xs) + "]"


def prepare(workdir: Path, modules: list[str]) -> list[str]:
    """Fill ``workdir`` with the package, the tests and the config; the test files selected."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    shutil.copytree(ROOT / "ragopt", workdir / "ragopt", ignore=ignore)
    shutil.copytree(ROOT / "tests", workdir / "tests", ignore=ignore)
    shutil.copytree(ROOT / "pipelines", workdir / "pipelines", ignore=ignore)  # named pipelines some tests load
    tests = sorted({t for m in modules for t in MODULES.get(m, []) if (ROOT / t.split("::")[0]).is_file()})
    pytest_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["pytest"]["ini_options"]
    addopts = re.sub(r"--durations=\d+", "", pytest_cfg.get("addopts", "")).split()
    select = [*tests, *(f"--deselect={t}" for t in DESELECT), "-m", "not slow and not integration and not gpu"]
    text = f"""[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = {json.dumps(" ".join(addopts))}
markers = {_toml_list(pytest_cfg.get("markers", []))}

[tool.mutmut]
source_paths = ["ragopt"]
also_copy = ["pipelines"]
only_mutate = {_toml_list(modules)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
pytest_add_cli_args_test_selection = {_toml_list(select)}
use_git_change_detection = false
timeout_multiplier = 15.0
timeout_constant = 2.0
"""
    (workdir / "pyproject.toml").write_text(text, encoding="utf-8")
    return tests


def run_mutmut(workdir: Path, max_children: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAGOPT_PROGRESS": "0"}
    env.pop("RAGOPT_INDEX_DIR", None)
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=workdir, env=env, check=False)
    return time.monotonic() - t0


def read_results(workdir: Path, modules: list[str]) -> dict:
    """Verdicts per module from mutmut's ``mutants/<module>.meta`` files, and the survivors' diffs."""
    per_module: dict[str, dict] = {}
    survivors: dict[str, str] = {}
    for module in modules:
        meta = workdir / "mutants" / f"{module}.meta"
        if not meta.is_file():
            continue
        codes = json.loads(meta.read_text("utf-8")).get("exit_code_by_key", {})
        counts: dict[str, int] = {}
        for name, code in codes.items():
            status = STATUS.get(code, "suspicious")
            counts[status] = counts.get(status, 0) + 1
            if status == "survived":
                survivors[name] = module
        tested = counts.get("killed", 0) + counts.get("survived", 0) + counts.get("timeout", 0)
        per_module[module] = {
            "mutants": len(codes),
            **dict(sorted(counts.items())),
            "survival_rate": round(counts.get("survived", 0) / tested, 4) if tested else None,
        }
    totals: dict[str, int] = {}
    for m in per_module.values():
        for k, v in m.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    tested = totals.get("killed", 0) + totals.get("survived", 0) + totals.get("timeout", 0)
    totals_out = {**totals, "survival_rate": round(totals.get("survived", 0) / tested, 4) if tested else None}
    diffs = _diffs(workdir, survivors)
    return {"modules": per_module, "total": totals_out, "survivors": diffs}


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for name, path in json.loads(sys.stdin.read()).items():
    try:
        diff = get_diff_for_mutant(name, path=path)
    except Exception as e:  # an internal API of mutmut: keep the name if it changes
        diff = f"(no diff: {e})"
    out[name] = [l for l in diff.splitlines() if l[:1] in "+-" and not l.startswith(("+++", "---"))]
print(json.dumps(out))
"""


def _diffs(workdir: Path, survivors: dict[str, str]) -> dict[str, str]:
    """The changed lines of each surviving mutant (what ``mutmut show`` prints), in one process."""
    if not survivors:
        return {}
    out = subprocess.run(
        [sys.executable, "-c", _DIFFS],
        cwd=workdir,
        input=json.dumps(survivors),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        got = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {name: f"(no diff: {out.stderr.strip()[-200:]})" for name in sorted(survivors)}
    return {name: "\n".join(got.get(name, [])) for name in sorted(survivors)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="+", default=list(MODULES))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ragopt-mutation"))
    ap.add_argument("--max-children", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="read the verdicts of an earlier run in --workdir")
    ap.add_argument("--show-survivors", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--label", default="run", help="the section of --out this run's record goes to")
    args = ap.parse_args(argv)
    unknown = [m for m in args.modules if not (ROOT / m).is_file()]
    if unknown:
        ap.error(f"no such module: {', '.join(unknown)}")
    record: dict = {"machine": machine_info(["mutmut", "pytest", "hypothesis"]), "load_before": load()}
    if not args.report_only:
        record["tests"] = prepare(args.workdir, args.modules)
        record["deselected"] = DESELECT
        record["max_children"] = args.max_children
        record["wall_seconds"] = round(run_mutmut(args.workdir, args.max_children), 1)
        record["load_after"] = load()
    elif args.out.is_file():  # keep what the run recorded
        old = json.loads(args.out.read_text("utf-8")).get(args.label, {})
        record = {**record, **old}
    record.update(read_results(args.workdir, args.modules))
    merge_result(args.out, args.label, record)
    print(json.dumps({"modules": record["modules"], "total": record["total"]}, indent=1))
    if args.show_survivors:
        for name, diff in record["survivors"].items():
            print(f"\n# {name}\n{diff}")


if __name__ == "__main__":
    main()
