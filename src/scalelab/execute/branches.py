"""WSD cool-down branches as jobs: a trunk hands its stable-phase state to its branches, which
run after it.

The plan (ladder.wsd_branches) says which rung is a branch of which trunk and at what step. Here
that becomes jobs: the trunk's job carries `branch_saves`, the folders of its branches' jobs and
the steps at which the trunk writes its state into them (train_rung's hook); a branch job is an
ordinary job whose resume folder then already holds that state, so it resumes from it, decays
over its own span and is measured like any rung. Kill and resume need nothing more: a branch
resumes from its own newest resume point, which is the trunk's hand-off or later.

Executors run a trunk before its branches (`ordered` for one process, `waves` for side by side).
A branch whose hand-off is missing (its trunk failed, or diverged before the branch point)
trains from step 0 instead: the same run, since the branch is exactly the WSD run of its own D
(same seed, batches and learning rate at every step), only dearer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from scalelab.execute.base import Job


def link(jobs: Sequence[Job]) -> list[Job]:
    """The jobs with each trunk's `branch_saves` set to its branches among `jobs` (a branch
    finished before needs no hand-off), in `ordered` order."""
    by_rung = {j.plan.rung: j for j in jobs}
    saves: dict[int, list[tuple[int, str]]] = {}
    for j in jobs:
        trunk, step = j.plan.trunk, j.plan.branch_step
        if trunk is not None and step is not None and trunk in by_rung:
            saves.setdefault(trunk, []).append((step, j.resume_dir))
    linked = [replace(j, branch_saves=tuple(sorted(saves.get(j.plan.rung, ())))) for j in jobs]
    return ordered(linked)


def ordered(jobs: Sequence[Job]) -> list[Job]:
    """Every job in its given order, but each trunk's branches right after the trunk (so a
    branch's hand-off exists when it starts, and lives on disk only until the branch ends)."""
    rungs = {j.plan.rung for j in jobs if j.kind == "rung"}
    branches: dict[int, list[Job]] = {}
    for j in jobs:
        if is_waiting(j, rungs):
            branches.setdefault(j.plan.trunk, []).append(j)  # type: ignore[arg-type]
    out: list[Job] = []
    for j in jobs:
        if is_waiting(j, rungs):
            continue
        out.append(j)
        out += sorted(branches.get(j.plan.rung, []), key=lambda b: b.plan.steps)
    return out


def waves(jobs: Sequence[Job]) -> list[list[Job]]:
    """The jobs in two waves for executors that run jobs side by side: first every job that
    waits for nothing, then the branches whose trunks are in the first wave."""
    rungs = {j.plan.rung for j in jobs if j.kind == "rung"}
    first = [j for j in jobs if not is_waiting(j, rungs)]
    second = [j for j in jobs if is_waiting(j, rungs)]
    return [w for w in (first, second) if w]


def is_waiting(job: Job, rungs: set[int]) -> bool:
    """Whether the job is a branch whose trunk is among `rungs` (still to run); a variant or
    fine-tune waits for nothing (its rung has finished)."""
    return job.kind == "rung" and job.plan.trunk is not None and job.plan.trunk in rungs
