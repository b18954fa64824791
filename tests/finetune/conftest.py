"""The session's tiny real study (trained once through the real CLI), and a copy of it
fine-tuned through the real CLI, shared by the fine-tuning tests."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import copy_study, scalelab

FT_TOKENS = "8192"  # 32 steps of 8 x 32 bytes per fine-tune
FT_METHODS = "full,lora:r=4,lora:r=16,ia3"


def db_state(folder: Path) -> tuple:
    """Every row of every table and the folder's files with their sizes (not the lock or the
    database's own files): what a refused command must leave as it was."""
    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    try:
        tables = sorted(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))
        rows = {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
    finally:
        conn.close()
    files = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")
                   if p.is_file() and p.name != "study.lock" and not p.name.startswith("study.db"))
    return hashlib.sha256(repr(rows).encode()).hexdigest(), tuple(files)


@pytest.fixture(scope="session")
def base_study(two_rung_study) -> Path:
    """The trained study (`tests.helpers.two_rung_spec`: two rungs, 1x32 and 1x64 GPTs), never
    fine-tuned (tests copy it before changing it)."""
    return two_rung_study


@pytest.fixture(scope="session")
def study(base_study, tmp_path_factory) -> Path:
    """A copy of the base study, fine-tuned on the stdlib's test/ files with full, LoRA r=4,
    LoRA r=16 and IA3 through the CLI."""
    folder = copy_study(base_study, tmp_path_factory.mktemp("ft-study") / "study")
    proc = scalelab("finetune", folder, "--tokens", FT_TOKENS, "--methods", FT_METHODS,
                    check=True)
    (folder.parent / "finetune-stdout.txt").write_text(proc.stdout)
    return folder


@pytest.fixture(scope="session")
def summary(study) -> dict:
    return json.loads((study / "summary.json").read_text())


@pytest.fixture(scope="session")
def finetunes(summary) -> dict[str, dict]:
    return {f["name"]: f for f in summary["finetunes"]}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `scalelab ARGS` in this process through `scalelab.cli.main` (the console script's
    own entry point: a UserError is one line and exit code 2), without a new interpreter's
    start-up (torch and peft imports, the corpus load) per call."""
    from scalelab.cli import main

    def run(*args, check: bool = False) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["scalelab", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        out, err = capsys.readouterr()
        result = Result(code, out, err)
        if check and code != 0:
            raise AssertionError(f"scalelab {args} failed ({code}):\n{err}")
        return result

    return run
