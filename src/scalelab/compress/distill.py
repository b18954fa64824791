"""Distillation (`distill[:R]`): a smaller rung's shape trained as a student of a larger (teacher)
rung. Any family; tasks with objective `lm` or `classification` (soft targets need logits; a
regression output has none: one clear UserError line before anything runs).

Training loss (Hinton et al.): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard,
where `_T` means softmax over the logits at temperature T (per position for language models, per
example for classifiers), T = 2 and alpha = 0.5, and `hard` is the task's own loss (`task.loss`).
Everything else is the student rung's own plan run through the same `train_rung` loop (the
`loss_fn` hook): same shape, same initialisation seed, same optimizer, schedule, steps and batch
size.

"Same data" comparison: the baseline is the ladder's own rung of the student's shape. Its batches
come only from a generator seeded with the rung's plan seed, so training the student with that
same plan replays exactly the same stream. We check rather than assume it: the student's loss
hook hashes every input batch it sees, and that digest is compared with a replay of the plan's
generator (what the ladder rung consumed), `extra.stream_verified`; the study's recorded data
fingerprint is compared with the task's, `extra.corpus_matches_study`.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_model
from torch.nn import functional as F

from scalelab.compress.base import (
    Argument,
    Built,
    CompressMethod,
    Context,
    Method,
    ReportTable,
    Style,
    rung_shape,
)
from scalelab.models.base import Family
from scalelab.records import RungPlan
from scalelab.spec import TrainSpec
from scalelab.tasks.base import Task, autocast
from scalelab.train.checkpoint import save_weights
from scalelab.train.loop import LossFn, TrainOutcome, train_rung
from scalelab.values import fmt_spec

TEMPERATURE = 2.0
ALPHA = 0.5  # weight of the soft-target term; 1 - ALPHA on the task's hard loss
OBJECTIVES = ("lm", "classification")


def distill_loss(teacher: nn.Module, task: Task, precision: str,
                 temperature: float = TEMPERATURE, alpha: float = ALPHA) -> LossFn:
    """The training loss of a student of `teacher` (see the module docstring); the teacher
    runs under the autocast rule of `precision`, the student's own."""
    teacher = copy.deepcopy(teacher).eval()  # frozen copy: the caller's model stays trainable
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(x.device, precision):
            t_logits = teacher(x)
        s = logits.float().reshape(-1, logits.size(-1))
        t = t_logits.float().reshape(-1, t_logits.size(-1))
        soft = F.kl_div(F.log_softmax(s / temperature, dim=-1),
                        F.log_softmax(t / temperature, dim=-1),
                        log_target=True, reduction="batchmean")
        return alpha * temperature**2 * soft + (1 - alpha) * task.loss(logits, y)

    return loss_fn


def _digest_update(h: Any, x: torch.Tensor) -> None:
    h.update(x.detach().cpu().contiguous().numpy().tobytes())


def stream_digest(task: Task, plan: RungPlan) -> str:
    """SHA-256 of the input batches a rung with this plan draws (replayed, no training)."""
    gen = torch.Generator().manual_seed(plan.seed)
    h = hashlib.sha256()
    for _ in range(plan.steps):
        x, _ = task.batch(plan.batch_size, gen)
        _digest_update(h, x)
    return h.hexdigest()


def train_student(
    teacher: nn.Module,
    plan: RungPlan,
    task: Task,
    family: Family,
    t: TrainSpec,
    device: torch.device,
    ckpt_dir: Path,
    on_progress: Callable[[int, float], None] | None = None,
) -> tuple[TrainOutcome, dict]:
    """Train `plan`'s shape under `teacher`; returns (outcome, extra facts for the variant)."""
    inner = distill_loss(teacher.to(device), task, t.precision)
    seen = hashlib.sha256()
    counted = [0]

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _digest_update(seen, x)
        counted[0] += 1
        return inner(logits, x, y)

    outcome = train_rung(plan, task, t, device, ckpt_dir, family=family,
                         on_progress=on_progress, loss_fn=loss_fn)
    replay = stream_digest(task, plan)
    # A resumed student hashed only the steps after its last checkpoint: no verdict then.
    verified = seen.hexdigest() == replay if counted[0] == plan.steps else None
    extra = {
        "temperature": TEMPERATURE,
        "alpha": ALPHA,
        "student_steps": outcome.steps,
        "student_D": outcome.tokens,
        "unit": plan.unit,
        "stream_sha256": replay,
        "stream_verified": verified,
    }
    return outcome, extra


