"""`scalelab tune`: Optuna search of each rung's hyperparameters, the lr*(N) rule, and the tuned
ladder beside the default one."""

from __future__ import annotations

from pathlib import Path

import typer

from scalelab.cli.app import app, check_device, console
from scalelab.cli.study import (
    ADDRESS_OPTION,
    EXECUTOR_OPTION,
    MLFLOW_OPTION,
    STORAGE_OPTION,
    RungBars,
    execute_options,
    incomplete_is_exit_1,
    mirrors,
    rung_progress,
)
from scalelab.execute import executor_class
from scalelab.execute.base import BaseObserver, Event, Finished, Pruned
from scalelab.spec import load_spec

TUNE_HELP = """Tune each rung's peak learning rate (and, where the spec asks, its warm-up \
fraction and batch size) with Optuna, fit the rule lr*(N) = c·N^γ to the best learning rates, \
train the ladder with that rule, and compare it with the default ladder.

The spec needs a `tune` section (its search space). In the study folder: the default ladder \
(study.db, report.html with a tuning section), Optuna's trials (tune.db: `optuna-dashboard \
sqlite:///OUT/tune.db` opens it), the tuned ladder (tuned/) and tune.json. Trials run through \
the executor (`--executor ray`: rungs' trials side by side); a median pruner stops hopeless \
trials from their validation curves. Running the same command again resumes.

Example:

    scalelab tune my-study.yaml --trials 8 --out studies/tuned

```
tune: {lr: [3.0e-4, 3.0e-2], warmup_frac: [0.0, 0.2], batch_size: [8, 16, 32]}
```"""


class TrialLines(BaseObserver):
    """One line per trial that ends (its parameters, loss or the step it was pruned at)."""

    def __init__(self) -> None:
        self.params: dict[str, dict] = {}

    def on_jobs(self, jobs: list) -> None:
        for job in jobs:
            self.params[job.key] = {"lr": job.plan.lr, "batch": job.plan.batch_size,
                                    "warmup": job.plan.warmup_steps}

    def on_event(self, event: Event) -> None:
        params = self.params.get(event.key)
        if params is None or "/trial-" not in event.key:
            return
        what = ", ".join(f"{k} {v:.3g}" for k, v in params.items())
        if isinstance(event, Finished):
            loss = event.result.val_loss
            ended = f"val loss {loss:.4f}" if loss is not None else event.result.status
            console.print(f"{event.key} ({what}): {ended}", highlight=False)
        elif isinstance(event, Pruned):
            console.print(f"{event.key} ({what}): pruned at step {event.step}", highlight=False)


@app.command(help=TUNE_HELP)
def tune(
    spec_path: Path = typer.Argument(..., metavar="SPEC.yaml", help="study spec with a tune "
                                                                    "section"),
    trials: int | None = typer.Option(None, "--trials", min=1,
                                      help="trials per rung [default: the spec's tune.trials]"),
    out: Path | None = typer.Option(None, "--out", help="study folder [default: studies/NAME]"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda"),
    executor: str = EXECUTOR_OPTION,
    address: str | None = ADDRESS_OPTION,
    storage: str | None = STORAGE_OPTION,
    mlflow: str | None = MLFLOW_OPTION,
) -> None:
    from scalelab.study import default_out
    from scalelab.tune.driver import tune_study

    check_device(device)
    spec = load_spec(spec_path)
    out = out or default_out(spec)
    options = execute_options(executor, address, storage)
    observers = mirrors(mlflow, spec.name)
    with rung_progress() as bar, incomplete_is_exit_1():
        bars = RungBars(bar, show_workers=executor_class(executor).remote)
        record = tune_study(spec, out, trials, device, execute=options,
                            observers=[bars, TrialLines(), *observers], on_plan=bars.add_plans)
    _print_record(record, out)


def _print_record(record: dict, out: Path) -> None:
    for r in record["rungs"]:
        best = r["best"]
        params = ", ".join(f"{k} {v:.3g}" for k, v in best["params"].items())
        console.print(f"rung {r['rung']} (N={r['n_nonembed']:,}): best {params} "
                      f"-> {best['value']:.4f} (default lr {r['default_lr']:.3g})",
                      highlight=False)
    rule = record.get("rule")
    if rule is not None:
        from scalelab.report.tune import _rule_text

        console.print(_rule_text(rule), highlight=False)
    for name, ladder in record["ladders"].items():
        fit = ladder["fit"]
        if fit is None or "zero_dof" in fit["flags"]:
            console.print(f"{name} ladder: no law (exact fit or too few rungs)")
            continue
        ho = fit["holdout_rel_error"]
        console.print(f"{name} ladder: alpha {fit['params']['alpha']:.3f}, holdout error "
                      + ("-" if ho is None else f"{100 * ho:+.2f}%"), highlight=False)
    console.print(f"report: {out / 'report.html'}")
