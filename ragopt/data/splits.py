"""Seeded splits of query ids: the tune/held-out split of tuning studies and the train/held-out split of training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["split_queries"]


def split_queries(qids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A fixed, seeded split of query ids into (kept, held-out), ``fraction`` of them held out; independent of
    input order (each part keeps the input's order)."""
    ids = sorted(qids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    n_hold = int(round(len(ids) * fraction))
    hold = {ids[i] for i in order[:n_hold]}
    return [q for q in qids if q not in hold], [q for q in qids if q in hold]
