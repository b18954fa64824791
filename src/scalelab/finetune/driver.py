"""The fine-tuning driver: for each planned (rung, method), load the rung's final weights, measure
the zero-shot loss on the second task, train with the study's own loop, measure, save, record.

Training is `train.loop.train_rung(model=...)`, the loop every rung trained with (AdamW, warm-up
and cosine, clipping, divergence guard, checkpoints and resume). For LoRA and IA3 the model is the
PEFT model: its frozen weights have `requires_grad=False`, get no gradient and no AdamW state, and
so never change (AdamW skips parameters without a gradient, weight decay included).

What a fine-tune record holds (`study.db` table `finetunes`, summary.json `finetunes`):

- `of_rung`, `task` (the second task's slug), `method` (full, lora, ia3), `settings` (the method's
  settings, the resolved target modules, `identity`: what a stored result must match to be kept);
- `n_params` / `n_nonembed`: the rung's (the x-axis of the laws is the rung's `n_nonembed`);
  `trainable_params` and `trainable_fraction` = trainable / the rung's n_params (for LoRA the
  adapter's A and B matrices, plus a new head where there is one);
- `zero_shot_loss`: the rung's validation loss on the second task before fine-tuning (with a new,
  untrained head for classifiers); `val_loss` after, both on the second task's fixed validation
  windows (`final_eval_tokens` of the study), and `metrics` (bits per byte, error rate, RMSE);
- `D`, `unit`, `steps`, `lr`: the matched budget and the method's learning rate;
- `train_seconds` (the training loop, evaluations during it included, as for rungs) and
  `units_per_s` = D / train_seconds;
- `peak_mem_bytes`: the peak over training, measured as for rungs (CUDA: peak allocated; CPU:
  the process's peak resident set, which includes Python, torch and the corpus, so on CPU the
  methods' differences sit under a large common floor); `train_state_bytes`: the exact
  parameter-side training memory (every weight, plus gradient and two AdamW moments per
  trainable weight), which is what LoRA saves;
- `bytes`: the method's own file under `finetunes/` (full: the whole model; LoRA/IA3: the adapter
  and a new head only, `<name>.adapter.safetensors`); `full_bytes`: a whole model file of the
  fine-tuned model (full: the same file; LoRA/IA3: the merged model, saved once to measure it);
- `latency_ms`: the shipped model's (full, or the merged LoRA/IA3) forward latency at the study's
  batch sizes, as for rungs; `extra.merge_max_abs_diff`: the largest absolute logit difference
  between the adapter model and its merge on validation inputs, computed in float64 (the merge
  alone; `extra.merge_max_abs_diff_fp32`: the same in float32, rounding of the two fp32
  forward passes included; see `adapters.merge_diff`);
- `curve`: {step, tokens, train_loss, val_loss, lr} points, as a rung's curve;
- `window_losses`: {"zero_shot": [...], "finetuned": [...]}, each validation window's mean loss
  before and after fine-tuning (store only, not summary.json): the paired intervals of the gaps
  (`scaling.py`) are computed from them.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from scalelab.finetune import adapters
from scalelab.finetune.plan import FINETUNES_DIR, FineTunePlan, Job
from scalelab.tasks.base import EVAL_BATCH, autocast
from scalelab.train import measure
from scalelab.train.checkpoint import save_weights
from scalelab.train.loop import train_rung

if TYPE_CHECKING:
    from scalelab.store import StudyStore

ProgressFn = Callable[[str, int, int, float], None]
WINDOW_DIGITS = 7  # significant digits kept of each window's loss


@torch.no_grad()
def window_losses(model: torch.nn.Module, task: Any, device: torch.device,
                  n_units: int) -> list[float]:
    """Mean loss of each fixed validation window (sequence) or example, in `eval_data` order;
    their mean is the task's validation loss."""
    was = model.training
    model.eval()
    xs, ys = task.eval_data(n_units, "val")
    out: list[float] = []
    for i in range(0, xs.size(0), EVAL_BATCH):
        x, y = xs[i:i + EVAL_BATCH].to(device), ys[i:i + EVAL_BATCH].to(device)
        with autocast(device):
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


