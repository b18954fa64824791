"""The `digits` task: scikit-learn's 8x8 digits, images or vectors, stratified split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.datasets import load_digits

from scalelab.tasks import digits, get_task, tabular
from scalelab.tasks.digits import DigitsTask


def make(**options) -> DigitsTask:
    return DigitsTask(DigitsTask.Options(**options), None)


@pytest.fixture(scope="module")
def sk():
    return load_digits()


def test_images_scaled_and_split_stratified(sk):
    task = make()
    assert task.io.kind == "image" and task.io.input_shape == (1, 8, 8)
    assert task.io.n_outputs == 10 and task.objective == "classification"
    assert task.unit == "example" and task.classes == [str(c) for c in range(10)]
    assert task.x_train.shape == (1438, 1, 8, 8) and task.x_val.shape == (359, 1, 8, 8)
    assert task.x_train.dtype == torch.float32 and task.y_train.dtype == torch.int64
    expected = [round(0.2 * n) for n in np.bincount(sk.target)]
    assert torch.bincount(task.y_val).tolist() == expected
    tr, va = task.train_index.numpy(), task.val_index.numpy()
    assert not set(tr) & set(va) and len(set(tr) | set(va)) == 1797
    assert task.x_val.reshape(-1, 64).numpy() == pytest.approx(sk.data[va] / 16)
    assert task.y_val.tolist() == sk.target[va].tolist()
    assert float(task.x_train.min()) == 0.0 and float(task.x_train.max()) == 1.0
    # one split helper for every stratified task
    assert digits.stratified_split is tabular.stratified_split
    same = tabular.stratified_split(torch.from_numpy(sk.target), 0.2, 0)
    assert torch.equal(same[1], task.val_index)


def test_split_is_deterministic_and_seeded(sk):
    a, b, c = make(), make(), make(seed=1)
    assert torch.equal(a.val_index, b.val_index) and torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.val_index, c.val_index)
    assert torch.equal(torch.bincount(a.y_val), torch.bincount(c.y_val))
    # per class Python's round(n / 2): halves round to even (88.5 -> 88, 91.5 -> 92)
    assert [round(n / 2) for n in np.bincount(sk.target)] == [89, 91, 88, 92, 90, 91, 90, 90,
                                                              87, 90]
    assert make(val_fraction=0.5).x_val.size(0) == 898


def test_flatten_gives_vectors():
    flat, image = make(flatten=True), make()
    assert flat.io.kind == "vector" and flat.io.input_shape == (64,) and flat.io.n_outputs == 10
    assert torch.equal(flat.x_val, image.x_val.reshape(-1, 64))
    assert flat.fingerprint()["sha256"] == image.fingerprint()["sha256"]


def test_batch_eval_data_and_example_input():
    task = make()
    x, y = task.batch(6, torch.Generator().manual_seed(4))
    idx = torch.randint(0, 1438, (6,), generator=torch.Generator().manual_seed(4))
    assert torch.equal(x, task.x_train[idx]) and torch.equal(y, task.y_train[idx])
    xv, yv = task.eval_data(100)
    assert torch.equal(xv, task.x_val[:100]) and torch.equal(yv, task.y_val[:100])
    assert task.eval_data(10**6)[0].size(0) == 359
    assert torch.equal(task.eval_data(7, "train")[0], task.x_train[:7])
    ex = task.example_input(3)
    assert ex.shape == (3, 1, 8, 8) and torch.equal(ex, task.x_val[:3])


def test_evaluate_a_tiny_model():
    task = make()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.nn.init.zeros_(model[1].weight)
    torch.nn.init.zeros_(model[1].bias)  # equal logits: ln 10 nats, argmax is class 0
    out = task.evaluate(model, torch.device("cpu"), 10_000)
    assert set(out) == {"loss", "accuracy", "error"}
    assert out["loss"] == pytest.approx(math.log(10))
    assert out["accuracy"] == pytest.approx(36 / 359)
    fresh = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    assert all(math.isfinite(v) for v in task.evaluate(fresh, torch.device("cpu"), 200).values())


def test_fingerprint_and_options():
    fp = make().fingerprint()
    assert (fp["rows"], fp["train_rows"], fp["val_rows"]) == (1797, 1438, 359)
    assert fp["input_shape"] == [1, 8, 8] and len(fp["sha256"]) == 64
    assert fp["dataset"] == "sklearn.datasets.load_digits"
    assert isinstance(get_task("digits", flatten=True), DigitsTask)
    with pytest.raises(ValidationError):
        DigitsTask.Options(pixels="raw")
    with pytest.raises(ValidationError):
        DigitsTask.Options(val_fraction=0)
