"""The stage protocol and its composition operators.

A :class:`Stage` is a :class:`~ragopt.config.Component` with one method over one data shape::

    stage.fit(corpus, store)      # build or load what it needs for this corpus (indexes, models)
    batch = stage.transform(batch)  # Batch -> Batch

It declares what it ``requires`` and ``provides`` in terms of :attr:`Batch.fields` (``queries``,
``candidates``, ``answers``), and a pipeline checks that chain before running anything. Stages that turn
a corpus into another (chunkers) override :meth:`Stage.prepare_corpus`; later stages are fitted on
its output.

Fitted state: what ``fit`` produced (the corpus, the artifacts it built or reused, loaded indexes, fit-time
counters) is kept in one declared attribute, ``self._fit``, an instance of the stage's :class:`Fitted`
dataclass (subclasses add their own products). From outside, a stage is read through :attr:`Stage.is_fitted`,
:attr:`Stage.corpus`, :meth:`Stage.artifacts` and :attr:`Stage.fit_stats`, and its fitted state moves between
two stages of the same config with :meth:`Stage.fitted_state` and :meth:`Stage.restore` (nested stages,
encoders and indexes included), without refitting.

Composition: ``a >> b`` chains (a :class:`Pipeline`), ``a % k`` cuts candidate lists to ``k``,
``a + b`` fuses two retrievers' lists (reciprocal rank fusion, :mod:`ragopt.ops`). The operators build the
``cutoff`` and ``rrf`` stages through the registry: this module does not import the stages it composes.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ragopt._progress import progress_enabled
from ragopt.cache import active_cache, spec_for
from ragopt.config import Component, param, walk
from ragopt.errors import ConfigError, StageError
from ragopt.registry import register, resolve
from ragopt.types import Batch, Corpus, Queries, Stats

__all__ = ["Stage", "Pipeline", "Fitted", "FittedState", "run_stage", "run_batched"]


@dataclass(eq=False)
class Fitted:
    """What :meth:`Stage.fit` produced: the corpus the stage was fitted on, the artifacts it built or reused
    (``{"kind", "path", "created"}``) and counters of the work fitting did (``encoder_texts``, ``ce_pairs``).
    Stages with more to keep (a loaded index, an anchor matrix) subclass it with fields that have defaults."""

    corpus: Corpus
    artifacts: list[dict] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)


class FittedState:
    """An opaque snapshot of a fitted stage: the fitted state of the stage and of every component nested in it
    (:func:`ragopt.config.walk` order). Made by :meth:`Stage.fitted_state`, used by :meth:`Stage.restore`."""

    __slots__ = ("_types", "_parts")

    def __init__(self, types: tuple[type, ...], parts: tuple[Any, ...]):
        self._types = types
        self._parts = parts

    def __repr__(self) -> str:
        return f"FittedState({' > '.join(t.__name__ for t in self._types)})"

    @classmethod
    def of(cls, stage: Stage) -> FittedState:
        comps = list(walk(stage))
        return cls(tuple(type(c) for c in comps), tuple(c._fit for c in comps))

    def apply(self, stage: Stage) -> None:
        comps = list(walk(stage))
        types = tuple(type(c) for c in comps)
        if types != self._types:
            raise StageError(
                f"{stage.type_name}: cannot restore a fitted state taken from another tree of "
                f"components ({' > '.join(t.__name__ for t in self._types)}) into "
                f"{' > '.join(t.__name__ for t in types)}"
            )
        for comp, part in zip(comps, self._parts):
            comp._init_runtime()
            comp._fit = _reused(part)


def _reused(part: Any) -> Any:
    """A restored stage built nothing and did no fitting work: its artifacts say ``created: False``."""
    if isinstance(part, Fitted):
        return dataclasses.replace(part, artifacts=[dict(a, created=False) for a in part.artifacts], stats=Stats())
    return part


def _check_fit_corpus(stage: Stage, corpus: Any) -> None:
    if not isinstance(corpus, Corpus):
        hint = " (pass dataset.corpus)" if isinstance(getattr(corpus, "corpus", None), Corpus) else ""
        raise StageError(f"{stage.type_name}: fit takes a Corpus, got {type(corpus).__name__}{hint}")


class Stage(Component):
    """Base class of retrievers, rerankers, fusion, cutoffs and generators."""

    requires: ClassVar[frozenset[str]] = frozenset({"queries"})
    provides: ClassVar[frozenset[str]] = frozenset()
    #: stage-output cache (ragopt.cache): the parameter that sets how many candidates come out (results
    #: are cached by depth, so asking for fewer is served from a deeper cached run) ...
    cache_depth_field: ClassVar[str | None] = None
    #: ... parameters that do not change the output (threads, batch sizes, devices) ...
    cache_ignore: ClassVar[tuple[str, ...]] = ()
    #: ... whether outputs are worth storing (False for cheap stages such as cutoffs) ...
    cache_outputs: ClassVar[bool] = True
    #: ... and the counters that measure what the configuration asks for, whoever pays for it (PRP comparisons,
    #: tokens of every prompt, cached or not; CUR's cross-encoder budget): the cache keeps them with an output and
    #: adds them again when it serves that output, so a cost objective reads the same for a reused output as for a
    #: computed one. Counters of paid work (``llm_calls``, ``bm25_queries``) are not replayed: a reuse paid nothing.
    work_counters: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Every stage's fit takes a Corpus: checked here once for all of them, before any work (a Dataset or a list
        # of texts passed by mistake failed deep inside, "'Dataset' object has no attribute 'fingerprint'").
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "checks_corpus", False):

            @functools.wraps(fit)
            def checked_fit(self: Stage, corpus: Corpus, *args: Any, **kwargs: Any) -> Any:
                _check_fit_corpus(self, corpus)
                return fit(self, corpus, *args, **kwargs)

            checked_fit.checks_corpus = True  # type: ignore[attr-defined]
            cls.fit = checked_fit  # type: ignore[method-assign]

    # -- protocol ----------------------------------------------------------------------------
    def prepare_corpus(self, corpus: Corpus) -> Corpus:
        """The corpus later stages see (chunkers return passages); identity by default."""
        return corpus

    def fit(self, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None) -> Stage:
        """Build or load whatever this stage needs for ``corpus``. Default: remember the corpus."""
        _check_fit_corpus(self, corpus)
        self._fit = Fitted(corpus)
        return self

    def transform(self, batch: Batch) -> Batch:
        raise NotImplementedError(f"{type(self).__name__}.transform")

    def cache_spec(self) -> dict[str, Any] | None:
        """What determines this stage's output besides its input (``None``: do not cache). Default: the
        config without depth and ignored parameters, plus the fitted corpus fingerprint."""
        return spec_for(
            self, exclude=(*self.cache_ignore, *((self.cache_depth_field,) if self.cache_depth_field else ()))
        )

    # -- fitted state ------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self._fit is not None

    @property
    def corpus(self) -> Corpus:
        """The corpus this stage was fitted on (StageError when it is not fitted)."""
        return self._fitted().corpus

    def _fitted(self) -> Any:
        """What :meth:`fit` produced (StageError when it is not fitted)."""
        if self._fit is None:
            raise StageError(f"{self.type_name}: not fitted; call .fit(corpus) first")
        return self._fit

    def _check_corpus(self, corpus: Corpus, action: str = "index") -> None:
        """ConfigError for an empty corpus: what :meth:`fit` cannot ``action``."""
        if len(corpus) == 0:
            raise ConfigError("", f"{self.type_name}: cannot {action} an empty corpus ({corpus.name or 'unnamed'})")

    @property
    def fit_stats(self) -> Stats:
        """Counters of the work the last :meth:`fit` of this stage did (empty when nothing was fitted, or the
        state was restored): ``encoder_texts``, ``ce_pairs`` ..."""
        return self._fit.stats if isinstance(self._fit, Fitted) else Stats()

    def artifacts(self) -> list[dict]:
        """The artifacts (``{"kind", "path", "created"}``) that fitting this stage and every stage nested in it
        (pipeline stages, fusion inputs, CUR's scorer) built or reused, in the order they were fitted."""
        return [dict(a) for c in walk(self, "post") if isinstance(c._fit, Fitted) for a in c._fit.artifacts]

    def fitted_state(self) -> FittedState:
        """A snapshot of everything :meth:`fit` produced here and in every nested component (indexes and models
        loaded, artifacts, passages): :meth:`restore` puts it into another stage of the same config."""
        if not self.is_fitted:
            raise StageError(f"{self.type_name}: not fitted; nothing to snapshot")
        return FittedState.of(self)

    def restore(self, state: FittedState) -> Stage:
        """Take the fitted state of another stage of the same config (:meth:`fitted_state`) instead of fitting:
        no index is built or loaded, no text encoded. The caller vouches that the configs agree on everything
        fitting depends on (any search-time parameter may differ); the tree of components must be the same.
        Artifacts then report ``created: False`` and :attr:`fit_stats` is empty."""
        if not isinstance(state, FittedState):
            raise StageError(
                f"{self.type_name}: restore() takes what fitted_state() returned, got {type(state).__name__}"
            )
        state.apply(self)
        return self

    # -- conveniences ------------------------------------------------------------------------
    def __call__(self, batch: Batch) -> Batch:
        return self.transform(batch)

    def search(
        self,
        queries: str | Sequence[str] | Mapping[str, str] | Queries,
        batch_size: int = 0,
        progress: bool | None = None,
    ) -> Batch:
        """Run the stage on raw queries (a string, a list of strings, a mapping of id to text, or :class:`Queries`)."""
        if not isinstance(queries, Queries):
            queries = Queries.from_texts(queries)
        return run_batched(self, Batch(queries), batch_size=batch_size, progress=progress)

    def check(self, available: frozenset[str], where: str = "") -> frozenset[str]:
        """Check that ``available`` fields satisfy this stage; return the fields after it."""
        missing = self.requires - available
        if missing:
            raise StageError(
                f"{where + ': ' if where else ''}stage {self.type_name!r} needs "
                f"{sorted(missing)} but its input has only {sorted(available)}"
                + ("; put a retriever before it" if "candidates" in missing else "")
            )
        return available | self.provides

    # -- operators ---------------------------------------------------------------------------
    def __rshift__(self, other: Stage) -> Pipeline:
        if not isinstance(other, Stage):
            return NotImplemented
        return Pipeline(stages=[*_flatten(self), *_flatten(other)])

    def __add__(self, other: Stage) -> Stage:
        """``a + b``: reciprocal rank fusion of the two candidate lists (see :mod:`ragopt.ops`)."""
        if not isinstance(other, Stage):
            return NotImplemented
        RRF = resolve("rrf")  # the registered fusion stage (ragopt.ops.RRFFusion)

        def flat(s: Stage) -> bool:  # an unweighted RRF is flattened into the new one, keeping k and top_k
            return isinstance(s, RRF) and s.weights is None

        left = list(self.inputs) if flat(self) else [self]
        right = list(other.inputs) if flat(other) else [other]
        base = self if flat(self) else other if flat(other) else None
        if base is None:
            return RRF(inputs=[*left, *right])
        return RRF(inputs=[*left, *right], k=base.k, top_k=base.top_k)

    def __mod__(self, k: int) -> Pipeline:
        """``a % k``: keep the top ``k`` candidates (the registered ``cutoff`` stage, :class:`ragopt.ops.Cutoff`)."""
        if not isinstance(k, int):
            return NotImplemented
        return self >> resolve("cutoff")(k=k)


def _flatten(stage: Stage) -> list[Stage]:
    return list(stage.stages) if isinstance(stage, Pipeline) else [stage]


@register("pipeline")
class Pipeline(Stage):
    """Stages applied in order (``a >> b >> c``). A pipeline keeps no fitted state of its own: it is fitted
    when all its stages are, and its corpus is what its last stage turns its first stage's corpus into."""

    cache_transparent: ClassVar[bool] = True

    stages: list[Stage] = param(default_factory=list, doc="the stages, applied in order")

    def validate(self, path: str = "") -> None:
        if not self.stages:
            raise ConfigError(f"{path}.stages" if path else "stages", "a pipeline needs at least one stage")
        # A pipeline may start mid-way (e.g. ``reranker % 10``): check the chain from its first stage's
        # needs; whoever runs it checks those against the batch.
        fields = self.stages[0].requires
        for i, stage in enumerate(self.stages):
            where = f"{path + '.' if path else ''}stages[{i}]"
            try:
                fields = stage.check(fields, where)
            except StageError as e:
                raise ConfigError("", str(e)) from None

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return self.stages[0].requires

    @property
    def provides(self) -> frozenset[str]:  # type: ignore[override]
        out: frozenset[str] = frozenset()
        for s in self.stages:
            out |= s.provides
        return out

    def check(self, available: frozenset[str], where: str = "") -> frozenset[str]:
        for i, stage in enumerate(self.stages):
            available = stage.check(available, f"{where}.stages[{i}]" if where else f"stages[{i}]")
        return available

    def prepare_corpus(self, corpus: Corpus) -> Corpus:
        for s in self.stages:
            corpus = s.prepare_corpus(corpus)
        return corpus

    def fit(
        self, corpus: Corpus, store: Any = None, *, rebuild: bool = False, progress: bool | None = None
    ) -> Pipeline:
        for stage in self.stages:
            stage.fit(corpus, store, rebuild=rebuild, progress=progress)
            corpus = stage.prepare_corpus(corpus)
        return self

    @property
    def is_fitted(self) -> bool:
        return all(s.is_fitted for s in self.stages)

    @property
    def corpus(self) -> Corpus:
        """The corpus after the last stage (passages after a chunker, documents again after ``aggregate``)."""
        if not self.is_fitted:
            raise StageError("pipeline: not fitted; call .fit(corpus) first")
        corpus = self.stages[0].corpus
        for s in self.stages:
            corpus = s.prepare_corpus(corpus)
        return corpus

    def transform(self, batch: Batch) -> Batch:
        self.check(batch.fields)
        for i, stage in enumerate(self.stages):
            with batch.stats.timer(f"{i}:{stage.type_name}"):
                batch = run_stage(stage, batch)
        return batch

    def __repr__(self) -> str:
        return " >> ".join(repr(s) for s in self.stages)


def run_stage(stage: Stage, batch: Batch) -> Batch:
    """``stage.transform(batch)`` through the active stage-output cache, if any (see :mod:`ragopt.cache`).
    Containers (pipelines, fusion) call this for their children so each one is cached on its own."""
    cache = active_cache()
    return cache.run(stage, batch) if cache is not None else stage.transform(batch)


def run_batched(stage: Stage, batch: Batch, batch_size: int = 0, progress: bool | None = None) -> Batch:
    """Apply ``stage`` to ``batch`` in slices of ``batch_size`` queries (0 = all at once), with progress."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 0:  # -5: "all"
        raise ConfigError("batch_size", f"must be an integer >= 0 (0: all queries at once), got {batch_size!r}")
    n, batch_size = len(batch), int(batch_size)
    if batch_size == 0 or batch_size >= n:
        return stage.transform(batch)
    bar = None
    if progress_enabled(progress):
        from tqdm.auto import tqdm  # lazy: importing it costs ~100 ms

        bar = tqdm(total=n, desc=f"search ({stage.type_name})", unit="q", file=sys.stderr, leave=False)
    parts = []
    try:
        for start in range(0, n, batch_size):
            parts.append(stage.transform(batch.select(slice(start, start + batch_size))))
            if bar is not None:
                bar.update(len(parts[-1]))
    finally:
        if bar is not None:
            bar.close()
    out = Batch.concat(parts)
    out.stats = batch.stats  # slices share the parent's Stats, which the stages updated in place
    return out