def base_model(folder: Path, job: Job, plan: FineTunePlan, device: torch.device) -> Any:
    """The rung's trained model (with the new head when the task needs one), on `device`."""
    from scalelab.compress.load import load_rung_model

    model = load_rung_model(folder, job.row, plan.family, device)
    if plan.new_head:
        adapters.replace_head(model, plan.task.io.n_outputs, job.plan.seed)
        model.to(device)
    return model


def _file(store: StudyStore, job: Job) -> Path:
    suffix = ".adapter.safetensors" if job.method.peft else ".safetensors"
    return store.folder / FINETUNES_DIR / f"{job.name}{suffix}"


def _base_record(job: Job, plan: FineTunePlan) -> dict:
    second = plan.second
    return {
        "name": job.name, "of_rung": job.row["rung"], "task": second.slug,
        "method": job.method.kind, "status": "running",
        "n_params": job.row["n_params"], "n_nonembed": job.row["n_nonembed"],
        "D": job.plan.D, "unit": job.plan.unit, "steps": job.plan.steps, "lr": job.plan.lr,
        "settings": {**job.method.settings(), "slug": job.method.slug,
                     "targets_resolved": job.targets.modules if job.targets else None,
                     "feedforward": job.targets.feedforward if job.targets else None,
                     "new_head": plan.new_head, "batch_size": job.plan.batch_size,
                     "warmup_steps": job.plan.warmup_steps, "seed": job.plan.seed,
                     "identity": job.identity},
        "task_spec": {"spec": second.spec, "slug": second.slug,
                      "fingerprint": plan.task.fingerprint(),
                      "objective": plan.task.objective, "unit": plan.task.unit,
                      "io": plan.task.io.to_dict()},
    }


