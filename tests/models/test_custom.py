"""Family `custom`: a user's factory, sized by its knob; every bad factory is one clear line."""

from __future__ import annotations

import math
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from scalelab.errors import UserError
from scalelab.models.base import check_fit, count_params, get_family
from scalelab.models.custom import CustomFamily
from scalelab.tasks.base import TaskIO

VEC = TaskIO("vector", (8,), 3)
IMG = TaskIO("image", (1, 8, 8), 10)

FACTORIES = '''
import torch.nn as nn

SEEN = []
NOT_CALLABLE = 3


def mlp(k):
    """8 features -> k -> 3 outputs: 12k + 3 parameters."""
    return nn.Sequential(nn.Linear(8, k), nn.ReLU(), nn.Linear(k, 3))


def with_embedding(k):
    """non-embedding: k*k + k."""
    return nn.Sequential(nn.Embedding(100, k), nn.Linear(k, k))


def wrong_type(k):
    return {"width": k}


def narrow_only(k):
    if k > 4:
        raise RuntimeError(f"width {k} is too wide")
    return nn.Linear(8, k)


def boom(k):
    raise ValueError("bad knob")


def spy(k):
    m = nn.Linear(8, k)
    SEEN.append(m.weight.device.type)
    return m


def needs_real(k):
    m = nn.Linear(8, k)
    m.weight.detach().sum().item()  # impossible on the meta device
    return m
'''


