"""benchmarks/plan_speed.py runs end to end and writes its JSON (tiny settings; no timing
asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(script: str, out: Path, *args: str) -> tuple[dict, str]:
    """Run a benchmark script (its JSON to `out`); its JSON and stdout."""
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", *args, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow  # a whole plan, redraws and a baseline: about 30 s of CPU on 2 cores
def test_plan_speed_writes_probabilities_and_a_ratio(tmp_path: Path):
    result, stdout = _bench("plan_speed.py", tmp_path / "plan.json", "--sims", "10",
                            "--redraws", "10", "--baseline-candidates", "2")
    assert result["ratio"] > 0 and result["baseline_timed_on"] == 2
    seeds = [(r["noise"], r["seeds"]) for r in result["probabilities"]]
    assert seeds == [("measured", 2), ("measured", 4), ("measured", 5), ("measured", 6),
                     ("1% assumed", 1), ("1% assumed", 3)]
    assert all(0 <= r["plan_p"] <= 1 for r in result["probabilities"])
    assert result["probabilities"][0]["reported"] == 0.60  # real ladders, plan_calibration.py
    assert result["probabilities"][0]["redraw"]["draws"] == 10
    assert result["chosen"]["flops"] <= result["budget_flops"]
    assert "ratio" in stdout


def test_plan_calibration_writes_the_plan_against_real_ladders(tmp_path: Path):
    """benchmarks/plan_calibration.py on tiny settings: every row's plan P, real P and the
    6-seed pools' percentiles, from the pool kept in tests/plan/data."""
    result, _ = _bench("plan_calibration.py", tmp_path / "calibration.json", "--draws", "20",
                       "--pool-bootstrap", "2", "--subpools", "2")
    assert result["target_runs"] == 3 and result["runs_a_size"]["12768"] == 30
    assert [r["seeds"] for r in result["rows"]] == [1, 2, 3, 4, 5, 6]
    for row in result["rows"]:
        assert 0 <= row["plan_p"] <= 1 and 0 <= row["real_p"] <= 1
        assert ("six_seed_pool_p" in row) == (row["seeds"] in (2, 4, 5))
        assert ("plan_six_seed_pool_p" in row) == (row["seeds"] in (2, 4, 5))
