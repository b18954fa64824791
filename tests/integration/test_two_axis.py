"""A two-axis study end to end through the real CLI: a shrunken examples/isoflop-pycode.yaml
(3 budgets x 3 sizes, a few hundred steps at most per rung, WSD branches), its summary rows,
its two-axis fit, a kill -9 mid-branch that resumes to the same losses, and bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli_env, scalelab, scalelab_each, write_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "isoflop-pycode.yaml"
# Budgets and a first guess (tokens_per_param) that put three distinct tiny GPTs on each budget,
# recurring across budgets, so WSD makes trunks and branches; the largest rung gets 636 steps.
TINY_ISOFLOP = {"budgets": [1.0e9, 3.0e9, 1.0e10], "points": 3, "span": 3,
                "tokens_per_param": 2}


def shrunken(tmp_path: Path, **ladder) -> Path:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["family"]["block_size"] = 32
    spec["ladder"] = {"isoflop": {**TINY_ISOFLOP, **ladder}}
    spec["train"].update(batch_size=8, eval_every=25, checkpoint_every=20, eval_tokens=2048,
                         final_eval_tokens=8192)
    spec.update(measure={"latency_repeats": 3, "threads": 1}, fit={"bootstrap": 50},
                device="cpu")
    return write_spec(tmp_path / "isoflop.yaml", spec)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("isoflop")
    scalelab("run", shrunken(tmp), "--out", tmp / "study", cwd=tmp, check=True)
    return json.loads((tmp / "study" / "summary.json").read_text())


def test_rows_carry_budget_epochs_and_schedule(study):
    rows = study["rungs"]
    assert len(rows) == 9 and {r["status"] for r in rows} == {"done"}
    assert sorted({r["budget"] for r in rows}) == TINY_ISOFLOP["budgets"]
    train_bytes = study["study"]["corpus"]["train_bytes"]
    for r in rows:
        assert r["schedule"] == "wsd"
        assert r["epochs"] == pytest.approx(r["D"] / train_bytes)
        # the measured compute of each rung is its budget, to within one step
        assert abs(r["flops"] - r["budget"]) <= r["flops"] / r["steps"]
        assert r["val_loss"] > 0 and r["train_loss"] > 0 and r["n_nonembed"] > 0
    branches = [r for r in rows if r["trunk"] is not None]
    assert len(branches) >= 3
    for r in branches:
        trunk = next(t for t in rows if t["rung"] == r["trunk"])
        assert trunk["n_nonembed"] == r["n_nonembed"] and trunk["D"] > r["D"]


def test_the_fit_is_the_two_axis_record(study):
    assert [f["law"] for f in study["fits"]] == ["two_axis"]


def _branch_running(db: Path) -> int | None:
    """The id of a WSD branch rung being trained, if any (read-only, the driver keeps writing)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
        rows = conn.execute("SELECT rung, status, plan_json FROM rungs").fetchall()
        conn.close()
    except sqlite3.Error:
        return None
    return next((r for r, status, plan in rows
                 if status == "running" and json.loads(plan).get("trunk") is not None), None)


def test_kill_9_mid_branch_resumes_to_the_uninterrupted_losses(study, tmp_path):
    spec = shrunken(tmp_path)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "scalelab", "run", str(spec), "--out",
                             str(out)], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_in = None
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        killed_in = _branch_running(out / "study.db")
        if killed_in is not None:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_in is not None, "the run ended before a branch was caught running"
    assert proc.returncode == -signal.SIGKILL
    scalelab("run", spec, "--out", out, cwd=tmp_path, check=True)
    resumed = json.loads((out / "summary.json").read_text())["rungs"]
    assert [(r["rung"], r["val_loss"], r["train_loss"]) for r in resumed] == \
        [(r["rung"], r["val_loss"], r["train_loss"]) for r in study["rungs"]]


BAD_ISOFLOP = [
    ({"points": 2}, "3 or more points"),
    ({"budgets": [3.0e9, 1.0e9, 1.0e10]}, "budgets must be increasing"),
    ({"budgets": [1.0e6, 1.0e9, 1.0e10]}, "budget 1e+06 FLOPs is too small for size"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> list[tuple]:
    """Each BAD_ISOFLOP ladder, then a grid ladder with one D, run in a folder of its own
    (`scalelab_each`: one process each): (process, its --out folder) in that order."""
    folders = [tmp_path_factory.mktemp("bad-two-axis") for _ in range(len(BAD_ISOFLOP) + 1)]
    argvs = [["run", shrunken(f, **ladder), "--out", f / "never"]
             for f, (ladder, _) in zip(folders, BAD_ISOFLOP, strict=False)]
    grid = yaml.safe_load(shrunken(folders[-1]).read_text())
    grid["ladder"] = {"sizes": [3.0e3, 1.2e4], "tokens": [40_000]}
    argvs.append(["run", write_spec(folders[-1] / "grid.yaml", grid), "--out",
                  folders[-1] / "never"])
    procs = scalelab_each(*argvs, cwd=folders)
    return [(proc, f / "never") for proc, f in zip(procs, folders, strict=True)]


@pytest.mark.parametrize("ladder, says", BAD_ISOFLOP)
def test_bad_isoflop_input_is_one_line_exit_2_and_writes_nothing(refused, ladder, says):
    proc, out = refused[BAD_ISOFLOP.index((ladder, says))]
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert not out.exists()


def test_a_grid_with_one_d_is_refused_as_two_axis(refused):
    proc, out = refused[-1]
    assert proc.returncode == 2 and "2 or more D values" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_ray_runs_branches_after_their_trunks_to_the_local_losses(tmp_path):
    pytest.importorskip("ray")
    spec = yaml.safe_load(shrunken(tmp_path).read_text())
    spec["ladder"] = {"sizes": [3.0e3, 1.2e4], "tokens": [8_000, 14_000, 20_000]}
    path = write_spec(tmp_path / "grid.yaml", spec)
    runs = {}
    for executor in ("local", "ray"):
        scalelab("run", path, "--out", tmp_path / executor, "--executor", executor,
                 cwd=tmp_path, check=True)
        runs[executor] = json.loads((tmp_path / executor / "summary.json").read_text())["rungs"]
    assert sum(r["trunk"] is not None for r in runs["ray"]) == 4
    assert [(r["rung"], r["trunk"], r["val_loss"]) for r in runs["ray"]] == \
        [(r["rung"], r["trunk"], r["val_loss"]) for r in runs["local"]]
