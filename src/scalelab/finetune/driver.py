"""The fine-tuning driver: one job of the executor per planned (rung, method), each recorded as
its events arrive; then the second task's scaling analysis.

Each fine-tune is a job (`execute.base.Job`, kind `finetune`), so it runs wherever rungs run
(this process, or a Ray worker with `--executor ray`) and observers (progress bars, the MLflow
mirror) hear its events as they hear a rung's. The job (`job.train_finetune`) loads the rung's
final weights, measures the zero-shot loss on the second task, trains with the study's own loop,
measures and saves; this driver writes the record: as planned (status running) when the job
starts, its curve at each checkpoint, and the whole record the job's Finished carries.

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

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from scalelab.execute import check_storage
from scalelab.execute.base import (
    Checkpoint,
    Event,
    Executor,
    Failed,
    Finished,
    Job,
    Observer,
    Started,
    StudyIncomplete,
    Workload,
    drive,
)
from scalelab.execute.local import LocalExecutor
from scalelab.execute.progress import ProgressBars
from scalelab.finetune.job import FineTunePayload
from scalelab.finetune.plan import FINETUNES_DIR, FineTunePlan
from scalelab.finetune.plan import Job as FineTune
from scalelab.progress import ProgressFn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from scalelab.storage import StudyStore


def _file(store: StudyStore, tune: FineTune) -> Path:
    suffix = ".adapter.safetensors" if tune.method.peft else ".safetensors"
    return store.folder / FINETUNES_DIR / f"{tune.name}{suffix}"


def planned_record(tune: FineTune, plan: FineTunePlan) -> dict:
    """A fine-tune's record as planned (status running): what it is, before it is measured."""
    second = plan.second
    return {
        "name": tune.name, "of_rung": tune.row["rung"], "task": second.slug,
        "method": tune.method.kind, "status": "running",
        "n_params": tune.row["n_params"], "n_nonembed": tune.row["n_nonembed"],
        "D": tune.plan.D, "unit": tune.plan.unit, "steps": tune.plan.steps, "lr": tune.plan.lr,
        "settings": {**tune.method.settings(), "slug": tune.method.slug,
                     "targets_resolved": tune.targets.modules if tune.targets else None,
                     "feedforward": tune.targets.feedforward if tune.targets else None,
                     "new_head": plan.new_head, "batch_size": tune.plan.batch_size,
                     "warmup_steps": tune.plan.warmup_steps, "seed": tune.plan.seed,
                     "identity": tune.identity},
        "task_spec": {"spec": second.spec, "slug": second.slug,
                      "fingerprint": plan.task.fingerprint(),
                      "objective": plan.task.objective, "unit": plan.task.unit,
                      "io": plan.task.io.to_dict()},
    }


def finetune_key(name: str) -> str:
    return f"finetune-{name}"


def finetune_jobs(store: StudyStore, plan: FineTunePlan) -> list[Job]:
    """A job for every planned fine-tune. A resume point is kept only for the same fine-tune
    interrupted (stored as running, with the same identity): any other is stale."""
    stored = {s["name"]: s for s in store.finetunes()}
    folder = store.folder
    jobs = []
    for tune in plan.jobs:
        ckpt = folder / FINETUNES_DIR / f"{tune.name}-ckpt"
        old = stored.get(tune.name)
        if old is None or old["status"] != "running" or \
                (old.get("settings") or {}).get("identity") != tune.identity:
            shutil.rmtree(ckpt, ignore_errors=True)  # a stale resume point: start afresh
        payload = FineTunePayload(tune, plan.new_head, str(folder), str(_file(store, tune)),
                                  planned_record(tune, plan))
        jobs.append(Job(finetune_key(tune.name), tune.plan, str(ckpt), None,
                        plan.train_spec(tune), kind="finetune", payload=payload))
    return jobs


