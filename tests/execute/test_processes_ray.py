"""`execute: {processes: 2}` under `--executor ray` (Ray Train's TorchTrainer with 2 workers on a
local Ray of 2 CPUs), through the real entry point: the same rung, to the bit, as the local
executor's 2 ranks, measured in full, with no resume points or Ray Train records left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import scalelab, write_spec

pytest.importorskip("ray.train.torch")

SPEC = {"name": "ranks", "task": {"name": "digits", "flatten": True},
        "family": {"name": "mlp"}, "ladder": {"sizes": [6000]},
        "train": {"tokens": 800, "batch_size": 16, "eval_every": 25, "checkpoint_every": 20,
                  "eval_tokens": 256, "final_eval_tokens": 512},
        # One torch thread per rank in both executors (the local one gives each of its 2 ranks
        # half of the CLI's 2 threads), so they compute in the same order.
        "measure": {"latency_repeats": 3, "threads": 1}, "fit": {"bootstrap": 10},
        "device": "cpu", "execute": {"processes": 2, "num_cpus": 1, "local_cpus": 2}}
KEYS = ("status", "steps", "D", "val_loss", "train_loss")


def _rung(folder: Path) -> dict:
    (rung,) = json.loads((folder / "summary.json").read_text())["rungs"]
    return rung


@pytest.mark.slow
def test_ray_trains_a_rung_on_two_workers_as_the_local_ranks_do(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", SPEC)
    scalelab("run", spec, "--out", tmp_path / "local", check=True)
    scalelab("run", spec, "--out", tmp_path / "ray", "--executor", "ray", check=True)
    local, ray = _rung(tmp_path / "local"), _rung(tmp_path / "ray")
    assert local["status"] == "done" and local["steps"] == 50
    assert {k: ray[k] for k in KEYS} == {k: local[k] for k in KEYS}
    assert ray["flops"] == local["flops"] and ray["units_per_s"] > 0
    assert sorted(p.name for p in (tmp_path / "ray" / "checkpoints").iterdir()) == [
        "rung-0.safetensors"]
