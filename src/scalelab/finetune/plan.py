"""Plan a fine-tuning run: which rungs, which methods, the second task, the budget; every check
against the study happens here, before anything is written.

UserErrors (one line each): a study without finished rungs, or whose ladder has not finished; a
rung that does not exist or has not finished (pending, running, diverged); an unknown method or
setting (`methods.py`); a second task that cannot be built or does not fit the family (`--on`,
`second_task.py`); a target module name that matches nothing, a tied layer, or a LoRA rank larger
than a targeted layer (checked on every chosen rung's model: ranks that fit the largest rung may
not fit the smallest); a fine-tune already stored with other settings (without `--redo`).

Budget (decision): every method at every rung sees the same number of units of the second task
(the matched budget), drawn as the same batches (seed = the rung's seed + SEED_OFFSET, so the
stream differs from pre-training's but not between methods), with the rung's own batch size.
Default: DEFAULT_BUDGET_FRACTION (25%) of the smallest chosen rung's pre-training D, in whole
steps. Schedule: the study's warm-up fraction, cosine decay to its `min_lr_frac`, its weight
decay, betas and clipping; validation about 10 times per fine-tune and a checkpoint about 4 times
(never less often than the study's own intervals), so a killed fine-tune resumes from at most a
quarter of its steps back; the study's divergence guard (train/diverge.py), which a loss driven
near zero on an easy task does not trip.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.finetune.methods import FTMethod, parse_methods
from scalelab.finetune.second_task import (
    SecondTask,
    build_task,
    check_compatible,
    new_head,
    parse_on,
)

DEFAULT_BUDGET_FRACTION = 0.25
SEED_OFFSET = 200_000
CURVE_POINTS = 10
CHECKPOINTS = 4
FINETUNES_DIR = "finetunes"


@dataclass
class Job:
    """One fine-tune: a rung, a method, its name, its resolved targets, and the rung plan it
    trains under (steps, lr, seed of the fine-tune)."""

    row: dict
    method: FTMethod
    name: str
    targets: Any  # adapters.Targets or None (full)
    plan: Any  # records.RungPlan of the fine-tune
    identity: dict  # what must match for a stored result to be kept


@dataclass
class FineTunePlan:
    second: SecondTask
    task: Any
    family: Any
    spec: Any  # the study's StudySpec
    study: dict
    methods: list[FTMethod]
    rows: list[dict]
    D: int
    new_head: bool
    jobs: list[Job] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # names already stored with these settings

    def train_spec(self, job: Job) -> Any:
        """The TrainSpec of a fine-tune: the study's, with curve and checkpoint intervals set
        for the fine-tune's length."""
        t = self.spec.train
        steps = job.plan.steps
        return t.model_copy(update={
            "eval_every": min(t.eval_every, max(1, math.ceil(steps / CURVE_POINTS))),
            "checkpoint_every": min(t.checkpoint_every, max(1, math.ceil(steps / CHECKPOINTS))),
        })


def parse_rungs(rungs: str | None) -> list[int] | None:
    """`all` (None) or a comma-separated list of rung indices."""
    if rungs is None or rungs.strip().lower() == "all":
        return None
    out = []
    for part in rungs.split(","):
        try:
            out.append(int(part.strip()))
        except ValueError:
            raise UserError(f"--rungs: give rung indices separated by commas, or all; got "
                            f"{rungs!r}") from None
    if len(set(out)) != len(out):
        raise UserError("--rungs names a rung twice")
    return out


def choose_rows(rungs: Sequence[dict], which: list[int] | None) -> list[dict]:
    if not rungs:
        raise UserError("the study has no rungs; run `scalelab run` on it first")
    rows = {r["rung"]: r for r in rungs}
    if which is None:
        unfinished = [r for r in rungs if r["status"] not in ("done", "diverged")]
        if unfinished:
            listed = ", ".join(f"{r['rung']} ({r['status']})" for r in unfinished)
            raise UserError(f"rungs {listed} have not finished; finish the study with `scalelab "
                            "run`, or name finished rungs with --rungs")
        chosen = [r for r in rungs if r["status"] == "done" and r.get("checkpoint")]
        if not chosen:
            raise UserError("the study has no trained rungs to fine-tune")
        return chosen
    out = []
    for i in which:
        if i not in rows:
            known = ", ".join(str(r) for r in rows)
            raise UserError(f"rung {i} does not exist in this study (rungs: {known})")
        r = rows[i]
        if r["status"] != "done" or not r.get("checkpoint"):
            raise UserError(f"rung {i} has not finished (status {r['status']}); only trained "
                            "rungs can be fine-tuned")
        out.append(r)
    return out


