"""Tiny, randomly initialised models built on the spot, for tests that need a real model's code path
(tokenisation, batching, ONNX export, training loops) without downloading weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

__all__ = ["tiny_bert"]

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tiny_bert(
    path: str | Path,
    words: Sequence[str],
    *,
    head: Literal["classifier", "encoder"] = "classifier",
    max_positions: int = 128,
    initializer_range: float | None = None,
    seed: int = 0,
) -> Path:
    """A 1-layer, 16-dimensional BERT with a word-level vocabulary of ``words`` saved to ``path``: with a
    one-logit classification head (``classifier``, a cross-encoder) or bare (``encoder``, a bi-encoder base).
    Deterministic for a given ``seed``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    d = Path(path)
    vocab = [*SPECIAL, *words]
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", "utf-8")
    BertTokenizerFast(str(d / "vocab.txt")).save_pretrained(d)  # a vocabulary file: transformers 4.x and 5.x alike
    torch.manual_seed(seed)
    extra = {"initializer_range": initializer_range} if initializer_range is not None else {}
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
        **({"num_labels": 1} if head == "classifier" else {}),
        **extra,
    )
    model = BertForSequenceClassification(cfg) if head == "classifier" else BertModel(cfg)
    model.save_pretrained(d)
    return d
