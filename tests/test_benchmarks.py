"""The benchmark scripts run end to end and write their JSON (tiny settings; no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DATA

ROOT = Path(__file__).resolve().parents[1]
CSV = DATA / "chinchilla_epoch_svg_extracted.csv"  # kept in the repository: tests/data/README.md


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_train_throughput_writes_a_ratio(tmp_path):
    out = tmp_path / "train.json"
    proc = _run(["benchmarks/train_throughput.py", "--rungs", "0,1", "--steps", "6",
                 "--rounds", "1", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [r["rung"] for r in result["rungs"]] == [0, 1]
    for row in result["rungs"]:
        assert row["ratio"] > 0 and 0 < row["mfu"] < 1 and row["mfu_vendor"] is None
        assert len(row["ours_s"]) == len(row["ours_wall_s"]) == len(row["plain_s"]) == 1
        assert row["ours_wall_s"][0] > row["ours_s"][0]  # the call also evaluates
        assert row["wall_ratio"] < row["ratio"]
    assert result["ratio"] == result["rungs"][-1]["ratio"]
    assert (result["steps"], result["rounds"], result["device"]) == (6, 1, "cpu")
    assert "ratio ours/plain" in proc.stdout


def test_train_throughput_without_cuda_is_exit_code_2():
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _run(["benchmarks/train_throughput.py", "--device", "cuda"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --device cuda but no CUDA device is available"


# fit_speed.py exits 0 when both sides reach the same optimum (every parameter within 0.1%), 1
# when they do not, 2 on bad input. Its SciPy side runs on a seeded random subset of the 4,500
# starts, so the outcome is fixed by the subset's size, not by the machine's speed: 20 starts of
# the replication's loop miss the optimum (B off by 0.16%, exit 1), 300 starts reach it with every
# baseline (max rel diff: replication 5.5e-4, numpy 6.0e-4, analytic 0.8e-4; SciPy 1.17). So the
# smoke run uses 300 starts and a successful run is exit 0, nothing else.
@pytest.mark.parametrize("baseline", ["replication", "numpy", "analytic"])
def test_fit_speed_writes_a_ratio_and_finds_the_same_optimum(tmp_path, baseline):
    out = tmp_path / "fit.json"
    proc = _run(["benchmarks/fit_speed.py", "--csv", str(CSV), "--baseline", baseline,
                 "--scipy-starts", "300", "--json", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["same_optimum"] is True and result["max_param_rel_diff"] <= 1e-3
    assert result["baseline"] == baseline and result["scipy_bounds"] is (baseline != "replication")
    assert result["scipy_extrapolated"] is True and result["scipy_starts_timed"] == 300
    assert (result["n_starts"], result["n_runs"]) == (4500, 240)
    assert result["ratio"] > 0 and result["scipy_s"] > result["scipy_s_timed"] > 0
    assert result["ours"]["params"]["alpha"] == pytest.approx(0.34731, rel=1e-3)
    assert result["ours"]["objective"] <= result["scipy"]["objective"] * (1 + 1e-6)
    assert "same optimum (params within 1e-03): True" in proc.stdout


def test_fit_speed_missing_csv_is_exit_code_2(tmp_path):
    proc = _run(["benchmarks/fit_speed.py", "--csv", str(tmp_path / "missing.csv")])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: {tmp_path / 'missing.csv'} not found"


def test_precision_compile_reports_speed_and_loss_per_mode(tmp_path):
    out = tmp_path / "prec.json"
    proc = _run(["benchmarks/precision_compile.py", "--rungs", "0", "--steps", "60",
                 "--modes", "fp32,bf16", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["fp32", "bf16"]
    assert rows[0]["speedup"] == 1.0 and rows[0]["loss_delta"] == 0.0
    assert rows[1]["tokens_per_s"] > 0 and rows[1]["val_loss"] > 0
    # bf16 matmuls round differently: the same seed and batches end at another loss.
    assert rows[1]["loss_delta"] != 0.0


def test_precision_compile_unknown_mode_is_exit_code_2():
    proc = _run(["benchmarks/precision_compile.py", "--modes", "fp8"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: unknown mode 'fp8' (choose from fp32, bf16, compile, "
                                   "bf16+compile)")
