"""Test stages and a study-config factory shared by the study tests."""

from __future__ import annotations

import numpy as np
import pytest

from ragopt.config import param
from ragopt.kernels.topk import topk_rows
from ragopt.pipeline import Stage
from ragopt.registry import register


@register("test_flaky")
class Flaky(Stage):
    """Passes candidates through; fails for x == 3, raises KeyboardInterrupt for x == 4 when armed."""

    requires = frozenset({"queries", "candidates"})
    provides = frozenset({"candidates"})
    armed = {"interrupt": False}
    x: int = param(1)

    def transform(self, batch):
        if self.x == 3:
            raise RuntimeError("flaky stage refuses x=3")
        if self.x == 4 and Flaky.armed["interrupt"]:
            Flaky.armed["interrupt"] = False
            raise KeyboardInterrupt
        return batch.with_candidates(batch.doc_idx, batch.scores)


@register("test_bag")
class Bag(Stage):
    """A tiny deterministic retriever (bag-of-words overlap) so fusion tests need no model."""

    provides = frozenset({"candidates"})
    cache_depth_field = "top_k"
    top_k: int = param(100)

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._words: list[set[str]] | None = None

    def transform(self, batch):
        if self._words is None:
            self._words = [set(t.lower().split()) for t in self.corpus.texts]
        scores = np.array(
            [[len(set(q.lower().split()) & w) for w in self._words] for q in batch.queries.texts], dtype=np.float32
        )
        scores[scores == 0] = -np.inf
        idx, sc = topk_rows(scores, self.top_k)
        return batch.with_candidates(idx, sc, self.corpus)


@pytest.fixture
def flaky() -> type[Flaky]:
    return Flaky


@pytest.fixture
def study_dict(data_dir):
    """``study_dict(**over)``: a small BM25 study on adi (5 random trials, 30% held out), keys overridden."""

    def make(**over):
        d = {
            "study": "t",
            "dataset": str(data_dir / "adi"),
            "pipeline": [{"type": "bm25"}],
            "space": [
                {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0, "levels": 4},
                {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.2, "high": 1.0, "levels": 3},
            ],
            "objective": {"metrics": ["ndcg@10"]},
            "tuner": {"name": "random", "seed": 1},
            "budget": {"trials": 5},
            "holdout": {"fraction": 0.3, "seed": 0},
        }
        d.update(over)
        return d

    return make
