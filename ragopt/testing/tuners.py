"""Conformance suite for tuners: every tuner (ragopt's and third-party ones) must pass these checks.

Each check takes a *factory* ``(space, seed) -> Tuner`` and raises ``AssertionError`` with a message on a
failure, so it runs under any test runner::

    from ragopt.testing.tuners import run_conformance
    from ragopt.tuning.tuners import make_tuner

    run_conformance(lambda space, seed: make_tuner("tpe", space, seed))

The checks: determinism (same seed and same tells give the same asks); every ask holds exactly the active
parameters, each inside its domain; conditional parameters respected; failed trials (``tell(params,
None)``) handled; purely categorical and mixed spaces; and on a small lookup table (:class:`LookupTable`)
the tuner gets within 1% of the optimum within as many evaluations as the table has rows.

:func:`check_beats_random` is not in :data:`CHECKS` (random search cannot pass it): a tuner that claims to
search better than random does, on the same table with a budget well below its size (20 of 270), over many
seeds.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from ragopt.tuning.space import Param, SearchSpace
from ragopt.tuning.tuners.base import Tuner, config_key

__all__ = [
    "TunerFactory",
    "LookupTable",
    "snap_to_grid",
    "categorical_space",
    "mixed_space",
    "conditional_space",
    "synthetic_table",
    "check_determinism",
    "check_domain",
    "check_conditional",
    "check_failed_trials",
    "check_categorical_space",
    "check_mixed_space",
    "check_finds_optimum",
    "check_beats_random",
    "random_search_regrets",
    "CHECKS",
    "run_conformance",
]

TunerFactory = Callable[[SearchSpace, int], Tuner]


# ---------------------------------------------------------------------------------------------------
# spaces and objectives


def categorical_space() -> SearchSpace:
    """Three categorical parameters (one with a ``null`` choice): 4 x 3 x 2 = 24 configurations."""
    return SearchSpace.from_list(
        [
            {"name": "model", "path": "stages.0.model", "choices": ["m1", "m2", "m3", "m4"], "model": True},
            {"name": "stemmer", "path": "stages.0.stemmer", "choices": ["english", "porter", None]},
            {"name": "title", "path": "stages.0.with_title", "choices": [True, False], "group": "text"},
        ]
    )


def mixed_space() -> SearchSpace:
    """Categorical, float (linear and log), int and explicit-values parameters."""
    return SearchSpace.from_list(
        [
            {"name": "method", "path": "stages.0.method", "choices": ["lucene", "robertson", "atire"]},
            {
                "name": "k1",
                "path": "stages.0.k1",
                "type": "float",
                "low": 0.3,
                "high": 2.4,
                "levels": 4,
                "group": "bm25",
            },
            {
                "name": "b",
                "path": "stages.0.b",
                "type": "float",
                "low": 0.0,
                "high": 1.0,
                "step": 0.25,
                "group": "bm25",
            },
            {"name": "lr", "path": "stages.1.lr", "type": "float", "low": 1e-4, "high": 1e-1, "log": True, "levels": 4},
            {"name": "depth", "path": "stages.1.top_k", "type": "int", "low": 10, "high": 100, "step": 10},
            {"name": "n", "path": "stages.1.n", "type": "int", "low": 1, "high": 64, "log": True, "levels": 4},
            {"name": "k", "path": "stages.2.k", "type": "int", "values": [5, 10, 20]},
        ]
    )


def conditional_space() -> SearchSpace:
    """A retriever choice with parameters that exist only for one family, and a nested condition."""
    return SearchSpace.from_list(
        [
            {
                "name": "family",
                "path": "stages.0",
                "choices": {"bm25": {"type": "bm25"}, "dense": {"type": "dense"}},
                "model": True,
            },
            {
                "name": "k1",
                "path": "stages.0.k1",
                "type": "float",
                "low": 0.5,
                "high": 2.0,
                "levels": 4,
                "when": {"family": "bm25"},
            },
            {"name": "stemmer", "path": "stages.0.stemmer", "choices": ["english", None], "when": {"family": "bm25"}},
            {"name": "model", "path": "stages.0.model", "choices": ["small", "large"], "when": {"family": "dense"}},
            {"name": "pooling", "path": "stages.0.pooling", "choices": ["mean", "cls"], "when": {"model": "large"}},
            {"name": "depth", "path": "stages.1.top_k", "type": "int", "low": 10, "high": 40, "step": 10},
        ]
    )


def _is_numeric(p: Param) -> bool:
    return p.kind != "categorical" and p.values is None


def snap_to_grid(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """The nearest grid point of ``params``: each numeric parameter moved to its nearest grid level (log
    distance on log scales); inactive parameters dropped."""
    out: dict[str, Any] = {}
    for p in space.active(params):
        if p.name not in params:
            continue
        v = target = params[p.name]
        if _is_numeric(p):
            if p.log and target > 0:

                def dist(g, t=target):
                    return abs(math.log(g) - math.log(t))
            else:

                def dist(g, t=target):
                    return abs(g - t)

            v = min(p.grid(), key=lambda g: (dist(g), g))
        out[p.name] = v
    return out


class LookupTable:
    """An objective that looks configurations up in a table of precomputed values (one per grid point).

    ``LookupTable(space, values)`` with ``values`` keyed by :func:`config_key` of grid points, or
    ``LookupTable.from_function(space, fn)`` to tabulate ``fn`` over the grid. A call snaps continuous
    suggestions to the nearest grid point (:func:`snap_to_grid`) and returns its value; ``calls`` counts
    calls and ``seen`` the distinct grid points looked up."""

    def __init__(self, space: SearchSpace, values: Mapping[tuple, float]):
        self.space = space
        self.values = dict(values)
        if not self.values:
            raise ValueError("LookupTable: empty table")
        self.calls = 0
        self.seen: set[tuple] = set()

    @classmethod
    def from_function(cls, space: SearchSpace, fn: Callable[[dict[str, Any]], float]) -> LookupTable:
        return cls(space, {config_key(g): float(fn(g)) for g in space.iter_grid()})

    @property
    def optimum(self) -> float:
        return max(self.values.values())

    def __call__(self, params: Mapping[str, Any]) -> float:
        key = config_key(snap_to_grid(self.space, params))
        if key not in self.values:
            raise KeyError(f"configuration not in the table: {dict(key)}")
        self.calls += 1
        self.seen.add(key)
        return self.values[key]


def synthetic_table(space: SearchSpace | None = None) -> LookupTable:
    """A smooth table over :func:`mixed_space`-like parameters with one clear optimum; a few grid points
    lie within 1% of it (about 4% of the grid), so blind search needs some luck and a model helps."""
    space = space or SearchSpace.from_list(
        [
            {"name": "method", "path": "stages.0.method", "choices": ["lucene", "robertson", "atire"]},
            {"name": "stemmer", "path": "stages.0.stemmer", "choices": ["english", "porter", None]},
            {
                "name": "k1",
                "path": "stages.0.k1",
                "type": "float",
                "low": 0.3,
                "high": 2.4,
                "levels": 6,
                "group": "bm25",
            },
            {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.1, "high": 1.0, "levels": 5, "group": "bm25"},
        ]
    )
    base = {"lucene": 0.60, "robertson": 0.62, "atire": 0.58}
    stem = {"english": 0.02, "porter": 0.015, "null": -0.03}

    def fn(g: Mapping[str, Any]) -> float:
        return base[g["method"]] + stem[g["stemmer"]] - 0.04 * (g["k1"] - 1.3) ** 2 - 0.08 * (g["b"] - 0.6) ** 2

    return LookupTable.from_function(space, fn)


# ---------------------------------------------------------------------------------------------------
# checks


def _objective(params: Mapping[str, Any]) -> float:
    """A deterministic, parameter-sensitive value for any configuration."""
    h = 0.0
    for k, v in sorted(params.items()):
        h += (sum(map(ord, f"{k}={v!r}")) % 97) / 97.0
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            h += 0.1 * math.tanh(float(v))
    return h / max(len(params), 1)


def _run(tuner: Tuner, n: int, fn: Callable[[Mapping[str, Any]], float | None] = _objective) -> list[dict]:
    asks = []
    for _ in range(n):
        params = tuner.ask()
        asks.append(params)
        tuner.tell(params, fn(params))
    return asks


def _check_domain_of(space: SearchSpace, params: Mapping[str, Any], who: str) -> None:
    active = [p.name for p in space.active(params)]
    assert set(params) == set(active), f"{who}: asked {sorted(params)}, but the active parameters are {sorted(active)}"
    for p in space.active(params):
        v = params[p.name]
        where = f"{who}: parameter {p.name}={v!r}"
        if p.kind == "categorical":
            assert any(v == lab and type(v) is type(lab) for lab in p.labels), f"{where} is not one of {p.labels}"
        elif p.values is not None:
            assert v in p.values, f"{where} is not one of {p.values}"
        else:
            assert isinstance(v, (int, float)) and not isinstance(v, bool), f"{where} is not a number"
            if p.kind == "int":
                assert isinstance(v, int), f"{where} should be an int"
            assert p.low - 1e-9 <= v <= p.high + 1e-9, f"{where} is outside [{p.low}, {p.high}]"
            if p.step:
                r = (v - p.low) / p.step
                assert abs(r - round(r)) < 1e-6, f"{where} is not on the step {p.step} from {p.low}"


def check_determinism(factory: TunerFactory, space: SearchSpace | None = None, n: int = 15) -> None:
    """Same seed and same tells give the same asks; (usually) another seed gives other asks."""
    space = space or mixed_space()
    a = _run(factory(space, 7), n)
    b = _run(factory(space, 7), n)
    for i, (x, y) in enumerate(zip(a, b)):
        assert config_key(x) == config_key(y), f"ask {i} differs between two runs with seed 7: {x} vs {y}"


def check_domain(factory: TunerFactory, space: SearchSpace | None = None, n: int = 25) -> None:
    """Every ask holds exactly the active parameters, each inside its domain (choices, bounds, step, int)."""
    space = space or mixed_space()
    for i, params in enumerate(_run(factory(space, 0), n)):
        _check_domain_of(space, params, f"ask {i}")


def check_conditional(factory: TunerFactory, n: int = 30) -> None:
    """Conditional parameters appear exactly when their conditions hold; both branches get explored."""
    space = conditional_space()
    asks = _run(factory(space, 1), n)
    for i, params in enumerate(asks):
        _check_domain_of(space, params, f"ask {i}")
    families = {p["family"] for p in asks}
    assert families == {"bm25", "dense"}, f"{n} asks explored only {sorted(families)} of family [bm25, dense]"


def check_failed_trials(factory: TunerFactory, space: SearchSpace | None = None, n: int = 20) -> None:
    """Failed trials (``tell(params, None)``) neither crash the tuner nor count as its best."""
    space = space or mixed_space()
    tuner = factory(space, 3)

    def sometimes_fails(params: Mapping[str, Any]) -> float | None:
        return None if len(tuner.history) < 3 or len(tuner.history) % 3 == 0 else _objective(params)

    asks = _run(tuner, n, sometimes_fails)
    for i, params in enumerate(asks):
        _check_domain_of(space, params, f"ask {i} (after failed trials)")
    best = tuner.best
    assert best is not None and best[1] is not None, "tuner.best should be a successful trial"
    ok = [v for _, v in tuner.history if v is not None]
    assert best[1] == max(ok), f"tuner.best is {best[1]}, but the best successful value is {max(ok)}"
    all_fail = factory(space, 4)
    _run(all_fail, 5, lambda p: None)
    assert all_fail.best is None, "with only failed trials tuner.best should be None"


def check_categorical_space(factory: TunerFactory, n: int = 30) -> None:
    """A purely categorical space: valid asks, and (with more asks than configurations) most of it seen."""
    space = categorical_space()
    asks = _run(factory(space, 0), n)
    for i, params in enumerate(asks):
        _check_domain_of(space, params, f"ask {i}")
    distinct = {config_key(p) for p in asks}
    assert len(distinct) >= 12, f"{n} asks on a 24-configuration space gave only {len(distinct)} distinct ones"


def check_mixed_space(factory: TunerFactory, n: int = 30) -> None:
    """A mixed space (categorical, float, log float, stepped and log int, explicit values): valid asks that
    vary every parameter."""
    space = mixed_space()
    asks = _run(factory(space, 0), n)
    for i, params in enumerate(asks):
        _check_domain_of(space, params, f"ask {i}")
    for p in space.params:
        vals = {repr(a[p.name]) for a in asks}
        assert len(vals) > 1, f"parameter {p.name} never varied in {n} asks"


def check_finds_optimum(factory: TunerFactory, seed: int = 0, budget: int | None = None, within: float = 0.01) -> int:
    """On :func:`synthetic_table` the tuner gets within ``within`` (relative) of the optimum in ``budget``
    evaluations (default: the table's size, what grid search needs at worst). Returns the evaluations used."""
    table = synthetic_table()
    budget = budget or len(table.values)
    tuner = factory(table.space, seed)
    target = table.optimum * (1 - within)
    for i in range(1, budget + 1):
        params = tuner.ask()
        value = table(params)
        tuner.tell(params, value)
        if value >= target:
            return i
    best = tuner.best[1] if tuner.best else None
    raise AssertionError(
        f"not within {within:.0%} of the optimum {table.optimum:.4f} after {budget} evaluations (best {best})"
    )


def random_search_regrets(table: LookupTable, budget: int, draws: int = 1001, seed: int = 0) -> list[float]:
    """Regrets (optimum minus best value found) of ``draws`` random searches of ``budget`` distinct grid points
    each: the baseline of :func:`check_beats_random`, drawn here, independently of any registered tuner."""
    keys = sorted(table.values)
    if budget > len(keys):
        raise ValueError(f"budget {budget} exceeds the table's {len(keys)} configurations")
    rng = random.Random(seed)
    return [table.optimum - max(table.values[k] for k in rng.sample(keys, budget)) for _ in range(draws)]


def check_beats_random(
    factory: TunerFactory, budget: int = 20, seeds: int = 21, factor: float = 0.5
) -> dict[str, float]:
    """With ``budget`` evaluations (20 of :func:`synthetic_table`'s 270 configurations), the tuner's median
    regret (optimum minus best value found) over ``seeds`` seeds is at most ``factor`` times the median regret
    of random search (sampling without replacement, 1001 draws). Medians make it robust to a lucky or unlucky
    seed; random search itself sits near ``factor = 1``. Returns both medians."""
    table = synthetic_table()
    regrets = []
    for seed in range(seeds):
        tuner = factory(table.space, seed)
        best = -math.inf
        for _ in range(budget):
            params = tuner.ask()
            value = table(params)
            tuner.tell(params, value)
            best = max(best, value)
        regrets.append(table.optimum - best)
    ours = statistics.median(regrets)
    rand = statistics.median(random_search_regrets(table, budget))
    assert ours <= factor * rand, (
        f"median regret {ours:.4f} after {budget} evaluations over {seeds} seeds; random search: {rand:.4f} "
        f"(needed <= {factor:g} x random)"
    )
    return {"median_regret": ours, "random_median_regret": rand}


CHECKS: dict[str, Callable[[TunerFactory], Any]] = {
    "determinism": check_determinism,
    "domain": check_domain,
    "conditional": check_conditional,
    "failed_trials": check_failed_trials,
    "categorical_space": check_categorical_space,
    "mixed_space": check_mixed_space,
    "finds_optimum": check_finds_optimum,
}


def run_conformance(factory: TunerFactory, skip: tuple[str, ...] = ()) -> None:
    """Run every check in :data:`CHECKS` (except ``skip``) on the tuner made by ``factory``."""
    for name, check in CHECKS.items():
        if name not in skip:
            check(factory)
