"""What the training recipes share (ragopt.training.common): the argument checks, the mining that refuses to train
on nothing, and the `ragopt train` command lines, which must pass each recipe exactly its own keyword arguments with
the Python API's defaults."""

from __future__ import annotations

import inspect

import pytest

import ragopt.cli as cli
from ragopt.errors import ConfigError, DataError
from ragopt.training.common import check_recipe_args, mine_or_fail, training_split

from .conftest import topical_dataset


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"train_fraction": 1.0}, "train_fraction"),
        ({"train_fraction": 0.0}, "train_fraction"),
        ({"max_queries": 0}, "max_queries"),
        ({"at_least": {"epochs": (0, 1)}}, "epochs"),
        ({"at_least": {"aux_weight": (-0.1, 0)}}, "aux_weight"),
        ({"at_least": {"aux_weight": (float("nan"), 0)}}, "aux_weight"),  # was: a traceback hashing the spec
        ({"at_least": {"aux_weight": (float("inf"), 0)}}, "aux_weight"),
        ({"positive": {"lr": 0.0}}, "lr"),
        ({"positive": {"temperature": -1.0}}, "temperature"),
        ({"positive": {"lr": float("inf")}}, "lr"),  # was: a traceback hashing the artifact's spec
        ({"positive": {"lr": float("nan")}}, "lr"),
        ({"seed": -1}, "seed"),  # was: numpy's ValueError as a traceback
        ({"seed": 2**32}, "seed"),
    ],
)
def test_check_recipe_args_names_the_bad_parameter(kwargs, name):
    args = {"train_fraction": 0.6, "max_queries": None, **kwargs}
    with pytest.raises(ConfigError, match=rf"^{name}: must be"):
        check_recipe_args(**args)


def test_a_depth_too_shallow_for_the_negatives_asked_is_refused():
    # n_docs 5 with negatives_depth 1 trained on prompts of 1-2 documents (218 negatives for 973 queries), silently
    with pytest.raises(ConfigError) as err:
        check_recipe_args(0.6, None, negatives=("n_docs", 5, 4, 1))
    assert str(err.value) == (
        "negatives_depth: 1 candidates cannot give the 4 negatives per query that n_docs 5 asks for: "
        "raise negatives_depth to at least 4 or lower n_docs"
    )
    check_recipe_args(0.6, None, negatives=("negatives_per_query", 4, 4, 4))  # exactly enough
    check_recipe_args(0.6, None, negatives=("negatives_per_query", 0, 0, 1))  # in-batch negatives only


def test_check_recipe_args_accepts_the_bounds():
    check_recipe_args(
        0.5, 1, at_least={"epochs": (1, 1), "negatives_per_query": (0, 0)}, positive={"lr": 1e-9}, seed=2**32 - 1
    )


def test_mining_refuses_a_split_with_nothing_to_train_on(tmp_path):
    # every judgment has grade 0: the queries are judged, none has a relevant document
    ds = topical_dataset(tmp_path, [f"q{i}\td{i}\t0" for i in range(12)])
    ts = training_split(str(ds), "test", 0.5, 0, None)
    with pytest.raises(DataError, match=r"no training pairs: none of the 6 training queries"):
        mine_or_fail(ts, "test", "bm25", 1, 5, 0, True, None, False)


def test_mining_refuses_prompts_without_negatives(tmp_path):
    # a training prompt needs a relevant document and a negative: with no negatives drawn there is none
    ds = topical_dataset(tmp_path, [f"q{i}\td{i}\t1" for i in range(12)])
    ts = training_split(str(ds), "test", 0.5, 0, None)
    groups, counts = mine_or_fail(ts, "test", "bm25", 0, 5, 0, True, None, False)
    assert counts["n_positives"] == 6 and all(not g[2] for g in groups)
    with pytest.raises(DataError, match=r"no training prompts: .* and a mined negative"):
        mine_or_fail(ts, "test", "bm25", 0, 5, 0, True, None, False, need_negatives=True)


def _recipe(kind):
    if kind == "cross-encoder":
        from ragopt.training.cross_encoder import train_cross_encoder as fn
    elif kind == "bi-encoder":
        from ragopt.training.bi_encoder import train_bi_encoder as fn
    else:
        from ragopt.training.blockrank import train_blockrank as fn
    return fn


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder", "blockrank"])
def test_train_command_passes_the_recipe_its_own_arguments_with_the_api_defaults(kind):
    args = cli.build_parser().parse_args(["train", kind, "-d", "scifact"])
    params = inspect.signature(_recipe(kind)).parameters
    passed = set(args.recipe_args)
    assert passed <= set(params), passed - set(params)
    # every training setting the recipe has is reachable from the command line (store/progress are set apart)
    settings = {k for k, p in params.items() if p.default is not inspect.Parameter.empty}
    missing = settings - passed - {"store", "progress", "split", "with_title", "warmup_ratio", "base_model", "dataset"}
    assert not missing, f"ragopt train {kind} has no option for {sorted(missing)}"
    for k in passed:
        assert getattr(args, k) == params[k].default, f"--{k.replace('_', '-')} defaults to {getattr(args, k)!r}"
    if params["base_model"].default is not inspect.Parameter.empty:
        assert args.base == params["base_model"].default


def test_train_steps_schedule_clipping_curves_and_modes():
    """Linear warm-up then decay (warmup_ratio .5 of 4 steps: lr x .5, 1, .5, 0 after each step), gradients clipped
    to norm 1 (with SGD one step moves the weights by at most lr), curves kept, and the module back in eval mode
    even when the loop fails."""
    torch = pytest.importorskip("torch")
    from ragopt.training.common import TrainSteps

    net = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    lrs, moves = [], []
    x = torch.ones(1, 3)
    with TrainSteps(net, opt, 4, 0.5, "test", progress=False) as steps:
        assert net.training
        for i in range(4):
            before = net.weight.detach().clone()
            loss = 1000.0 * net(x).sum() + 1000.0  # gradient norm 1000 * sqrt(3)
            steps.step(loss, loss=float(loss.detach()), i=float(i))
            lrs.append(opt.param_groups[0]["lr"])
            moves.append(float((net.weight.detach() - before).norm()))
    assert not net.training
    assert lrs == pytest.approx([0.05, 0.1, 0.05, 0.0])
    # the step uses the lr before the scheduler moves it: 0 (warm-up starts at 0), .05, .1, .05; clipped to norm 1
    assert moves == pytest.approx([0.0, 0.05, 0.1, 0.05], abs=1e-6)
    assert steps.curves["i"] == [0.0, 1.0, 2.0, 3.0] and len(steps.curves["loss"]) == 4

    net.eval()
    with pytest.raises(RuntimeError, match="boom"):
        with TrainSteps(net, opt, 4, 0.0, "test", progress=False):
            assert net.training
            raise RuntimeError("boom")
    assert not net.training
