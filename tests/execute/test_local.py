"""The executor seam with the local executor: the events of a job in order, a job stopped by the
driver (StopJob -> Pruned) and then resumed, and the driver as the only writer of study.db."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scalelab.execute.base import (
    Checkpoint,
    Finished,
    Job,
    Progress,
    Pruned,
    Started,
    StopJob,
    Workload,
)
from scalelab.execute.local import LocalExecutor
from scalelab.ladder import plan_ladder
from scalelab.models import get_family
from scalelab.spec import parse_spec
from scalelab.tasks import get_task
from tests.helpers import tiny_spec

FAMILY = get_family("gpt", block_size=32)


@pytest.fixture(scope="module")
def work() -> Workload:
    torch.set_num_threads(1)
    spec = parse_spec(tiny_spec(train={"tokens": 24_000, "eval_every": 20,
                                       "checkpoint_every": 20}))
    return Workload(get_task("pycode", context=32), FAMILY, spec, "cpu", None)


def _job(work: Workload, folder: Path) -> Job:
    plan = plan_ladder(work.spec, work.task, FAMILY)[0]
    return Job("rung-0", plan, str(folder / "rung-0"), str(folder / "rung-0.safetensors"),
               work.spec.train)


def test_a_job_reports_started_progress_checkpoints_and_finished(work, tmp_path):
    job = _job(work, tmp_path)
    events = []
    LocalExecutor().run([job], work, events.append)
    assert isinstance(events[0], Started) and events[0].from_step == 0
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == list(range(1, job.plan.steps + 1))
    ckpts = [e for e in events if isinstance(e, Checkpoint)]
    assert [e.step for e in ckpts] == list(range(20, job.plan.steps, 20))
    assert [p["step"] for p in ckpts[-1].curve] == [e.step for e in ckpts]
    (done,) = [e for e in events if isinstance(e, Finished)]
    assert events[-1] is done and done.result.status == "done"
    assert 0 < done.result.val_loss < 6 and done.result.latency_ms
    assert Path(done.result.checkpoint).stat().st_size == done.result.checkpoint_bytes
    assert not Path(job.resume_dir).exists()  # removed once the driver had the result


def test_a_stopped_job_is_pruned_and_resumes_to_the_same_result(work, tmp_path):
    whole: list = []
    LocalExecutor().run([_job(work, tmp_path / "a")], work, whole.append)
    job = _job(work, tmp_path / "b")
    events: list = []

    def stop_at_second_checkpoint(event):
        events.append(event)
        if isinstance(event, Checkpoint) and event.step == 40:
            raise StopJob

    LocalExecutor().run([job], work, stop_at_second_checkpoint)
    assert events[-1] == Pruned("rung-0", 40)
    assert not any(isinstance(e, Finished) for e in events)
    assert sorted(p.name for p in Path(job.resume_dir).iterdir()) == ["step-00000040"]
    again: list = []
    LocalExecutor().run([job], work, again.append)
    assert again[0].from_step == 40
    assert again[-1].result.val_loss == whole[-1].result.val_loss
    assert again[-1].curve == whole[-1].curve