@pytest.fixture
def mods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Writes the factory modules under unique names; returns (factories, broken) names."""
    tag = uuid.uuid4().hex[:8]
    good, broken = f"slfact_{tag}", f"slbroken_{tag}"
    (tmp_path / f"{good}.py").write_text(textwrap.dedent(FACTORIES))
    (tmp_path / f"{broken}.py").write_text("import scalelab_no_such_dep_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield good, broken
    for name in (good, broken):
        sys.modules.pop(name, None)


def make(factory: str, **options) -> CustomFamily:
    return CustomFamily(CustomFamily.Options(factory=factory, **options))


def error_of(factory: str, **options) -> str:
    with pytest.raises(UserError) as info:
        make(factory, **options)
    return str(info.value)


def test_factory_without_colon():
    assert error_of("mymod.make") == ("custom family: factory 'mymod.make' must be written "
                                      "'package.module:function'")


def test_module_that_cannot_be_imported(mods):
    assert error_of("scalelab_missing_mod_xyz:make") == (
        "custom family: cannot import module 'scalelab_missing_mod_xyz' of factory "
        "'scalelab_missing_mod_xyz:make': No module named 'scalelab_missing_mod_xyz' (looked "
        f"for {Path.cwd() / 'scalelab_missing_mod_xyz'}.py, then on the import path)")
    _, broken = mods
    assert error_of(f"{broken}:make") == (
        f"custom family: cannot import module '{broken}' of factory '{broken}:make': "
        "No module named 'scalelab_no_such_dep_xyz'")


def test_missing_attribute_and_not_callable(mods):
    good, _ = mods
    assert error_of(f"{good}:nope") == (
        f"custom family: module '{good}' has no attribute 'nope' (factory '{good}:nope')")
    assert error_of(f"{good}:NOT_CALLABLE") == (
        f"custom family: factory '{good}:NOT_CALLABLE' is not callable (it is int 3)")


def test_factory_returning_something_else(mods):
    good, _ = mods
    assert error_of(f"{good}:wrong_type", knob_min=2) == (
        f"custom family: factory '{good}:wrong_type' returned dict {{'width': 2}} for knob 2, "
        "not a torch.nn.Module")


def test_factory_raising(mods):
    good, _ = mods
    assert error_of(f"{good}:boom") == (
        f"custom family: factory '{good}:boom' raised for knob 1: ValueError: bad knob")
    fam = make(f"{good}:narrow_only")  # knob 1 works, so construction passes
    with pytest.raises(UserError) as info:
        fam.shape_for(1000, VEC)  # the search gallops 1, 2, 4, 8
    assert str(info.value) == (f"custom family: factory '{good}:narrow_only' raised for knob 8: "
                               "RuntimeError: width 8 is too wide")


def test_options_errors_through_the_registry(mods):
    good, _ = mods
    with pytest.raises(UserError) as info:
        get_family("custom")
    assert str(info.value) == "family (custom): 'factory' is required"
    with pytest.raises(UserError) as info:
        get_family("custom", factory=f"{good}:mlp", knob_min=8, knob_max=4)
    assert str(info.value) == "family (custom).knob_max: Value error, must be >= knob_min (8)"
    with pytest.raises(UserError, match=r"^family \(custom\)\.accepts: Value error"):
        get_family("custom", factory=f"{good}:mlp", accepts=["audio"])
    with pytest.raises(UserError, match="raised for knob 1: ValueError: bad knob$"):
        get_family("custom", factory=f"{good}:boom")


@pytest.mark.parametrize("target", [1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6])
def test_shape_for_finds_the_closest_knob(mods, target):
    good, _ = mods
    fam = make(f"{good}:mlp", knob_max=1 << 20)
    shape = fam.shape_for(target, VEC)
    k = shape["knob"]
    assert shape == {"factory": f"{good}:mlp", "knob": k}
    assert k == round((target - 3) / 12)  # 12k + 3 parameters
    n = 12 * k + 3
    assert count_params(fam.build(shape)) == (n, n)
    assert abs(math.log(n / target)) < 0.01
    assert fam.describe(shape) == f"mlp({k})"


def test_knobs_grow_with_the_target(mods):
    good, _ = mods
    fam = make(f"{good}:mlp", knob_max=1 << 20)
    knobs = [fam.shape_for(t, VEC)["knob"] for t in (1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6)]
    assert knobs == sorted(set(knobs))
    assert [fam.count_knob(k) for k in knobs] == [12 * k + 3 for k in knobs]


def test_embeddings_are_left_out_of_the_target(mods):
    good, _ = mods
    fam = make(f"{good}:with_embedding")
    shape = fam.shape_for(1e4, VEC)
    assert shape["knob"] == 100  # 100*100 + 100 = 10100 beats 99*99 + 99 = 9900 in log
    assert count_params(fam.build(shape)) == (100 * 100 + 10100, 10100)


def test_out_of_range_targets(mods):
    good, _ = mods
    fam = make(f"{good}:mlp", knob_max=100)
    with pytest.raises(ValueError) as info:
        fam.shape_for(1e6, VEC)
    assert str(info.value) == (f"target size 1e+06 is above the largest model of factory "
                               f"'{good}:mlp' (knob 1..100) (1203 parameters)")
    with pytest.raises(ValueError, match=r"below the smallest .* \(243 parameters\)$"):
        make(f"{good}:mlp", knob_min=20).shape_for(100, VEC)
    fixed = make(f"{good}:mlp", knob_min=20, knob_max=20)
    assert fixed.shape_for(200, VEC) == {"factory": f"{good}:mlp", "knob": 20}


def test_counting_uses_the_meta_device_and_falls_back(mods):
    good, _ = mods
    fam = make(f"{good}:spy")
    module = sys.modules[good]
    shape = fam.shape_for(1000, VEC)  # 9k parameters
    assert shape["knob"] == 111
    assert module.SEEN[0] == "cpu" and set(module.SEEN[1:]) == {"meta"}
    calls = len(module.SEEN)
    assert fam.shape_for(1000, VEC) == shape and fam.count_knob(111) == 999
    assert len(module.SEEN) == calls  # every count came from the cache
    assert fam.build(shape).weight.device.type == "cpu"
    real = make(f"{good}:needs_real")
    assert real.shape_for(1000, VEC)["knob"] == 111
    assert real.count_knob(7) == 63


def test_build_resolves_a_stored_shape_of_another_factory(mods):
    good, _ = mods
    fam = make(f"{good}:mlp")
    model = fam.build({"factory": f"{good}:with_embedding", "knob": 3})
    assert count_params(model) == (300 + 12, 12)


def test_from_callable():
    def local_make(k: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, k), nn.ReLU(), nn.Linear(k, 10))

    fam = CustomFamily.from_callable(local_make, accepts=("image",))
    assert fam.factory == f"{__name__}:test_from_callable.<locals>.local_make"
    assert fam.accepts == ("image",) and fam.name == "custom" and fam.context is None
    shape = fam.shape_for(1e4, IMG)  # 75k + 10 parameters
    assert shape == {"factory": fam.factory, "knob": 133}
    model = fam.build(shape)
    assert count_params(model) == (9985, 9985)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert fam.describe(shape) == "local_make(133)"
    with pytest.raises(ValueError, match="not vector"):
        fam.shape_for(1e4, TaskIO("vector", (64,), 10))
    with pytest.raises(UserError) as info:
        check_fit(fam, TaskIO("vector", (64,), 10), "tabular")
    assert str(info.value) == ("family 'custom' does not fit task 'tabular': it models image "
                               "inputs, the task gives vector inputs")
    with pytest.raises(UserError) as info:
        CustomFamily.from_callable(5)  # type: ignore[arg-type]
    assert str(info.value) == "custom family: factory is not callable (it is int 5)"
    with pytest.raises(UserError, match=r"^family \(custom\)\.accepts: Value error, must list"):
        CustomFamily.from_callable(local_make, accepts=("audio",))
