"""The folders are the architecture: import-linter checks the layer contracts declared in pyproject.toml
(no cycles at any depth, pure kernels, a core that imports no stage family, stage families that import no
tuning/training/MCP/CLI, nothing that imports the CLI). Imports inside functions count too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_layer_contracts_hold():
    pytest.importorskip("importlinter")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--config",
            "pyproject.toml",
            "--no-cache",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
