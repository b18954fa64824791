"""The `tabular` task: CSV parsing, column types, splits, folds, encodings and bad input."""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from scalelab.errors import UserError
from scalelab.tasks import get_task
from scalelab.tasks.tabular import TabularTask, fold_split, random_split, stratified_split

COLORS = ["red", "green", "blue"]
LABELS = ["a"] * 10 + ["b"] * 15 + ["c"] * 5 + ["d"]  # d: too rare to stratify


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make(path: Path, **options) -> TabularTask:
    return TabularTask(TabularTask.Options(path=str(path), **options), None)


def num(i: int) -> float:
    return 0.5 * i * i


@pytest.fixture
def classes_csv(tmp_path: Path) -> Path:
    """31 rows: a number, a colour (one row purple), a size with two gaps, a string label."""
    rows = []
    for i, label in enumerate(LABELS):
        color = "purple" if i == 4 else COLORS[i % 3]
        size = "" if i == 7 else "NA" if i == 8 else str(i % 4)
        rows.append([str(num(i)), color, size, label])
    return write_csv(tmp_path / "classes.csv", ["num", "color", "size", "label"], rows)


@pytest.fixture
def numbers_csv(tmp_path: Path) -> Path:
    """20 rows, a float target y = 2*x1 - x2 + 10 (+ a category)."""
    rows = []
    for i in range(20):
        x1, x2 = float(i), float((i * 7) % 5)
        rows.append([x1, x2, "u" if i % 2 else "v", 2 * x1 - x2 + 10.5])
    return write_csv(tmp_path / "numbers.csv", ["x1", "x2", "kind", "y"], rows)


def test_classification_split_is_stratified_deterministic_and_disjoint(classes_csv: Path):
    task = make(classes_csv, target="label")
    assert task.objective == "classification" and task.classes == ["a", "b", "c", "d"]
    assert task.unit == "example" and task.metrics == ("accuracy", "error")
    # per class round(0.2 * n): a 10 -> 2, b 15 -> 3, c 5 -> 1, d 1 -> 0 (stays in train)
    assert torch.bincount(task.y_val, minlength=4).tolist() == [2, 3, 1, 0]
    assert torch.bincount(task.y_train, minlength=4).tolist() == [8, 12, 4, 1]
    train, val = set(task.train_index.tolist()), set(task.val_index.tolist())
    assert not train & val and train | val == set(range(31))
    labels = np.array(["abcd".index(x) for x in LABELS])  # codes of the sorted class names
    assert torch.equal(task.y_val, torch.from_numpy(labels[task.val_index.numpy()]))
    again = make(classes_csv, target="label")
    assert torch.equal(again.val_index, task.val_index)
    assert torch.equal(again.x_train, task.x_train)
    other = make(classes_csv, target="label", seed=1)
    assert not torch.equal(other.val_index, task.val_index)
    assert torch.bincount(other.y_val, minlength=4).tolist() == [2, 3, 1, 0]
    # the validation order is shuffled, not class by class
    assert task.y_val.tolist() != sorted(task.y_val.tolist())


