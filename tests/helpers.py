"""Small shared pieces of the test suite: tiny specs and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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

    return _merged(copy.deepcopy(TINY), overrides)


def _merged(spec: dict, overrides: dict) -> dict:
    """`spec` with each override: a mapping updates the section, anything else replaces it."""
    for key, value in overrides.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    return spec


# The study the compression and fine-tuning tests start from (the session's `two_rung_study`,
# trained once): two GPT rungs (1x32, 1x64), 24k bytes each, block 32, batch 8, one thread.
TWO_RUNG_NAME = "two-rung-tiny"


def two_rung_spec(**overrides) -> dict:
    """The spec of `two_rung_study` (tests/conftest.py), with `overrides` as in `tiny_spec`."""
    spec = tiny_spec(
        name=TWO_RUNG_NAME, ladder={"sizes": [1.0e4, 4.0e4]},
        train={"tokens": 24_000, "eval_every": 50, "checkpoint_every": 100,
               "final_eval_tokens": 4096},
        # One thread: latency on a busy shared CPU is far steadier without an OpenMP barrier.
        measure={"latency_repeats": 3, "threads": 1})
    return _merged(spec, overrides)


def copy_study(src: Path, dst: Path) -> Path:
    """A copy of a finished study folder (without its lock) that a test may change."""
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("study.lock"))
    return dst


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


# The program `scalelab_each` runs: it imports the CLI as `python -m scalelab` does, then forks
# a process per command line that runs `scalelab/__main__.py` as `python -m scalelab` would (its
# exit code, stdout and stderr are that process's own).
_EACH = r"""
import atexit, gc, json, os, runpy, sys
import scalelab.cli


def child(args, cwd, out, err):
    if cwd is not None:
        os.chdir(cwd)
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    sys.argv = ["scalelab", *args]
    code = 0
    try:
        runpy.run_module("scalelab", run_name="__main__", alter_sys=True)
    except SystemExit as end:  # as the interpreter takes it: an int is the code, else printed
        code = end.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    # Without the interpreter's teardown, which touches (and so copies) every inherited page.
    os._exit(code or 0)


calls = json.loads(sys.argv[1])
sys.stdout.flush()
sys.stderr.flush()
gc.freeze()
codes = []
for call in calls:
    pid = os.fork()
    if pid == 0:
        try:
            child(*call)
        finally:  # a child never goes back to the loop, whatever happened before its command
            os._exit(1)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes))
"""


def scalelab_each(*argvs: list, cwd: Path | list[Path] | None = None,
                  timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """`scalelab(*argv)` for each argv, one after another, each in a process of its own, without
    paying the seconds of imports of a fresh `python -m scalelab` for each: one interpreter
    imports the CLI (as `python -m scalelab` does; nothing runs, so no thread pool exists yet)
    and each command line runs in a process forked from it, with its own exit code, stdout and
    stderr. Whatever the import printed is part of every process's output, as it would be in a
    fresh `python -m scalelab`. `cwd`: one folder for all, or one per argv."""
    import json
    import tempfile

    cwds = cwd if isinstance(cwd, list) else [cwd] * len(argvs)
    assert len(cwds) == len(argvs)
    with tempfile.TemporaryDirectory() as tmp:
        files = [(Path(tmp) / f"{i}.out", Path(tmp) / f"{i}.err") for i in range(len(argvs))]
        calls = [([str(a) for a in argv], None if c is None else str(c), str(o), str(e))
                 for argv, c, (o, e) in zip(argvs, cwds, files, strict=True)]
        parent = subprocess.run([sys.executable, "-c", _EACH, json.dumps(calls)],
                                capture_output=True, text=True, timeout=timeout, env=cli_env())
        assert parent.returncode == 0, parent.stderr
        *imported, codes = parent.stdout.splitlines()
        printed = "".join(f"{line}\n" for line in imported)
        return [subprocess.CompletedProcess(
            [sys.executable, "-m", "scalelab", *call[0]], code,
            printed + o.read_text(), parent.stderr + e.read_text())
            for call, code, (o, e) in zip(calls, json.loads(codes), files, strict=True)]


def assert_refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Bad input's contract: exit code 2 and one line on stderr, `error: ...`, naming `words`."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def run_main(capsys, monkeypatch, *args: str) -> subprocess.CompletedProcess:
    """The console script's `main` in this process (no interpreter start-up per case), as a
    CompletedProcess with its exit code and stderr."""
    from scalelab.cli import main

    monkeypatch.setattr(sys, "argv", ["scalelab", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    return subprocess.CompletedProcess(args, exit_.value.code, "", err)
