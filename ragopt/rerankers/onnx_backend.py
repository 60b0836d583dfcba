"""ONNX Runtime backend of the ``cross_encoder`` stage: a CPU path, in fp32 or with int8 weights.

The cross-encoder's transformers module is exported once to ONNX (``torch.onnx`` TorchScript exporter,
dynamic batch and sequence axes) into the artifact store (kind ``ce-onnx``, keyed by the model's identity and
content fingerprint, the precision, the quantisation scheme and the exporter versions); ``int8`` then applies
ONNX Runtime's dynamic quantisation (int8 weights of the matrix multiplications, one scale per output
channel; activations quantised to uint8 per batch at run time). Per-channel scales matter: on a MiniLM
cross-encoder trained on nq, one scale per tensor moved single scores by up to 6.8 logits, per channel by up
to 2.3 (256 pairs). The activations' scale is computed per batch, so an int8 score depends slightly on the
pairs batched with it.

**Weight bits depend on the CPU** (:func:`quantization_scheme`). ONNX Runtime multiplies uint8 activations
by int8 weights with the CPU's integer dot-product instructions. With VNNI (``vpdpbusd``: AVX512-VNNI or
AVX-VNNI) products are accumulated in 32 bits. Without it (AVX2, or AVX-512 without VNNI) the kernel uses
``vpmaddubsw``, which adds two adjacent u8 x s8 products into a *saturating int16*: with full 8-bit weights
``255 * 127 * 2 = 64770 > 32767``, so large activations meeting large weights are silently clipped (on an
emulated Haswell a random 16-d cross-encoder's int8 scores fell to correlation 0.55 with fp32). With 7-bit
weights (``reduce_range``: ``|q| <= 64``) the pair sum is at most ``255 * 64 * 2 = 32640``: it cannot saturate.
So ``int8`` uses 8-bit weights only where VNNI is detected and 7-bit weights elsewhere (also where the CPU
cannot be identified). The choice is part of the artifact key and of the pair-score cache key, so the two
never mix; ``RAGOPT_ONNX_INT8_WEIGHT_BITS=7`` (or ``8``) overrides it, e.g. for a store shared by
machines of both kinds (7 is accurate on every CPU).

Inputs are tokenised by the model's own tokenizer exactly as ``CrossEncoder.predict`` does (pairs, longest
part truncated first, padded to the longest pair of the batch), so fp32 scores match the torch backend to
float rounding. int8 scores differ slightly: whether the ranking survives is data dependent, so
``benchmarks/rerank.py precision`` measures nDCG@10 of both on a dataset before int8 is used for real.

Needs ``onnx`` and ``onnxruntime`` (``pip install 'ragopt[onnx]'``).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragopt._imports import optional, require
from ragopt.errors import ConfigError

__all__ = [
    "ARTIFACT_KIND",
    "FORMAT_VERSION",
    "OnnxCrossEncoder",
    "export_onnx",
    "onnx_versions",
    "cpu_has_vnni",
    "quantization_scheme",
    "quantize_int8",
]

ARTIFACT_KIND = "ce-onnx"
FORMAT_VERSION = 3  # 3: 7-bit int8 weights on CPUs without VNNI; 2: int8 weights per output channel; 1: per tensor
OPSET = 17
MODEL_FILE = "model.onnx"
_WHAT = "the onnx backend of cross_encoder"
WEIGHT_BITS_ENV = "RAGOPT_ONNX_INT8_WEIGHT_BITS"


def cpu_has_vnni() -> bool:
    """Whether this CPU has 8-bit dot products with 32-bit accumulation (x86 AVX512-VNNI or AVX-VNNI).

    Read from NumPy's runtime CPU dispatch table, which asks CPUID as ONNX Runtime does (``/proc/cpuinfo`` can
    describe the host rather than the CPU a program sees, e.g. under emulation); from ``/proc/cpuinfo`` only
    where NumPy has no table. Unknown CPUs get False: the choice that is accurate everywhere."""
    umath = optional("numpy._core._multiarray_umath") or optional("numpy.core._multiarray_umath")  # numpy 2, 1
    features = getattr(umath, "__cpu_features__", None) or {}
    if features:
        return bool(features.get("AVX512VNNI") or features.get("AVXVNNI"))
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(set(line.split(":", 1)[1].split()) & {"avx512_vnni", "avx_vnni"})
    except OSError:
        pass
    return False


def quantization_scheme() -> dict[str, Any]:
    """How ``int8`` is made on this machine: part of the export's and the pair-score cache's keys.

    8-bit weights where VNNI accumulates in 32 bits, 7-bit weights (``reduce_range``) elsewhere, where the
    int16 pair sums of ``vpmaddubsw`` would saturate (see the module docstring); ``$RAGOPT_ONNX_INT8_WEIGHT_BITS``
    (7 or 8) overrides the choice."""
    env = os.environ.get(WEIGHT_BITS_ENV, "").strip()
    if env:
        if env not in ("7", "8"):
            raise ConfigError(WEIGHT_BITS_ENV, f"must be 7 or 8, got {env!r}")
        bits = int(env)
    else:
        bits = 8 if cpu_has_vnni() else 7
    return {"method": "onnxruntime.quantize_dynamic", "weight_type": "QInt8", "per_channel": True, "weight_bits": bits}


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, scheme: dict[str, Any]) -> None:
    """Dynamic int8 quantisation of the ONNX model ``src`` into ``dst`` with ``scheme``
    (:func:`quantization_scheme`)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice on the root logger
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=scheme["per_channel"],
            reduce_range=scheme["weight_bits"] == 7,
        )
    finally:
        logging.getLogger().setLevel(level)