def test_features_are_standardised_on_train_and_one_hot(classes_csv: Path):
    task = make(classes_csv, target="label")
    assert task.feature_names == ["num", "color=blue", "color=green", "color=purple",
                                  "color=red", "size"]
    assert task.io.kind == "vector" and task.io.input_shape == (6,) and task.io.n_outputs == 4
    tr, va = task.train_index.numpy(), task.val_index.numpy()
    raw = np.array([num(i) for i in range(31)])
    mean, std = raw[tr].mean(), raw[tr].std()
    assert mean != pytest.approx(raw.mean())  # train statistics, not the whole file's
    assert task.feature_mean["num"] == pytest.approx(mean)
    assert task.feature_std["num"] == pytest.approx(std)
    assert task.x_val[:, 0].numpy() == pytest.approx((raw[va] - mean) / std, abs=1e-6)
    assert float(task.x_train[:, 0].mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(task.x_train[:, 0].std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)
    # size: empty and "NA" cells take the train mean of the present cells -> exactly 0
    sizes = np.array([np.nan if i in (7, 8) else i % 4 for i in range(31)], dtype=float)
    present = sizes[tr][~np.isnan(sizes[tr])]
    assert task.feature_mean["size"] == pytest.approx(present.mean())
    x_all = torch.cat([task.x_train, task.x_val])
    rows = np.concatenate([tr, va])
    for gap in (7, 8):
        assert float(x_all[list(rows).index(gap), 5]) == 0.0
    # one-hot: row 0 is red, row 1 green, row 2 blue
    for row, column in ((0, 4), (1, 2), (2, 1)):
        onehot = x_all[list(rows).index(row), 1:5]
        assert onehot.tolist() == [1.0 if j == column - 1 else 0.0 for j in range(4)]
    assert task.x_train.dtype == torch.float32 and task.y_train.dtype == torch.int64


def test_a_category_unseen_in_train_is_all_zeros(classes_csv: Path):
    task = make(classes_csv, target="label", folds=4)
    # row 4 is the only purple one: in the fold that validates on it, train never saw purple
    k = next(k for k in range(4) if 4 in task.fold(k).val_index.tolist())
    fold = task.fold(k)
    at = fold.val_index.tolist().index(4)
    assert fold.x_val[at, 1:5].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert float(fold.x_train[:, 3].abs().sum()) == 0.0
    seen = task.fold((k + 1) % 4)  # any other fold trains on row 4
    at = seen.train_index.tolist().index(4)
    assert seen.x_train[at, 1:5].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert seen.io == fold.io == task.io  # one feature layout for every fold


def test_folds_partition_the_rows_stratified_and_refit(classes_csv: Path):
    task = make(classes_csv, target="label", folds=3)
    assert task.n_folds == 3 and task.fold_index is None
    folds = [task.fold(k) for k in range(3)]
    vals = [set(f.val_index.tolist()) for f in folds]
    assert [len(v) for v in vals] == [11, 10, 10]
    assert set().union(*vals) == set(range(31)) and sum(map(len, vals)) == 31
    raw = np.array([num(i) for i in range(31)])
    for k, fold in enumerate(folds):
        assert fold.fold_index == k and fold.fingerprint()["fold"] == k
        train = set(fold.train_index.tolist())
        assert train == set(range(31)) - vals[k]
        # dealt round-robin in class order: a (10) 4/3/3, b (15) 5/5/5, c (5) 1/2/2, d (1) 1/0/0
        expected = [[4, 5, 1, 1], [3, 5, 2, 0], [3, 5, 2, 0]][k]
        assert torch.bincount(fold.y_val, minlength=4).tolist() == expected
        assert fold.feature_mean["num"] == pytest.approx(raw[fold.train_index.numpy()].mean())
    # every class is spread over the folds: per class, fold sizes differ by at most one
    for c in range(3):
        per_fold = [int((f.y_val == c).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == LABELS.count("abc"[c])
    assert [f.val_index.tolist() for f in folds] == \
        [task.fold(k).val_index.tolist() for k in range(3)]
    with pytest.raises(ValueError, match=r"fold must be in \[0, 3\)"):
        task.fold(3)
    plain = make(classes_csv, target="label")
    assert plain.n_folds == 1 and plain.fold(0) is plain


def test_regression_target_is_standardised_on_train(numbers_csv: Path):
    task = make(numbers_csv, target="y", val_fraction=0.25)
    assert task.objective == "regression" and task.classes is None
    assert task.metrics == ("rmse",) and task.io.n_outputs == 1
    assert task.io.input_shape == (4,)  # x1, x2, kind=u, kind=v
    assert task.x_val.size(0) == 5 and task.x_train.size(0) == 15
    assert task.y_train.dtype == torch.float32 and task.y_train.shape == (15,)
    y = np.array([2 * i - (i * 7) % 5 + 10.5 for i in range(20)])
    tr, va = task.train_index.numpy(), task.val_index.numpy()
    assert task.target_mean == pytest.approx(y[tr].mean())
    assert task.target_scale == pytest.approx(y[tr].std())
    assert task.y_val.numpy() == pytest.approx((y[va] - y[tr].mean()) / y[tr].std(), abs=1e-6)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    assert task.val_index.tolist() == perm[:5].tolist()
    # a model that always says 0 predicts the train mean: RMSE in the target's own units
    model = torch.nn.Linear(4, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    out = task.evaluate(model, torch.device("cpu"), 100)
    assert set(out) == {"loss", "rmse"}
    assert out["rmse"] == pytest.approx(math.sqrt(np.mean((y[va] - y[tr].mean()) ** 2)))
    assert out["loss"] == pytest.approx(np.mean(((y[va] - y[tr].mean()) / y[tr].std()) ** 2),
                                        rel=1e-5)
    folds = make(numbers_csv, target="y", folds=4)
    vals = [set(folds.fold(k).val_index.tolist()) for k in range(4)]
    assert [len(v) for v in vals] == [5, 5, 5, 5] and set().union(*vals) == set(range(20))
    f1 = folds.fold(1)
    assert f1.target_mean == pytest.approx(y[f1.train_index.numpy()].mean())


def test_batches_eval_data_and_example_input(classes_csv: Path):
    task = make(classes_csv, target="label")
    x, y = task.batch(5, torch.Generator().manual_seed(2))
    idx = torch.randint(0, 25, (5,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(x, task.x_train[idx]) and torch.equal(y, task.y_train[idx])
    assert x.shape == (5, 6) and x.dtype == torch.float32 and y.dtype == torch.int64
    xv, yv = task.eval_data(4)
    assert torch.equal(xv, task.x_val[:4]) and torch.equal(yv, task.y_val[:4])
    xa, _ = task.eval_data(10_000)
    assert torch.equal(xa, task.x_val)
    xt, _ = task.eval_data(3, "train")
    assert torch.equal(xt, task.x_train[:3])
    with pytest.raises(ValueError, match="split must be"):
        task.eval_data(3, "test")
    ex = task.example_input(13)  # 6 validation rows repeated
    assert ex.shape == (13, 6) and ex.dtype == torch.float32
    assert torch.equal(ex[6:12], task.x_val) and torch.equal(ex[12], task.x_val[0])
    assert task.units_per_batch(5) == 5


def test_evaluate_a_classifier(classes_csv: Path):
    task = make(classes_csv, target="label")
    model = torch.nn.Linear(6, 4)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)  # equal logits: ln 4 nats; argmax is class 0 ("a")
    out = task.evaluate(model, torch.device("cpu"), 100)
    assert set(out) == {"loss", "accuracy", "error"}
    assert out["loss"] == pytest.approx(math.log(4))
    assert out["accuracy"] == pytest.approx(2 / 6) and out["error"] == pytest.approx(4 / 6)
    assert all(math.isfinite(v) for v in task.evaluate(torch.nn.Linear(6, 4),
                                                        torch.device("cpu"), 100).values())


def test_fingerprint(classes_csv: Path):
    fp = make(classes_csv, target="label").fingerprint()
    assert fp["sha256"] == hashlib.sha256(classes_csv.read_bytes()).hexdigest()
    assert (fp["rows"], fp["train_rows"], fp["val_rows"], fp["n_features"]) == (31, 25, 6, 6)
    assert fp["columns"] == ["num", "color", "size", "label"]
    assert (fp["target"], fp["objective"], fp["classes"]) == ("label", "classification",
                                                              ["a", "b", "c", "d"])
    assert fp["numeric_columns"] == ["num", "size"] and fp["categorical_columns"] == ["color"]


def test_objective_auto(tmp_path: Path):
    ints = write_csv(tmp_path / "ints.csv", ["x", "y"], [[i, [1, 2, 10][i % 3]] for i in range(12)])
    task = make(ints, target="y")
    assert task.objective == "classification" and task.classes == ["1", "2", "10"]
    assert torch.bincount(torch.cat([task.y_train, task.y_val])).tolist() == [4, 4, 4]
    many = write_csv(tmp_path / "many.csv", ["x", "y"], [[i, i % 21] for i in range(42)])
    assert make(many, target="y").objective == "regression"  # 21 distinct integers
    twenty = write_csv(tmp_path / "twenty.csv", ["x", "y"], [[i, i % 20] for i in range(60)])
    assert make(twenty, target="y").objective == "classification"
    floats = write_csv(tmp_path / "floats.csv", ["x", "y"], [[i, i % 3 + 0.5] for i in range(9)])
    assert make(floats, target="y").objective == "regression"
    forced = make(floats, target="y", objective="classification")
    assert forced.classes == ["0.5", "1.5", "2.5"]
    assert make(ints, target="y", objective="regression").objective == "regression"


def test_the_registry_builds_it_and_rejects_unknown_keys(classes_csv: Path):
    task = get_task("tabular", path=str(classes_csv), target="label")
    assert isinstance(task, TabularTask)
    with pytest.raises(UserError, match="unknown key"):
        get_task("tabular", path=str(classes_csv), target="label", encoding="ordinal")
    with pytest.raises(ValidationError):
        TabularTask.Options(path="x", target="y", categorical="ordinal")
    with pytest.raises(ValidationError):
        TabularTask.Options(path="x", target="y", folds=1)


def test_split_helpers():
    labels = torch.tensor([0] * 5 + [1] * 5 + [2])
    train, val = stratified_split(labels, 0.4, seed=0)
    assert torch.bincount(labels[val], minlength=3).tolist() == [2, 2, 0]
    assert sorted(train.tolist() + val.tolist()) == list(range(11))
    train, val = random_split(2, 0.2, seed=0)  # at least one row each
    assert len(train) == len(val) == 1
    train, val = fold_split(None, 7, 3, 2, seed=0)
    assert len(val) == 2 and sorted(train.tolist() + val.tolist()) == list(range(7))


def error_line(path: Path, **options) -> str:
    with pytest.raises(UserError) as err:
        make(path, **options)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_inputs_are_one_clear_line(tmp_path: Path):
    missing = tmp_path / "missing.csv"
    assert error_line(missing, target="y") == \
        f"cannot read CSV {missing}: No such file or directory"
    good = [[i, i % 2] for i in range(6)]
    ok = write_csv(tmp_path / "ok.csv", ["a", "b"], good)
    assert error_line(ok, target="y") == f"{ok} has no column 'y'; its columns: a, b"
    cells = [[str(i), i % 2] for i in range(20)]
    cells[6][0] = "12,5"  # data row 7 is on line 8 (after the header)
    typo = write_csv(tmp_path / "typo.csv", ["a", "y"], cells)
    assert error_line(typo, target="y") == (
        f"{typo} line 8, column 'a': '12,5' is not a number, but 95% of that column is; "
        "fix the cell or leave it empty")
    one = write_csv(tmp_path / "one.csv", ["a", "y"], [[1, 2]])
    assert error_line(one, target="y") == f"{one} has one data row; need at least 2"
    none = write_csv(tmp_path / "none.csv", ["a", "y"], [])
    assert error_line(none, target="y") == f"{none} has no data rows; need at least 2"
    single = write_csv(tmp_path / "single.csv", ["a", "y"], [[i, "cat"] for i in range(5)])
    assert error_line(single, target="y") == (
        f"{single}: the target 'y' has one class ('cat'); classification needs at least 2")
    words = write_csv(tmp_path / "words.csv", ["a", "y"], [[i, f"w{i}"] for i in range(5)])
    assert error_line(words, target="y", objective="regression") == (
        f"{words} line 2: the regression target 'y' is 'w0', not a number; "
        "use objective: classification")
    flat = write_csv(tmp_path / "flat.csv", ["a", "y"], [[i, 2.5] for i in range(30)])
    assert error_line(flat, target="y", objective="regression") == (
        f"{flat}: the target 'y' is 2.5 in every row; nothing to predict")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,y\n1,2\n3,4,5\n")
    assert error_line(ragged, target="y") == f"{ragged} line 3: 3 cells, but the header has 2"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert error_line(empty, target="y") == f"{empty} is empty: no header row"
    gap = write_csv(tmp_path / "gap.csv", ["a", "y"], [[1, 0], [2, ""], [3, 1]])
    assert error_line(gap, target="y") == f"{gap} line 3: the target 'y' is missing ('')"
    assert error_line(ok, target="b", folds=7) == f"{ok} has 6 rows, fewer than folds: 7"
    tiny = write_csv(tmp_path / "tiny.csv", ["a", "y"], [[1, "p"], [2, "q"]])
    assert error_line(tiny, target="y").startswith(f"{tiny}: no class has enough rows")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,y\ncaf\xe9,1\n".encode("latin-1"))
    assert error_line(latin, target="y") == f"{latin} is not a UTF-8 text file"
    twice = write_csv(tmp_path / "twice.csv", ["a", "a", "y"], [[1, 2, 3]] * 3)
    assert error_line(twice, target="y") == f"{twice}: the header names 'a' more than once"
    only = write_csv(tmp_path / "only.csv", ["y"], [[1], [0], [1]])
    assert error_line(only, target="y") == f"{only}: no feature columns besides the target 'y'"


def test_mostly_text_columns_are_categorical_and_empty_ones_dropped(tmp_path: Path):
    rows = [[["1", "2", "x"][i % 3], "", i % 2] for i in range(12)]
    mixed = write_csv(tmp_path / "mixed.csv", ["code", "blank", "y"], rows)
    task = make(mixed, target="y")
    assert task.feature_names == ["code=1", "code=2", "code=x"]
    assert task.fingerprint()["dropped_columns"] == ["blank"]
