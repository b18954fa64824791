"""One rung on several processes (`execute: {processes: K}`): 2 gloo ranks on CPU reach the loss
of one process on the same global batch (DDP and FSDP2), a rank killed mid-rung ends the job
Failed and the rerun resumes from its checkpoint to the uninterrupted result, and a process count
the batch cannot split is one line, exit 2."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scalelab.errors import UserError
from scalelab.execute.base import Failed, Finished, Job, Started, Workload
from scalelab.execute.local import LocalExecutor
from scalelab.ladder import plan_ladder
from scalelab.models import get_family
from scalelab.spec import parse_spec
from scalelab.tasks import get_task
from scalelab.tasks.digits import DigitsTask
from tests.helpers import scalelab_each, write_spec

STEPS = 50
SPEC = {"name": "ranks", "task": {"name": "digits", "flatten": True},
        "family": {"name": "mlp"}, "ladder": {"sizes": [6000]},
        "train": {"tokens": STEPS * 16, "batch_size": 16, "eval_every": 25,
                  "checkpoint_every": 20, "eval_tokens": 256, "final_eval_tokens": 512},
        "measure": {"latency_repeats": 3}, "fit": {"bootstrap": 10}, "device": "cpu"}
ROOT = Path(__file__).resolve().parents[2]
TASK = get_task("digits", flatten=True)
FAMILY = get_family("mlp")


def _work(processes: int, sharding: str = "ddp") -> Workload:
    spec = parse_spec({**SPEC, "execute": {"processes": processes, "sharding": sharding}})
    return Workload(TASK, FAMILY, spec, "cpu", None)


def _run(work: Workload, folder: Path) -> list:
    """The rung's events; only its validation loss is measured (as a tuning trial's)."""
    torch.set_num_threads(2)  # one thread per rank for 2 ranks; the 1-process run takes both
    plan = plan_ladder(work.spec, work.task, work.family)[0]
    assert plan.steps == STEPS
    job = Job("rung-0", plan, str(folder / "rung-0"), None, work.spec.train, full=False)
    events: list = []
    LocalExecutor().run([job], work, events.append)
    return events


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> list:
    return _run(_work(1), tmp_path_factory.mktemp("one"))


@pytest.fixture(scope="module")
def two_ddp(tmp_path_factory) -> list:
    return _run(_work(2), tmp_path_factory.mktemp("two"))


@pytest.fixture(scope="module")
def two_fsdp(tmp_path_factory) -> list:
    return _run(_work(2, "fsdp"), tmp_path_factory.mktemp("two-fsdp"))


@pytest.fixture(params=["ddp", "fsdp"])
def two(request) -> tuple[str, list]:
    """A sharding and the uninterrupted 2-rank run with it."""
    return request.param, request.getfixturevalue(f"two_{request.param}")


def _final(events: list) -> tuple[float, list[float]]:
    done = events[-1]
    assert isinstance(done, Finished), done
    assert done.result.steps == STEPS
    return done.result.val_loss, [p["train_loss"] for p in done.curve]


def test_two_gloo_ranks_reach_the_loss_of_one_process(single, two):
    val_1, curve_1 = _final(single)
    val_2, curve_2 = _final(two[1])
    assert len(curve_2) == len(curve_1) == 2
    # The losses logged are the ranks' mean: the global batch's loss, as one process logs it.
    assert curve_2 == pytest.approx(curve_1, abs=1e-5, rel=0)
    assert val_2 == pytest.approx(val_1, abs=1e-5, rel=0)
    assert val_1 < curve_1[0]  # it trained: the comparison is not of two untrained models


class Interrupted(DigitsTask):
    """Digits that interrupt their rung as a rank draws the batch for step `AT`, on the first
    run only (a file marks that it happened): rank 1 is killed (SIGKILL) if `victim` is "rank",
    the driver (by rank 0) if it is "driver". Each rank writes its pid beside the marker."""

    AT = 25
    marker = ""
    victim = "rank"

    def batch(self, batch_size: int, generator: torch.Generator):
        rank = os.environ["RANK"]
        self.drawn = getattr(self, "drawn", 0) + 1
        if self.drawn == 1:
            Path(f"{self.marker}.rank{rank}").write_text(str(os.getpid()))
        first = self.drawn == self.AT and not Path(self.marker).exists()
        if first and (rank, self.victim) in (("1", "rank"), ("0", "driver")):
            Path(self.marker).touch()
            os.kill(os.getpid() if self.victim == "rank" else os.getppid(), signal.SIGKILL)
        return super().batch(batch_size, generator)


def _interrupted(victim: str, folder: Path, monkeypatch, sharding: str = "ddp") -> Workload:
    # The ranks unpickle Interrupted from this module: make it importable wherever pytest runs.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get(
        "PYTHONPATH")])))
    task = Interrupted(DigitsTask.Options(flatten=True))
    task.marker, task.victim = str(folder / "interrupted"), victim
    work = _work(2, sharding)
    work.task = task
    return work


def _check_resumes(work: Workload, folder: Path, uninterrupted: list, steps: set[int]) -> None:
    """The interrupted rung left one checkpoint, at one of `steps`; the rerun resumes from it and
    ends where the uninterrupted run did, to the bit (the same steps on the same shards)."""
    assert Path(work.task.marker).exists()
    (last,) = (folder / "rung-0").iterdir()
    step = int(last.name.removeprefix("step-"))
    assert step in steps
    again = _run(work, folder)
    assert isinstance(again[0], Started) and again[0].from_step == step
    assert _final(again) == _final(uninterrupted)


def test_a_killed_rank_fails_the_job_and_the_rerun_resumes(two, tmp_path, monkeypatch):
    sharding, uninterrupted = two
    work = _interrupted("rank", tmp_path, monkeypatch, sharding)
    events = _run(work, tmp_path)
    assert isinstance(events[-1], Failed), events[-1]
    assert events[-1].error.startswith("RankFailed: rank 1 of 2 was killed (signal 9)")
    # Rank 0 wrote step 20 and could not take step 25 without rank 1.
    _check_resumes(work, tmp_path, uninterrupted, {20})


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # an orphan's zombie, not yet reaped, runs no more


def test_a_killed_driver_takes_its_ranks_and_the_rerun_resumes(two_ddp, tmp_path, monkeypatch):
    work = _interrupted("driver", tmp_path, monkeypatch)
    (tmp_path / "work.pkl").write_bytes(pickle.dumps(work))
    driver = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; from pathlib import Path; "
         "from tests.execute.test_processes import _run; "
         "_run(pickle.loads(Path(sys.argv[1]).read_bytes()), Path(sys.argv[2]))",
         str(tmp_path / "work.pkl"), str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    assert driver.returncode == -signal.SIGKILL, driver.stderr
    pids = [int((tmp_path / f"interrupted.rank{r}").read_text()) for r in (0, 1)]
    deadline = time.monotonic() + 120  # a wait, not a timing: they stop within a second idle
    while not all(map(_gone, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(map(_gone, pids)), "a rank outlived its driver"
    # The ranks train on until they notice (within a second): they may have written step 40.
    _check_resumes(work, tmp_path, two_ddp, {20, 40})


def test_a_batch_the_processes_cannot_split_is_refused_before_any_job(tmp_path):
    with pytest.raises(UserError, match=r"^execute.processes 3: the batch of rung-0 \(16\) "
                                        r"must split evenly"):
        _run(_work(3), tmp_path)
    assert not (tmp_path / "rung-0").exists()
    with pytest.raises(UserError, match="processes"):
        _work(0)


def test_the_cli_refuses_a_bad_process_count_in_one_line(tmp_path):
    cases = {0: "execute.processes", 32: "execute.processes 32: the batch of rung-0 (16)"}
    specs = [write_spec(tmp_path / f"{k}.yaml", {**SPEC, "execute": {"processes": k}})
             for k in cases]
    procs = scalelab_each(*[["run", s, "--out", tmp_path / s.stem] for s in specs])
    for proc, says in zip(procs, cases.values(), strict=True):
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr, proc.stderr
