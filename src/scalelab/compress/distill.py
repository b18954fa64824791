"""Distillation: a smaller rung's shape trained as a student of a larger (teacher) rung.

Training loss (Hinton et al.): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(y),
where `_T` means softmax at temperature T, with T = 2 and alpha = 0.5. Everything else is the
student rung's own plan run through the same `train_rung` loop (the `loss_fn` hook): same shape,
same initialisation seed, same optimizer, schedule, steps and batch size.

"Same tokens" comparison: the baseline is the ladder's own rung of the student's shape. Its
batches come only from a generator seeded with the rung's plan seed, so training the student with
that same plan replays exactly the same token stream. We check rather than assume it: the student's
loss hook hashes every batch it sees, and that digest is compared with a replay of the plan's
generator (what the ladder rung consumed); the study's recorded corpus fingerprint is compared with
the task's. Both results go into the variant's `extra.same_tokens`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from scalelab.ladder import RungPlan
from scalelab.spec import TrainSpec
from scalelab.train.loop import TrainOutcome, train_rung
from scalelab.train.measure import autocast

TEMPERATURE = 2.0
ALPHA = 0.5  # weight of the soft-target term; 1 - ALPHA on the hard (next-byte) loss


def distill_loss(teacher: torch.nn.Module, temperature: float = TEMPERATURE,
                 alpha: float = ALPHA):
    teacher = copy.deepcopy(teacher).eval()  # frozen copy: the caller's model stays trainable
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(x.device):
            t_logits = teacher(x)
        s = logits.float().view(-1, logits.size(-1))
        t = t_logits.float().view(-1, t_logits.size(-1))
        soft = F.kl_div(F.log_softmax(s / temperature, dim=-1),
                        F.log_softmax(t / temperature, dim=-1),
                        log_target=True, reduction="batchmean")
        hard = F.cross_entropy(s, y.reshape(-1))
        return alpha * temperature**2 * soft + (1 - alpha) * hard

    return loss_fn


def stream_digest(task, plan: RungPlan) -> str:
    """SHA-256 of the training batches a rung with this plan draws (replayed, no training)."""
    gen = torch.Generator().manual_seed(plan.seed)
    h = hashlib.sha256()
    for _ in range(plan.steps):
        x, _ = task.batch(plan.batch_size, plan.block_size, gen)
        h.update(x.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def train_student(
    teacher: torch.nn.Module,
    plan: RungPlan,
    task,
    t: TrainSpec,
    device: torch.device,
    ckpt_dir: Path,
    on_progress: Callable[[int, float], None] | None = None,
) -> tuple[TrainOutcome, dict]:
    """Train `plan`'s shape under `teacher`; returns (outcome, extra facts for the variant)."""
    inner = distill_loss(teacher.to(device))
    seen = hashlib.sha256()
    counted = [0]

    def loss_fn(logits, x, y):
        seen.update(x.detach().to(torch.uint8).cpu().numpy().tobytes())
        counted[0] += 1
        return inner(logits, x, y)

    outcome = train_rung(plan, task, t, device, ckpt_dir, on_progress=on_progress,
                         loss_fn=loss_fn)
    replay = stream_digest(task, plan)
    # A resumed student hashed only the steps after its last checkpoint: no verdict then.
    verified = seen.hexdigest() == replay if counted[0] == plan.steps else None
    extra = {
        "temperature": TEMPERATURE,
        "alpha": ALPHA,
        "student_steps": outcome.steps,
        "student_tokens": outcome.tokens,
        "stream_sha256": replay,
        "stream_verified": verified,
    }
    return outcome, extra
