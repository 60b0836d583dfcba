"""ONNX Runtime backend of the ``sentence_transformer`` encoder: a CPU path, in fp32 or with int8 weights.

The model's transformer (the ``Transformer`` module of a sentence-transformers model) is exported once to ONNX
(``torch.onnx`` TorchScript exporter, dynamic batch and sequence axes, output: the last hidden states) into the
artifact store (kind ``enc-onnx``, keyed by the model's identity and content fingerprint, the precision, the
quantisation scheme and the exporter versions). ``int8`` applies ONNX Runtime's dynamic quantisation (int8 weights
per output channel, 8- or 7-bit by CPU: :func:`ragopt._onnx.quantization_scheme`).

Texts are tokenised by the model's own tokenizer exactly as ``SentenceTransformer.encode`` does (its
``max_seq_length``, padding to the longest text of the batch); the pooling (mean, CLS or max over the tokens, as
the model's ``Pooling`` module says) and the model's own ``Normalize`` module are applied in NumPy. So fp32 vectors
match the torch backend to float rounding. int8 vectors differ slightly; ``benchmarks/encoder_onnx.py`` measures
retrieval quality and speed of the three side by side. Models with other modules (``Dense`` projections, ...)
are refused with the list of what is supported.

Needs ``onnx`` and ``onnxruntime`` (``pip install 'ragopt[onnx]'``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from ragopt._onnx import export_module, open_session
from ragopt.errors import ConfigError

__all__ = [
    "ARTIFACT_KIND",
    "FORMAT_VERSION",
    "POOLING_MODES",
    "WHAT",
    "OnnxSentenceEncoder",
    "export_encoder",
    "model_layout",
]

ARTIFACT_KIND = "enc-onnx"
FORMAT_VERSION = 1
POOLING_MODES = ("mean", "cls", "max")
WHAT = "the onnx backend of sentence_transformer"
_SUPPORTED = "Transformer, then Pooling (mean, cls or max), then optionally Normalize"


def model_layout(model: Any, name: str) -> tuple[str, bool]:
    """``(pooling mode, normalises)`` of a sentence-transformers model whose modules the backend can run:
    ``Transformer``, ``Pooling`` and optionally ``Normalize``; a ConfigError at ``backend`` naming the model and
    its modules otherwise."""
    kinds = [type(m).__name__ for m in model]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ConfigError(
            "backend", f"model {name!r} has the modules {kinds}; backend onnx runs {_SUPPORTED} (use backend torch)"
        )
    cfg = model[1].get_config_dict()
    mode = cfg.get("pooling_mode")
    if mode is None:  # older sentence-transformers: one flag per mode
        flags = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens"}
        on = [m for m, flag in flags.items() if cfg.get(flag)]
        others = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v and k not in flags.values()]
        mode = on[0] if len(on) == 1 and not others else "+".join(on + others) or "none"
    if mode not in POOLING_MODES:
        raise ConfigError(
            "backend", f"model {name!r} pools with {mode!r}; backend onnx runs {_SUPPORTED} (use backend torch)"
        )
    return mode, len(kinds) == 3


def _tokenize(model: Any, texts: list[str]) -> dict[str, Any]:
    """The model's own tokenisation of ``texts`` (sentence-transformers >= 5 calls it ``preprocess``)."""
    fn = getattr(model, "preprocess", None) or model.tokenize
    return fn(texts)


class _HiddenStates:
    """A torch module around the transformer: positional inputs in ``names`` order, the last hidden states out
    (transformers' forward wrappers do not take its inputs positionally while traced)."""

    def __new__(cls, net: Any, names: list[str]) -> Any:
        import torch

        class HiddenStates(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, *inputs: Any) -> Any:
                return self.net(**dict(zip(names, inputs)), return_dict=True).last_hidden_state

        return HiddenStates()


def export_encoder(model: Any, out_dir: Path, precision: str, scheme: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out_dir/model.onnx``: the transformer of the sentence-transformers ``model`` (fp32, on the CPU),
    int8 weights with ``scheme`` when ``precision == "int8"``. Returns the manifest fields."""
    net = model[0].auto_model
    sample = _tokenize(model, ["a short text", "another text, a little longer"])
    order = list(inspect.signature(net.forward).parameters)
    names = sorted((n for n in sample if n in order and hasattr(sample[n], "shape")), key=order.index)
    axes = {**{n: {0: "batch", 1: "sequence"} for n in names}, "hidden": {0: "batch", 1: "sequence"}}
    return export_module(
        _HiddenStates(net, names), [sample[n] for n in names], names, ["hidden"], axes, out_dir, precision, scheme
    )


class OnnxSentenceEncoder:
    """Vectors of texts from the exported transformer: the model's tokenisation, then its pooling and (if it has
    one) its normalisation, in NumPy."""

    def __init__(self, model: Any, model_dir: Path, inputs: list[str], name: str):
        self.model = model  # for its tokenizer and max_seq_length; its weights are not used
        self.inputs = list(inputs)
        self.pooling, self.normalizes = model_layout(model, name)
        self.session = open_session(Path(model_dir), WHAT)

    def encode(self, texts: list[str]) -> np.ndarray:
        feats = _tokenize(self.model, texts)
        hidden = self.session.run(None, {n: feats[n].numpy().astype(np.int64) for n in self.inputs})[0]
        mask = feats["attention_mask"].numpy().astype(np.float32)[:, :, None]
        if self.pooling == "mean":
            vecs = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        elif self.pooling == "cls":
            vecs = hidden[:, 0]
        else:  # max over the real tokens
            vecs = np.where(mask > 0, hidden, -1e9).max(axis=1)
        vecs = vecs.astype(np.float32)
        if self.normalizes:
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs
