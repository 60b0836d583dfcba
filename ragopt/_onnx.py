"""ONNX Runtime on the CPU, shared by the ONNX backends of the cross-encoder
(:mod:`ragopt.rerankers.onnx_backend`) and of the sentence-transformers encoder
(:mod:`ragopt.encoders.onnx_backend`): the export of a torch module with dynamic batch and sequence axes, int8
weights by dynamic quantisation with a scheme that suits this CPU, the versions that key an export, and the
session.

**Weight bits depend on the CPU** (:func:`quantization_scheme`). ONNX Runtime multiplies uint8 activations
by int8 weights with the CPU's integer dot-product instructions. With VNNI (``vpdpbusd``: AVX512-VNNI or
AVX-VNNI) products are accumulated in 32 bits. Without it (AVX2, or AVX-512 without VNNI) the kernel uses
``vpmaddubsw``, which adds two adjacent u8 x s8 products into a *saturating int16*: with full 8-bit weights
``255 * 127 * 2 = 64770 > 32767``, so large activations meeting large weights are silently clipped (on an
emulated Haswell a random 16-d cross-encoder's int8 scores fell to correlation 0.55 with fp32). With 7-bit
weights (``reduce_range``: ``|q| <= 64``) the pair sum is at most ``255 * 64 * 2 = 32640``: it cannot saturate.
So ``int8`` uses 8-bit weights only where VNNI is detected and 7-bit weights elsewhere (also where the CPU
cannot be identified); ``RAGOPT_ONNX_INT8_WEIGHT_BITS=7`` (or ``8``) overrides it, e.g. for a store shared by
machines of both kinds (7 is accurate on every CPU).

Needs ``onnx`` and ``onnxruntime`` (``pip install 'ragopt[onnx]'``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragopt._imports import optional, require
from ragopt.errors import ConfigError, first_line

__all__ = [
    "OPSET",
    "MODEL_FILE",
    "WEIGHT_BITS_ENV",
    "cpu_has_vnni",
    "quantization_scheme",
    "quantize_int8",
    "onnx_versions",
    "export_spec",
    "export_module",
    "open_session",
    "check_backend",
]

OPSET = 17
MODEL_FILE = "model.onnx"
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


def onnx_versions(what: str = "the onnx backend") -> dict[str, str]:
    """Versions that determine the exported graph (part of the artifact key)."""
    onnx = require("onnx", "onnx", what)
    onnxruntime = require("onnxruntime", "onnx", what)
    import torch

    return {
        "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": str(OPSET),
    }


def export_spec(
    model: str | None, fingerprint: str | None, precision: str, what: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The artifact key of an ONNX export of a model (its hub id, or its local folder's content ``fingerprint``)
    in ``precision``, with the exporter versions and, for int8, this machine's :func:`quantization_scheme`; and
    that scheme (None unless int8)."""
    scheme = quantization_scheme() if precision == "int8" else None
    spec = {"model": model, "model_fingerprint": fingerprint, "precision": precision, **onnx_versions(what)}
    if scheme is not None:
        spec["quantization"] = scheme
    return spec, scheme


def export_module(
    module: Any,
    sample: Sequence[Any],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    out_dir: Path,
    precision: str,
    scheme: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/model.onnx``: ``module`` (fp32, on the CPU, called positionally with ``sample``) exported
    with the TorchScript exporter at opset :data:`OPSET`, its weights quantised to int8 with ``scheme`` (default:
    this CPU's :func:`quantization_scheme`) when ``precision == "int8"``. Returns the manifest fields."""
    import torch

    module = module.float().cpu().eval()
    target = out_dir / (MODEL_FILE if precision == "fp32" else "fp32.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own future
        torch.onnx.export(
            module,
            tuple(sample),
            str(target),
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes=dynamic_axes,
        )
    if precision == "int8":
        scheme = scheme or quantization_scheme()
        quantize_int8(target, out_dir / MODEL_FILE, scheme)
        target.unlink()
    return {
        "inputs": list(input_names),
        "precision": precision,
        "bytes": (out_dir / MODEL_FILE).stat().st_size,
        **({"quantization": scheme} if precision == "int8" else {}),
    }


def open_session(model_dir: Path, what: str) -> Any:
    """An ONNX Runtime CPU session over ``model_dir/model.onnx`` (``$OMP_NUM_THREADS`` intra-op threads when set);
    a file it cannot open is a ConfigError at ``backend`` naming it."""
    ort = require("onnxruntime", "onnx", what)
    opts = ort.SessionOptions()
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    path = Path(model_dir) / MODEL_FILE
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # a damaged file: the artifact's checksums would say which
        raise ConfigError(
            "backend",
            f"cannot open the ONNX model {path} ({first_line(e)})",
        ) from e


def check_backend(backend: str, device: str, precision: str, at: str = "") -> None:
    """The settings a stage with a torch and an onnx backend refuses (ConfigError at ``<at>device`` or
    ``<at>precision``): onnx on an accelerator or in fp16, int8 on torch."""
    if backend == "onnx" and device in ("cuda", "mps"):
        raise ConfigError(
            f"{at}device",
            f"backend onnx runs on the CPU; got device {device!r} (use backend torch on an accelerator)",
        )
    if backend == "onnx" and precision == "fp16":
        raise ConfigError(f"{at}precision", "backend onnx runs fp32 or int8 on the CPU, not fp16")
    if backend == "torch" and precision == "int8":
        raise ConfigError(f"{at}precision", "int8 runs on the onnx backend: set backend: onnx")
