"""The divergence guard (train/diverge.py), in the loop a rung trains with and in packed training:
a loss that has fallen near zero and wobbles is healthy; a loss that climbs back, or an exploding
one, is divergence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scalelab.errors import UserError
from scalelab.ladder import VECTOR_LR, plan_ladder
from scalelab.models import get_family
from scalelab.models.gpt import GPTConfig
from scalelab.records import RungPlan
from scalelab.spec import TrainSpec, parse_spec
from scalelab.tasks import get_task
from scalelab.train.diverge import divergence
from scalelab.train.loop import train_rung
from scalelab.train.pack import train_packed
from tests.integration.real_data import rand_hie_csv

CPU = torch.device("cpu")
BLOCK = 16
FAMILY = get_family("gpt", block_size=BLOCK)
SHAPE = GPTConfig(n_layer=1, d_model=8, n_head=2, block_size=BLOCK).to_dict()
EVERY = 10
TRAIN = TrainSpec(eval_every=EVERY, eval_tokens=256, checkpoint_every=10_000)


@pytest.fixture(scope="module")
def task():
    return get_task("pycode", context=BLOCK)


def _plan(steps: int, lr: float = 1e-3, seed: int = 0) -> RungPlan:
    units = 4 * BLOCK
    return RungPlan(rung=0, family="gpt", shape=SHAPE, target_n=1e3, n_params=0, n_nonembed=0,
                    D=steps * units, unit="byte", steps=steps, batch_size=4,
                    units_per_step=units, lr=lr, warmup_steps=0, seed=seed)


def _scripted(task, tmp_path: Path, means: list[float]):
    """train_rung whose training loss is `means[i]` at every step of interval i (the model
    trains on nothing: the loss is scripted, the loop and its guard are the real ones)."""
    step = {"n": 0}

    def loss_fn(outputs, x, y):
        value = means[min(step["n"] // EVERY, len(means) - 1)]
        step["n"] += 1
        return outputs.sum() * 0.0 + value

    return train_rung(_plan(EVERY * len(means)), task, TRAIN, CPU, tmp_path / "ck",
                      family=FAMILY, loss_fn=loss_fn)


# The case: memorised rows, the loss near zero; 0.000135 -> 0.001644 is 12x the best
# and was called divergence, though it gives back 0.2% of what training gained.
NEAR_ZERO = [0.9, 0.2, 0.02, 0.002, 0.0003, 0.000135, 0.001644, 0.0004, 0.0009, 0.0002]


def test_noise_near_zero_is_not_divergence(task, tmp_path):
    out = _scripted(task, tmp_path, NEAR_ZERO)
    assert out.status == "done", out.diverged_reason
    assert [round(p.train_loss, 6) for p in out.curve] == NEAR_ZERO


def test_climbing_back_and_staying_up_is_divergence(task, tmp_path):
    # Fell from 2.0 to 0.5, then back up to 1.4 and 1.5: 60% of the fall given back for two
    # intervals, far over its noise.
    out = _scripted(task, tmp_path, [2.0, 1.0, 0.6, 0.5, 1.4, 1.5, 0.5])
    assert out.status == "diverged"
    assert out.diverged_step == 6 * EVERY
    assert "1.4 then 1.5: two intervals in a row more than 0.75 above the best before them " \
        "(0.5)" in out.diverged_reason


def test_a_spike_the_loss_comes_back_from_is_not_divergence(task, tmp_path):
    # One interval up to 1.4, short of the start (2.0), then back: the rule before stopped it.
    out = _scripted(task, tmp_path, [2.0, 1.0, 0.6, 0.5, 1.4, 0.5, 0.45])
    assert out.status == "done", out.diverged_reason


def test_back_above_the_start_is_divergence_at_once(task, tmp_path):
    out = _scripted(task, tmp_path, [2.0, 1.0, 0.6, 0.5, 2.5, 0.5])
    assert out.status == "diverged"
    assert out.diverged_step == 5 * EVERY
    assert "2.5 is back above where training started (2)" in out.diverged_reason


def test_a_flat_noisy_loss_is_not_divergence():
    # A run that learns nothing: its means wobble by about their standard error (0.02).
    means, noise = [1.00, 1.02, 0.99, 1.01, 0.98], [0.02] * 5
    assert divergence(means, noise, 1.03, 1.0, 0.5) is None
    assert divergence([*means, 1.05], [*noise, 0.02], 1.05, 1.0, 0.5) is None
    # 0.2 above the start is 10x its noise: out of the range at once.
    assert "back above where training started" in divergence(means, noise, 1.2, 1.0, 0.5)


# statsmodels' `fair` table (had an affair, 6,366 rows), `scalelab run --quick` with a spec of
# task and family: the mean training loss of each 100-step interval of two of its rungs, whose
# means have a standard error of about 0.014 (batch 16), and which the rule before stopped as
# diverged: 2x153 at its 5th interval (0.570, 4.0x the noise above a low best of 0.513) and
# 2x392 at its last, of 10 steps (0.605).
FAIR_2X153 = [0.5960, 0.5572, 0.5477, 0.5131, 0.5697]
FAIR_2X392 = [0.5736, 0.5480, 0.5293, 0.5209, 0.5289, 0.5569, 0.5335, 0.5277, 0.5339, 0.5361,
              0.5265, 0.5480, 0.5225, 0.5262, 0.5212, 0.5244, 0.5213, 0.5394, 0.5106, 0.6045]


@pytest.mark.parametrize("means", [FAIR_2X153, FAIR_2X392], ids=["2x153", "2x392"])
def test_noise_on_a_hard_table_is_not_divergence(means):
    for i in range(1, len(means)):
        assert divergence(means[:i], [0.014] * i, means[i], 0.55, 0.5) is None, i


def test_non_finite_loss_is_divergence():
    assert "non-finite" in divergence([1.0], [0.1], float("nan"), 1.0, 0.5)
    assert "non-finite" in divergence([1.0], [0.1], 0.9, float("inf"), 0.5)


def test_learning_rate_far_too_high_is_caught_alone_and_packed(task, tmp_path):
    """A GPT on pycode at a learning rate that makes its loss explode is stopped, by the same
    guard alone and in a pack, while a sane rate beside it in the pack finishes."""
    hot, sane = _plan(80, lr=30.0, seed=1), _plan(80, lr=3e-3, seed=2)
    alone = train_rung(hot, task, TRAIN, CPU, tmp_path / "hot", family=FAMILY)
    assert alone.status == "diverged" and alone.diverged_step < hot.steps
    packed = train_packed([hot, sane], task, TRAIN, CPU, family=FAMILY)
    assert packed[0].status == "diverged" and packed[0].diverged_step < hot.steps
    assert packed[1].status == "done"


@pytest.mark.parametrize("times,status", [(100, "diverged"), (1, "done")])
def test_an_mlp_on_a_table_at_100x_its_rate_is_caught(tmp_path, times, status):
    """An MLP on a real regression table (heavy-tailed counts, so its healthy interval means
    wobble by 50%) at 100x its default rate blows up (measured: one step's loss passed 1,000 at
    step 148, the interval's mean 16 after 1.1) and is stopped; at its default rate the same
    1,250 steps finish."""
    csv = rand_hie_csv(tmp_path / "hie.csv")
    spec = parse_spec({"task": {"name": "tabular", "path": str(csv), "target": "mdvis"},
                       "family": {"name": "mlp"}, "ladder": {"sizes": [1e4]},
                       "train": {"lr": times * VECTOR_LR, "tokens": 20_000,
                                 "eval_every": 100, "eval_tokens": 4096}})
    task = get_task("tabular", path=str(csv), target="mdvis")
    family = get_family("mlp")
    plan = plan_ladder(spec, task, family)[0]
    out = train_rung(plan, task, spec.train, CPU, tmp_path / "ck", family=family)
    assert out.status == status, out.diverged_reason


def test_a_stored_spec_with_the_old_setting_still_loads():
    # Every spec stored before diverge_rise holds diverge_factor: 3.0 (the old default).
    assert parse_spec({"train": {"diverge_factor": 3.0}}).train.diverge_rise == 0.5
    with pytest.raises(UserError, match="diverge_factor is replaced by diverge_rise"):
        parse_spec({"train": {"diverge_factor": 10.0}})
