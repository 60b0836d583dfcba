"""Run ragopt's tuners on any objective: here a lookup table of precomputed results (no pipeline at all).

Run from the repository root: .venv/bin/python examples/tuning_api.py
"""

import math

from ragopt.tuning.space import SearchSpace
from ragopt.tuning.tuners import make_tuner, optimize

space = SearchSpace.from_list(
    [
        {"name": "chunk", "path": "chunker.size", "choices": [128, 256, 512], "group": "chunking"},
        {
            "name": "top_k",
            "path": "retriever.top_k",
            "type": "int",
            "low": 5,
            "high": 50,
            "step": 5,
            "group": "retrieval",
        },
        {
            "name": "model",
            "path": "encoder.model",
            "choices": ["small", "base", "large"],
            "model": True,
            "group": "retrieval",
        },
    ]
)

# a precomputed table: quality of every configuration (here a made-up smooth function of the choices)
table = {
    (c, k, m): 0.5
    + {"small": 0.0, "base": 0.04, "large": 0.06}[m]
    - abs(math.log2(c / 256)) * 0.03
    - ((k - 20) / 45) ** 2 * 0.05
    for c in (128, 256, 512)
    for k in range(5, 51, 5)
    for m in ("small", "base", "large")
}
best = max(table.values())

for name in ("tpe", "greedy", "hiermab", "random"):
    tuner = make_tuner(name, space, seed=0)
    params, value = optimize(tuner, lambda p: table[(p["chunk"], p["top_k"], p["model"])], n_trials=18)
    print(f"{name:>8}: best {value:.4f} (grid best {best:.4f}) with {params} after 18 of {len(table)} evaluations")
