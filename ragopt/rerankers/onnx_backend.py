"""ONNX Runtime backend of the ``cross_encoder`` stage: a CPU path, in fp32 or with int8 weights.

The cross-encoder's transformers module is exported once to ONNX (``torch.onnx`` TorchScript exporter,
dynamic batch and sequence axes) into the artifact store (kind ``ce-onnx``, keyed by the model's identity and
content fingerprint, the precision, the quantisation scheme and the exporter versions); ``int8`` then applies
ONNX Runtime's dynamic quantisation (int8 weights of the matrix multiplications, one scale per output
channel; activations quantised to uint8 per batch at run time). Per-channel scales matter: on a MiniLM
cross-encoder trained on nq, one scale per tensor moved single scores by up to 6.8 logits, per channel by up
to 2.3 (256 pairs). The activations' scale is computed per batch, so an int8 score depends slightly on the
pairs batched with it.

int8 weights are 8-bit where the CPU has VNNI and 7-bit elsewhere (:func:`ragopt._onnx.quantization_scheme`
says why); the choice is part of the artifact key and of the pair-score cache key, so the two never mix.

Inputs are tokenised by the model's own tokenizer exactly as ``CrossEncoder.predict`` does (pairs, longest
part truncated first, padded to the longest pair of the batch), so fp32 scores match the torch backend to
float rounding. int8 scores differ slightly: whether the ranking survives is data dependent, so
``benchmarks/rerank.py precision`` measures nDCG@10 of both on a dataset before int8 is used for real.

Needs ``onnx`` and ``onnxruntime`` (``pip install 'ragopt[onnx]'``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragopt._onnx import (
    MODEL_FILE,
    OPSET,
    WEIGHT_BITS_ENV,
    cpu_has_vnni,
    export_module,
    onnx_versions,
    open_session,
    quantization_scheme,
    quantize_int8,
)

__all__ = [
    "ARTIFACT_KIND",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "OPSET",
    "WEIGHT_BITS_ENV",
    "WHAT",
    "OnnxCrossEncoder",
    "export_onnx",
    "onnx_versions",
    "cpu_has_vnni",
    "quantization_scheme",
    "quantize_int8",
]

ARTIFACT_KIND = "ce-onnx"
FORMAT_VERSION = 3  # 3: 7-bit int8 weights on CPUs without VNNI; 2: int8 weights per output channel; 1: per tensor
WHAT = "the onnx backend of cross_encoder"


def export_onnx(
    net: Any, tokenizer: Any, out_dir: Path, precision: str, scheme: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``out_dir/model.onnx``: ``net`` (a transformers sequence-classification module, fp32, on the CPU)
    exported with dynamic axes, its weights quantised to int8 with ``scheme`` (default: this CPU's
    :func:`quantization_scheme`) when ``precision == "int8"``."""
    names = list(tokenizer.model_input_names)
    sample = tokenizer(["a query"] * 2, ["a passage of text", "another one"], padding=True, return_tensors="pt")
    order = list(inspect.signature(net.forward).parameters)  # exported positionally: the forward's order
    names = sorted((n for n in names if n in sample and n in order), key=order.index)
    axes = {**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}}
    return export_module(net, [sample[n] for n in names], names, ["logits"], axes, out_dir, precision, scheme)


class OnnxCrossEncoder:
    """``CrossEncoder``-like scorer over an ONNX Runtime session: ``tokenizer``, ``config``, ``num_labels``
    and ``predict`` as the stage uses them."""

    def __init__(self, cross_encoder: Any, model_dir: Path, inputs: Sequence[str], max_length: int):
        self.tokenizer = cross_encoder.tokenizer
        self.config = cross_encoder.config
        self.num_labels = cross_encoder.num_labels
        self.max_length = max_length
        self.inputs = list(inputs)
        self.session = open_session(Path(model_dir), WHAT)

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
