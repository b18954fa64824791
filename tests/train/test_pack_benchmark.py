"""benchmarks/packing.py runs end to end on CPU and writes its JSON (tiny settings; no timing
asserted: CI machines are shared)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/packing.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_packing_benchmark_writes_a_ratio(tmp_path):
    out = tmp_path / "packing.json"
    proc = _run(["--device", "cpu", "--k", "2", "--nonembed", "3e3", "--steps", "4",
                 "--rounds", "1", "--batch", "4", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert (r["device"], r["k"], r["steps"], r["rounds"], r["batch"]) == ("cpu", 2, 4, 1, 4)
    assert r["ratio"] == pytest.approx(r["sequential_s"] / r["packed_s"])
    assert r["packed_tokens_per_s"] > 0 and r["sequential_tokens_per_s"] > 0
    assert r["packed_tokens_per_s"] == pytest.approx(2 * 4 * 4 * 64 / r["packed_s"])
    assert r["torch"] == torch.__version__ and r["date"] and r["machine"]
    assert r["shape"] == "1x16" and r["n_params"] > r["n_nonembed"] > 0
    assert len(r["lrs"]) == 2 and r["lrs"][0] < r["lrs"][1]
    # The two sides trained the same models (fp32 on CPU: rounding only).
    assert r["max_rel_train_loss_diff"] < 1e-5
    assert "ratio sequential/packed" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_packing_benchmark_without_cuda_is_exit_code_2():
    proc = _run(["--device", "cuda"])
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "CUDA" in proc.stderr
