"""Small shared pieces of the test suite: tiny specs and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

# Reference data kept in the repository (sources and licences: tests/data/README.md).
DATA = Path(__file__).resolve().parent / "data"
TINY = {
    "name": "tiny",
    "family": {"block_size": 32},
    "ladder": {"sizes": [3.0e3, 1.2e4, 3.0e4, 6.0e4]},
    "train": {"tokens": 128_000, "batch_size": 8, "eval_every": 25, "checkpoint_every": 50,
              "eval_tokens": 2048, "final_eval_tokens": 8192, "lr": 3e-3},
    "measure": {"latency_repeats": 3},
    "fit": {"bootstrap": 50},
    "device": "cpu",
}


def tiny_spec(**overrides) -> dict:
    import copy

    spec = copy.deepcopy(TINY)
    for key, value in overrides.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def cli_env() -> dict:
    env = dict(os.environ)
    # Same thread count in every process, so a resumed run reproduces an uninterrupted one.
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def scalelab(*args: str, cwd: Path | None = None, timeout: float = 600,
             check: bool = False) -> subprocess.CompletedProcess:
    """Run the real entry point (`python -m scalelab`, the same `main` as the console script)."""
    proc = subprocess.run([sys.executable, "-m", "scalelab", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=cli_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"scalelab {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc
