"""benchmarks/latency_stability.py runs end to end on the package's compressed study and writes
its JSON: both ways, every round, the spread across rounds (no timing asserted); its old way is
the measurement it compares with (one series of consecutive calls, the process's threads)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from scalelab import latency
from scalelab.train import measure

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_latency_stability_benchmark_writes_both_ways(study, tmp_path):
    out = tmp_path / "stability.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/latency_stability.py", "--study", str(study),
         "--methods", "int8,fp16", "--rounds", "2", "--probe", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [len(result["runs"][w]) for w in ("now", "old")] == [2, 2]
    for way in ("now", "old"):
        rows = result["stability"][way]["rows"]
        assert set(rows) == {f"{n} b{b}" for n in ("r1-int8", "r1-fp16") for b in ("1", "32")}
        for row in rows.values():
            assert len(row["speedup"]) == 2 and row["speedup_spread"] >= 1.0
    # The old way takes one series per latency and never flags one.
    assert all(r["flagged_rounds"] == 0 for r in result["stability"]["old"]["rows"].values())
    conditions = result["cause"]["conditions"]
    assert set(conditions) == {"spin on (ORT default)", "spin off (scalelab)", "no ORT before",
                               "no ORT before, LATENCY_THREADS"}
    assert conditions["no ORT before"]["cpu_ms_burnt_in_20ms_after_run"] is None
    # The latency threads' condition runs on them, the others all on the process's threads.
    assert conditions["no ORT before, LATENCY_THREADS"]["threads"] == result["latency_threads"]
    assert len({c["threads"] for k, c in conditions.items() if "LATENCY_THREADS" not in k}) == 1
    assert "worst speedup max/min across rounds" in proc.stdout
    assert result["load"][0]["loadavg_1m"] >= 0


def test_old_way_times_one_series_and_restores_the_rules():
    """The baseline the benchmark compares with: inside `old_way` a latency is one series of
    consecutive calls on the process's threads, never flagged; after it, the sub-series rule."""
    spec = importlib.util.spec_from_file_location(
        "latency_stability", ROOT / "benchmarks" / "latency_stability.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, x, cpu = nn.Linear(4, 4), torch.zeros(2, 4), torch.device("cpu")
    with bench.old_way():
        old = measure.latency_ms(model, x, cpu, repeats=30)
    assert old["subseries"] == 1 and old["threads"] == torch.get_num_threads()
    assert old["remeasured"] is False and old["unstable"] is False
    assert old["calls"] == 30
    assert latency.subseries_count(30) == 5 and latency.min_span_s(30) > 0  # restored
    assert measure.latency_ms(model, x, cpu, repeats=30)["subseries"] == 5
