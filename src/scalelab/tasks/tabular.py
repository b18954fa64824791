"""Task `tabular`: classification or regression on the rows of a CSV file.

Decisions:

- Reading: the stdlib `csv` module (no pandas), UTF-8 (a byte-order mark is allowed); the first
  row names the columns; blank lines are skipped; a row with a different number of cells than the
  header is an error. Every problem with the file is one `UserError` line naming the line, column
  and value.
- Missing cells: empty, "NA", "N/A", "NaN", "null" or "?" (any case).
- Column types: a column is numeric when every present cell parses as a finite float. When most of
  them (>= 90%) parse but some do not, the file is almost certainly wrong (a typo, a unit, "1,5"),
  so that is an error naming the first bad cell; otherwise the column is categorical. A column
  with no present cell is dropped.
- Numeric features are standardised with the mean and (population) standard deviation of the
  train split; a missing cell takes the train mean (so it becomes 0); a column constant on train
  is only centred. Categorical features are one-hot (the only encoding offered: enough for small
  tabular models, and nothing to fit): one feature per category found anywhere in the file, in
  sorted order, so every fold has the same feature layout (`io`), but only categories seen in the
  train split are ever set; an unseen or missing category is all zeros.
- Objective "auto": a non-numeric target, or an integer-valued one with at most 20 distinct
  values, is classification; anything else is regression. Classes are label-encoded in sorted
  order (numeric order for numeric targets). A regression target is standardised on train;
  `target_scale` is its train standard deviation, so RMSE is in the target's own units.
- Split: stratified for classification (per class, a seeded permutation; the first
  round(val_fraction * n_class) rows go to validation, but never a class's last row, so a class
  too rare to stratify simply stays in train), a seeded random split for regression. Each split is
  then in a seeded shuffled order, so the prefix `eval_data` takes is a fair sample, not one class.
- Folds: `folds: k` adds k-fold cross-validation (stratified for classification). `fold(i)`
  returns a task whose validation split is fold i and whose train split is every other row, with
  the standardisation refitted there; the task itself keeps the `val_fraction` split. Without
  folds `n_folds` is 1 and `fold(0)` is the task itself, so a driver can always loop over
  `range(task.n_folds)`.

`InMemoryTask` and `stratified_split` are shared with other in-memory tasks (`digits`).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from scalelab.errors import UserError
from scalelab.tasks.base import BaseTask, TaskIO

MISSING = {"", "na", "n/a", "nan", "null", "?"}
NUMERIC_SHARE = 0.9  # a column this numeric with a non-number in it is an error, not a category
MAX_AUTO_CLASSES = 20  # objective auto: an integer target with at most this many values


class InMemoryTask(BaseTask):
    """A task whose examples fit in memory: `x_train`, `y_train`, `x_val`, `y_val` tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @property
    def train_units(self) -> int:
        return int(self.x_train.size(0))

    def batch(self, batch_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random rows of the train split (with replacement)."""
        idx = torch.randint(0, self.x_train.size(0), (batch_size,), generator=generator)
        return self.x_train[idx], self.y_train[idx]

    def eval_data(self, n_units: int, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
        """The first min(n_units, n) rows of `split` in its fixed order (at least one)."""
        if split == "val":
            x, y = self.x_val, self.y_val
        elif split == "train":
            x, y = self.x_train, self.y_train
        else:
            raise ValueError(f"split must be 'val' or 'train', not {split!r}")
        n = max(1, min(n_units, x.size(0)))
        return x[:n], y[:n]


def _shuffled(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return idx[torch.randperm(idx.numel(), generator=gen)]


def stratified_split(labels: torch.Tensor | np.ndarray, val_fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), stratified by label (see the module docstring)."""
    labels = torch.as_tensor(labels)
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in torch.unique(labels):  # sorted
        idx = _shuffled(torch.nonzero(labels == label).flatten(), gen)
        n_val = min(round(val_fraction * idx.numel()), idx.numel() - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return _shuffled(torch.cat(train), gen), _shuffled(torch.cat(val), gen)


def random_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): a seeded permutation; at least one row in each."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(max(round(val_fraction * n), 1), n - 1)
    return perm[n_val:], perm[:n_val]


def fold_split(labels: torch.Tensor | None, n: int, folds: int, k: int,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of fold k of `folds`: rows ordered by class (when
    `labels` is given) and a seeded permutation within it, dealt round-robin to the folds, so each
    fold gets its share of every class."""
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        order = torch.randperm(n, generator=gen)
    else:
        order = torch.cat([_shuffled(torch.nonzero(labels == label).flatten(), gen)
                           for label in torch.unique(labels)])
    which = torch.arange(n) % folds
    return _shuffled(order[which != k], gen), _shuffled(order[which == k], gen)


@dataclass
class Column:
    """One column of the file: floats (None where missing) when numeric, else strings."""

    name: str
    numeric: bool
    values: list  # list[float | None] or list[str | None]
    categories: list[str]  # categorical: sorted distinct present values


@dataclass
class Table:
    """A parsed CSV: feature columns, the target, and what the target means."""

    path: str
    sha256: str
    header: list[str]
    features: list[Column]
    dropped: list[str]
    target: str
    objective: str  # "classification" or "regression"
    y: np.ndarray  # class codes (int64) or raw target values (float64)
    classes: list[str] | None

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING


def _number(cell: str) -> float | None:
    """A finite float, or None when the cell is not a number."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _column(name: str, cells: list[str], lines: list[int], path: str) -> Column | None:
    """Type one column (see the module docstring); None when it has no present cell."""
    present = [(c.strip(), line) for c, line in zip(cells, lines, strict=True)
               if not _is_missing(c)]
    if not present:
        return None
    bad = [(c, line) for c, line in present if _number(c) is None]
    if not bad:
        values = [None if _is_missing(c) else float(c) for c in cells]
        return Column(name, True, values, [])
    share = 1 - len(bad) / len(present)
    if share >= NUMERIC_SHARE:
        cell, line = bad[0]
        raise UserError(f"{path} line {line}, column {name!r}: {cell!r} is not a number, but "
                        f"{share:.0%} of that column is; fix the cell or leave it empty")
    values = [None if _is_missing(c) else c.strip() for c in cells]
    return Column(name, False, values, sorted({c for c, _ in present}))


def _read_rows(path: str) -> tuple[list[str], list[list[str]], list[int], str]:
    """(header, data rows, their line numbers, sha256 of the file bytes)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"cannot read CSV {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows, lines = [], []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                continue
            if len(row) != len(header):
                raise UserError(f"{path} line {reader.line_num}: {len(row)} cells, but the "
                                f"header has {len(header)}")
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise UserError(f"{path} line {reader.line_num}: malformed CSV ({err})") from None
    if header is None:
        raise UserError(f"{path} is empty: no header row")
    if any(not name for name in header):
        raise UserError(f"{path}: column {header.index('') + 1} of the header has no name")
    dupes = sorted({name for name in header if header.count(name) > 1})
    if dupes:
        raise UserError(f"{path}: the header names {', '.join(map(repr, dupes))} more than once")
    return header, rows, lines, hashlib.sha256(raw).hexdigest()


def _class_name(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:g}"


def read_table(path: str, target: str, objective: str) -> Table:
    """Parse and type the CSV at `path`; every problem is one UserError line."""
    header, rows, lines, sha = _read_rows(path)
    if target not in header:
        raise UserError(f"{path} has no column {target!r}; its columns: {', '.join(header)}")
    if len(rows) < 2:
        what = "one data row" if rows else "no data rows"
        raise UserError(f"{path} has {what}; need at least 2")
    cells = {name: [row[j] for row in rows] for j, name in enumerate(header)}
    for cell, line in zip(cells[target], lines, strict=True):
        if _is_missing(cell):
            raise UserError(f"{path} line {line}: the target {target!r} is missing ({cell!r})")
    tcol = _column(target, cells[target], lines, path)
    assert tcol is not None
    if objective == "auto":
        small_ints = tcol.numeric and all(float(v).is_integer() for v in tcol.values) \
            and len(set(tcol.values)) <= MAX_AUTO_CLASSES
        objective = "classification" if not tcol.numeric or small_ints else "regression"
    if objective == "classification":
        if tcol.numeric:
            distinct = sorted(set(tcol.values))
            classes = [_class_name(v) for v in distinct]
            code = {v: i for i, v in enumerate(distinct)}
        else:
            classes = tcol.categories
            code = {c: i for i, c in enumerate(classes)}
        if len(classes) < 2:
            raise UserError(f"{path}: the target {target!r} has one class ({classes[0]!r}); "
                            "classification needs at least 2")
        y = np.array([code[v] for v in tcol.values], dtype=np.int64)
    else:
        if not tcol.numeric:
            cell, line = next((c, ln) for c, ln in zip(cells[target], lines, strict=True)
                              if _number(c) is None)
            raise UserError(f"{path} line {line}: the regression target {target!r} is "
                            f"{cell.strip()!r}, not a number; use objective: classification")
        y = np.array(tcol.values, dtype=np.float64)
        if np.all(y == y[0]):
            raise UserError(f"{path}: the target {target!r} is {y[0]:g} in every row; "
                            "nothing to predict")
        classes = None
    features, dropped = [], []
    for name in header:
        if name == target:
            continue
        col = _column(name, cells[name], lines, path)
        if col is None:
            dropped.append(name)
        else:
            features.append(col)
    if not features:
        raise UserError(f"{path}: no feature columns besides the target {target!r}")
    return Table(path, sha, header, features, dropped, target, objective, y, classes)


class TabularTask(InMemoryTask):
    """Rows of a CSV file -> a class or a number (see the module docstring).

    Attributes: `options`; `table` (the parsed file, shared by the folds); `objective`
    ("classification" or "regression"); `classes` (sorted class names, None for regression);
    `feature_names` ("age", "color=red", ...); `feature_mean` / `feature_std` (numeric columns,
    fitted on train); `target_mean` / `target_scale` (regression, fitted on train);
    `train_index` / `val_index` (0-based data-row numbers of each split, in the splits' order);
    `x_train`, `y_train`, `x_val`, `y_val`; `n_folds`, `fold_index` (None unless the task is a
    fold); `io` =
    TaskIO("vector", (n_features,), n_classes or 1).
    """

    name = "tabular"
    unit = "example"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        path: str = Field(description="a CSV file with a header row")
        target: str = Field(description="the column to predict")
        objective: Literal["auto", "classification", "regression"] = "auto"
        val_fraction: float = Field(0.2, gt=0, lt=1)
        categorical: Literal["onehot"] = Field(
            "onehot", description="encoding of non-numeric columns (one-hot only)")
        folds: int | None = Field(None, ge=2, description="k-fold cross-validation")
        seed: int = Field(0, description="seed of the split and the folds")

    def __init__(self, options: Options, context: int | None = None):
        self.options = options
        self.table = read_table(options.path, options.target, options.objective)
        self.objective = self.table.objective
        self.classes = self.table.classes
        self.n_folds = options.folds or 1
        self.fold_index: int | None = None
        n = self.table.rows
        if options.folds is not None and options.folds > n:
            raise UserError(f"{options.path} has {n} rows, fewer than folds: {options.folds}")
        if self.objective == "classification":
            train_idx, val_idx = stratified_split(self.table.y, options.val_fraction,
                                                  options.seed)
            if val_idx.numel() == 0:
                raise UserError(
                    f"{options.path}: no class has enough rows for a validation split "
                    f"(val_fraction {options.val_fraction} of each rounds to 0); add rows or "
                    "raise val_fraction")
        else:
            train_idx, val_idx = random_split(n, options.val_fraction, options.seed)
        self._use_split(train_idx, val_idx)

    def fold(self, k: int) -> TabularTask:
        """The task whose validation split is fold k and whose train split is every other row."""
        if not 0 <= k < self.n_folds:
            raise ValueError(f"fold must be in [0, {self.n_folds}), not {k}")
        if self.options.folds is None:
            return self
        labels = torch.from_numpy(self.table.y) if self.objective == "classification" else None
        task = copy.copy(self)
        task.fold_index = k
        task._use_split(*fold_split(labels, self.table.rows, self.n_folds, k, self.options.seed))
        return task

    def _use_split(self, train_idx: torch.Tensor, val_idx: torch.Tensor) -> None:
        """Encode every row with statistics of `train_idx` and keep both splits as tensors."""
        self.train_index, self.val_index = train_idx, val_idx
        tr = train_idx.numpy()
        blocks, names = [], []
        self.feature_mean, self.feature_std = {}, {}
        for col in self.table.features:
            if col.numeric:
                v = np.array([np.nan if x is None else x for x in col.values], dtype=np.float64)
                seen = v[tr][~np.isnan(v[tr])]
                mean = float(seen.mean()) if seen.size else 0.0
                std = float(seen.std()) if seen.size else 1.0
                std = std if std > 0 else 1.0
                z = (np.where(np.isnan(v), mean, v) - mean) / std
                if not seen.size:
                    z[:] = 0.0  # no train value: the feature carries nothing
                self.feature_mean[col.name], self.feature_std[col.name] = mean, std
                blocks.append(z[:, None])
                names.append(col.name)
            else:
                index = {c: i for i, c in enumerate(col.categories)}
                codes = np.array([-1 if x is None else index[x] for x in col.values])
                in_train = np.zeros(len(col.categories) + 1, dtype=bool)
                in_train[codes[tr]] = True  # index -1 (missing) lands on the spare last slot
                onehot = np.zeros((len(codes), len(col.categories)))
                rows = np.nonzero((codes >= 0) & in_train[codes])[0]
                onehot[rows, codes[rows]] = 1.0
                blocks.append(onehot)
                names.extend(f"{col.name}={c}" for c in col.categories)
        x = torch.from_numpy(np.hstack(blocks).astype(np.float32))
        self.feature_names = names
        if self.objective == "classification":
            y = torch.from_numpy(self.table.y)
            self.target_mean, self.target_scale = 0.0, 1.0
            n_outputs = len(self.classes or [])
        else:
            raw = self.table.y
            self.target_mean = float(raw[tr].mean())
            std = float(raw[tr].std())
            self.target_scale = std if std > 0 else 1.0
            y = torch.from_numpy(((raw - self.target_mean) / self.target_scale)
                                 .astype(np.float32))
            n_outputs = 1
        self.x_train, self.y_train = x[train_idx], y[train_idx]
        self.x_val, self.y_val = x[val_idx], y[val_idx]
        self.io = TaskIO("vector", (x.size(1),), n_outputs)

    def fingerprint(self) -> dict:
        t = self.table
        return {
            "path": t.path,
            "sha256": t.sha256,
            "rows": t.rows,
            "columns": list(t.header),
            "target": t.target,
            "objective": t.objective,
            "classes": list(t.classes) if t.classes is not None else None,
            "numeric_columns": [c.name for c in t.features if c.numeric],
            "categorical_columns": [c.name for c in t.features if not c.numeric],
            "dropped_columns": list(t.dropped),
            "n_features": self.io.input_shape[0],
            "train_rows": int(self.x_train.size(0)),
            "val_rows": int(self.x_val.size(0)),
            "val_fraction": self.options.val_fraction,
            "seed": self.options.seed,
            "n_folds": self.n_folds,
            "fold": self.fold_index,
        }