def run_finetunes(store: StudyStore, plan: FineTunePlan, device: torch.device, *,
                  on_event: Callable[[str], None] | None = None,
                  on_progress: ProgressFn | None = None) -> list[dict]:
    """Train, measure and record every job of the plan (stored, resumable); then refit the
    scaling analysis of the second task. Returns the task's records."""
    say = on_event or (lambda _m: None)
    stored = {s["name"]: s for s in store.finetunes()}
    folder = store.folder
    (folder / FINETUNES_DIR).mkdir(parents=True, exist_ok=True)
    eval_units = plan.spec.train.final_eval_tokens
    m = plan.spec.measure
    zero_shot: dict[int, tuple[list[float], dict]] = {}
    for name in plan.kept:
        say(f"{name}: already in the study, kept")
    for job in plan.jobs:
        ckpt = folder / FINETUNES_DIR / f"{job.name}-ckpt"
        old = stored.get(job.name)
        if old is None or old["status"] != "running" or \
                (old.get("settings") or {}).get("identity") != job.identity:
            shutil.rmtree(ckpt, ignore_errors=True)  # a stale resume point: start afresh
        resuming = ckpt.is_dir() and any(ckpt.glob("step-*"))
        rung = job.row["rung"]
        model = base_model(folder, job, plan, device)
        if rung not in zero_shot:
            wl = window_losses(model, plan.task, device, eval_units)
            ev = plan.task.evaluate(model, device, eval_units, "val")
            zero_shot[rung] = (wl, ev)
        zs_windows, zs_eval = zero_shot[rung]
        record = _base_record(job, plan)
        record["zero_shot_loss"] = zs_eval["loss"]
        record["extra"] = {"zero_shot_metrics": {k: v for k, v in zs_eval.items()
                                                 if k != "loss"},
                           "base_val_loss": job.row.get("val_loss")}
        record["window_losses"] = {"zero_shot": zs_windows}
        trainee = adapters.apply_method(model, job.method, job.targets,
                                        adapters.output_layer(model) if plan.new_head else None,
                                        job.plan.seed)
        trainable, total = adapters.counts(trainee)
        record.update(trainable_params=trainable,
                      trainable_fraction=trainable / job.row["n_params"],
                      train_state_bytes=adapters.train_state_bytes(trainee))
        store.record_finetune(record)
        say(f"{job.name}: {job.method.text}, {trainable:,} trainable parameters "
            f"({100 * trainable / job.row['n_params']:.3g}% of {job.row['n_params']:,}), "
            f"zero-shot loss {zs_eval['loss']:.4f}" + (", resuming" if resuming else ""))

        def save_curve(curve, record=record):
            record["curve"] = [p.__dict__ for p in curve]
            store.record_finetune(record)

        progress = (None if on_progress is None else
                    (lambda step, loss, name=job.name, total=job.plan.steps, report=on_progress:
                     report(name, step, total, loss)))
        with measure.PeakMemory(device) as mem:
            outcome = train_rung(job.plan, plan.task, plan.train_spec(job), device, ckpt,
                                 model=trainee, on_progress=progress, on_checkpoint=save_curve)
        record["curve"] = [p.__dict__ for p in outcome.curve]
        record.update(train_seconds=outcome.train_seconds, peak_mem_bytes=mem.peak_bytes,
                      units_per_s=(outcome.tokens / outcome.train_seconds
                                   if outcome.train_seconds > 0 else None))
        if outcome.status == "diverged":
            record.update(status="diverged")
            record["extra"].update(diverged_step=outcome.diverged_step,
                                   diverged_reason=outcome.diverged_reason)
            store.record_finetune(record)
            shutil.rmtree(ckpt, ignore_errors=True)
            say(f"{job.name}: DIVERGED ({outcome.diverged_reason})")
            continue
        trained = outcome.model.eval()
        ev = plan.task.evaluate(trained, device, eval_units, "val")
        wl = window_losses(trained, plan.task, device, eval_units)
        path = _file(store, job)
        ship = adapters.merged(trained).eval()
        if job.method.peft:
            nbytes = adapters.save_adapter(trained, path)
            tmp = path.with_name(f".{job.name}.merged.safetensors")
            full_bytes = save_weights(ship, tmp)
            tmp.unlink(missing_ok=True)
            diff = merge_check(trained, ship, plan.task, device)
        else:
            nbytes = full_bytes = save_weights(trained, path)
            diff = {"float64": None, "float32": None}
        lat = measure.latencies(ship, plan.task, device, m.latency_batches, m.latency_repeats)
        n_ship, ne_ship = plan.family.count_params(ship)
        val = ev.pop("loss")
        record["window_losses"]["finetuned"] = wl
        record.update(status="done", val_loss=val if math.isfinite(val) else None, metrics=ev,
                      bytes=nbytes, full_bytes=full_bytes, latency_ms=lat)
        record["extra"].update(file=str(path.relative_to(folder)),
                               merge_max_abs_diff=diff["float64"],
                               merge_max_abs_diff_fp32=diff["float32"],
                               shipped_n_params=n_ship, shipped_n_nonembed=ne_ship,
                               base_bytes=job.row.get("checkpoint_bytes"),
                               measured_on=str(device), all_params_training=total)
        store.record_finetune(record)
        shutil.rmtree(ckpt, ignore_errors=True)
        say(f"{job.name}: loss {zs_eval['loss']:.4f} -> {val:.4f} in "
            f"{outcome.train_seconds:.1f} s, {nbytes:,} bytes on disk")
    from scalelab.finetune.scaling import analyse

    analysis = analyse(store.finetunes(windows=True), plan.second.slug,
                       bootstrap=plan.spec.fit.bootstrap, seed=plan.spec.fit.seed)
    store.set_finetune_scaling(plan.second.slug, analysis)
    return [f for f in store.finetunes() if f["task"] == plan.second.slug]


__all__ = ["merge_check", "run_finetunes", "window_losses"]
