"""Pure-Python random and grid search (no Optuna): ``random_native``, ``grid_native``."""

from __future__ import annotations

from typing import Any

from ragopt.tuning.tuners.base import Tuner, config_key

__all__ = ["RandomTuner", "GridTuner"]


class RandomTuner(Tuner):
    """Uniform random search (log-uniform on log scales)."""

    name = "random"

    def _propose(self) -> dict[str, Any]:
        return self._random_config()


class GridTuner(Tuner):
    """Every grid point once, in a seeded random order (numeric parameters discretised to ``levels``)."""

    name = "grid"

    def _propose(self) -> dict[str, Any]:
        if not hasattr(self, "_order"):
            self._order = list(self.space.iter_grid())
            self.rng.shuffle(self._order)
        for g in self._order:
            if config_key(g) not in self.asked:
                return g
        return self._random_config()
