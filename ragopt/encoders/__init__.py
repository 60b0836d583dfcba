"""Text encoders: model resolution (:mod:`.models`), bi-encoders with cached corpus embeddings
(:mod:`.encoder`), and the resumable shard loop they encode in (:mod:`.shards`)."""

from ragopt.encoders.encoder import FORMAT_VERSION, SHARD_SIZE, Encoder, SentenceTransformerEncoder
from ragopt.encoders.models import (
    MINILM_ALIASES,
    is_path_like,
    model_fingerprint,
    resolve_device,
    resolve_model,
    resolve_precision,
)

__all__ = [
    "FORMAT_VERSION",
    "SHARD_SIZE",
    "Encoder",
    "SentenceTransformerEncoder",
    "MINILM_ALIASES",
    "is_path_like",
    "model_fingerprint",
    "resolve_device",
    "resolve_model",
    "resolve_precision",
]
