"""Optuna's search of each rung's hyperparameters, with its trials trained through an executor.

One Optuna study per rung ("rung-R") in Optuna's RDB storage, a SQLite file in the study folder
(`tune.db`, not study.db). Optuna warns against parallel writers on SQLite, so every trial write
(ask, report, tell) happens here, in the driver's thread; the executor's workers only train and
send events back. TPE samples the space; the median pruner stops a trial whose validation loss
at a step is worse than the median of earlier trials at that step (its curve arrives with each
checkpoint, and a trial checkpoints at every evaluation).

A rung's first trial is the default ladder's own rung (its settings, final loss and curve),
where its settings lie inside the space: the baseline is measured once, not twice. A trial left
running by a killed driver is resumed from its checkpoint with the same parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.execute.base import (
    Checkpoint,
    Event,
    Executor,
    Failed,
    Finished,
    Job,
    Observer,
    Pruned,
    StopJob,
    Workload,
)
from scalelab.records import RungPlan
from scalelab.spec import TrainSpec, TuneSpec

TUNE_DB = "tune.db"


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("scalelab tune needs Optuna: pip install 'scalelab[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(folder: Path) -> str:
    return f"sqlite:///{(Path(folder) / TUNE_DB).resolve()}"


def distributions(space: TuneSpec) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out: dict[str, Any] = {}
    if space.lr is not None:
        out["lr"] = FloatDistribution(space.lr[0], space.lr[1], log=True)
    if space.warmup_frac is not None:
        out["warmup_frac"] = FloatDistribution(*space.warmup_frac)
    if space.batch_size is not None:
        out["batch_size"] = CategoricalDistribution(list(space.batch_size))
    return out


def trial_plan(base: RungPlan, params: dict[str, Any], units_per_batch: Any,
               train: TrainSpec) -> RungPlan:
    """The rung's plan with a trial's parameters: the same D (rounded to whole steps of the new
    batch size), the peak lr, the warm-up fraction of its own steps."""
    batch = int(params.get("batch_size", base.batch_size))
    per_step = units_per_batch(batch)
    steps = max(1, math.ceil(base.D / per_step))
    warmup = params.get("warmup_frac")
    return replace(base, lr=float(params.get("lr", base.lr)), batch_size=batch,
                   units_per_step=per_step, steps=steps, D=steps * per_step,
                   warmup_steps=(base.warmup_steps if warmup is None and batch == base.batch_size
                                 else round((train.warmup_frac if warmup is None else warmup)
                                            * steps)))


def default_params(base: RungPlan, space: TuneSpec, train: TrainSpec) -> dict[str, Any] | None:
    """The default ladder's settings of a rung as a point of the space, None when outside it."""
    params: dict[str, Any] = {}
    if space.lr is not None:
        if not space.lr[0] <= base.lr <= space.lr[1]:
            return None
        params["lr"] = base.lr
    if space.warmup_frac is not None:
        if not space.warmup_frac[0] <= train.warmup_frac <= space.warmup_frac[1]:
            return None
        params["warmup_frac"] = train.warmup_frac
    if space.batch_size is not None:
        if base.batch_size not in space.batch_size:
            return None
        params["batch_size"] = base.batch_size
    return params


class TrialRecorder:
    """The driver's side of a wave of trials: each event becomes Optuna's report/tell (in this
    thread only), then goes to the observers; a trial the pruner judges hopeless is stopped."""

    def __init__(self, trials: dict[str, Any], studies: dict[str, Any],
                 observers: Sequence[Observer]):
        self.trials, self.studies, self.observers = trials, studies, observers
        # Steps a resumed trial reported before its driver was killed (Optuna ignores a step
        # reported twice, with a warning).
        self.reported = {key: set(_frozen(studies[key], t).intermediate_values)
                         for key, t in trials.items()}

    def __call__(self, event: Event) -> None:
        optuna = import_optuna()
        trial, study = self.trials[event.key], self.studies[event.key]
        for observer in self.observers:
            observer.on_event(event)
        if isinstance(event, Checkpoint):
            self._report(event.key, trial, event.curve)
            if trial.should_prune():
                raise StopJob(event.key)
        elif isinstance(event, Finished):
            result = event.result
            if result.status == "done" and result.val_loss is not None:
                trial.set_user_attr("curve", [[p["step"], p["val_loss"]] for p in event.curve])
                study.tell(trial, result.val_loss)
            else:
                trial.set_user_attr("diverged", result.diverged_reason)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif isinstance(event, Pruned):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif isinstance(event, Failed):
            trial.set_user_attr("error", event.error)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def _report(self, key: str, trial: Any, curve: list[dict]) -> None:
        for p in curve:
            if p["step"] not in self.reported[key] and p.get("val_loss") is not None:
                trial.report(p["val_loss"], p["step"])
                self.reported[key].add(p["step"])


