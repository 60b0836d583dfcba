"""Search spaces: parsing, conditions, grids, applying values to configs, validation before any trial."""

from __future__ import annotations

import pytest

from ragopt.config import from_config
from ragopt.errors import ConfigError
from ragopt.tuning.space import SearchSpace, apply_params

TEMPLATE = {"type": "pipeline", "stages": [{"type": "bm25", "k1": 0.9, "b": 0.4}, {"type": "cutoff", "k": 100}]}


def space(items):
    return SearchSpace.from_list(items)


def test_apply_sets_paths_and_removes_stages():
    s = space(
        [
            {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0},
            {"name": "cut", "path": "stages.1", "choices": {"none": None, "c10": {"type": "cutoff", "k": 10}}},
            {"name": "depth", "path": "stages.1.k", "type": "int", "low": 5, "high": 50, "when": {"cut": "c10"}},
        ]
    )
    cfg = apply_params(TEMPLATE, s, {"k1": 1.5, "cut": "c10", "depth": 20})
    assert cfg["stages"][0]["k1"] == 1.5 and cfg["stages"][1] == {"type": "cutoff", "k": 20}
    cfg = apply_params(TEMPLATE, s, {"k1": 1.5, "cut": "none", "depth": 20})
    assert len(cfg["stages"]) == 1  # null removes the stage; depth is inactive
    assert TEMPLATE["stages"][0]["k1"] == 0.9  # the template is not modified
    assert [p.name for p in s.active({"cut": "none"})] == ["k1", "cut"]
    assert [p.name for p in s.active({"cut": "c10"})] == ["k1", "cut", "depth"]


def test_grid_respects_conditions_and_levels():
    s = space(
        [
            {"name": "a", "path": "x", "choices": ["p", "q"]},
            {"name": "n", "path": "y", "type": "int", "low": 1, "high": 3, "when": {"a": "q"}},
            {"name": "f", "path": "z", "type": "float", "low": 0.1, "high": 10, "log": True, "levels": 3},
        ]
    )
    assert s.by_name["f"].grid() == pytest.approx([0.1, 1.0, 10.0])
    assert s.by_name["n"].grid() == [1, 2, 3]
    assert s.grid_size() == (1 + 3) * 3
    grid = list(s.iter_grid())
    assert {"a": "p", "f": 0.1} in grid and all("n" not in g for g in grid if g["a"] == "p")


@pytest.mark.parametrize(
    "items,message",
    [
        ([{"path": "stages.0.k1", "choices": []}], "empty choices"),
        ([{"path": "stages.0.k1", "type": "float", "low": 2, "high": 1}], r"low \(2.0\) > high \(1.0\)"),
        ([{"path": "stages.0.k1", "type": "float", "low": 0, "high": 1, "log": True}], "log scale needs low > 0"),
        ([{"path": "stages.0.k1", "type": "number", "low": 0, "high": 1}], "must be one of"),
        ([{"type": "int", "low": 0, "high": 1}], "needs a 'path'"),
        ([{"path": "a", "choices": [1]}, {"path": "b", "choices": [1], "when": {"c": 1}}], "refers to 'c'"),
        ([{"path": "a", "choices": [1], "colour": "red"}], "space\\[0\\].colour: unknown key"),
        ([], "the search space is empty"),
        (
            [{"name": "bm25", "path": "a", "choices": [1, 2]}, {"path": "b", "choices": [1], "group": "bm25"}],
            r"space\(b\)\.group: 'bm25' is also the name of a parameter outside that group",
        ),
        ([{"path": "a", "type": "float", "low": 0.1, "high": 1.0, "step": 2}], r"step: 2 is wider than the range"),
        ([{"path": "a", "type": "int", "low": 1, "high": 3, "step": 4}], r"step: 4 is wider than the range \[1, 3\]"),
    ],
)
def test_invalid_spaces_fail_with_the_place_named(items, message):
    with pytest.raises(ConfigError, match=message):
        space(items)