def _identity(job_plan: Any, method: FTMethod, second: SecondTask, task: Any,
              eval_units: int) -> dict:
    fp = task.fingerprint()
    return {"task": second.spec, "task_sha256": fp.get("sha256"), "method": method.settings(),
            "D": job_plan.D, "steps": job_plan.steps, "lr": job_plan.lr,
            "batch_size": job_plan.batch_size, "seed": job_plan.seed, "eval_units": eval_units}


def plan_finetune(folder: str | Path, study: dict, rungs: Sequence[dict],
                  stored: Sequence[dict], on: str | None = None,
                  methods: str | Sequence[str] | None = None, which: str | None = None,
                  tokens: int | None = None, redo: bool = False) -> FineTunePlan:
    """Every check, on the study's rows (a read-only view is enough); builds the second task
    and each chosen rung's model (random weights: only layer names and sizes are read)."""
    from scalelab.compress.base import rung_shape
    from scalelab.finetune.adapters import replace_head, resolve_targets
    from scalelab.models.base import get_family
    from scalelab.records import RungPlan
    from scalelab.spec import parse_spec

    parsed = parse_methods(methods)
    rows = choose_rows(rungs, parse_rungs(which))
    if tokens is not None and tokens <= 0:
        raise UserError(f"--tokens must be positive, got {tokens}")
    second = parse_on(on)
    spec = parse_spec(study["spec"], f"{folder}/study.db spec")
    family = get_family(spec.family.name, **spec.family.options)
    task = build_task(second, family, study, Path(folder))
    check_compatible(task, family, study)
    head = new_head(task, study)
    plans = [RungPlan.from_dict(r["plan"]) for r in rows]
    D = tokens if tokens is not None else \
        max(1, round(DEFAULT_BUDGET_FRACTION * min(p.D for p in plans)))
    out = FineTunePlan(second, task, family, spec, study, parsed, rows, D, head)
    eval_units = spec.train.final_eval_tokens
    stored_by = {s["name"]: s for s in stored}
    for row, rplan in zip(rows, plans, strict=True):
        model = family.build(rung_shape(row))
        if head:
            replace_head(model, task.io.n_outputs, 0)
        upb = task.units_per_batch(rplan.batch_size)
        steps = max(1, round(D / upb))
        for m in parsed:
            where = f"rung {row['rung']}"
            targets = resolve_targets(model, m, where) if m.peft else None
            lr = m.lr.resolve(rplan.lr)
            fplan = dataclasses.replace(
                rplan, steps=steps, D=steps * upb, unit=task.unit, units_per_step=upb, lr=lr,
                warmup_steps=round(spec.train.warmup_frac * steps),
                seed=rplan.seed + SEED_OFFSET)
            name = f"r{row['rung']}-{second.slug}-{m.slug}"
            job = Job(row, m, name, targets, fplan,
                      _identity(fplan, m, second, task, eval_units))
            old = stored_by.get(name)
            if old is not None and old["status"] in ("done", "diverged") and not redo:
                had = (old.get("settings") or {}).get("identity")
                if had != job.identity:
                    raise UserError(f"{name} is already in the study with other settings "
                                    f"({_differs(had or {}, job.identity)}); pass --redo to "
                                    "replace it")
                if old["status"] == "done" and not (Path(folder) / str(
                        (old.get("extra") or {}).get("file") or "-")).is_file():
                    out.jobs.append(job)  # its file is gone: make it again
                    continue
                out.kept.append(name)
                continue
            out.jobs.append(job)
    return out


def _differs(old: dict, new: dict) -> str:
    keys = [k for k in new if old.get(k) != new.get(k)]
    if not keys:
        return "unknown"
    k = keys[0]
    return f"{k} {old.get(k)!r} now {new.get(k)!r}"


__all__ = ["DEFAULT_BUDGET_FRACTION", "FINETUNES_DIR", "FineTunePlan", "Job", "SEED_OFFSET",
           "choose_rows", "parse_rungs", "plan_finetune"]