def _frozen(study: Any, trial: Any) -> Any:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)


def open_studies(plans: Sequence[RungPlan], space: TuneSpec, url: str) -> dict[int, Any]:
    optuna = import_optuna()
    studies = {}
    for p in plans:
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=p.steps // 4)
                  if space.prune else optuna.pruners.NopPruner())
        studies[p.rung] = optuna.create_study(
            storage=url, study_name=f"rung-{p.rung}", direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=space.seed + p.rung), pruner=pruner,
            load_if_exists=True)
    return studies


def seed_with_defaults(studies: dict[int, Any], plans: Sequence[RungPlan], space: TuneSpec,
                       train: TrainSpec, rungs: dict[int, dict], curves: dict[int, list]) -> None:
    """Each rung's default-ladder result as its first trial (once; where it lies in the space)."""
    optuna = import_optuna()
    dists = distributions(space)
    for p in plans:
        study, row = studies[p.rung], rungs.get(p.rung)
        params = default_params(p, space, train)
        if study.trials or params is None or row is None or row.get("val_loss") is None:
            continue
        points = {int(c["step"]): c["val_loss"] for c in curves.get(p.rung, [])
                  if c.get("val_loss") is not None}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, value=row["val_loss"],
            intermediate_values=points, user_attrs={"source": "default ladder",
                                                    "curve": sorted(points.items())}))


def _next_trial(study: Any, space: TuneSpec, budget: int) -> Any | None:
    """A trial a killed driver left running (resumed with its parameters), else a new one while
    the rung has fewer than `budget` finished trials."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == states.RUNNING]
    if running:
        # Optuna has no public call that reopens a running trial; its Trial is built this way.
        return suggest(optuna.trial.Trial(study, running[0]._trial_id), space)
    if sum(t.state.is_finished() for t in trials) >= budget:
        return None
    return suggest(study.ask(), space)


def suggest(trial: Any, space: TuneSpec) -> Any:
    """Draw the trial's parameters (a resumed trial gets back the ones it had)."""
    if space.lr is not None:
        trial.suggest_float("lr", space.lr[0], space.lr[1], log=True)
    if space.warmup_frac is not None:
        trial.suggest_float("warmup_frac", *space.warmup_frac)
    if space.batch_size is not None:
        trial.suggest_categorical("batch_size", list(space.batch_size))
    return trial


def run_trials(plans: Sequence[RungPlan], space: TuneSpec, budget: int, url: str,
               executor: Executor, work: Workload, resume_root: Path,
               observers: Sequence[Observer]) -> None:
    """Trials in waves, one per rung at a time (rungs side by side on a parallel executor), until
    every rung has `budget` finished trials (complete, pruned or failed)."""
    studies = open_studies(plans, space, url)
    # A trial checkpoints at every evaluation: its curve reaches the pruner as it is measured.
    train = work.spec.train.model_copy(update={"checkpoint_every": work.spec.train.eval_every})
    while True:
        jobs, trials, by_key = [], {}, {}
        for p in plans:
            trial = _next_trial(studies[p.rung], space, budget)
            if trial is None:
                continue
            key = f"rung-{p.rung}/trial-{trial.number}"
            plan = trial_plan(p, trial.params, work.task.units_per_batch, work.spec.train)
            jobs.append(Job(key, plan, str(resume_root / key), None, train, full=False))
            trials[key], by_key[key] = trial, studies[p.rung]
        if not jobs:
            return
        for observer in observers:
            observer.on_jobs(jobs)
        executor.run(jobs, work, TrialRecorder(trials, by_key, observers))


def best_trials(plans: Sequence[RungPlan], url: str) -> dict[int, dict[str, Any]]:
    """Per rung: the best complete trial's parameters and loss, and every finished trial
    (number, state, params, value, the last step reached)."""
    optuna = import_optuna()
    out = {}
    for p in plans:
        study = optuna.load_study(study_name=f"rung-{p.rung}", storage=url)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            raise UserError(f"rung {p.rung}: no trial finished (all diverged or were pruned); "
                            "narrow the tune section's ranges")
        best = min(done, key=lambda t: t.value)
        out[p.rung] = {
            "rung": p.rung, "n_nonembed": p.n_nonembed, "default_lr": p.lr,
            "best": {"number": best.number, "params": best.params, "value": best.value},
            "trials": [{"number": t.number, "state": t.state.name, "params": t.params,
                        "value": t.value, "last_step": t.last_step,
                        "source": t.user_attrs.get("source", "tpe")}
                       for t in study.trials if t.state.is_finished()],
        }
    return out
