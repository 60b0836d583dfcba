"""int8 cross-encoder arithmetic on this CPU and on an emulated AVX2-only CPU (issue 10).

ONNX Runtime's u8 x s8 kernels for CPUs without VNNI add pairs of products into a saturating int16; with
full 8-bit weights that clips, and int8 scores collapse (seen on a Zen 3 server: correlation 0.55 with fp32).
The checks compare one quantised MatMul with the error bound that follows from the quantisation steps
(``int8_matmul_check.py`` derives it): the scheme ragopt picks must stay within it on every CPU."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

CHECK = Path(__file__).with_name("int8_matmul_check.py")
ROOT = Path(__file__).resolve().parents[2]


def _run_check(prefix: list[str]) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *(p for p in sys.path if p)]),
    }
    env.pop("RAGOPT_ONNX_INT8_WEIGHT_BITS", None)
    proc = subprocess.run(
        [*prefix, os.path.realpath(sys.executable), str(CHECK)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_int8_matmul_stays_within_the_quantisation_bound_on_this_cpu():
    out = _run_check([])
    assert out["ratio"]["7"] <= 1.0  # 7-bit weights cannot saturate an int16 pair sum: accurate on every CPU
    assert out["ratio"][str(out["scheme_bits"])] <= 1.0  # the scheme chosen for this CPU
    assert out["scheme_bits"] == (8 if out["vnni"] else 7)


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or shutil.which("qemu-x86_64") is None,
    reason="needs qemu-x86_64 (Debian: qemu-user) on an x86-64 machine",
)
def test_int8_on_an_emulated_avx2_cpu_without_vnni():
    out = _run_check(["qemu-x86_64", "-cpu", "Haswell"])
    assert out["vnni"] is False and out["scheme_bits"] == 7  # detected from CPUID, as ONNX Runtime sees it
    assert out["ratio"]["7"] <= 1.0
    # the fault this guards against, reproduced: full 8-bit weights break the bound on this CPU type
    assert out["ratio"]["8"] > 1.0
