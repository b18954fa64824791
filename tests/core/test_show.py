"""`scalelab show` through the real entry point: tables that fit the terminal with no cell cut,
`--wide` for every column, `--json`, and a law parameter on a bound flagged."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scalelab.records import FitRecord, Holdout
from scalelab.storage import StudyStore
from tests.helpers import cli_env

# A study as the default one records it at its largest: N up to ~1M, D up to 100M bytes,
# checkpoints of megabytes, a long custom shape and the status words of every kind of rung.
RUNGS = [
    # rung, status, n_nonembed, describe, D, val_loss, checkpoint bytes
    (0, "done", 13_024, "2x16", 12_000_000, 2.4113, 214_880),
    (1, "done", 52_608, "3x32", 24_000_000, 2.0871, 681_400),
    (2, "diverged", 211_200, "4x64", 4_000_000, None, None),
    (3, "done", 999_700, "6x128", 100_000_000, 1.6222, 4_934_560),
    (4, "failed", 1_048_576, "mlp[512,512,512]", 100_000_000, None, None),
]


def _plan(rung: int, n: int, describe: str, d: int) -> dict:
    return {"rung": rung, "target_n": float(n), "D": d, "repeat": 0, "family": "gpt",
            "shape": {"n_layer": 2, "d_model": 16}, "n_params": n + 320 * 16,
            "n_nonembed": n, "unit": "byte", "steps": d // 4096, "lr": 3e-3, "seed": rung,
            "describe": describe}


def _result(status: str, n: int, d: int, val: float | None, nbytes: int | None) -> dict:
    if status != "done":
        return {"status": status, "D": d // 9, "diverged_reason": "loss is NaN"}
    return {"status": "done", "D": d, "val_loss": val, "train_loss": val - 0.05,
            "flops": 6.2 * n * d, "flops_6nd": 6.0 * n * d, "train_seconds": 2.0e-5 * n + 30,
            "units_per_s": d / (2.0e-5 * n + 30), "mfu": 0.0123, "peak_mem_bytes": 9.1e7,
            "checkpoint_bytes": nbytes, "metrics": {"bpb": val / 0.6931},
            "latency_ms": {"1": {"median": 0.2 + n * 2e-6, "iqr": 0.01},
                           "32": {"median": 1.5 + n * 3e-5, "iqr": 0.05}}}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("show") / "study"
    store = StudyStore.create_or_open(folder)
    try:
        store.init_study("default", "pycode", "gpt", {"name": "default"})
        store.set_machine({"machine": "test", "device": "cpu"},
                          {"task": "pycode", "objective": "lm", "unit": "byte",
                           "metrics": ["bpb"]}, 1e10, None)
        store.add_rungs([_plan(r, n, desc, d) for r, _, n, desc, d, _, _ in RUNGS])
        for r, status, n, _, d, val, nbytes in RUNGS:
            store.record_rung(r, _result(status, n, d, val, nbytes))
        holdout = Holdout(rule="largest:1", n_fit=2, n_test=1, max_fit_size=52_608.0,
                          points=[{"x": 999_700.0, "measured": 1.6222, "predicted": 1.6311,
                                   "lo": 1.60, "hi": 1.66, "rel_error": 0.0055}])
        # E pinned to its bound, as the default study's fit was in one run of `show`.
        fit = FitRecord(law="power", x="n_nonembed", y="val_loss",
                        params={"E": 0.001324, "A": 31.2, "alpha": 0.2511},
                        intervals={"E": [0.00132, 0.423], "A": [20.1, 44.0],
                                   "alpha": [0.21, 0.29]},
                        on_bound=["E"], holdout=holdout, dof=1)
        store.replace_fits([fit.to_dict()])
    finally:
        store.close()
    return folder


@functools.cache
def show(folder: Path, *args: str, columns: int | None = None) -> subprocess.CompletedProcess:
    """`scalelab show FOLDER ARGS` at a terminal width of `columns` (each call once: the
    entry point takes seconds to start)."""
    env = cli_env()
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "scalelab", "show", str(folder), *args],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


def tables(text: str) -> list[list[dict[str, str]]]:
    """The box-drawn tables of `text`, each a list of rows {header: cell}. A header or a cell
    wrapped over several lines is put back together (header words joined by a space, a wrapped
    cell's pieces by nothing, since Rich may break inside a word)."""
    out: list[list[dict[str, str]]] = []
    header: list[str] = []
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("┏"):
            header, rows = [], []
        elif line.startswith("┃"):
            cells = [c.strip() for c in line.split("┃")[1:-1]]
            header = cells if not header else [f"{h} {c}".strip() for h, c in zip(header, cells,
                                                                                     strict=True)]
        elif line.startswith("│"):
            cells = [c.strip() for c in line.split("│")[1:-1]]
            if rows and not cells[0]:
                rows[-1] = [a + b for a, b in zip(rows[-1], cells, strict=True)]
            else:
                rows.append(cells)
        elif line.startswith("└"):
            out.append([dict(zip(header, r, strict=True)) for r in rows])
    return out


@pytest.mark.parametrize("columns", [80, 100])
def test_show_fits_the_terminal_and_cuts_no_cell(study, columns):
    """Fails on b309b61: at 80 columns every cell was cut (`│ 0 │ do… │ 12… │`), at 120 still N,
    D and bytes."""
    proc = show(study, columns=columns)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines()) <= columns, out
    what, cost = tables(out)
    assert [r["rung"] for r in what] == [r["rung"] for r in cost] == [str(r[0]) for r in RUNGS]
    assert [r["status"] for r in what] == [r[1] for r in RUNGS]
    assert [r["shape"] for r in what] == [r[3] for r in RUNGS]  # whole, if wrapped
    assert what[3]["N"] == "1M" and what[3]["D"] == "100M" and what[0]["N"] == "13k"
    assert cost[3]["weights"] == "4.93 MB"
    assert set(what[0]) >= {"val loss", "bits/byte", "train loss"}
    assert set(cost[0]) == {"rung", "FLOPs", "time", "D/s", "MFU", "lat b1 ms", "weights"}


def test_show_wide_gives_every_column_exact_and_uncut(study):
    proc = show(study, "--wide", columns=80)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "…" not in out
    (table,) = tables(out)
    assert table[3]["N"] == "999,700" and table[3]["D"] == "100,000,000"
    assert table[3]["weights"] == "4,934,560" and table[4]["N"] == "1,048,576"
    assert table[4]["shape"] == "mlp[512,512,512]"
    # one table: quality and cost columns side by side
    assert {"val loss", "bits/byte", "train loss", "FLOPs", "MFU", "weights"} <= set(table[0])


def test_show_json_is_the_summary(study):
    """Fails on b309b61: `show` had no --json."""
    proc = show(study, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert [r["rung"] for r in summary["rungs"]] == [r[0] for r in RUNGS]
    assert summary["rungs"][3]["n_nonembed"] == 999_700
    assert summary["fits"][0]["on_bound"] == ["E"]
    assert summary["study"]["name"] == "default"


def test_show_flags_a_law_parameter_on_a_bound(study):
    """Fails on b309b61: `show` printed `E=0.001324 [0.00132, 0.423]` without the flag that
    `fit` and the report give."""
    proc = show(study, columns=100)
    assert proc.returncode == 0, proc.stderr
    law = next(line for line in proc.stdout.splitlines() if line.startswith("law "))
    assert "E=0.001324 [0.00132, 0.423] (on a bound)" in law
    assert law.count("on a bound") == 1


def test_show_of_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    proc = show(tmp_path / "nothing", "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