class Distill(CompressMethod):
    """`distill[:R]`: any family; lm and classification tasks (see the module docstring)."""

    kind = "distill"
    summary = ("the shape of rung RUNG (default: the next smaller rung) trained as a student "
               "of this rung, compared with that rung itself (same data, no teacher); language "
               "models and classifiers")
    argument = Argument("RUNG", "student rung index", integer=True, optional=True, example="2",
                        help="default: the next smaller trained rung")
    takes_student = True
    objectives = OBJECTIVES
    defaults = ("distill",)
    style = Style("#e6ab02", "*", size=8)

    def describe(self, method: Method) -> str:
        student = "the next smaller rung" if method.value is None else f"rung {method.value}"
        return (f"{student}'s shape trained as a student of this rung (T={TEMPERATURE:g}, "
                f"alpha={ALPHA:g}), compared with that rung itself")

    def make(self, ctx: Context, method: Method, name: str) -> Built:
        student = ctx.students[method]
        splan = RungPlan.from_dict(student["plan"])
        p = ctx.plan
        ckpt = ctx.folder / f"{name}-ckpt"
        outcome, extra = train_student(
            ctx.base, splan, ctx.task, ctx.family, ctx.spec.train, ctx.device, ckpt,
            on_progress=ctx.progress(f"{name} (student of rung {p.rung})", splan.steps))
        shutil.rmtree(ckpt, ignore_errors=True)
        model = outcome.model.eval()
        recorded = (ctx.study.get("corpus") or {}).get("sha256")
        extra.update({
            "student_rung": student["rung"], "teacher_rung": p.rung,
            "teacher_val_loss": ctx.row["val_loss"],
            "baseline": f"rung {student['rung']} (same shape, plan, seed and data stream, "
                        "no teacher)",
            "baseline_val_loss": student["val_loss"],
            "baseline_bytes": student.get("checkpoint_bytes"),
            "student_status": outcome.status, "student_train_seconds": outcome.train_seconds,
            "corpus_matches_study": (recorded == ctx.task.fingerprint().get("sha256")
                                     if recorded else None),
        })
        path = ctx.file(name)
        n, ne = ctx.counts(model)
        return Built(model, path, save_weights(model, path), n, ne,
                     settings={"student_rung": student["rung"], "temperature": TEMPERATURE,
                               "alpha": ALPHA, "shape": rung_shape(student)},
                     extra=extra)

    def after_measure(self, built: Built, measured: dict) -> dict:
        val, base = measured.get("val_loss"), built.extra.get("baseline_val_loss")
        return {} if val is None or base is None else {"loss_vs_baseline": val - base}

    def notes(self, variant: Mapping[str, Any], batch: str, unit: str) -> str:
        ex = variant.get("extra") or {}
        return (f"student of rung {ex.get('teacher_rung')} with rung {ex.get('student_rung')}'s "
                "shape")

    def report_table(self, variants: Sequence[Mapping[str, Any]],
                     unit: str) -> ReportTable | None:
        """Each student beside the rung of its shape trained without a teacher on the same
        data, and whether the stream was verified the same."""
        rows = []
        for v in variants:
            ex = v.get("extra") or {}
            verified = {True: "verified (hash of batches)", False: "NOT the same",
                        None: "not checked (resumed)"}[ex.get("stream_verified")]
            d = ex.get("student_D", ex.get("student_tokens"))  # scalelab 1: student_tokens
            rows.append((v["name"], ex.get("student_rung"), fmt_spec(d, ",.0f"),
                         f"rung {ex.get('teacher_rung')}, "
                         f"{fmt_spec(ex.get('teacher_val_loss'), '.4f')}",
                         fmt_spec(v.get("val_loss"), ".4f"),
                         fmt_spec(ex.get("baseline_val_loss"), ".4f"),
                         fmt_spec(ex.get("loss_vs_baseline"), "+.4f"), verified,
                         f"{ex.get('temperature')}, {ex.get('alpha')}"))
        heads = ("student", "shape of rung", f"D ({unit}s)", "teacher (rung, loss)",
                 "loss with teacher", "loss without teacher (the rung)", "difference",
                 "same token stream", "T, alpha")
        return ReportTable(
            "Distillation",
            "The student has the shape of a smaller rung and is trained with that rung's own "
            "plan (seed, steps, batches, schedule) on soft targets of the teacher plus the "
            "task's own (hard) loss; the comparison is that rung itself, trained on the same "
            "data without a teacher.", "distill", heads, rows)

    def restore_shape(self, variant: Mapping[str, Any], rungs: Mapping[int, dict]) -> dict:
        settings = variant.get("settings") or {}
        if settings.get("shape"):
            return dict(settings["shape"])
        return rung_shape(rungs[int(settings["student_rung"])])  # scalelab 1 variants

    def restore(self, family: Family, shape: dict, variant: Mapping[str, Any],
                path: Path) -> nn.Module:
        model = family.build(shape)
        load_model(model, str(path))
        return model.float().eval()


__all__ = ["ALPHA", "Distill", "OBJECTIVES", "TEMPERATURE", "distill_loss", "stream_digest",
           "train_student"]
