"""Read the runs a law is fitted to: a CSV file or a study folder, checked value by value.

Every problem is a UserError naming the file, line (CSV) and column, so a person can fix it.

A CSV's rows can be picked first (`Where`, the CLI's `--where`): `dataset=rpj`, `params<1e9`,
with =, <, <=, > or >=; several conditions must all hold. Only the rows kept are read as
numbers, so the rows of another data set may leave the fitted columns empty.
"""

from __future__ import annotations

import csv
import math
import operator
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.forms import Form

STUDY_X = {"N": "n_nonembed", "D": "tokens", "x": "n_nonembed"}  # defaults for a study folder
CSV_X = {"N": "N", "D": "D", "x": "N"}  # defaults for a CSV
STUDY_Y, CSV_Y = "val_loss", "loss"


@dataclass
class Dataset:
    X: np.ndarray  # (n, k) inputs in the law's order (e.g. N, D)
    y: np.ndarray  # (n,) loss
    x_names: tuple[str, ...]
    y_name: str
    source: str
    dropped: int = 0  # rows removed by drop_highest


def _number(text: str | None, where: str, column: str) -> float:
    """One positive, finite number, or a UserError saying where and what is wrong."""
    if text is None or str(text).strip() == "":
        raise UserError(f"{where}: column {column!r} is empty")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(f"{where}: column {column!r} has {text!r}, not a number") from None
    if math.isnan(value) or math.isinf(value):
        raise UserError(f"{where}: column {column!r} is {text!r}; values must be finite")
    if value <= 0:
        raise UserError(f"{where}: column {column!r} must be positive, got {value:g}")
    return value


