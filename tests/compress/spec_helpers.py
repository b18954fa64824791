"""The tiny specs of the compression tests, and a fingerprint of a study folder."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from tests.helpers import two_rung_spec

METHODS = "int8,fp16,prune:0.5,prune:0.5+ft,sparse:0.5,lowrank:0.5+ft,distill"


def compress_spec(**overrides) -> dict:
    """Two rungs (1e4, 4e4 non-embedding parameters), 24k tokens each, block 32, batch 8: the
    spec of the session's `two_rung_study`, which the package's compressed study copies."""
    return two_rung_spec(**overrides)


def small_task_spec(name: str, task: dict, family: dict, sizes: list[float],
                    examples: int = 16_000) -> dict:
    """A tiny ladder of an example-based task (digits, tabular): batch 32, one thread."""
    return {
        "name": name, "task": task, "family": family, "ladder": {"sizes": sizes},
        "train": {"tokens": examples, "batch_size": 32, "eval_every": 100,
                  "checkpoint_every": 200, "eval_tokens": 256, "final_eval_tokens": 512,
                  "lr": 3e-3},
        "measure": {"latency_repeats": 3, "threads": 1},
        "fit": {"bootstrap": 10},
        "device": "cpu",
    }


def study_fingerprint(folder: Path) -> tuple:
    """The study's rows and its folder listing (files and sizes of everything but the lock)."""
    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    try:
        rows = tuple(tuple(map(tuple, conn.execute(f"SELECT * FROM {t}").fetchall()))
                     for t in ("study", "rungs", "variants", "fits", "curves"))
    finally:
        conn.close()
    files = tuple(sorted((str(p.relative_to(folder)), p.stat().st_size)
                         for p in folder.rglob("*") if p.is_file() and p.name != "study.lock"
                         and not p.name.startswith("study.db")))
    return hashlib.sha256(repr(rows).encode()).hexdigest(), files
