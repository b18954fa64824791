"""ONNX export of rungs and variants, checked by ONNX Runtime."""

from __future__ import annotations

import re

import pytest

from tests.helpers import scalelab_each


def _diff(stdout: str) -> float:
    m = re.search(r"max abs logit difference[^:]*: ([0-9.e+-]+)", stdout.replace("\n", " "))
    assert m, stdout
    return float(m.group(1))


ROUND_TRIPS = [None, "r1-prune0.5-ft", "r1-lowrank0.5-ft"]


@pytest.fixture(scope="module")
def exports(study, tmp_path_factory) -> dict[str | None, tuple]:
    """Rung 1, each of its variants in ROUND_TRIPS and its int8 variant exported (`scalelab_each`:
    one process each): {variant: (process, the file written)}."""
    root = tmp_path_factory.mktemp("exports")
    files = {v: root / f"{v or 'rung'}.onnx" for v in [*ROUND_TRIPS, "r1-int8"]}
    procs = scalelab_each(*[["export", study, "--rung", "1", "--onnx", out,
                             *(["--variant", v] if v else [])] for v, out in files.items()])
    return {v: (proc, files[v]) for v, proc in zip(files, procs, strict=True)}


@pytest.mark.parametrize("variant", ROUND_TRIPS)
def test_export_round_trips_under_1e_3(exports, variant):
    proc, out = exports[variant]
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    assert _diff(proc.stdout) < 1e-3


def test_int8_variant_exports_its_quantized_graph(exports, variants):
    proc, out = exports["r1-int8"]
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == variants["r1-int8"]["bytes"]
    assert "quantization error" in proc.stdout.replace("\n", " ")


def test_export_bad_input(study, tmp_path):
    cases = (
        (["--rung", "7", "--onnx", tmp_path / "a.onnx"], "rung 7 does not exist"),
        (["--rung", "0", "--variant", "r1-int8", "--onnx", tmp_path / "a.onnx"], "not of rung 0"),
        (["--rung", "1", "--variant", "nope", "--onnx", tmp_path / "a.onnx"], "does not exist"),
        (["--rung", "1", "--onnx", tmp_path / "missing" / "a.onnx"], "does not exist"),
    )
    procs = scalelab_each(*[["export", study, *args] for args, _ in cases])
    for (args, words), proc in zip(cases, procs, strict=True):
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error:") and words in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
