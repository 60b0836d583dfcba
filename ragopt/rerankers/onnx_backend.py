"""ONNX Runtime backend of the ``cross_encoder`` stage: a CPU path, in fp32 or with int8 weights.

The cross-encoder's transformers module is exported once to ONNX (``torch.onnx`` TorchScript exporter,
dynamic batch and sequence axes) into the artifact store (kind ``ce-onnx``, keyed by the model's identity and
content fingerprint, the precision and the exporter versions); ``int8`` then applies ONNX Runtime's dynamic
quantisation (int8 weights of the matrix multiplications, one scale per output channel; activations
quantised per batch at run time). Per-channel scales matter: on a MiniLM cross-encoder trained on nq, one
scale per tensor moved single scores by up to 6.8 logits, per channel by up to 2.3 (256 pairs). The
activations' scale is computed per batch, so an int8 score depends slightly on the pairs batched with it.
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
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ragopt.errors import BackendUnavailableError, ConfigError

__all__ = ["ARTIFACT_KIND", "FORMAT_VERSION", "OnnxCrossEncoder", "export_onnx", "onnx_versions"]

ARTIFACT_KIND = "ce-onnx"
FORMAT_VERSION = 2  # 2: int8 weights quantised per output channel (1: per tensor)
OPSET = 17
#: how ``int8`` is made; part of the export's and the pair-score cache's keys
QUANTIZATION = {"method": "onnxruntime.quantize_dynamic", "weight_type": "QInt8", "per_channel": True}
MODEL_FILE = "model.onnx"


def onnx_versions() -> dict[str, str]:
    """Versions that determine the exported graph (part of the artifact key)."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailableError("the onnx backend of cross_encoder needs onnx and onnxruntime: "
                                      "pip install 'ragopt[onnx]'") from e
    import torch

    return {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "opset": str(OPSET)}


def export_onnx(net: Any, tokenizer: Any, out_dir: Path, precision: str) -> dict[str, Any]:
    """Write ``out_dir/model.onnx``: ``net`` (a transformers sequence-classification module, fp32, on the CPU)
    exported with dynamic axes, its weights quantised to int8 when ``precision == "int8"``."""
    import torch

    names = list(tokenizer.model_input_names)
    sample = tokenizer(["a query"] * 2, ["a passage of text", "another one"], padding=True, return_tensors="pt")
    order = list(inspect.signature(net.forward).parameters)  # exported positionally: the forward's order
    names = sorted((n for n in names if n in sample and n in order), key=order.index)
    net = net.float().cpu().eval()
    target = out_dir / (MODEL_FILE if precision == "fp32" else "fp32.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own future
        torch.onnx.export(net, tuple(sample[n] for n in names), str(target), input_names=names,
                          output_names=["logits"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}})
    if precision == "int8":
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice on the root logger
        try:
            quantize_dynamic(str(target), str(out_dir / MODEL_FILE), weight_type=QuantType.QInt8,
                             per_channel=QUANTIZATION["per_channel"])
        finally:
            logging.getLogger().setLevel(level)
        target.unlink()
    return {"inputs": names, "precision": precision,
            "bytes": (out_dir / MODEL_FILE).stat().st_size}


class OnnxCrossEncoder:
    """``CrossEncoder``-like scorer over an ONNX Runtime session: ``tokenizer``, ``config``, ``num_labels``
    and ``predict`` as the stage uses them."""

    def __init__(self, cross_encoder: Any, model_dir: Path, inputs: Sequence[str], max_length: int):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError("the onnx backend of cross_encoder needs onnxruntime: "
                                          "pip install 'ragopt[onnx]'") from e
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
            raise ConfigError("backend", f"cannot open the ONNX model {path} ({type(e).__name__}: "
                                         f"{str(e).splitlines()[0] if str(e) else ''})") from e

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, sigmoid: bool = False) -> np.ndarray:
        """Scores of ``pairs`` (raw logits, or their sigmoid), in batches of ``batch_size`` in the given order."""
        out = np.empty(len(pairs), np.float32)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            feats = self.tokenizer([q for q, _ in chunk], [p for _, p in chunk], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="np")
            logits = self.session.run(None, {n: feats[n].astype(np.int64) for n in self.inputs})[0]
            out[start:start + len(chunk)] = logits.reshape(len(chunk), -1)[:, 0]
        if sigmoid:
            out = (1.0 / (1.0 + np.exp(-out.astype(np.float64)))).astype(np.float32)
        return out