@pytest.mark.parametrize(
    "item,message",
    [
        ({"name": "k1", "path": "stages.3.k1", "type": "float", "low": 0.5, "high": 2}, "space\\(k1\\).*stages.3"),
        (
            {"name": "kk", "path": "stages.0.k_1", "type": "float", "low": 0.5, "high": 2},
            "unknown key.*did you mean 'k1'",
        ),
        ({"name": "b", "path": "stages.0.b", "type": "float", "low": 0.5, "high": 2}, "must be <= 1.0"),
        ({"name": "m", "path": "stages.0.method", "choices": ["lucene", "okapi"]}, "okapi"),
    ],
)
def test_space_is_validated_against_the_pipeline(item, message):
    s = space([item])
    with pytest.raises(ConfigError, match=message):
        s.validate_against(TEMPLATE, lambda cfg: from_config(cfg))


def test_a_stepped_range_too_long_to_list_gets_levels_points_of_its_lattice():
    from ragopt.tuning.space import MAX_STEPPED_GRID

    s = space(
        [
            {"name": "f", "path": "a", "type": "float", "low": 0.5, "high": 2.0, "step": 1e-6, "levels": 4},
            {"name": "n", "path": "b", "type": "int", "low": 3, "high": 10**9, "step": 2},
            {"name": "m", "path": "c", "type": "int", "low": 1, "high": MAX_STEPPED_GRID, "step": 1},
        ]
    )
    f, n, m = s.by_name["f"].grid(), s.by_name["n"].grid(), s.by_name["m"].grid()
    assert f == pytest.approx([0.5, 1.0, 1.5, 2.0]) and f[-1] <= 2.0  # 1.5e6 steps: 4 points, both ends included
    assert len(n) == 5 and n[0] == 3 and n[-1] == 10**9 - 1 and all((v - 3) % 2 == 0 for v in n)  # on the lattice
    assert m == list(range(1, MAX_STEPPED_GRID + 1))  # at the cap: every point, as before


def test_levels_are_at_most_the_grid_cap():
    # found by make fuzz: `levels: 13090733` listed 13 million grid points (8 s, 1.5 GB) every time a tuner asked
    from ragopt.tuning.space import MAX_STEPPED_GRID

    item = {"name": "f", "path": "a", "type": "float", "low": 0.5, "high": 2.0}
    assert len(space([{**item, "levels": MAX_STEPPED_GRID}]).by_name["f"].grid()) == MAX_STEPPED_GRID
    with pytest.raises(
        ConfigError, match=r"levels: must be at most 10,000 \(grid points, each a trial\), got 13,090,733"
    ):
        space([{**item, "levels": 13_090_733}])


def test_a_step_as_wide_as_the_range_gives_both_ends():
    s = space(
        [
            {"name": "f", "path": "a", "type": "float", "low": 0.1, "high": 0.3, "step": 0.2},  # 0.3 - 0.1 < 0.2
            {"name": "n", "path": "b", "type": "int", "low": 5, "high": 5, "step": 3},  # a fixed value
        ]
    )
    assert s.by_name["f"].grid() == pytest.approx([0.1, 0.3]) and s.by_name["n"].grid() == [5]


def test_a_step_finer_than_a_trillionth_of_the_range_is_refused():
    with pytest.raises(ConfigError, match=r"space\[0\]\(k1\)\.step: 1e-13 divides \[0.5, 2.0\] into more than"):
        space([{"name": "k1", "path": "a", "type": "float", "low": 0.5, "high": 2.0, "step": 1e-13}])


def test_defaults_follow_the_template():
    s = space(
        [
            {"name": "k1", "path": "stages.0.k1", "type": "float", "low": 0.5, "high": 2.0},
            {"name": "m", "path": "stages.0.method", "choices": ["robertson", "lucene"]},
            {"name": "cut", "path": "stages.1", "choices": {"none": None, "c100": {"type": "cutoff", "k": 100}}},
        ]
    )
    assert s.defaults_from(TEMPLATE) == {"k1": 0.9, "m": "robertson", "cut": "c100"}
