"""One int8 MatMul through ONNX Runtime, checked against the error bound of dynamic quantisation.

Run by tests/rerankers/test_onnx_int8.py on this CPU and, under ``qemu-x86_64 -cpu Haswell``, on an emulated
AVX2-only CPU (no VNNI). Prints one JSON object: the scheme this CPU gets, whether VNNI was detected, and for
each weight width (7 and 8 bits) the worst ratio |error| / bound over all outputs (<= 1 means within the bound).

The bound. ``DynamicQuantizeLinear`` maps activations to uint8 with step ``s_a = (max(x, 0) - min(x, 0)) / 255``;
a dequantised activation is off by at most ``s_a`` (half a step of rounding, plus at most half a step where
the rounded zero point clips the top of the range). Weights are stored per output column as ``q * s_w``; we read
``q`` and ``s_w`` from the quantised model, so the weight error is known exactly. ``MatMulInteger`` is exact in
int32 *unless the CPU kernel saturates*. So, for output ``(i, j)``::

    |y - x @ W| <= sum_k s_a * |W^_kj| + |x_ik| * |W^_kj - W_kj|   (+ float32 rounding)

A kernel that clips an int16 pair sum (``vpmaddubsw`` on CPUs without VNNI) loses up to 32003 units of
``s_a * s_w`` per pair, far outside this bound.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def build(path: Path, w: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
        [numpy_helper.from_array(w.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def worst_ratio(q_path: Path, x: np.ndarray, w: np.ndarray) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(q_path)).graph.initializer}
    q = next(v for name, v in inits.items() if v.dtype == np.int8 and v.shape == w.shape).astype(np.float64)
    s_w = next(v for name, v in inits.items() if name.endswith("_scale") and v.size == w.shape[1]).astype(np.float64)
    w_hat = q * s_w[None, :]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    y = ort.InferenceSession(str(q_path), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    x64 = x.astype(np.float64)
    exact = x64 @ w.astype(np.float64)
    s_a = (max(float(x64.max()), 0.0) - min(float(x64.min()), 0.0)) / 255.0
    bound = s_a * np.abs(w_hat).sum(axis=0)[None, :] + np.abs(x64) @ np.abs(w_hat - w)
    bound = bound * (1 + 1e-4) + 1e-5 * np.abs(x64) @ np.abs(w)  # float32 accumulation and rescaling
    return float((np.abs(y - exact) / bound).max())


def main() -> None:
    from ragopt.rerankers.onnx_backend import cpu_has_vnni, quantization_scheme, quantize_int8

    rng = np.random.default_rng(0)
    k, n = 384, 64
    # the hard case for int16 pair sums: weights at the column's full scale, activations near the top of
    # the uint8 range (as after GELU), with one negative value so the zero point is not 0
    w = rng.choice([-1.0, 1.0], size=(k, n)) * rng.uniform(0.5, 2.0, size=(1, n))
    x = rng.uniform(0.8, 1.0, size=(16, k)).astype(np.float32)
    x[:, 0] = -0.05
    out = {"vnni": cpu_has_vnni(), "scheme_bits": quantization_scheme()["weight_bits"], "ratio": {}}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fp32.onnx"
        build(src, w)
        for bits in (7, 8):
            dst = Path(tmp) / f"int8-{bits}.onnx"
            quantize_int8(src, dst, {**quantization_scheme(), "weight_bits": bits})
            out["ratio"][str(bits)] = worst_ratio(dst, x, w)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