class FineTuneRecorder:
    """What a run of fine-tune jobs writes to the store, event by event, and the lines it says:
    the planned record when a job starts (so an interrupted fine-tune is `running` and resumes),
    its curve at each checkpoint, the job's whole record when it finishes."""

    def __init__(self, store: StudyStore, jobs: list[Job], say: Callable[[str], None]):
        self.store, self.say = store, say
        self.jobs = {j.key: j for j in jobs}
        self.records: dict[str, dict] = {}
        self.failed: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        p: FineTunePayload = self.jobs[event.key].payload
        name = p.tune.name
        if isinstance(event, Started):
            self.records[name] = dict(p.record)
            self.store.record_finetune(self.records[name])
            if event.from_step:
                self.say(f"{name}: resuming from step {event.from_step}")
        elif isinstance(event, Checkpoint):
            self.records[name]["curve"] = event.curve
            self.store.record_finetune(self.records[name])
        elif isinstance(event, Finished):
            record = event.record or {}
            self.store.record_finetune(record)
            self.records[name] = record
            self._finished(p.tune, record)
        elif isinstance(event, Failed):
            self.failed[name] = event.error
            self.say(f"{name}: failed: {event.error}")

    def _finished(self, tune: FineTune, r: dict) -> None:
        n = tune.row["n_params"]
        self.say(f"{tune.name}: {tune.method.text}, {r['trainable_params']:,} trainable "
                 f"parameters ({100 * r['trainable_params'] / n:.3g}% of {n:,}), "
                 f"zero-shot loss {r['zero_shot_loss']:.4f}")
        if r["status"] == "diverged":
            self.say(f"{tune.name}: DIVERGED ({r['extra']['diverged_reason']})")
            return
        val = r["val_loss"]
        self.say(f"{tune.name}: loss {r['zero_shot_loss']:.4f} -> "
                 f"{'-' if val is None else format(val, '.4f')} in "
                 f"{r['train_seconds']:.1f} s, {r['bytes']:,} bytes on disk")


def run_finetunes(store: StudyStore, plan: FineTunePlan, device: torch.device, *,
                  on_event: Callable[[str], None] | None = None,
                  on_progress: ProgressFn | None = None,
                  executor: Executor | None = None,
                  observers: Sequence[Observer] = ()) -> list[dict]:
    """Train, measure and record every job of the plan (stored, resumable) as jobs of
    `executor` (None: this process, one after another; `observers` get their events once
    recorded); then refit the scaling analysis of the second task. Returns the task's records.
    A fine-tune whose job fails is StudyIncomplete, after the others are recorded and the
    analysis refitted."""
    say = on_event or (lambda _m: None)
    for name in plan.kept:
        say(f"{name}: already in the study, kept")
    executor = executor or LocalExecutor()
    # Every worker writes its checkpoints and files into the study folder: it must see it.
    check_storage(executor, store.folder / FINETUNES_DIR)
    jobs = finetune_jobs(store, plan)
    recorder = FineTuneRecorder(store, jobs, say)
    bars = [ProgressBars(on_progress, {j.key: j.payload.tune.name for j in jobs})] \
        if on_progress is not None else []
    work = Workload(plan.task, plan.family, plan.spec, str(device), None)
    drive(executor, jobs, work, recorder, [*observers, *bars])
    from scalelab.finetune.scaling import analyse

    analysis = analyse(store.finetunes(windows=True), plan.second.slug,
                       bootstrap=plan.spec.fit.bootstrap, seed=plan.spec.fit.seed)
    store.set_finetune_scaling(plan.second.slug, analysis)
    if recorder.failed:
        first = next(t.name for t in plan.jobs if t.name in recorder.failed)
        raise StudyIncomplete(f"{len(recorder.failed)} fine-tune(s) did not finish ({first}: "
                              f"{recorder.failed[first]}); the others are recorded, rerun the "
                              "same command to resume")
    return [f for f in store.finetunes() if f["task"] == plan.second.slug]


__all__ = ["finetune_jobs", "run_finetunes"]
