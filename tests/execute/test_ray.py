"""`scalelab run --executor ray` through the real entry point, on a local Ray of 2 CPUs: the same
rungs and validation losses as the local executor, a worker killed mid-rung retried from its
checkpoint, and bad Ray input as one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli_env, scalelab, scalelab_each, tiny_spec, write_spec

KEYS = ("rung", "status", "n_params", "n_nonembed", "steps", "lr", "val_loss", "train_loss")


def _spec(tmp_path: Path) -> Path:
    # One torch thread in both paths (the CLI sets it locally, the worker sets it under Ray),
    # so the two runs compute in the same order and agree to the last bit.
    return write_spec(tmp_path / "ray.yaml", tiny_spec(
        # 250 steps a rung: a kill after the first checkpoint (step 50) lands mid-rung.
        name="ray", ladder={"sizes": [3.0e3, 1.2e4, 3.0e4]},
        train={"tokens": 64_000, "eval_every": 50, "checkpoint_every": 50},
        measure={"latency_repeats": 3, "threads": 1},
        execute={"num_cpus": 1, "local_cpus": 2}))


def _rungs(folder: Path) -> list[dict]:
    summary = json.loads((folder / "summary.json").read_text())
    return [{k: r[k] for k in KEYS} for r in summary["rungs"]]


def _curves(folder: Path) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    rows = conn.execute("SELECT rung, step, val_loss FROM curves ORDER BY rung, step").fetchall()
    conn.close()
    return rows


def _run_and_kill(spec: Path, out: Path, rung: int) -> tuple[int, str, int]:
    """Run the Ray study; once `rung` has a checkpoint, SIGKILL the worker training it. Returns
    the exit code, the output and the pid killed."""
    env = cli_env() | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "scalelab", "run", str(spec), "--out",
                             str(out), "--executor", "ray"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines, killed = [], 0
    resume_dir = out / "checkpoints" / f"rung-{rung}"
    for line in proc.stdout:
        lines.append(line)
        if not killed and line.startswith(f"rung-{rung}: pid "):
            pid = int(line.split()[2])
            deadline = time.monotonic() + 300  # a wait, not a timing: loaded machines are slow
            while not any(resume_dir.glob("step-*")) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert any(resume_dir.glob("step-*")), "the rung never wrote a checkpoint"
            os.kill(pid, signal.SIGKILL)
            killed = pid
    return proc.wait(timeout=600), "".join(lines), killed


@pytest.mark.slow
def test_ray_gives_the_local_losses_and_survives_a_killed_worker(tmp_path):
    spec = _spec(tmp_path)
    scalelab("run", spec, "--out", tmp_path / "local", check=True)
    code, output, killed = _run_and_kill(spec, tmp_path / "ray", rung=2)
    assert code == 0, output
    # The retry ran in another worker and resumed from the checkpoint, not from scratch.
    resumed = [line for line in output.splitlines() if line.startswith("rung-2: pid ")
               and "resuming from step" in line]
    assert killed and len(resumed) == 1, output
    assert int(resumed[0].split()[2]) != killed
    assert int(resumed[0].rsplit(" ", 1)[1]) >= 50
    assert _rungs(tmp_path / "ray") == _rungs(tmp_path / "local")
    assert _curves(tmp_path / "ray") == _curves(tmp_path / "local")
    # The resume points are gone once each rung is recorded; the weights are in the study.
    assert not list((tmp_path / "ray" / "checkpoints").glob("rung-*/"))
    for r in json.loads((tmp_path / "ray" / "summary.json").read_text())["rungs"]:
        assert (tmp_path / "ray" / r["checkpoint"]).stat().st_size == r["checkpoint_bytes"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_RAY = [
    (["--executor", "ray", "--address", "127.0.0.1:{port}"], "does not answer"),
    (["--executor", "ray", "--storage", "s3://bucket/studies"], "URL storage"),
    (["--address", "127.0.0.1:{port}"], "--address needs --executor ray"),
    (["--executor", "dask"], "must be one of local, ray"),
    # A storage folder no node can write (a file stands where its parent should be).
    (["--executor", "ray", "--storage", "{folder}/a-file/ckpt"], "cannot create"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> list[tuple]:
    """Each BAD_RAY command line, run in a folder of its own (`scalelab_each`: one process
    each): (process, its --out folder) in that order."""
    folders = [tmp_path_factory.mktemp("bad-ray") for _ in BAD_RAY]
    argvs = []
    for folder, (args, _) in zip(folders, BAD_RAY, strict=True):
        (folder / "a-file").write_text("not a folder")
        port = _free_port()
        argvs.append(["run", _spec(folder), "--out", folder / "s",
                      *[a.format(port=port, folder=folder) for a in args]])
    procs = scalelab_each(*argvs)
    return [(proc, folder / "s") for proc, folder in zip(procs, folders, strict=True)]


@pytest.mark.parametrize("args, says", BAD_RAY)
def test_bad_ray_input_is_one_line_and_writes_nothing(refused, args, says):
    proc, out = refused[BAD_RAY.index((args, says))]
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()
