"""Greedy coordinate search from the template's configuration: ``greedy`` (models first),
``greedy_pipeline`` (pipeline order)."""

from __future__ import annotations

import math
from typing import Any

from ragopt.tuning.space import Param
from ragopt.tuning.tuners.base import Tuner, check_choice, config_key

__all__ = ["GreedyTuner", "ORDERS"]

#: the sweep orders ``GreedyTuner(order=...)`` accepts
ORDERS = ("models_first", "pipeline_order")


class GreedyTuner(Tuner):
    """Coordinate-wise greedy search from the template's configuration.

    Parameters are swept one at a time over their grid, the others held at the best configuration so far;
    ``order="models_first"`` sweeps parameters marked ``model: true`` first (the order the IBM RAG-HPO
    study found better), ``"pipeline_order"`` follows the pipeline's stage order. After a pass that improved
    the best configuration another pass starts; when nothing improves, untried grid points are sampled."""

    name = "greedy"

    def _configure(self, order: str = "models_first") -> None:
        check_choice("order", order, ORDERS)
        self.order = order
        params = list(self.space.params)

        def stage_index(p: Param) -> int:
            parts = p.path.split(".")
            return int(parts[1]) if len(parts) > 1 and parts[0] == "stages" and parts[1].isdigit() else 0

        params.sort(key=stage_index)  # stable: declaration order within a stage
        if order == "models_first":
            params.sort(key=lambda p: 0 if p.model else 1)
        self.sequence = params
        self._queue: list[dict[str, Any]] = []
        self._pos = -1
        self._pass_start_best: float = -math.inf
        self._improved = False

    def _incumbent(self) -> dict[str, Any]:
        b = self.best
        if b is not None:
            return dict(b[0])
        return dict(self.defaults) if self.defaults else self._random_config()

    def _propose(self) -> dict[str, Any]:
        start = self._incumbent()
        if not self.asked:
            return start
        while True:
            while self._queue:
                cand = self._queue.pop(0)
                if config_key(cand) not in self.asked:
                    return cand
            self._pos += 1
            if self._pos >= len(self.sequence):
                best = self.best
                best_score = self.score(best[1]) if best else -math.inf
                if best_score > self._pass_start_best:  # this pass improved: sweep again
                    self._pass_start_best = best_score
                    self._pos = 0
                else:
                    return self._fallback()
            p = self.sequence[self._pos]
            inc = self._incumbent()
            if not self.space.is_active(p, {**inc, p.name: inc.get(p.name, p.grid()[0])}):
                continue
            for v in p.grid():
                cand = {**inc, p.name: v}
                cand = self.space.complete(cand, self._default_for)
                self._queue.append(cand)
