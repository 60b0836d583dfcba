"""Cross-encoder reranking with sentence-transformers' ``CrossEncoder``.

The stage rescores the first ``depth`` candidates of every query with a cross-encoder (a hub id, a local
model folder, or an artifact of ``ragopt train cross-encoder``) and sorts them by that score. Candidates
below ``depth`` keep their order after the reranked ones, their scores shifted below the lowest reranked
score so every row stays sorted. Rows without candidates (a query that matched nothing) pass through
unchanged.

Every (query, passage) score goes through a persistent pair-score cache (:mod:`ragopt.rerankers.score_cache`)
keyed by the model's identity and content fingerprint, ``max_length``, ``with_title``, ``activation`` and
precision: a pair is scored once, by any run or process that shares the artifact store. Each run counts in
its batch stats ``ce_pairs`` (pairs the model scored), ``ce_batches``, ``ce_cache_hits`` and
``ce_truncated`` (pairs whose tokenised query + passage exceeded ``max_length`` and were cut, as the
model's tokenizer does, longest part first), and the time spent (``cross_encoder``).

Backends: ``torch`` (sentence-transformers, any device, fp32 or fp16) and ``onnx`` (ONNX Runtime on the CPU,
fp32 or int8 weights; the model is exported once into the artifact store, see
:mod:`ragopt.rerankers.onnx_backend`). The backend is part of the pair-score cache key unless it is torch.

:meth:`CrossEncoderReranker.score_pairs` and :meth:`CrossEncoderReranker.score_matrix` are the scoring API
for other stages (CUR search).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragopt._imports import require
from ragopt._onnx import check_backend, export_spec
from ragopt._progress import progress_enabled
from ragopt.config import param
from ragopt.encoders.models import load_error, model_fingerprint, resolve_device, resolve_model, set_precision
from ragopt.errors import ConfigError, StageError
from ragopt.kernels.topk import splice_head
from ragopt.pipeline import Fitted, Stage
from ragopt.registry import register
from ragopt.rerankers import onnx_backend as ob
from ragopt.rerankers.score_cache import PairScoreCache, text_hash
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Stats

__all__ = ["CrossEncoderReranker", "resolve_cross_encoder", "ARTIFACT_KIND"]

ARTIFACT_KIND = "cross-encoder"  # what `ragopt train cross-encoder` writes; the model is in its model/ folder
_MODELS: dict[tuple[str, ...], Any] = {}  # (source, device, max_length, precision, backend[, onnx dir]) -> scorer
_TOKEN_LENGTHS: dict[str, dict[str, int]] = {}  # source -> text hash -> token count (no special tokens)


def resolve_cross_encoder(name: str, path: str = "model") -> tuple[str, Path | None]:
    """``(identity, local_dir)`` of a cross-encoder: a hub id (dir None), a model folder, or a training
    artifact (its ``model/`` folder). A local folder must hold a sequence-classification model; a
    bi-encoder folder (e.g. the packaged all-MiniLM-L6-v2) is refused with a hint to fine-tune one."""
    identity, local = resolve_model(name, path)
    if local is None:
        return identity, None
    if (local / "manifest.json").is_file() and (local / "model").is_dir():
        try:
            kind = json.loads((local / "manifest.json").read_text("utf-8")).get("kind")
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(path, f"unreadable artifact manifest in {local}: {e}") from None
        if kind != ARTIFACT_KIND:
            raise ConfigError(path, f"{name!r} is a ragopt {kind!r} artifact, not a {ARTIFACT_KIND!r} one")
        local = local / "model"
    cfg_file = local / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(path, f"model folder {str(local)!r} has no config.json (not a transformers model)")
    try:
        arch = json.loads(cfg_file.read_text("utf-8")).get("architectures") or []
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(path, f"unreadable {cfg_file}: {e}") from None
    if not any(str(a).endswith("ForSequenceClassification") for a in arch):
        raise ConfigError(
            path,
            f"{name!r} is not a cross-encoder (architectures {arch}, expected a "
            "...ForSequenceClassification model); fine-tune one from it with "
            "`ragopt train cross-encoder --base ...`",
        )
    return str(local), local


@dataclass(eq=False)
class _CrossEncoderFit(Fitted):
    store: ArtifactStore | None = None  # where the score cache (and the ONNX export) live
    progress: bool | None = None  # progress bars while scoring
    onnx_artifact: Any = None  # the ONNX export (backend onnx)


@register("cross_encoder")
class CrossEncoderReranker(Stage):
    """Rescore the top ``depth`` candidates with a cross-encoder (sentence-transformers ``CrossEncoder``)."""

    requires: ClassVar[frozenset[str]] = frozenset({"queries", "candidates"})
    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})
    cache_ignore: ClassVar[tuple[str, ...]] = ("batch_size", "device", "cache")

    model: str = param(
        doc="hub id (e.g. cross-encoder/ms-marco-MiniLM-L6-v2), a local cross-encoder folder, or "
        "an artifact folder written by `ragopt train cross-encoder`"
    )
    depth: int = param(100, doc="candidates rescored per query; the rest keep their order below them", ge=1)
    batch_size: int = param(32, doc="pairs per forward pass", ge=1)
    max_length: int = param(256, doc="max tokens of query + passage; longer pairs are truncated (counted)", ge=8)
    device: Literal["auto", "cpu", "cuda", "mps"] = param("auto", doc="auto: cuda, then mps, then cpu")
    precision: Literal["auto", "fp32", "fp16", "int8"] = param(
        "auto",
        doc="auto: fp16 on cuda, fp32 elsewhere; int8 (weights) needs backend onnx: check its nDCG@10 "
        "against fp32 on your data first (benchmarks/rerank.py precision)",
    )
    backend: Literal["torch", "onnx"] = param(
        "torch",
        doc="torch: sentence-transformers on any device; onnx: ONNX Runtime on the CPU (pip install 'ragopt[onnx]')",
    )
    with_title: bool = param(True, doc="passage text is title + text (BEIR convention) rather than text alone")
    activation: Literal["none", "sigmoid"] = param(
        "none", doc="none: raw logits (no ties from saturation); sigmoid: probabilities in (0, 1)"
    )
    cache: bool = param(True, doc="keep pair scores in the artifact store (<root>/ce-scores/) and reuse them")

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        check_backend(self.backend, self.device, self.precision, at)
        resolve_cross_encoder(self.model, f"{at}model")

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._resolution: tuple[str, Path | None, str, str] | None = None  # (identity, local dir, device, precision)
        self._scores: PairScoreCache | None = None  # the pair-score cache, opened on first use

    def _store(self) -> ArtifactStore:
        """The store fit was given (the default store before fit)."""
        store = self._fit.store if self._fit is not None else None
        return store if store is not None else ArtifactStore()

    # -- model -------------------------------------------------------------------------------
    def _resolved(self) -> tuple[str, Path | None, str, str]:
        if self._resolution is None:
            self.validate()
            identity, local = resolve_cross_encoder(self.model)
            device = "cpu" if self.backend == "onnx" else resolve_device(self.device)
            precision = ("fp16" if device == "cuda" else "fp32") if self.precision == "auto" else self.precision
            if precision == "fp16" and device == "cpu":
                raise ConfigError("precision", "fp16 on the CPU is slow and inexact; use fp32 (or auto)")
            self._resolution = (identity, local, device, precision)
        return self._resolution

    @property
    def _source(self) -> str:
        identity, local, _, _ = self._resolved()
        return str(local) if local is not None else identity

    def load_model(self) -> Any:
        """The scorer: a ``CrossEncoder`` (backend torch) or an :class:`OnnxCrossEncoder`, loaded once per process
        per path, device, max length, precision and backend."""
        return self._load_model(self._store())[0]

    def _load_model(self, store: ArtifactStore, rebuild_onnx: bool = False) -> tuple[Any, Any]:
        """``(scorer, ONNX export artifact or None)``."""
        identity, local, device, precision = self._resolved()
        if self.backend == "onnx":
            return self._load_onnx(store, rebuild_onnx)
        return self._load_torch(device, precision), None

    def _load_torch(self, device: str, precision: str) -> Any:
        identity, local, _, _ = self._resolved()
        key = (self._source, device, self.max_length, precision, "torch")
        if key not in _MODELS:
            CrossEncoder = require("sentence_transformers", "rerank", "the cross_encoder reranker").CrossEncoder
            try:
                model = CrossEncoder(self._source, device=device, max_length=self.max_length)
            except Exception as e:  # hub / network / format errors all end here
                hint = "pass a local cross-encoder folder or an artifact of `ragopt train cross-encoder`"
                raise load_error(self.model, e, "cross-encoder", hint if local is None else "") from e
            arch = getattr(model.config, "architectures", None) or []
            if local is None and arch and not any(str(a).endswith("ForSequenceClassification") for a in arch):
                raise ConfigError("model", f"{self.model!r} is not a cross-encoder (architectures {arch})")
            if model.num_labels != 1:
                raise ConfigError(
                    "model",
                    f"{self.model!r} has {model.num_labels} output labels; a reranker "
                    "needs a single-score model (num_labels=1)",
                )
            _MODELS[key] = set_precision(model, precision)
        return _MODELS[key]

    def _load_onnx(self, store: ArtifactStore, rebuild: bool = False) -> tuple[Any, Any]:
        """Export (once, into the artifact store) and open the ONNX model of this cross-encoder: ``(scorer,
        artifact)``."""
        identity, local, _, precision = self._resolved()
        spec, scheme = export_spec(
            identity if local is None else None,
            model_fingerprint(local) if local is not None else None,
            precision,
            ob.WHAT,
        )
        base = self._load_torch("cpu", "fp32")
        art = store.get_or_create(
            ob.ARTIFACT_KIND,
            spec,
            ob.FORMAT_VERSION,
            lambda out: ob.export_onnx(base.model, base.tokenizer, out, precision, scheme),
            rebuild=rebuild,
        )
        key = (self._source, "cpu", self.max_length, precision, "onnx", str(art.path))
        if key not in _MODELS or art.created:
            _MODELS[key] = ob.OnnxCrossEncoder(base, art.path, art.manifest["inputs"], self.max_length)
        return _MODELS[key], art

    def scorer_spec(self) -> dict[str, Any]:
        """Everything that determines a pair's score: the key of the pair-score cache."""
        identity, local, _, precision = self._resolved()
        spec = {
            "model": identity if local is None else None,
            "model_fingerprint": model_fingerprint(local) if local is not None else None,
            "max_length": self.max_length,
            "with_title": self.with_title,
            "activation": self.activation,
            "precision": precision,
        }
        if self.backend != "torch":  # torch keys stay as they were before backends existed
            spec["backend"] = self.backend
            if precision == "int8":  # another quantisation scheme (e.g. 7- vs 8-bit weights) scores differently
                spec["quantization"] = ob.quantization_scheme()
        return spec

    def cache_spec(self) -> dict[str, Any] | None:
        spec = super().cache_spec()
        spec["scorer"] = self.scorer_spec()  # a retrained model at the same path is another key
        return spec

    def _score_cache(self) -> PairScoreCache | None:
        if not self.cache:
            return None
        if self._scores is None:
            self._scores = PairScoreCache.for_spec(self._store().root, self.scorer_spec())
        return self._scores

    # -- protocol ----------------------------------------------------------------------------
    def fit(
        self, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None
    ) -> CrossEncoderReranker:
        """Load the model (errors surface here) and open the score cache. ``rebuild`` re-exports the ONNX model
        (backend onnx) but keeps cached scores: they depend only on the scorer key; delete
        ``<root>/ce-scores/<key>.sqlite`` to drop them."""
        store = store if store is not None else ArtifactStore()
        self._init_runtime()
        _, onnx_art = self._load_model(store, rebuild_onnx=rebuild)
        fit = _CrossEncoderFit(corpus, store=store, progress=progress, onnx_artifact=onnx_art)
        self._fit = fit
        cache = self._score_cache()
        if cache is not None:
            fit.artifacts.append({"kind": "ce-scores", "path": str(cache.path), "created": not cache.exists})
        identity, local, _, _ = self._resolved()
        if local is not None and local.name == "model" and (local.parent / "manifest.json").is_file():
            fit.artifacts.append({"kind": ARTIFACT_KIND, "path": str(local.parent), "created": False})
        if onnx_art is not None:
            fit.artifacts.append(
                {"kind": onnx_art.manifest["kind"], "path": str(onnx_art.path), "created": onnx_art.created}
            )
        return self

    def transform(self, batch: Batch) -> Batch:
        if batch.doc_idx is None:
            raise StageError("cross_encoder: the batch has no candidates; put a retriever before it")
        n, width = batch.doc_idx.shape
        depth = min(self.depth, width)
        head = batch.doc_idx[:, :depth]
        rows, cols = np.nonzero(head >= 0)
        corpus = batch.corpus
        qtexts = [batch.queries.texts[r] for r in rows]
        ptexts = [corpus.text(int(head[r, c]), self.with_title) for r, c in zip(rows, cols)]
        with batch.stats.timer("cross_encoder"):
            pair_scores = self.score_pairs(
                qtexts, ptexts, batch.stats, progress=self._fit.progress if self._fit is not None else None
            )
        head_scores = np.full((n, depth), -np.inf, np.float32)
        head_scores[rows, cols] = pair_scores
        order = np.argsort(-head_scores, axis=1, kind="stable")  # ties keep the retriever's order
        head_idx = np.take_along_axis(head, order, axis=1)
        head_scores = np.take_along_axis(head_scores, order, axis=1)
        head_idx[~np.isfinite(head_scores)] = -1
        if width == depth:
            return batch.with_candidates(head_idx, head_scores, corpus)
        idx, scores = splice_head(head_idx, head_scores, batch.doc_idx[:, depth:], batch.scores[:, depth:])
        return batch.with_candidates(idx, scores, corpus)

    # -- scoring API -------------------------------------------------------------------------
    def score_pairs(
        self, queries: Sequence[str], passages: Sequence[str], stats: Stats | None = None, progress: Any = None
    ) -> np.ndarray:
        """Scores (float32) of ``(queries[i], passages[i])``, through the pair-score cache, in batches.

        ``stats`` gets ``ce_pairs``, ``ce_batches``, ``ce_cache_hits`` and ``ce_truncated``; ``progress`` is a
        bool, None (a bar on a terminal) or a tqdm-like object to update."""
        if len(queries) != len(passages):
            raise StageError(f"cross_encoder: {len(queries)} queries but {len(passages)} passages")
        stats = stats if stats is not None else Stats()
        for key in ("ce_pairs", "ce_batches", "ce_cache_hits", "ce_truncated"):
            stats.add(key, 0)  # present in every run's report, zero or not
        n = len(queries)
        out = np.empty(n, np.float32)
        if n == 0:
            return out
        qh, dh = _hashes(queries), _hashes(passages)
        cache = self._score_cache()
        if cache is not None:
            found, truncated = cache.get(qh, dh)
        else:
            found, truncated = np.full(n, np.nan, np.float32), np.zeros(n, bool)
        hit = ~np.isnan(found)
        out[hit] = found[hit]
        todo: dict[tuple[str, str], list[int]] = {}
        for i in np.flatnonzero(~hit).tolist():
            todo.setdefault((qh[i], dh[i]), []).append(i)
        if todo:
            first = [rows[0] for rows in todo.values()]
            scores, cut = self._score_new(
                [queries[i] for i in first],
                [passages[i] for i in first],
                [qh[i] for i in first],
                [dh[i] for i in first],
                cache,
                stats,
                progress,
            )
            for rows, s, t in zip(todo.values(), scores.tolist(), cut.tolist()):
                out[rows] = s
                truncated[rows] = t
        stats.add("ce_cache_hits", int(hit.sum()))
        stats.add("ce_truncated", int(truncated.sum()))
        return out

    def score_matrix(
        self, queries: Sequence[str], passages: Sequence[str], stats: Stats | None = None, progress: Any = None
    ) -> np.ndarray:
        """Scores of every (query, passage) combination: float32 ``(len(queries), len(passages))``."""
        nq, nd = len(queries), len(passages)
        flat_q = [q for q in queries for _ in range(nd)]
        flat_d = [d for _ in range(nq) for d in passages]
        return self.score_pairs(flat_q, flat_d, stats, progress).reshape(nq, nd)

    def token_lengths(self, texts: Sequence[str], hashes: Sequence[str] | None = None) -> np.ndarray:
        """Token counts of texts without special tokens, memoised per model and text."""
        memo = _TOKEN_LENGTHS.setdefault(self._source, {})
        hashes = hashes if hashes is not None else _hashes(texts)
        need = {h: t for h, t in zip(hashes, texts) if h not in memo}
        if need:
            tok = self.load_model().tokenizer
            ids = tok(
                list(need.values()),
                add_special_tokens=False,
                truncation=False,
                verbose=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
            memo.update(zip(need, (len(x) for x in ids)))
            if len(memo) > 2_000_000:  # bound memory on huge corpora
                memo.clear()
                return self.token_lengths(texts, hashes)
        return np.array([memo[h] for h in hashes], np.int64)

    def _score_new(
        self,
        queries: list[str],
        passages: list[str],
        qh: list[str],
        dh: list[str],
        cache: PairScoreCache | None,
        stats: Stats,
        progress: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        model = self.load_model()
        special = model.tokenizer.num_special_tokens_to_add(pair=True)
        cut = (self.token_lengths(queries, qh) + self.token_lengths(passages, dh) + special) > self.max_length
        if self.backend == "onnx":

            def predict(pairs: list[tuple[str, str]]) -> np.ndarray:
                return model.predict(pairs, batch_size=len(pairs), sigmoid=self.activation == "sigmoid")
        else:
            import torch

            act = torch.nn.Sigmoid() if self.activation == "sigmoid" else torch.nn.Identity()

            def predict(pairs: list[tuple[str, str]]) -> np.ndarray:
                return model.predict(
                    pairs, batch_size=len(pairs), show_progress_bar=False, activation_fn=act, convert_to_numpy=True
                )

        # longest first, as CrossEncoder.predict orders its own batches: the same batches, the same padding
        order = np.argsort([-(len(q) + len(p)) for q, p in zip(queries, passages)], kind="stable")
        scores = np.empty(len(queries), np.float32)
        bar, own = progress, False
        if progress is None or isinstance(progress, bool):
            bar = None
            if progress_enabled(progress):
                from tqdm.auto import tqdm

                bar, own = tqdm(total=len(order), desc="cross-encoder", unit="pair", file=sys.stderr), True
        bs = self.batch_size
        try:
            for start in range(0, len(order), bs):
                rows = order[start : start + bs]
                pairs = [(queries[i], passages[i]) for i in rows]
                s = np.asarray(predict(pairs), np.float32).reshape(-1)
                scores[rows] = s
                if cache is not None:
                    cache.put([qh[i] for i in rows], [dh[i] for i in rows], s, cut[rows])
                stats.add("ce_pairs", len(rows))
                stats.add("ce_batches", 1)
                if bar is not None:
                    bar.update(len(rows))
        finally:
            if own:
                bar.close()
        return scores, cut


def _hashes(texts: Sequence[str]) -> list[str]:
    memo: dict[str, str] = {}
    out = []
    for t in texts:
        h = memo.get(t)
        if h is None:
            h = memo[t] = text_hash(t)
        out.append(h)
    return out
