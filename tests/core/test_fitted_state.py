"""Typed fitted state: Stage.is_fitted / corpus / artifacts() / fit_stats / fitted_state() / restore(), and the one
tree walker (config.walk) they use. Per-stage restore tests live with each stage's tests (bm25, dense, splade,
fusion, chunker + aggregate, cross_encoder, cur)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import pytest

from ragopt.config import param, walk
from ragopt.errors import StageError
from ragopt.ops import Cutoff, RRFFusion
from ragopt.pipeline import Fitted, FittedState, Pipeline, Stage
from ragopt.registry import register
from ragopt.types import Batch, Corpus, Stats

RAGOPT = Path(__file__).resolve().parents[2] / "ragopt"
TINY = Corpus(["d1", "d2"], ["a b", "c d"], name="tiny")


@register("test_artifact_maker")
class ArtifactMaker(Stage):
    """A retriever-shaped stage whose fit 'builds' one artifact named after it, counting the work."""

    provides: ClassVar[frozenset[str]] = frozenset({"candidates"})

    name: str = param("x")

    def fit(self, corpus, store=None, *, rebuild=False, progress=None):
        stats = Stats()
        stats.add("builds")
        self._fit = Fitted(corpus, [{"kind": "made", "path": f"/{self.name}", "created": True}], stats)
        return self

    def transform(self, batch: Batch) -> Batch:
        return batch


def test_walk_orders():
    a, b, c = ArtifactMaker(name="a"), ArtifactMaker(name="b"), Cutoff(k=2)
    pipe = Pipeline(stages=[RRFFusion(inputs=[a, b]), c])
    assert [type(x).__name__ for x in walk(pipe)] == [
        "Pipeline",
        "RRFFusion",
        "ArtifactMaker",
        "ArtifactMaker",
        "Cutoff",
    ]
    assert [type(x).__name__ for x in walk(pipe, "post")] == [
        "ArtifactMaker",
        "ArtifactMaker",
        "RRFFusion",
        "Cutoff",
        "Pipeline",
    ]


def test_artifacts_and_fit_stats_of_nested_stages():
    pipe = Pipeline(stages=[RRFFusion(inputs=[ArtifactMaker(name="a"), ArtifactMaker(name="b")]), Cutoff(k=2)])
    assert not pipe.is_fitted and pipe.artifacts() == [] and pipe.fit_stats.counts == {}
    with pytest.raises(StageError, match="not fitted"):
        pipe.corpus
    pipe.fit(TINY)
    assert pipe.is_fitted and pipe.corpus is TINY
    assert [a["path"] for a in pipe.artifacts()] == ["/a", "/b"]
    assert pipe.stages[0].inputs[0].fit_stats.counts == {"builds": 1}
    pipe.artifacts()[0]["created"] = False  # a copy: the stage's record is untouched
    assert pipe.artifacts()[0]["created"] is True


def test_restore_shares_what_fit_produced_and_checks_the_tree():
    pipe = Pipeline(stages=[RRFFusion(inputs=[ArtifactMaker(name="a"), ArtifactMaker(name="b")]), Cutoff(k=2)])
    snapshot = pipe.fit(TINY).fitted_state()
    assert isinstance(snapshot, FittedState) and "Pipeline > RRFFusion > ArtifactMaker" in repr(snapshot)
    clone = pipe.clone(**{"stages.1.k": 5})  # a search-time difference is the caller's call
    assert clone.restore(snapshot) is clone
    assert clone.is_fitted and clone.corpus is TINY and clone.stages[0].inputs[1].corpus is TINY
    assert [a["created"] for a in clone.artifacts()] == [False, False]
    assert clone.stages[0].inputs[0].fit_stats.counts == {}  # restoring did no work
    assert pipe.artifacts()[0]["created"] is True  # the original keeps its own record
    with pytest.raises(StageError, match="another tree of components"):
        Pipeline(stages=[ArtifactMaker(), Cutoff(k=2)]).restore(snapshot)
    with pytest.raises(StageError, match="takes what fitted_state"):
        clone.restore({"corpus": TINY})
    with pytest.raises(StageError, match="not fitted"):
        Cutoff(k=2).fitted_state()
    # a parameter change after restore unfits, as after fit
    clone.set_params(**{"stages.0.inputs.0.name": "z"})
    assert not clone.is_fitted


def test_no_untyped_state_bag_anywhere():
    """Components keep fitted and runtime state in declared attributes (``_fit``, and what ``_init_runtime``
    declares); the untyped ``_state`` dict is gone from the whole package."""
    offenders = []
    for path in RAGOPT.rglob("*.py"):
        rel = path.relative_to(RAGOPT)
        if True:
            for i, line in enumerate(path.read_text("utf-8").splitlines(), 1):
                if re.search(r"\._state\b", line):
                    offenders.append(f"{rel}:{i}: {line.strip()}")
    assert offenders == []
