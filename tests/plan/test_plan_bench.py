"""benchmarks/plan_speed.py runs end to end and writes its JSON (tiny settings; no timing
asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a whole plan, redraws and a baseline: about 30 s of CPU on 2 cores
def test_plan_speed_writes_probabilities_and_a_ratio(tmp_path: Path):
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "benchmarks/plan_speed.py", "--sims", "10",
                           "--redraws", "10", "--baseline-candidates", "2", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["ratio"] > 0 and result["baseline_timed_on"] == 2
    seeds = [(r["noise"], r["seeds"]) for r in result["probabilities"]]
    assert seeds == [("measured", 2), ("measured", 4), ("measured", 5), ("measured", 6),
                     ("1% assumed", 1), ("1% assumed", 3)]
    assert all(0 <= r["plan_p"] <= 1 for r in result["probabilities"])
    assert result["probabilities"][0]["reported"] == 0.73
    assert result["probabilities"][0]["redraw"]["draws"] == 10
    assert result["chosen"]["flops"] <= result["budget_flops"]
    assert "ratio" in proc.stdout