# Longest first, so "<=" is not read as "<" followed by a value "=...".
OPERATORS: dict[str, Callable[[object, object], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "=": operator.eq}
_WHERE = re.compile(r"^\s*([^<>=]+?)\s*(<=|>=|<|>|=)\s*(.*?)\s*$")


def _as_number(text: str | None) -> float | None:
    """The text as a finite number, or None when it is not one (then it compares as text)."""
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Where:
    """One condition on a CSV row: `column op value`. Compared as numbers when both the cell and
    the value are numbers ("1e9" equals "1000000000"), else as text (=); <, <=, >, >= need
    numbers, since an order of names is rarely what a person means."""

    column: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Where:
        """`COL=VALUE`, `COL<V`, `COL<=V`, `COL>V` or `COL>=V`; else a UserError."""
        m = _WHERE.match(text)
        if m is None or m.group(3) == "" or m.group(3)[0] in "<>=":
            raise UserError(f"--where {text!r}: write COLUMN=VALUE, or COLUMN<V, <=, >, >= "
                            "with a number V (e.g. --where dataset=rpj --where 'params<1e9')")
        where = cls(*m.groups())
        if where.op != "=" and _as_number(where.value) is None:
            raise UserError(f"--where {text!r}: {where.op} compares numbers; "
                            f"{where.value!r} is not one")
        return where

    def __str__(self) -> str:
        return f"{self.column}{self.op}{self.value}"

    def holds(self, cell: str | None, where: str) -> bool:
        """Whether a row's cell meets the condition (`where` names the row for errors)."""
        value, number = _as_number(self.value), _as_number(cell)
        if value is not None and number is not None:
            return OPERATORS[self.op](number, value)
        if self.op != "=":
            raise UserError(f"{where}: column {self.column!r} has {cell!r}, not a number to "
                            f"compare with --where {self}")
        return (cell or "").strip() == self.value


def _picked(path: Path, header: list[str], reader: csv.DictReader,
            where: Sequence[Where]) -> list[tuple[int, dict[str, str]]]:
    """(line, row) of the rows that meet every condition; one line of error when none do."""
    unknown = [w.column for w in where if w.column not in header]
    if unknown:
        raise UserError(f"{path}: --where names no column {unknown[0]!r}; columns are "
                        f"{', '.join(repr(h) for h in header) or 'none'}")
    rows = [(i, row) for i, row in enumerate(reader, start=2)
            if all(w.holds(row.get(w.column), f"{path} line {i}") for w in where)]
    if where and not rows:
        raise UserError(f"{path}: no row meets --where "
                        f"{' and '.join(str(w) for w in where)}")
    return rows


def _read_csv(path: Path, columns: list[str], where: Sequence[Where] = ()) -> np.ndarray:
    """The columns of a CSV's rows (those meeting every `where`) as positive numbers."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            missing = [c for c in columns if c not in header]
            if missing:
                raise UserError(f"{path}: no column {missing[0]!r}; columns are "
                                f"{', '.join(repr(h) for h in header) or 'none'}")
            rows = [[_number(row.get(c), f"{path} line {i}", c) for c in columns]
                    for i, row in _picked(path, header, reader, where)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    return np.array(rows, dtype=float).reshape(-1, len(columns))


def _read_study(folder: Path, columns: list[str]) -> np.ndarray:
    """Finished rungs of a study, read-only (the study driver is the only writer)."""
    db = folder / "study.db"
    if not db.is_file():
        raise UserError(f"{folder} is a folder without study.db; pass a CSV or a study folder")
    try:
        con = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
        try:
            have = [r[1] for r in con.execute("PRAGMA table_info(rungs)")]
            missing = [c for c in columns + ["status"] if c not in have]
            if missing:
                raise UserError(f"{db}: table rungs has no column {missing[0]!r}; columns are "
                                f"{', '.join(have) or 'none (no rungs table)'}")
            cols = ", ".join(f'"{c}"' for c in columns)
            rows = con.execute(f"SELECT rowid, {cols} FROM rungs WHERE status = 'done'").fetchall()
        finally:
            con.close()
    except sqlite3.Error as err:
        raise UserError(f"cannot read {db}: {err}") from None
    rows = [r for r in rows if all(v is not None for v in r[1:])]  # finished but not measured
    return np.array([[_number(v, f"{db} rung {r[0]}", c) for v, c in zip(r[1:], columns,
                                                                        strict=True)]
                     for r in rows], dtype=float).reshape(-1, len(columns))


def load_dataset(path: str | Path, form: Form, *, x: list[str] | None = None,
                 y: str | None = None, flops: str | None = None, k: float = 6.0,
                 drop_highest: int = 0, where: Sequence[Where] = ()) -> Dataset:
    """Inputs and loss for `form` from a CSV or a study folder.

    `x` lists input columns in the law's order (N, D for two-input laws). With `flops`, D is
    derived as C / (k·N) from that compute column and `x` names only the N column. `where`
    keeps the CSV rows that meet every condition (before --drop-highest).
    """
    path = Path(path)
    study = path.is_dir()
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if study and where:
        raise UserError(f"--where picks rows of a CSV; {path} is a study folder")
    defaults = STUDY_X if study else CSV_X
    y = y or (STUDY_Y if study else CSV_Y)
    n_given = form.n_inputs - (1 if flops else 0)
    if flops and form.roles != ("N", "D"):
        raise UserError(f"--flops-col derives D from compute; law {form.name!r} has no D input")
    x = list(x) if x else [defaults[r] for r in form.roles[:n_given]]
    if len(x) != n_given:
        roles = ", ".join(form.roles[:n_given])
        raise UserError(f"law {form.name!r} needs {n_given} input column(s) ({roles})"
                        + (" besides the compute column" if flops else "") + f", got {len(x)}")
    columns = x + [y] + ([flops] if flops else [])
    table = _read_study(path, columns) if study else _read_csv(path, columns, where)
    X, yv = table[:, : len(x)], table[:, len(x)]
    names = tuple(x)
    if flops:
        X = np.column_stack([X[:, 0], table[:, -1] / (k * X[:, 0])])
        names = (x[0], "D")
    return drop_highest_loss(Dataset(X, yv, names, y, str(path)), drop_highest)


def lowest(loss: np.ndarray, k: int) -> np.ndarray:
    """Row indices without the k runs of highest loss, in their order (--drop-highest)."""
    if k < 0:
        raise UserError(f"--drop-highest must be >= 0, got {k}")
    if k and k >= len(loss):
        raise UserError(f"--drop-highest {k} would drop all {len(loss)} points")
    return np.sort(np.argsort(loss, kind="stable")[: len(loss) - k])


def drop_highest_loss(data: Dataset, k: int) -> Dataset:
    """Without the k runs of highest loss (e.g. the Epoch replication drops 5 outliers)."""
    keep = lowest(data.y, k)
    if k == 0:
        return data
    return Dataset(data.X[keep], data.y[keep], data.x_names, data.y_name, data.source,
                   data.dropped + k)
