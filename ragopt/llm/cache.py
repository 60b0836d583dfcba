"""Persistent cache of LLM calls, and :class:`CachedLLM`, the wrapper every LLM-using stage calls through.

One SQLite file per model fingerprint (:meth:`LLMBackend.fingerprint`: weights' sha256 / content fingerprint
and dtype, or endpoint + model name; never an API key), at ``<store.root>/llm-calls/<key>.sqlite`` with the
fingerprint beside it in ``<key>.json``. Rows are keyed by

* ``kind``: ``generate`` or ``score``;
* ``phash``: sha1 of the canonical decoding parameters (:meth:`GenerationParams.to_dict`: max_new_tokens,
  temperature, stop, and top_p and seed when sampling; empty for ``score``); the parameters themselves are kept
  in the ``params`` table;
* ``xhash``: sha1 of the exact prompt (the text, or the canonical JSON of the chat messages);
* ``continuation``: the scored continuation (empty for ``generate``);

and hold the response as JSON (:meth:`Completion.to_dict` / :meth:`ContinuationScore.to_dict`, plus ``seconds``:
the call's time, a batched call's shared evenly, added to ``Stats.cached_seconds`` when a hit serves it; rows
written before it was kept add nothing). WAL mode, so
tuning workers share a file; rows are committed after every chunk of prompts sent to the model, so an
interrupted run keeps what it paid for; ``INSERT OR IGNORE``, since a deterministic call gives one answer.
Only complete responses are written: a chunk whose call raised writes nothing, except the responses the backend
reports as complete in ``LLMError.partial``.

Decoding that is not deterministic (``temperature > 0`` without a ``seed``) is never read from or written to the
cache; a seeded sample is cached under its seed (each backend samples a prompt independently of its batch-mates).

Counters added to a :class:`~ragopt.types.Stats`: ``llm_calls`` (prompts sent to the model), ``llm_cache_hits``
(prompts answered from the cache, or by an identical prompt earlier in the same call), ``prompt_tokens`` and
``completion_tokens`` (of the calls made, i.e. paid for), ``llm_batches``; seconds under ``llm``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from ragopt.config import canonical_json
from ragopt.errors import LLMError
from ragopt.llm.base import (
    Completion,
    ContinuationScore,
    GenerationParams,
    LLMBackend,
    Prompt,
    check_prompts,
    prompt_key,
)
from ragopt.sqlite_cache import SQLiteCache, keyed_file, text_hash
from ragopt.types import Stats

__all__ = ["LLMCallCache", "CachedLLM", "FORMAT_VERSION", "CACHE_KIND"]

FORMAT_VERSION = 1
CACHE_KIND = "llm-calls"
_CHUNK = 400  # keys per lookup statement


class LLMCallCache(SQLiteCache):
    """Responses by ``(kind, phash, xhash, continuation)`` in a SQLite file (``path=None``: in memory)."""

    TABLE = "calls"
    COLUMNS = (
        "kind TEXT NOT NULL, phash TEXT NOT NULL, xhash TEXT NOT NULL, continuation TEXT NOT NULL, "
        "response TEXT NOT NULL"
    )
    KEY = "kind, phash, xhash, continuation"
    EXTRA_SCHEMA = ("CREATE TABLE IF NOT EXISTS params (phash TEXT PRIMARY KEY, params TEXT NOT NULL)",)

    @classmethod
    def for_fingerprint(cls, root: str | os.PathLike, fingerprint: str) -> LLMCallCache:
        """The cache file of one model under ``root`` (``<root>/llm-calls/<key>.sqlite``)."""
        doc = {"format": FORMAT_VERSION, "fingerprint": fingerprint}
        return cls(keyed_file(root, CACHE_KIND, doc, "LLM call cache {meta} belongs to another model; delete it"))

    def get(self, kind: str, phash: str, keys: Sequence[tuple[str, str]]) -> list[dict | None]:
        """Responses of ``(xhash, continuation)`` keys under ``(kind, phash)`` (``None`` where absent)."""
        out: list[dict | None] = [None] * len(keys)
        if not keys or self._absent():
            return out
        where: dict[tuple[str, str], list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        uniq = list(where)
        with self._lock:
            db = self._db()
            for start in range(0, len(uniq), _CHUNK):
                part = uniq[start : start + _CHUNK]
                xs = sorted({x for x, _ in part})
                marks = ",".join("?" * len(xs))
                for x, c, resp in db.execute(
                    f"SELECT xhash, continuation, response FROM calls WHERE kind = ? AND "
                    f"phash = ? AND xhash IN ({marks})",
                    (kind, phash, *xs),
                ):
                    for i in where.get((x, c), ()):
                        out[i] = json.loads(resp)
        return out

    def put(self, kind: str, phash: str, params: dict | None, rows: Sequence[tuple[str, str, dict]]) -> None:
        """Store ``(xhash, continuation, response)`` rows in one transaction."""
        if not rows:
            return
        data = [(kind, phash, x, c, json.dumps(r, sort_keys=True, ensure_ascii=False)) for x, c, r in rows]

        def fill(db: sqlite3.Connection) -> None:
            if params is not None:
                db.execute("INSERT OR IGNORE INTO params VALUES (?, ?)", (phash, canonical_json(params)))
            db.executemany("INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?)", data)

        self._write(fill)


class CachedLLM:
    """A backend behind the persistent call cache, counting into a :class:`Stats`.

    ``store``: the artifact store whose root holds the cache (default ``ArtifactStore()``; the backend uses it
    too, for converted weights). ``cache=False`` only counts. ``chunk_size``: prompts per backend call (and
    per commit); default the backend's ``chunk_size``."""

    def __init__(
        self,
        backend: LLMBackend,
        *,
        store: Any = None,
        cache: bool = True,
        chunk_size: int | None = None,
        stats: Stats | None = None,
    ):
        if not isinstance(backend, LLMBackend):
            raise TypeError(f"CachedLLM wraps an LLMBackend, got {type(backend).__name__}")
        self.backend = backend
        self.store = store if store is not None else backend.artifact_store()
        if not backend.has_store:
            backend.use_store(self.store)
        self.use_cache = cache
        self.chunk_size = int(chunk_size or backend.chunk_size)
        self.stats = stats if stats is not None else Stats()
        self._cache: LLMCallCache | None = None

    def __repr__(self) -> str:
        return f"CachedLLM({self.backend!r}, store={self.store!r}, cache={self.use_cache})"

    @property
    def cache(self) -> LLMCallCache:
        if self._cache is None:
            self._cache = LLMCallCache.for_fingerprint(self.store.root, self.backend.fingerprint())
        return self._cache

    @property
    def supports_logprobs(self) -> bool:
        return self.backend.supports_logprobs

    def fingerprint(self) -> str:
        return self.backend.fingerprint()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.backend.count_tokens(texts)

    # ------------------------------------------------------------------------------------------
    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None, *, stats: Stats | None = None
    ) -> list[Completion]:
        """Completions of ``prompts``; cache hits come back with ``cached=True``."""
        params = params or GenerationParams()
        prompts = check_prompts(prompts)
        keys = [(text_hash(prompt_key(p)), "") for p in prompts]
        pd = params.to_dict()
        return self._run(
            "generate",
            text_hash(canonical_json(pd)),
            pd,
            prompts,
            keys,
            lambda ps, cs: self.backend.generate(ps, params),
            lambda d: Completion(
                d["text"], d["prompt_tokens"], d["completion_tokens"], d["finish_reason"], cached=True
            ),
            stats,
            cacheable=params.deterministic,
        )

    def score(
        self, prompts: Sequence[Prompt], continuations: Sequence[str], *, stats: Stats | None = None
    ) -> list[ContinuationScore]:
        """Continuation logprobs (see :meth:`LLMBackend.score`); cache hits come back with ``cached=True``."""
        prompts = LLMBackend._check_score_args(prompts, continuations)
        keys = [(text_hash(prompt_key(p)), c) for p, c in zip(prompts, continuations)]
        return self._run(
            "score",
            "",
            None,
            prompts,
            keys,
            lambda ps, cs: self.backend.score(ps, cs),
            lambda d: ContinuationScore(
                tuple(d["tokens"]),
                tuple(d["token_logprobs"]),
                d["logprob"],
                d["prompt_tokens"],
                d["completion_tokens"],
                d["exact"],
                cached=True,
            ),
            stats,
            cacheable=True,
        )

    def _run(
        self,
        kind: str,
        phash: str,
        params: dict | None,
        prompts: list[Prompt],
        keys: list[tuple[str, str]],
        call: Callable[[list[Prompt], list[str]], list],
        revive: Callable[[dict], Any],
        stats: Stats | None,
        cacheable: bool,
    ) -> list:
        stats = stats if stats is not None else self.stats
        use = self.use_cache and cacheable
        with stats.timer("llm"):
            results: list[Any] = [None] * len(prompts)
            if use:
                for i, d in enumerate(self.cache.get(kind, phash, keys)):
                    if d is not None:
                        results[i] = revive(d)
                        # what the call took when it was made (rows written before that was kept hold none)
                        seconds = d.get("seconds")
                        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
                            stats.cached_seconds += float(seconds)
            # unique misses, in first-seen order; duplicates are served by the first one
            todo: dict[tuple[str, str], list[int]] = {}
            for i, k in enumerate(keys):
                if results[i] is None:
                    todo.setdefault(k, []).append(i)
            if not use:  # non-deterministic: every prompt is its own call
                todo = {(k[0], k[1], i): [i] for i, k in enumerate(keys)}  # type: ignore[misc]
            hits = len(prompts) - len(todo)
            stats.add("llm_cache_hits", hits)
            order = list(todo)
            for start in range(0, len(order), self.chunk_size):
                part = order[start : start + self.chunk_size]
                ps = [prompts[todo[k][0]] for k in part]
                cs = [k[1] for k in part]
                t0 = time.perf_counter()
                try:
                    got = call(ps, cs)
                except LLMError as e:
                    partial = getattr(e, "partial", None)
                    if use and partial:
                        done = [(k, r) for k, r in zip(part, partial) if r is not None]
                        self._account(stats, [r for _, r in done])
                        each = (time.perf_counter() - t0) / max(len(done), 1)
                        self.cache.put(kind, phash, params, [(k[0], k[1], _record(r, each)) for k, r in done])
                    raise
                each = (time.perf_counter() - t0) / max(len(ps), 1)  # a batched call's time, shared evenly
                if len(got) != len(ps):
                    raise LLMError(f"{self.backend.describe()}: returned {len(got)} responses for {len(ps)} prompts")
                self._account(stats, got)
                stats.add("llm_batches", 1)
                if use:
                    self.cache.put(kind, phash, params, [(k[0], k[1], _record(r, each)) for k, r in zip(part, got)])
                for k, r in zip(part, got):
                    first, *dups = todo[k]
                    results[first] = r
                    for i in dups:  # an identical prompt earlier in this call paid for it
                        results[i] = dataclasses.replace(r, cached=True)
        return results

    @staticmethod
    def _account(stats: Stats, responses: Sequence[Any]) -> None:
        stats.add("llm_calls", len(responses))
        stats.add("prompt_tokens", sum(r.prompt_tokens for r in responses))
        stats.add("completion_tokens", sum(r.completion_tokens for r in responses))

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def _record(response: Any, seconds: float) -> dict[str, Any]:
    """What the cache keeps of a response: its fields and the seconds it took (replayed on a hit as
    ``Stats.cached_seconds``)."""
    return {**response.to_dict(), "seconds": round(seconds, 6)}
