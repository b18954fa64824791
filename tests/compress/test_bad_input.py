"""Bad input to `scalelab compress`: one clear line, exit code 2, nothing in the study changed."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from scalelab.store import StudyStore
from tests.helpers import scalelab


def _fingerprint(folder: Path) -> tuple:
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


@pytest.mark.parametrize("args, words", [
    (["--methods", "int8,quantum"], "unknown compression method 'quantum'"),
    (["--methods", "prune:1.5"], "between 0 and 1"),
    (["--methods", "sparse:0"], "between 0 and 1"),
    (["--methods", "lowrank:-0.2"], "between 0 and 1"),
    (["--rung", "9"], "rung 9 does not exist"),
    (["--rung", "0", "--methods", "distill"], "smaller than rung 0"),
    (["--rung", "biggest"], "rung must be"),
    (["--device", "tpu"], "--device"),
])
def test_bad_compress_arguments_change_nothing(study, args, words):
    before = _fingerprint(study)
    proc = scalelab("compress", study, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _fingerprint(study) == before


def test_study_without_trained_rungs(tmp_path):
    folder = tmp_path / "empty"
    with StudyStore.create_or_open(folder) as store:
        store.init_study("empty", "pycode", "gpt", {"name": "empty"})
        store.add_rungs([{"rung": 0, "n_params": 10, "n_nonembed": 5, "n_layer": 1,
                          "d_model": 16, "n_head": 1, "tokens": 100, "steps": 1, "lr": 1e-3}])
    before = _fingerprint(folder)
    proc = scalelab("compress", folder, "--methods", "int8")
    assert proc.returncode == 2 and "no trained rungs" in proc.stderr, proc.stderr
    assert _fingerprint(folder) == before


def test_not_a_study(tmp_path):
    proc = scalelab("compress", tmp_path)
    assert proc.returncode == 2 and "not a study folder" in proc.stderr
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "study.lock").exists()
    proc = scalelab("recommend", tmp_path / "nope")
    assert proc.returncode == 2 and "not a study folder" in proc.stderr
