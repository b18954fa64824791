"""End to end, slow: kill -9 during fine-tuning then the same command resumes (to the same
losses, on CPU), and the default case on a 4-rung --quick study."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli_env, copy_study, scalelab

# 128 steps with a checkpoint every 32: the kill after the first one lands mid-way.
RESUME_ARGS = ("--rungs", "1", "--methods", "lora:r=4,full", "--tokens", "32768")


def _start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scalelab", "finetune", str(folder),
                             *RESUME_ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=cli_env())


def _wait_for(predicate, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _rows(folder: Path) -> dict[str, tuple]:
    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT name, status, val_loss, steps FROM finetunes")}
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_9_during_finetuning_then_the_same_command_resumes(base_study, tmp_path):
    whole = copy_study(base_study, tmp_path / "whole")
    scalelab("finetune", whole, *RESUME_ARGS, check=True)
    killed = copy_study(base_study, tmp_path / "killed")
    proc = _start(killed)
    ckpt = killed / "finetunes" / "r1-stdlib-test-lora-r4-ckpt"
    _wait_for(lambda: any(ckpt.glob("step-*")))  # mid-way: a resume point exists
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = _rows(killed)
    assert rows["r1-stdlib-test-lora-r4"][0] == "running"
    assert "r1-stdlib-test-full" not in rows
    again = scalelab("finetune", killed, *RESUME_ARGS, check=True)
    assert "resuming" in again.stdout
    assert not ckpt.exists()
    done, reference = _rows(killed), _rows(whole)
    assert {k: v[0] for k, v in done.items()} == {k: "done" for k in reference}
    assert done == reference  # the same losses as the uninterrupted run


@pytest.mark.slow
def test_default_case_on_a_quick_study(tmp_path):
    """`scalelab run --quick` then `scalelab finetune` with every default: full, LoRA r=4 and
    LoRA r=16 fine-tune every rung on the stdlib's test/ files; the report shows it."""
    out = tmp_path / "q"
    scalelab("run", "--quick", "--out", out, check=True, timeout=1800)
    proc = scalelab("finetune", out, check=True, timeout=1800)
    summary = json.loads((out / "summary.json").read_text())
    rungs = [r["rung"] for r in summary["rungs"] if r["status"] == "done"]
    assert len(rungs) == 4
    # The quick study is a first look that shows the right thing: loss falls at every rung.
    losses = [r["val_loss"] for r in summary["rungs"]]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    names = {f["name"]: f for f in summary["finetunes"]}
    assert set(names) == {f"r{r}-stdlib-test-{m}" for r in rungs
                          for m in ("full", "lora-r4", "lora-r16")}
    assert all(f["status"] == "done" and f["val_loss"] < f["zero_shot_loss"]
               for f in names.values())
    (a,) = summary["finetune_scaling"]
    for m in ("full", "lora-r4", "lora-r16"):
        assert a["laws"][m]["holdout"] is not None  # 4 rungs: a law with its holdout
    assert all(g["trend"] is not None and len(g["points"]) == 4 for g in a["gaps"])
    html = (out / "report.html").read_text()
    part = html[html.index("Second task: stdlib-test"):]
    assert part.count("<svg") >= 3 and part.count("<tr>") >= 12
    assert "trend:" in proc.stdout