def onnx_versions() -> dict[str, str]:
    """Versions that determine the exported graph (part of the artifact key)."""
    onnx = require("onnx", "onnx", _WHAT)
    onnxruntime = require("onnxruntime", "onnx", _WHAT)
    import torch

    return {
        "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": str(OPSET),
    }


def export_onnx(
    net: Any, tokenizer: Any, out_dir: Path, precision: str, scheme: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``out_dir/model.onnx``: ``net`` (a transformers sequence-classification module, fp32, on the CPU)
    exported with dynamic axes, its weights quantised to int8 with ``scheme`` (default: this CPU's
    :func:`quantization_scheme`) when ``precision == "int8"``."""
    import torch

    names = list(tokenizer.model_input_names)
    sample = tokenizer(["a query"] * 2, ["a passage of text", "another one"], padding=True, return_tensors="pt")
    order = list(inspect.signature(net.forward).parameters)  # exported positionally: the forward's order
    names = sorted((n for n in names if n in sample and n in order), key=order.index)
    net = net.float().cpu().eval()
    target = out_dir / (MODEL_FILE if precision == "fp32" else "fp32.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own future
        torch.onnx.export(
            net,
            tuple(sample[n] for n in names),
            str(target),
            input_names=names,
            output_names=["logits"],
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
        )
    if precision == "int8":
        scheme = scheme or quantization_scheme()
        quantize_int8(target, out_dir / MODEL_FILE, scheme)
        target.unlink()
    return {
        "inputs": names,
        "precision": precision,
        "bytes": (out_dir / MODEL_FILE).stat().st_size,
        **({"quantization": scheme} if precision == "int8" else {}),
    }


class OnnxCrossEncoder:
    """``CrossEncoder``-like scorer over an ONNX Runtime session: ``tokenizer``, ``config``, ``num_labels``
    and ``predict`` as the stage uses them."""

    def __init__(self, cross_encoder: Any, model_dir: Path, inputs: Sequence[str], max_length: int):
        ort = require("onnxruntime", "onnx", _WHAT)
        self.tokenizer = cross_encoder.tokenizer
        self.config = cross_encoder.config
        self.num_labels = cross_encoder.num_labels
        self.max_length = max_length
        self.inputs = list(inputs)
        opts = ort.SessionOptions()
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads > 0:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        path = Path(model_dir) / MODEL_FILE
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # a damaged file: the artifact's checksums would say which
            raise ConfigError(
                "backend",
                f"cannot open the ONNX model {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            ) from e

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, sigmoid: bool = False) -> np.ndarray:
        """Scores of ``pairs`` (raw logits, or their sigmoid), in batches of ``batch_size`` in the given order."""
        out = np.empty(len(pairs), np.float32)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            feats = self.tokenizer(
                [q for q, _ in chunk],
                [p for _, p in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            logits = self.session.run(None, {n: feats[n].astype(np.int64) for n in self.inputs})[0]
            out[start : start + len(chunk)] = logits.reshape(len(chunk), -1)[:, 0]
        if sigmoid:
            out = (1.0 / (1.0 + np.exp(-out.astype(np.float64)))).astype(np.float32)
        return out
