"""ragopt._imports: optional packages are imported through one helper that names the extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ragopt._imports import optional, require
from ragopt.errors import BackendUnavailableError, RagoptError

RAGOPT = Path(__file__).resolve().parents[2] / "ragopt"


def test_require_returns_the_module():
    import json

    assert require("json", "dense") is json
    assert require("os.path", "dense").join("a", "b") == "a/b"


def test_missing_package_names_package_and_extra():
    with pytest.raises(BackendUnavailableError) as info:
        require("ragopt_no_such_package_xyz", "chroma", "the chroma index")
    msg = str(info.value)
    assert msg == "the chroma index needs ragopt_no_such_package_xyz: pip install 'ragopt[chroma]'"
    # catchable as ImportError (callers that probed with try/except ImportError keep working) and RagoptError
    assert isinstance(info.value, ImportError) and isinstance(info.value, RagoptError)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_distribution_name_is_the_pip_name():
    with pytest.raises(BackendUnavailableError, match=r"^thing needs PyStemmer: pip install 'ragopt\[x\]'$"):
        # a (missing) submodule of a package: name the distribution to install, not the module
        require("Stemmer.ragopt_no_such_submodule", "x", "thing")


def test_without_subject():
    with pytest.raises(BackendUnavailableError, match=r"^nope_pkg_123 is not installed: pip install 'ragopt\[mcp\]'$"):
        require("nope_pkg_123", "mcp")


def test_broken_dependency_is_reported(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg_ragopt").mkdir()
    (tmp_path / "brokenpkg_ragopt" / "__init__.py").write_text("import missing_dep_of_brokenpkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendUnavailableError) as info:
        require("brokenpkg_ragopt", "dense", "thing")
    assert "importing brokenpkg_ragopt failed" in str(info.value)
    assert "missing_dep_of_brokenpkg" in str(info.value)
    sys.modules.pop("brokenpkg_ragopt", None)


def test_optional():
    import json

    assert optional("json") is json
    assert optional("ragopt_no_such_package_xyz") is None


def test_no_hand_written_import_error_blocks():
    """Optional imports go through ragopt._imports (the files other layers own are checked by their own tests)."""
    owned_elsewhere = ("cli", "tuning", "llm")
    offenders = []
    for path in RAGOPT.rglob("*.py"):
        rel = path.relative_to(RAGOPT)
        if rel.parts[0].split(".")[0] in owned_elsewhere or rel.as_posix() in ("_imports.py", "evaluation/answers.py"):
            continue
        for i, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if "except ImportError" in line or "except ModuleNotFoundError" in line:
                offenders.append(f"{rel}:{i}: {line.strip()}")
    # the one allowed exception: typing_extensions vs typing, a Python-version fallback, not an optional package
    offenders = [o for o in offenders if not o.startswith("mcp/service.py") or "pragma: no cover" not in o]
    assert offenders == []


def test_import_ragopt_does_not_import_optional_packages():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ragopt._imports, sys; "
            "print([m for m in ('torch', 'faiss', 'chromadb', 'onnx') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"
