"""Commands of a study: run, report, show."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scalelab.cli.app import app, check_device, console, err_console
from scalelab.errors import UserError
from scalelab.execute.base import BaseObserver
from scalelab.spec import EXAMPLE_SPEC, load_spec, preset_spec, quick_spec
from scalelab.store import StudyStore

# The study modules import torch (seconds); they are imported inside the commands that need
# them, so `scalelab fit` and `--help` start fast.

RUN_HELP = f"""Train the ladder of a study, fit its scaling law and write its report.

Without SPEC the default study runs (the `default` preset): a GPT ladder of 7 sizes (1.3e4 to \
1.0e6 non-embedding parameters; the five smallest 6 times each from different seeds, 32 runs) on \
this Python's standard-library source, about 9 minutes on 2 CPU cores. Running the same command \
again on an interrupted study resumes it: finished rungs are kept, an unfinished one continues \
from its last checkpoint.

Example:

    scalelab run my-study.yaml --out studies/mine

Example spec (every key optional; unknown keys are errors):

```
{EXAMPLE_SPEC}```"""


def _fmt(x, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def rung_table(summary: dict) -> Table:
    """The rung table; the quality columns are the task's (bits per byte for byte-level text,
    error rate for classifiers, RMSE for regression)."""
    corpus = summary["study"].get("corpus") or {}
    unit = corpus.get("unit") or "byte"
    metrics = corpus.get("metrics") or ["bpb"]
    quality = [(f"val_{m}", label) for m, label in
               (("bpb", "bits/byte"), ("error", "error"), ("rmse", "RMSE")) if m in metrics]
    table = Table(title=f"study {summary['study']['name']}", title_justify="left")
    for col in ("rung", "status", "N (non-emb)", "shape", f"D ({unit}s)", "val loss",
                *(label for _, label in quality), "train loss", "FLOPs", "time s",
                f"{unit}s/s", "MFU", "lat b1 ms", "bytes"):
        table.add_column(col, justify="right")
    for r in summary["rungs"]:
        lat = r["latency_ms"].get("1")
        table.add_row(
            str(r["rung"]), r["status"], f"{r['n_nonembed']:,}", r.get("describe") or "-",
            _fmt(r.get("D", r.get("tokens"))), _fmt(r["val_loss"], ".4f"),
            *(_fmt(r.get(key), ".4f") for key, _ in quality), _fmt(r.get("train_loss"), ".4f"),
            _fmt(r["flops"]), _fmt(r["train_seconds"], ".1f"),
            _fmt(r.get("units_per_s", r.get("tokens_per_s")), ".0f"),
            "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%", _fmt(lat, ".2f"),
            _fmt(r["checkpoint_bytes"], ",d"),
        )
    return table


def fit_lines(summary: dict) -> list[str]:
    """One line per fitted law (loss, and the error rate of a classifier), one for its
    holdout (the largest rung predicted by the law fitted to the others) and one for its trust
    horizon (from the extrapolation profile). An exact fit (zero degrees of freedom) is one
    line that says so, not a result. Fit records of any stored shape (old studies included)
    are read through `FitRecord.from_dict`."""
    from scalelab.laws.profile import horizon_text
    from scalelab.records import FitRecord

    def num(v, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    lines = []
    for stored in summary["fits"]:
        fit = FitRecord.from_dict(stored)
        x = fit.x if isinstance(fit.x, str) else ",".join(fit.x)
        if "zero_dof" in fit.flags:
            lines.append(f"law {fit.law} of {fit.y} in {x}: exact fit, as many sizes as "
                         f"parameters (zero degrees of freedom): not a result")
            continue
        parts = []
        for name, value in fit.params.items():
            lo_hi = fit.intervals.get(name)
            band = f" [{lo_hi[0]:.3g}, {lo_hi[1]:.3g}]" if lo_hi else ""
            parts.append(f"{name}={num(value, '.4g')}{band}")
        lines.append(f"law {fit.law} of {fit.y} in {x}: " + ", ".join(parts))
        top = fit.holdout.largest() if fit.holdout is not None else None
        if top is not None:
            rel = top["rel_error"]
            lines.append(f"holdout: largest rung predicted {num(top['predicted'], '.4f')}, "
                         f"measured {num(top['measured'], '.4f')}, error "
                         + ("-" if rel is None else f"{100 * rel:+.2f}%"))
        if fit.profile is not None:
            lines.append(f"trust horizon: {horizon_text(fit.profile)}")
    return lines


EXECUTOR_OPTION = typer.Option(
    "local", "--executor", help="local (rungs one after another in this process) or ray (each "
    "rung a Ray task: side by side where resources allow, retried if its worker dies)")
ADDRESS_OPTION = typer.Option(
    None, "--address", help="Ray cluster to join (HOST:PORT, ray://HOST:PORT or auto) "
    "[default: start a local Ray in this process]")
STORAGE_OPTION = typer.Option(
    None, "--storage", help="folder every Ray node mounts, for resume points and weights "
    "[default: the study folder's checkpoints/]")
MLFLOW_OPTION = typer.Option(
    None, "--mlflow", help="mirror the study to this MLflow tracking URI (a folder, "
    "sqlite:///FILE, http(s)://HOST); study.db stays the record")


def execute_options(executor: str, address: str | None, storage: str | None):
    from scalelab.execute import ExecuteOptions

    return ExecuteOptions(executor, address, storage)


def mirrors(mlflow: str | None, experiment: str) -> list:
    """The observers the tracking flags ask for (checked before anything runs)."""
    if mlflow is None:
        return []
    from scalelab.observe.mlflow import MlflowMirror

    return [MlflowMirror(mlflow, experiment, say=lambda line: err_console.print(line))]


class RungBars(BaseObserver):
    """Progress bars for the rungs of a ladder, fed by the executor's events; a line for each
    worker that starts or resumes a rung, and for each rung that fails."""

    def __init__(self, bar: Progress, show_workers: bool):
        self.bar = bar
        self.show_workers = show_workers
        self.ids: dict[str, int] = {}
        self.plans: dict = {}
        self.since: dict[str, tuple[float, int]] = {}  # when and at which step a worker started

    def add_plans(self, plans: list) -> None:
        for p in plans:
            key = f"rung-{p.rung}"
            self.plans[key] = p
            self.ids[key] = self.bar.add_task(f"rung {p.rung} ({p.n_nonembed:,} params)",
                                              total=p.steps, loss="-", rate="-", start=False)

    def on_event(self, event) -> None:
        from scalelab.execute.base import Failed, Finished, Progress, Started

        tid, plan = self.ids.get(event.key), self.plans.get(event.key)
        if tid is None:
            return
        if isinstance(event, Started):
            self._started(event, tid)
        elif isinstance(event, Progress):
            self._step(event, tid, plan)
        elif isinstance(event, Finished):
            result = event.result
            if result.status == "done":
                self.bar.update(tid, completed=plan.steps, loss=f"{result.val_loss:.3f} (val)")
            else:
                self.bar.update(tid, description=f"rung {plan.rung} DIVERGED", loss="-")
            self.bar.stop_task(tid)
        elif isinstance(event, Failed):
            self.bar.update(tid, description=f"rung {plan.rung} FAILED")
            self.bar.console.print(f"{event.key}: failed: {event.error}")
            self.bar.stop_task(tid)

    def _started(self, event, tid: int) -> None:
        task = self.bar.tasks[tid]
        self.since[event.key] = (time.monotonic(), event.from_step)
        if event.from_step:
            self.bar.console.print(f"{event.key}: pid {event.pid} on {event.host}, resuming "
                                   f"from step {event.from_step}")
        elif self.show_workers:
            self.bar.console.print(f"{event.key}: pid {event.pid} on {event.host}")
        if not task.started:
            self.bar.start_task(tid)

    def _step(self, event, tid: int, plan) -> None:
        if event.step % 10 and event.step != plan.steps:
            return
        # The rate since the worker started: events from remote workers arrive in bursts, which
        # a rate over the last few updates would read as spikes.
        t0, step0 = self.since.get(event.key, (time.monotonic(), event.step))
        seconds = time.monotonic() - t0
        rate = f"{(event.step - step0) * plan.units_per_step / seconds:,.0f}" \
            if seconds > 0.5 and event.step > step0 else "-"
        self.bar.update(tid, completed=event.step, loss=f"{event.train_loss:.3f}", rate=rate)


def rung_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}/s"),
        TimeElapsedColumn(), console=console, transient=False)


@contextmanager
def incomplete_is_exit_1() -> Iterator[None]:
    """A study whose rungs could not all finish: one line and exit code 1 (not bad input)."""
    from scalelab.study import StudyIncomplete

    try:
        yield
    except StudyIncomplete as err:
        err_console.print(f"error: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command(help=RUN_HELP)
def run(
    spec_path: Path | None = typer.Argument(None, metavar="[SPEC.yaml]", help="study spec"),
    out: Path | None = typer.Option(None, "--out", help="study folder [default: studies/NAME]"),
    quick: bool = typer.Option(
        False, "--quick", help="a first look in about a minute: the 4 smallest rungs, once each"),
    preset: str | None = typer.Option(
        None, "--preset", help="a spec that ships with scalelab instead of SPEC: default (the "
        "default study) or gpu (a ladder to 100M parameters for one CUDA GPU)"),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu or cuda [default: the spec's device, auto]"),
    executor: str = EXECUTOR_OPTION,
    address: str | None = ADDRESS_OPTION,
    storage: str | None = STORAGE_OPTION,
    mlflow: str | None = MLFLOW_OPTION,
) -> None:
    from scalelab.study import default_out, run_study

    check_device(device)
    if spec_path is not None and preset is not None:
        raise UserError("give a SPEC file or --preset, not both")
    spec = load_spec(spec_path) if spec_path else preset_spec(preset or "default")
    if quick:
        spec = quick_spec(spec)
    out = out or default_out(spec)
    options = execute_options(executor, address, storage)
    observers = mirrors(mlflow, spec.name)
    with rung_progress() as bar, incomplete_is_exit_1():
        bars = RungBars(bar, show_workers=executor != "local")
        summary = run_study(spec, out, device, on_plan=bars.add_plans, execute=options,
                            observers=[bars, *observers])
    _print_summary(summary, out)


def _print_summary(summary: dict, out: Path) -> None:
    console.print(rung_table(summary))
    for line in fit_lines(summary):
        console.print(line)
    console.print(f"report: {out / 'report.html'}")


@app.command(help="Rebuild report.html, summary.json and runs.csv of a study from its "
                  "database.\n\nExample: scalelab report studies/default")
def report(folder: Path = typer.Argument(..., help="study folder")) -> None:
    from scalelab.study import write_outputs

    with StudyStore.open_readonly(folder) as store:
        write_outputs(store)
    console.print(f"report: {folder / 'report.html'}")


@app.command(help="Show the rung table and fitted law of a study.\n\n"
                  "Example: scalelab show studies/default")
def show(folder: Path = typer.Argument(..., help="study folder")) -> None:
    from scalelab.study import build_summary

    with StudyStore.open_readonly(folder) as store:
        summary = build_summary(store)
    console.print(rung_table(summary))
    for line in fit_lines(summary):
        console.print(line)
