"""One fine-tune as a job of the executor, wherever it runs (this process or a Ray worker): load
the rung's final weights, measure the zero-shot loss on the second task, train with the study's
own loop, measure, save. Writes its checkpoints and its file under the study's `finetunes/`
folder only; its record goes back in the `Finished` event (fields: `driver.py`), which the
driver stores.

Training is `train.loop.train_rung(model=...)`, the loop every rung trained with (AdamW, warm-up
and cosine, clipping, divergence guard, checkpoints and resume). For LoRA and IA3 the model is the
PEFT model: its frozen weights have `requires_grad=False`, get no gradient and no AdamW state, and
so never change (AdamW skips parameters without a gradient, weight decay included).
"""

from __future__ import annotations

import copy
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scalelab.execute.base import Checkpoint, Emit, Finished, Job, Progress, Started, Workload
from scalelab.execute.job import resume_step
from scalelab.finetune import adapters
from scalelab.finetune.plan import Job as FineTune
from scalelab.tasks.base import EVAL_BATCH, autocast
from scalelab.train import measure
from scalelab.train.checkpoint import save_weights
from scalelab.train.loop import train_rung

WINDOW_DIGITS = 7  # significant digits kept of each window's loss


@dataclass(frozen=True)
class FineTunePayload:
    """What a fine-tune job needs beyond the workload (whose task is the second task): the
    planned fine-tune, whether it gets a new head, the study folder, the file it writes, and
    its record as planned (`driver.planned_record`), which the job completes."""

    tune: FineTune
    new_head: bool
    folder: str
    file: str
    record: dict


@torch.no_grad()
def window_losses(model: torch.nn.Module, task: Any, device: torch.device,
                  n_units: int, precision: str) -> list[float]:
    """Mean loss of each fixed validation window (sequence) or example, in `eval_data` order,
    under the autocast rule of `precision`; their mean is the task's validation loss."""
    was = model.training
    model.eval()
    xs, ys = task.eval_data(n_units, "val")
    out: list[float] = []
    for i in range(0, xs.size(0), EVAL_BATCH):
        x, y = xs[i:i + EVAL_BATCH].to(device), ys[i:i + EVAL_BATCH].to(device)
        with autocast(device, precision):
            logits = model(x)
        loss = task.loss(logits, y, reduction="none").float().view(x.size(0), -1).mean(dim=1)
        out += [float(f"{v:.{WINDOW_DIGITS}g}") for v in loss.cpu().tolist()]
    model.train(was)
    return out


def merge_check(a: torch.nn.Module, b: torch.nn.Module, task: Any, device: torch.device,
                n: int = 16) -> dict:
    """`adapters.merge_diff` of an adapter model and its merge on the first `n` validation
    inputs (real data: larger logits than random inputs)."""
    x, _ = task.eval_data(n * max(1, task.units_per_batch(1)), "val")
    return adapters.merge_diff(a, b, x[:n].to(device))


def base_model(folder: Path, tune: FineTune, new_head: bool, task: Any, family: Any,
               device: torch.device) -> Any:
    """The rung's trained model (with the new head when the task needs one), on `device`."""
    from scalelab.compress.load import load_rung_model

    model = load_rung_model(folder, tune.row, family, device)
    if new_head:
        adapters.replace_head(model, task.io.n_outputs, tune.plan.seed)
        model.to(device)
    return model


def train_finetune(job: Job, work: Workload, emit: Emit) -> Finished:
    """Zero-shot, train (or resume), measure and save the job's fine-tune; its Finished carries
    the whole record (status done, or diverged)."""
    p: FineTunePayload = job.payload
    tune, task, family = p.tune, work.task, work.family
    device = measure.resolve_device(work.device)
    ckpt = Path(job.resume_dir)
    emit(Started(job.key, os.getpid(), socket.gethostname(), resume_step(ckpt)))
    eval_units = work.spec.train.final_eval_tokens
    m = work.spec.measure
    folder, path = Path(p.folder), Path(p.file)
    model = base_model(folder, tune, p.new_head, task, family, device)
    precision = work.spec.train.precision
    zs_windows = window_losses(model, task, device, eval_units, precision)
    zs_eval = task.evaluate(model, device, eval_units, "val", precision)
    record = copy.deepcopy(p.record)
    record["zero_shot_loss"] = zs_eval["loss"]
    record["extra"] = {"zero_shot_metrics": {k: v for k, v in zs_eval.items() if k != "loss"},
                       "base_val_loss": tune.row.get("val_loss")}
    record["window_losses"] = {"zero_shot": zs_windows}
    trainee = adapters.apply_method(model, tune.method, tune.targets,
                                    adapters.output_layer(model) if p.new_head else None,
                                    tune.plan.seed)
    trainable, total = adapters.counts(trainee)
    record.update(trainable_params=trainable,
                  trainable_fraction=trainable / tune.row["n_params"],
                  train_state_bytes=adapters.train_state_bytes(trainee))

    def on_checkpoint(curve: list) -> None:
        points = [pt.__dict__ for pt in curve]
        emit(Checkpoint(job.key, points[-1]["step"] if points else 0, points))

    with measure.PeakMemory(device) as mem:
        outcome = train_rung(tune.plan, task, job.train, device, ckpt, model=trainee,
                             on_progress=lambda step, loss: emit(Progress(job.key, step, loss)),
                             on_checkpoint=on_checkpoint)
    record["curve"] = [pt.__dict__ for pt in outcome.curve]
    record.update(train_seconds=outcome.train_seconds, peak_mem_bytes=mem.peak_bytes,
                  units_per_s=(outcome.tokens / outcome.train_seconds
                               if outcome.train_seconds > 0 else None))
    if outcome.status == "diverged":
        record.update(status="diverged")
        record["extra"].update(diverged_step=outcome.diverged_step,
                               diverged_reason=outcome.diverged_reason)
        return Finished(job.key, None, record["curve"], record)
    trained = outcome.model.eval()
    ev = task.evaluate(trained, device, eval_units, "val", precision)
    wl = window_losses(trained, task, device, eval_units, precision)
    ship = adapters.merged(trained).eval()
    if tune.method.peft:
        nbytes = adapters.save_adapter(trained, path)
        tmp = path.with_name(f".{tune.name}.merged.safetensors")
        full_bytes = save_weights(ship, tmp)
        tmp.unlink(missing_ok=True)
        diff = merge_check(trained, ship, task, device)
    else:
        nbytes = full_bytes = save_weights(trained, path)
        diff = {"float64": None, "float32": None}
    lat = measure.latencies(ship, task, device, m.latency_batches, m.latency_repeats)
    n_ship, ne_ship = family.count_params(ship)
    val = ev.pop("loss")
    record["window_losses"]["finetuned"] = wl
    record.update(status="done", val_loss=val if math.isfinite(val) else None, metrics=ev,
                  bytes=nbytes, full_bytes=full_bytes, latency_ms=lat)
    record["extra"].update(file=str(path.relative_to(folder)),
                           merge_max_abs_diff=diff["float64"],
                           merge_max_abs_diff_fp32=diff["float32"],
                           shipped_n_params=n_ship, shipped_n_nonembed=ne_ship,
                           base_bytes=tune.row.get("checkpoint_bytes"),
                           measured_on=str(device), all_params_training=total)
    return Finished(job.key, None, record["curve"], record)
