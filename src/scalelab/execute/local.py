"""Run the rungs of a ladder one after another in this process and hand results to the store.

The driver (this process) is the only writer of study.db. A rung that is already `done` or
`diverged` is skipped; a rung that was `running` when the process died resumes from its last
checkpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import torch

from scalelab.ladder import RungPlan
from scalelab.spec import StudySpec
from scalelab.store import StudyStore
from scalelab.tasks import Task
from scalelab.train import measure
from scalelab.train.checkpoint import save_weights
from scalelab.train.loop import TrainOutcome, train_rung

FINISHED = ("done", "diverged")


def measure_rung(plan: RungPlan, outcome: TrainOutcome, task: Task, spec: StudySpec,
                 device: torch.device, gemm_peak: float | None, weights_bytes: int,
                 peak_mem: int | None) -> dict:
    """Every measurement of a trained rung, by DESIGN.md's rules."""
    model = outcome.model
    final = task.eval_windows(spec.train.final_eval_tokens, plan.block_size)
    val_loss = measure.eval_loss(model, final, device)
    step_flops = measure.train_step_flops(model, plan.batch_size, plan.block_size,
                                          plan.vocab_size, device)
    flops = float(step_flops) * outcome.steps
    seconds = outcome.train_seconds
    latency = {
        str(b): measure.latency_ms(model, b, plan.block_size, plan.vocab_size, device,
                                   repeats=spec.measure.latency_repeats)
        for b in spec.measure.latency_batches
    }
    return {
        "status": "done",
        "tokens": outcome.tokens,
        "steps": outcome.steps,
        "val_loss": val_loss,
        "val_bpb": measure.bits_per_byte(val_loss),
        "flops": flops,
        # 6·N·D with N = all parameters (the tied head's matmul is real compute; position
        # lookups are not, a small overcount at these sizes).
        "flops_6nd": 6.0 * plan.n_params * outcome.tokens,
        "train_seconds": seconds,
        "tokens_per_s": outcome.tokens / seconds if seconds > 0 else None,
        "mfu": flops / seconds / gemm_peak if seconds > 0 and gemm_peak else None,
        "peak_mem_bytes": peak_mem,
        "checkpoint_bytes": weights_bytes,
        "latency_ms": latency,
    }


def run_rungs(
    store: StudyStore,
    spec: StudySpec,
    task: Task,
    plans: list[RungPlan],
    device: torch.device,
    gemm_peak: float | None,
    progress: Callable[[RungPlan, int, float], None] | None = None,
    on_rung_done: Callable[[RungPlan, dict], None] | None = None,
) -> None:
    status = {r["rung"]: r["status"] for r in store.rungs()}
    for plan in plans:
        if status.get(plan.rung) in FINISHED:
            continue
        store.set_status(plan.rung, "running")
        ckpt_dir = store.checkpoints / f"rung-{plan.rung}"

        def save_curve(curve, rung=plan.rung):
            store.record_curve(rung, [p.__dict__ for p in curve])

        def step_progress(step, loss, plan=plan):
            if progress is not None:
                progress(plan, step, loss)

        with measure.PeakMemory(device) as mem:
            outcome = train_rung(plan, task, spec.train, device, ckpt_dir,
                                 on_progress=step_progress, on_checkpoint=save_curve)
        save_curve(outcome.curve)
        if outcome.status == "diverged":
            result = {"status": "diverged", "steps": outcome.steps, "tokens": outcome.tokens,
                      "train_seconds": outcome.train_seconds,
                      "diverged_step": outcome.diverged_step,
                      "diverged_reason": outcome.diverged_reason}
        else:
            weights = store.checkpoints / f"rung-{plan.rung}.safetensors"
            nbytes = save_weights(outcome.model, weights)
            result = measure_rung(plan, outcome, task, spec, device, gemm_peak, nbytes,
                                  mem.peak_bytes)
            result["checkpoint"] = str(weights.relative_to(store.folder))
        store.record_rung(plan.rung, result)
        # The resume points are only needed while the rung is unfinished.
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        if on_rung_done is not None:
            on_rung_done(plan, result)
