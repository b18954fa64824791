"""Family `mlp`: exact counts, the sizing rule, forward shapes, structured pruning."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scalelab.errors import UserError
from scalelab.models.base import Family, count_params, get_family
from scalelab.models.mlp import MLPFamily, build, hidden_importance, n_params_for, prune_hidden
from scalelab.tasks.base import TaskIO

VEC = TaskIO("vector", (64,), 10)
IMG = TaskIO("image", (1, 8, 8), 10)
TARGETS = [1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6]


def family(**options) -> MLPFamily:
    return MLPFamily(MLPFamily.Options(**options))


@pytest.mark.parametrize("in_features,hidden,n_outputs", [
    (64, [5, 7], 10), (13, [1], 1), (64, [32, 16, 8], 3), (3, [100, 100], 2)])
def test_exact_count_matches_the_built_model(in_features, hidden, n_outputs):
    shape = {"in_features": in_features, "input_shape": [in_features], "hidden": hidden,
             "n_outputs": n_outputs, "activation": "gelu", "dropout": 0.0}
    n = n_params_for(in_features, hidden, n_outputs)
    assert count_params(build(shape)) == (n, n)


def test_count_by_hand():
    # 64*54+54 + 2*(54*54+54) + 54*10+10
    assert n_params_for(64, [54, 54, 54], 10) == 10000


@pytest.mark.parametrize("io", [VEC, IMG], ids=["vector", "image"])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_shape_for_picks_the_closest_width_and_grows_with_the_target(io, depth):
    fam = family(depth=depth)
    widths = []
    for target in TARGETS:
        shape = fam.shape_for(target, io)
        w = shape["hidden"][0]
        assert shape["hidden"] == [w] * depth

        def err(k: int, target: float = target) -> float:
            return abs(math.log(n_params_for(64, [k] * depth, 10) / target))

        assert err(w) <= min(err(w - 1), err(w + 1)) if w > 1 else err(w) <= err(w + 1)
        assert err(w) < 0.05
        n = count_params(fam.build(shape))[1]
        assert n == n_params_for(64, [w] * depth, 10)
        widths.append(w)
    assert widths == sorted(set(widths))  # strictly increasing


def test_shape_format_and_rebuild_from_json():
    fam = family(depth=3, activation="relu", dropout=0.1)
    shape = fam.shape_for(1e4, IMG)
    assert shape == {"in_features": 64, "input_shape": [1, 8, 8], "hidden": [54, 54, 54],
                     "n_outputs": 10, "activation": "relu", "dropout": 0.1}
    model = build(json.loads(json.dumps(shape)))
    assert count_params(model) == (10000, 10000)
    assert isinstance(model.act, torch.nn.ReLU) and model.drop.p == 0.1
    assert fam.describe(shape) == "3x54"
    assert fam.describe({**shape, "hidden": [54, 40, 54]}) == "54-40-54"


def test_forward_shapes():
    fam = family()
    model = fam.build(fam.shape_for(1e4, VEC))
    assert model(torch.randn(5, 64)).shape == (5, 10)
    model = fam.build(fam.shape_for(1e4, IMG))
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    reg = fam.build(fam.shape_for(1e4, TaskIO("vector", (7,), 1)))
    assert reg(torch.randn(5, 7)).shape == (5, 1)


def test_out_of_range_targets_and_kinds_are_refused():
    with pytest.raises(ValueError, match=r"^target size 10 is below the smallest mlp of depth "
                                         r"2 for this task \(87 parameters\)$"):
        family().shape_for(10, VEC)
    with pytest.raises(ValueError, match="not sequence"):
        family().shape_for(1e4, TaskIO("sequence", (64,), 256, 256))


def test_options_through_the_registry():
    fam = get_family("mlp", depth=3)
    assert isinstance(fam, MLPFamily) and isinstance(fam, Family)
    assert fam.accepts == ("vector", "image") and fam.context is None
    with pytest.raises(UserError, match=r"^family \(mlp\): unknown key 'width'$"):
        get_family("mlp", width=3)
    with pytest.raises(UserError, match=r"^family \(mlp\)\.depth: Input should be greater"):
        get_family("mlp", depth=0)


def test_prune_keeping_every_unit_reproduces_the_outputs_exactly():
    torch.manual_seed(0)
    shape = family(depth=3).shape_for(1e4, IMG)
    model = build(shape).eval()
    keep = [list(range(w)) for w in shape["hidden"]]
    pruned, new_shape = prune_hidden(model, shape, keep)
    assert new_shape == shape
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(pruned(x), model(x))
    assert not pruned.training


def test_prune_fewer_units_is_the_model_with_those_units_removed():
    torch.manual_seed(1)
    shape = {"in_features": 64, "input_shape": [64], "hidden": [20, 12], "n_outputs": 10,
             "activation": "relu", "dropout": 0.0}
    model = build(shape)
    keep = [[0, 3, 5, 19, 7], [11, 2, 4]]
    pruned, new_shape = prune_hidden(model, shape, keep)
    assert new_shape["hidden"] == [5, 3]
    assert {k: v for k, v in new_shape.items() if k != "hidden"} == {
        k: v for k, v in shape.items() if k != "hidden"}
    n = n_params_for(64, [5, 3], 10)
    assert n == 64 * 5 + 5 + 5 * 3 + 3 + 3 * 10 + 10 == 383
    assert count_params(pruned) == (n, n)
    assert count_params(build(new_shape)) == (n, n)
    assert pruned.training  # the mode is kept
    # Zeroing the outgoing columns of the dropped units gives the same function.
    with torch.no_grad():
        for i, kept in enumerate(keep):
            drop = [j for j in range(shape["hidden"][i]) if j not in kept]
            nxt = model.layers[i + 1] if i + 1 < len(model.layers) else model.head
            nxt.weight[:, drop] = 0.0
        x = torch.randn(8, 64)
        torch.testing.assert_close(pruned(x), model(x), rtol=0, atol=1e-6)
        # Kept units come out in index order.
        assert torch.equal(pruned.layers[0].weight, model.layers[0].weight[[0, 3, 5, 7, 19]])


@pytest.mark.parametrize("keep,message", [
    ([[0, 1]], "keep lists 1 layers; the model has 2"),
    ([[0], []], "hidden layer 1: keep at least one unit"),
    ([[0, 0], [1]], r"hidden layer 0: unit indices must be distinct and in \[0, 4\)"),
    ([[0], [4]], r"hidden layer 1: unit indices must be distinct and in \[0, 4\)"),
])
def test_prune_refuses_bad_keep_lists(keep, message):
    shape = {"in_features": 3, "input_shape": [3], "hidden": [4, 4], "n_outputs": 2}
    with pytest.raises(ValueError, match=f"^{message}$"):
        prune_hidden(build(shape), shape, keep)


def test_hidden_importance():
    torch.manual_seed(2)
    shape = {"in_features": 6, "input_shape": [6], "hidden": [4, 3], "n_outputs": 2,
             "activation": "relu", "dropout": 0.5}
    model = build(shape)  # training mode: dropout must not enter the score
    with torch.no_grad():
        model.layers[0].bias[1] = -1e4  # a dead ReLU unit
        model.head.weight[:, 2] = 0.0  # a unit nobody reads
    x = torch.randn(16, 6)
    scores = hidden_importance(model, x)
    assert [s.shape for s in scores] == [(4,), (3,)]
    with torch.no_grad():
        h0 = torch.relu(model.layers[0](x))
        h1 = torch.relu(model.layers[1](h0))
        want0 = h0.abs().mean(0) * model.layers[1].weight.norm(dim=0)
        want1 = h1.abs().mean(0) * model.head.weight.norm(dim=0)
    torch.testing.assert_close(scores[0], want0)
    torch.testing.assert_close(scores[1], want1)
    assert scores[0][1] == 0.0 and scores[1][2] == 0.0
    assert (scores[0][[0, 2, 3]] > 0).all()
    assert torch.equal(hidden_importance(model, x)[0], scores[0])  # deterministic
