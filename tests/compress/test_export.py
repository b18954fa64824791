"""ONNX export of rungs and variants, checked by ONNX Runtime."""

from __future__ import annotations

import re

import pytest

from tests.helpers import scalelab


def _diff(stdout: str) -> float:
    m = re.search(r"max abs logit difference[^:]*: ([0-9.e+-]+)", stdout.replace("\n", " "))
    assert m, stdout
    return float(m.group(1))


@pytest.mark.parametrize("variant", [None, "r1-prune0.5-ft", "r1-lowrank0.5-ft"])
def test_export_round_trips_under_1e_3(study, tmp_path, variant):
    out = tmp_path / "model.onnx"
    args = ["export", study, "--rung", "1", "--onnx", out]
    if variant:
        args += ["--variant", variant]
    proc = scalelab(*args)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    assert _diff(proc.stdout) < 1e-3


def test_int8_variant_exports_its_quantized_graph(study, tmp_path, variants):
    out = tmp_path / "q.onnx"
    proc = scalelab("export", study, "--rung", "1", "--variant", "r1-int8", "--onnx", out)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == variants["r1-int8"]["bytes"]
    assert "quantization error" in proc.stdout.replace("\n", " ")


def test_export_bad_input(study, tmp_path):
    for args, words in (
        (["--rung", "7", "--onnx", tmp_path / "a.onnx"], "rung 7 does not exist"),
        (["--rung", "0", "--variant", "r1-int8", "--onnx", tmp_path / "a.onnx"], "not of rung 0"),
        (["--rung", "1", "--variant", "nope", "--onnx", tmp_path / "a.onnx"], "does not exist"),
        (["--rung", "1", "--onnx", tmp_path / "missing" / "a.onnx"], "does not exist"),
    ):
        proc = scalelab("export", study, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error:") and words in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
