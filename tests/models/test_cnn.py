"""Family `cnn`: exact counts, the pooling plan, the sizing rule, forward shapes, task fit."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scalelab.errors import UserError
from scalelab.models.base import check_fit, count_params, get_family
from scalelab.models.cnn import CNNFamily, build, n_params_for, pool_plan
from scalelab.tasks.base import TaskIO

DIGITS = TaskIO("image", (1, 8, 8), 10)
TARGETS = [1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6]


def family(**options) -> CNNFamily:
    return CNNFamily(CNNFamily.Options(**options))


@pytest.mark.parametrize("input_shape,channels,kernel,n_outputs", [
    ([1, 8, 8], [3, 5, 7], 3, 10), ([3, 16, 16], [4], 5, 1), ([1, 8, 8], [2] * 6, 3, 10),
    ([2, 5, 7], [6, 6], 1, 4)])
def test_exact_count_matches_the_built_model(input_shape, channels, kernel, n_outputs):
    shape = {"input_shape": input_shape, "channels": channels, "kernel": kernel,
             "n_outputs": n_outputs}
    n = n_params_for(input_shape[0], channels, kernel, n_outputs)
    assert count_params(build(shape)) == (n, n)


def test_count_by_hand():
    # (1*23*9+23) + 2*(23*23*9+23) + 23*10+10
    assert n_params_for(1, [23, 23, 23], 3, 10) == 10038


@pytest.mark.parametrize("input_shape,depth,plan", [
    ((1, 8, 8), 3, (False, True, False)),
    ((1, 8, 8), 6, (False, True, False, True, False, False)),
    ((3, 32, 32), 6, (False, True, False, True, False, True)),
    ((1, 3, 30), 4, (False, False, False, False)),
    ((1, 8, 8), 1, (False,)),
])
def test_pool_plan(input_shape, depth, plan):
    assert pool_plan(input_shape, depth) == plan


@pytest.mark.parametrize("depth,kernel", [(3, 3), (1, 3), (5, 5)])
def test_shape_for_picks_the_closest_channels_and_grows_with_the_target(depth, kernel):
    fam = family(depth=depth, kernel=kernel)
    chans = []
    for target in TARGETS:
        shape = fam.shape_for(target, DIGITS)
        c = shape["channels"][0]
        assert shape["channels"] == [c] * depth

        def err(k: int, target: float = target) -> float:
            return abs(math.log(n_params_for(1, [k] * depth, kernel, 10) / target))

        assert err(c) <= min(err(c - 1), err(c + 1)) if c > 1 else err(c) <= err(c + 1)
        if target >= 1e4:  # below, one channel more is a big step for deep or wide kernels
            assert err(c) < 0.05
        assert count_params(fam.build(shape))[1] == n_params_for(1, [c] * depth, kernel, 10)
        chans.append(c)
    assert chans == sorted(set(chans))


def test_shape_format_and_rebuild_from_json():
    fam = family()
    shape = fam.shape_for(1e4, DIGITS)
    assert shape == {"input_shape": [1, 8, 8], "channels": [23, 23, 23], "kernel": 3,
                     "n_outputs": 10}
    model = build(json.loads(json.dumps(shape)))
    assert count_params(model) == (10038, 10038)
    assert model.pool_after == (False, True, False)
    assert fam.describe(shape) == "3x23"
    assert fam.describe({**shape, "channels": [23, 16, 23]}) == "23-16-23"


@pytest.mark.parametrize("depth,kernel", [(3, 3), (6, 3), (2, 5), (1, 1)])
def test_forward_on_8x8_digits(depth, kernel):
    fam = family(depth=depth, kernel=kernel)
    model = fam.build(fam.shape_for(3e3, DIGITS))
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    reg = fam.build(fam.shape_for(3e3, TaskIO("image", (3, 12, 12), 1)))
    assert reg(torch.randn(2, 3, 12, 12)).shape == (2, 1)


def test_check_fit_refuses_a_cnn_for_sequences():
    fam = get_family("cnn")
    with pytest.raises(UserError) as info:
        check_fit(fam, TaskIO("sequence", (64,), 256, 256), "pycode")
    assert str(info.value) == ("family 'cnn' does not fit task 'pycode': it models image "
                               "inputs, the task gives sequence inputs")
    check_fit(fam, DIGITS, "digits")  # an image task fits
    with pytest.raises(UserError, match="the task gives vector inputs"):
        check_fit(fam, TaskIO("vector", (64,), 10), "tabular")


def test_refusals():
    with pytest.raises(ValueError, match="not sequence inputs"):
        family().shape_for(1e4, TaskIO("sequence", (64,), 256, 256))
    with pytest.raises(ValueError) as err:
        family().shape_for(10, DIGITS)
    assert str(err.value) == ("target size 10 is below the smallest cnn of depth 3 for this "
                              "task (50 parameters)")
    # depth 1: 20c + 10 parameters; closest_knob stops at 2**20 channels
    with pytest.raises(ValueError) as err:
        family(depth=1).shape_for(1e9, DIGITS)
    assert str(err.value) == ("target size 1e+09 is above the largest cnn of depth 1 for this "
                              "task (20971530 parameters)")
    with pytest.raises(UserError) as info:
        get_family("cnn", kernel=4)
    assert str(info.value) == ("family (cnn).kernel: Value error, must be odd "
                               "(padding k // 2 keeps the image size)")
    with pytest.raises(UserError, match=r"^family \(cnn\): unknown key 'width'$"):
        get_family("cnn", width=8)

