"""Fuzzing search spaces (hypothesis): whatever a study's ``space`` holds (several parameters, conditions, structured
choices, numbers at the edges), checking it against the pipeline either accepts it or raises a one-line
ConfigError naming the parameter's place (``study.yaml:space[i]`` or ``space(name)``), never another exception;
and a space that was accepted can be sampled by the tuners and applied to the pipeline (a config they produce
builds, or fails with a ConfigError, which a study records as a failed trial) without a traceback. Three kinds of
input that ragopt/tuning/space.py used to accept and then crash on (found by this fuzzing: an int parameter with a
fractional step, non-finite bounds or values) have their own test at the end."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given
from hypothesis import strategies as st

from ragopt.config import from_config
from ragopt.errors import ConfigError, RagoptError
from ragopt.tuning.space import apply_params
from ragopt.tuning.study import StudyConfig
from tests.fuzzing import fuzz_settings

pytest.importorskip("optuna")

TEMPLATE = {"type": "pipeline", "stages": [{"type": "bm25"}, {"type": "cutoff", "k": 10}]}
NAMES = ["k1", "b", "k", "top", "rerank", "x"]
PATHS = ["stages.0.k1", "stages.0.b", "stages.0.top_k", "stages.1.k", "stages.1", "stages.0", "stages.2"]
PATHS += ["stages.0.nope", "stages.9.k1", "stages..0", "stages.0.k1.deep", "", "stages.-1", "stages[0].b"]
numbers = st.one_of(
    st.integers(-(2**66), 2**66),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 0.5, 1.2, -1, 10, 1000, 1e-300, 1e300]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8), st.sampled_from(NAMES))
components = st.one_of(
    st.none(),
    st.fixed_dictionaries({"type": st.sampled_from(["bm25", "cutoff", "rrf", "nope"])}, optional={"k": scalars}),
)
choices = st.one_of(
    st.lists(scalars, max_size=4),
    st.dictionaries(st.sampled_from(["none", "bm25", "a", "b", ""]), components, max_size=3),
    scalars,
)
GOOD = [
    {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0},
    {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.1, "high": 1.0, "step": 0.1},
    {"name": "k", "path": "stages.1.k", "type": "int", "low": 1, "high": 100, "log": True, "group": "cut"},
    {"name": "rerank", "path": "stages.1", "choices": {"none": None, "cut5": {"type": "cutoff", "k": 5}}},
    {"name": "top", "path": "stages.0.top_k", "type": "int", "values": [10, 100], "when": {"rerank": "none"}},
    {"name": "x", "path": "stages.0.k1", "choices": [0.9, 1.2], "model": True},
]
KEYS = ["name", "path", "type", "low", "high", "step", "log", "levels", "values", "choices", "when", "group", "model"]
damage = {
    "name": st.one_of(st.sampled_from(NAMES), scalars),
    "path": st.one_of(st.sampled_from(PATHS), scalars),
    "type": st.sampled_from(["float", "int", "categorical", "bool", None, 3]),
    "low": numbers,
    "high": numbers,
    "step": st.one_of(numbers, scalars),
    "log": st.one_of(st.booleans(), scalars),
    "levels": st.one_of(st.integers(-3, 12), scalars),
    "values": st.one_of(st.lists(numbers, max_size=4), scalars),
    "choices": choices,
    "when": st.one_of(
        st.dictionaries(st.sampled_from(NAMES), st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=2), scalars
    ),
    "group": st.one_of(st.sampled_from(["bm25", "cut"]), scalars),
    "model": st.one_of(st.booleans(), scalars),
}
# a plausible parameter with up to two keys replaced (or dropped, or an unknown key added)
param = st.tuples(
    st.sampled_from(GOOD),
    st.lists(st.sampled_from(KEYS).flatmap(lambda k: st.tuples(st.just(k), damage[k])), max_size=2),
    st.sampled_from([None, None, None, *KEYS]),
).map(lambda t: {k: v for k, v in {**t[0], **dict(t[1])}.items() if k != t[2]})
spaces = st.one_of(
    st.lists(param, min_size=1, max_size=4),
    st.lists(param, min_size=1, max_size=4),
    st.lists(param, min_size=1, max_size=4),
    st.lists(param, max_size=3).map(lambda ps: {str(p.get("name")): p for p in ps}),
    st.lists(param, min_size=1, max_size=2).map(lambda ps: [*ps, {**ps[0], "unknown": 1}]),
    scalars,
)

pytestmark = pytest.mark.fuzz
SETTINGS = fuzz_settings(150, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="ragopt-fuzz-space-"))


def _load(items) -> StudyConfig | None:
    """The study with this space, or None when it is refused with a one-line error naming the file."""
    path = _DIR / "study.yaml"
    doc = {
        "study": "s",
        "dataset": str(_DIR),
        "pipeline": TEMPLATE,
        "space": items,
        "objective": {"metrics": ["ndcg@10"]},
    }
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    try:
        return StudyConfig.load(path)
    except RagoptError as e:
        msg = str(e)
        assert isinstance(e, ConfigError) and "study.yaml" in msg, f"the error does not name the file: {msg}"
        assert "space" in msg, f"the error does not name the space: {msg}"
        assert "\n" not in msg, f"the error is not one line: {msg!r}"
        event(f"refused: {msg.split(': ', 2)[1][:30] if ': ' in msg else msg[:30]}")
        return None


@SETTINGS
@given(spaces)
# found by this test in random runs: a step of 1e-9 over [0.5, 2] made grid() list 1.5e9 values (17 GB, then killed),
# and a step of 3e-296 got past it to optuna's Decimal arithmetic (InvalidOperation)
@example(items=[{"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0, "step": 1e-9}])
@example(items=[{"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0, "step": 2.9e-296}])
# and `levels: 13090733`: a grid of 13 million points, 8 s each time it was listed
@example(items=[{"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0, "levels": 13090733}])
def test_any_space_is_accepted_or_refused_naming_the_file_and_parameter(items):
    cfg = _load(items)
    if cfg is None:
        return
    event(f"accepted {len(cfg.space)}")
    for p in cfg.space:  # finite grids and a sampler distribution for every parameter
        grid = p.grid()
        assert len(grid) >= 1, p
        assert all(not isinstance(v, float) or math.isfinite(v) for v in grid), (p, grid)
        p.distribution()


_CUT = {"name": "rerank", "path": "stages.1", "choices": {"none": None, "cut5": {"type": "cutoff", "k": 5}}}


@SETTINGS
@given(spaces, st.sampled_from(["random", "tpe", "grid", "greedy", "hiermab"]))
# found by this test: two parameters removing the same stage deleted it twice (IndexError in apply_params)
@example(items=[_CUT, {**_CUT, "name": None}], tuner_name="random")
# and: a group that is not a name (True) was accepted, then hiermab's sort of its groups raised a TypeError
@example(
    items=[
        {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0},
        {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.1, "high": 1.0, "step": 0.1, "group": True},
    ],
    tuner_name="hiermab",
)
def test_an_accepted_space_can_be_sampled_and_applied(items, tuner_name):
    from ragopt.tuning.tuners import make_tuner

    cfg = _load(items)
    if cfg is None:
        return
    tuner = make_tuner(tuner_name, cfg.space, seed=0)
    for _ in range(3):
        values = tuner.ask()
        assert set(values) == {p.name for p in cfg.space.active(values)}
        try:
            from_config(apply_params(TEMPLATE, cfg.space, values))
        except ConfigError:
            pass  # a trial that fails with a message; the study goes on
        tuner.tell(values, 0.5)


# Gaps the fuzzing found in ragopt/tuning/space.py (Param.from_dict), now refused at load with a ConfigError naming
# the parameter.
KNOWN_GAPS = [
    pytest.param(
        {"name": "b", "path": "stages.0.b", "type": "int", "low": 0, "high": 1, "step": 0.5},
        id="int-with-fractional-step-crashes-every-tuner",  # int(0.5) == 0: ZeroDivisionError, range() step 0
    ),
    pytest.param(
        {"name": "k", "path": "stages.1.k", "type": "int", "low": float("inf"), "high": 100},
        id="int-with-infinite-bound-is-an-OverflowError-at-load",
    ),
    pytest.param(
        {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": float("inf")},
        id="float-with-infinite-bound-crashes-the-sampler",  # accepted; optuna: OverflowError at ask()
    ),
    pytest.param(
        {"name": "b", "path": "stages.0.b", "type": "float", "low": 0.1, "high": 1.0, "group": True},
        id="group-not-a-name-crashes-hiermab",  # accepted; hiermab sorted groups True and "k1": TypeError at ask()
    ),
    pytest.param(
        {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0, "log": "false"},
        id="quoted-flag-meant-yes",  # accepted as bool("false"), a log scale
    ),
]


@pytest.mark.parametrize("item", KNOWN_GAPS)
def test_known_gaps_are_refused_at_load(item):
    doc = {
        "study": "s",
        "dataset": str(_DIR),
        "pipeline": TEMPLATE,
        "space": [item],
        "objective": {"metrics": ["ndcg@10"]},
    }
    with pytest.raises(ConfigError) as e:
        StudyConfig.from_dict(doc)
    msg = str(e.value)
    assert "\n" not in msg and "space" in msg and any(k in msg for k in ("step", "low", "high", "group", "log"))
