"""Commands of a study: run, report, show."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scalelab.cli.app import app, check_device, console, err_console
from scalelab.errors import UserError
from scalelab.execute import executor_class, executor_help
from scalelab.execute.base import BaseObserver
from scalelab.spec import EXAMPLE_SPEC, base_note, load_spec, preset_spec, quick_spec
from scalelab.storage import StudyStore
from scalelab.tasks import declared_metrics
from scalelab.values import finite, fmt_bytes, fmt_count, fmt_seconds, fmt_spec

# The study modules import torch (seconds); they are imported inside the commands that need
# them, so `scalelab fit` and `--help` start fast.

RUN_HELP = f"""Train the ladder of a study, fit its scaling law and write its report.

Without SPEC the default study runs (the `default` preset): a GPT ladder of 7 sizes (1.3e4 to \
1.0e6 non-embedding parameters; the five smallest 6 times each from different seeds, 32 runs) on \
this Python's standard-library source, about 9 minutes on 2 CPU cores. Running the same command \
again on an interrupted study resumes it: finished rungs are kept, an unfinished one continues \
from its last checkpoint. Ctrl-C says what was kept and where each rung resumes (exit code 130).

Example:

    scalelab run my-study.yaml --out studies/mine

Example spec (every key optional; unknown keys are errors):

```
{EXAMPLE_SPEC}```"""


def _columns(summary: dict) -> tuple[str, list[tuple[str, str]]]:
    """The study's unit of D (byte, token, example) and its quality columns (key, header): bits
    per byte for byte-level text, error rate for classifiers, RMSE for regression."""
    corpus = summary["study"].get("corpus") or {}
    metrics = corpus.get("metrics") or ["bpb"]
    quality = [(m.column, m.short) for m in declared_metrics()
               if m.name in metrics and m.complement is None]
    return corpus.get("unit") or "byte", quality


def _cells(r: dict, quality: list[tuple[str, str]], wide: bool) -> dict[str, str]:
    """One rung's cells by column. Compact: counts in SI units (12.3k, 1.2M) so the table fits a
    terminal; wide: exact counts and bytes."""
    count = (lambda v: fmt_spec(v, ",d", dash="-")) if wide else (lambda v: fmt_count(v, "-"))
    mfu = finite(r.get("mfu"))
    return {
        "rung": str(r["rung"]), "status": str(r["status"]), "N": count(r["n_nonembed"]),
        "shape": r.get("describe") or "-", "D": count(r["D"]),
        "val loss": fmt_spec(r["val_loss"], ".4f", dash="-"),
        **{label: fmt_spec(r.get(key), ".4f", dash="-") for key, label in quality},
        "train loss": fmt_spec(r.get("train_loss"), ".4f", dash="-"),
        "FLOPs": fmt_count(r["flops"], "-"), "time": fmt_seconds(r["train_seconds"], "-"),
        "D/s": fmt_count(r["units_per_s"], "-"),
        "MFU": "-" if mfu is None else f"{100 * mfu:.1f}%",
        "lat b1 ms": fmt_spec(r["latency_ms"].get("1"), ".3g", dash="-"),
        "weights": (fmt_spec(r["checkpoint_bytes"], ",d", dash="-") if wide
                    else fmt_bytes(r["checkpoint_bytes"], "-")),
    }


_TEXT_COLUMNS = ("status", "shape")
_WRAPS = ("shape",)  # the only cells that may wrap (a factory's shape can be long); no number does


def _table(title: str, columns: list[str], rows: list[dict[str, str]], caption: str,
           split: bool) -> Table:
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for col in columns:
        # `split`: a header of two words takes two lines, so a column is as wide as its numbers.
        table.add_column(col.replace(" ", "\n") if split and col.count(" ") == 1 else col,
                         justify="left" if col in _TEXT_COLUMNS else "right",
                         no_wrap=col not in _WRAPS, overflow="fold")
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    return table


def _natural_width(table: Table) -> int:
    """The width `table` takes when nothing limits it."""
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def rung_tables(summary: dict, wide: bool = False, width: int | None = None) -> list[Table]:
    """The rungs of a study as tables that fit 100 columns: what each rung is and the quality it
    reached, then what it cost (both keyed by rung), numbers rounded, each table's units in a
    caption; headers take two lines where the table would be wider than `width`. `wide`: one
    table of every column, counts and bytes exact (print it at its natural width)."""
    unit, quality = _columns(summary)
    rows = [_cells(r, quality, wide) for r in summary["rungs"]]
    what = ["rung", "status", "N", "shape", "D", "val loss", *(label for _, label in quality),
            "train loss"]
    cost = ["FLOPs", "time", "D/s", "MFU", "lat b1 ms", "weights"]
    name = f"study {summary['study']['name']}"
    notes = [f"N: non-embedding parameters; D: {unit}s trained on",
             f"time: training wall time; D/s: {unit}s per second of training; lat b1: inference "
             "latency at batch 1 (median); weights: checkpoint size"]
    specs = ([(name, [*what, *cost], "; ".join(notes))] if wide else
             [(name, what, notes[0]), ("cost", ["rung", *cost], notes[1])])
    tables = []
    for title, columns, caption in specs:
        table = _table(title, columns, rows, caption, split=False)
        if width is not None and _natural_width(table) > width:
            table = _table(title, columns, rows, caption, split=True)
        tables.append(table)
    return tables


def print_rung_tables(summary: dict, wide: bool = False) -> None:
    """The rung tables on the console; a wide table is printed at its own width, never cut."""
    if not wide:
        for table in rung_tables(summary, width=console.width):
            console.print(table)
        return
    (table,) = rung_tables(summary, wide=True)
    # Rich lays a table out within the console's width; the wide one gets its own width.
    width = console.width
    console.width = max(width, _natural_width(table))
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def status_lines(summary: dict) -> list[str]:
    """One line per rung that ended without a result: why it failed or where it diverged (the
    table only has room for the status)."""
    lines = []
    for r in summary["rungs"]:
        if r.get("status") == "failed":
            lines.append(f"rung {r['rung']}: failed: {r.get('failed_reason') or 'no reason kept'}")
        elif r.get("status") == "diverged":
            lines.append(f"rung {r['rung']}: diverged at step {r.get('diverged_step')}: "
                         f"{r.get('diverged_reason') or 'no reason kept'}")
    return lines


def fit_lines(summary: dict) -> list[str]:
    """One line per fitted law (loss, and the error rate of a classifier), one for its
    holdout (the largest rung predicted by the law fitted to the others) and one for its trust
    horizon (from the extrapolation profile). A parameter on a bound of the fit says so. An exact
    fit (zero degrees of freedom) is one line that says so, not a result. Fit records of any
    stored shape (old studies included) are read through `FitRecord.from_dict`. No law is one
    line that says why (`scalelab.laws.missing`)."""
    from scalelab.laws.missing import missing_law
    from scalelab.laws.profile import horizon_text
    from scalelab.records import FitRecord

    if not summary["fits"]:
        return [missing_law(summary) or ""]

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
            # As `fit` and the report do: a value on a bound of the fit is not an estimate.
            flag = " (on a bound)" if name in fit.on_bound else ""
            parts.append(f"{name}={num(value, '.4g')}{band}{flag}")
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


EXECUTOR_OPTION = typer.Option("local", "--executor", help=f"where jobs run: {executor_help()}")
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
    worker that starts or resumes a rung, and for each rung that fails. A rung finished by an
    earlier run (a resumed study) gets no job: its bar shows it finished, with its loss."""

    def __init__(self, bar: Progress, show_workers: bool):
        self.bar = bar
        self.show_workers = show_workers
        self.ids: dict[str, int] = {}
        self.plans: dict = {}
        self.since: dict[str, tuple[float, int]] = {}  # when and at which step a worker started
        self.folder: Path | None = None
        self.unjobbed: set[str] = set()  # plans added, not yet matched with the run's jobs

    def add_plans(self, plans: list) -> None:
        for p in plans:
            key = f"rung-{p.rung}"
            self.plans[key] = p
            self.ids[key] = self.bar.add_task(f"rung {p.rung} ({p.n_nonembed:,} params)",
                                              total=p.steps, loss="-", rate="-", start=False)
            self.unjobbed.add(key)

    def on_study(self, folder: Path, spec: dict) -> None:
        self.folder = Path(folder)

    def on_jobs(self, jobs: list) -> None:
        """The ladder's rungs without a job were finished before this run: read from the
        study's record how they ended."""
        keep = self.unjobbed - {j.key for j in jobs}
        self.unjobbed = set()
        if not keep or self.folder is None:
            return
        with StudyStore.open_readonly(self.folder) as store:
            rows = {f"rung-{r['rung']}": r for r in store.rungs()}
        for key in sorted(keep, key=lambda k: self.plans[k].rung):
            row = rows.get(key)
            if row is not None:
                self._finished(self.ids[key], self.plans[key], row["status"], row["val_loss"])

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
            self._finished(tid, plan, event.result.status, event.result.val_loss)
        elif isinstance(event, Failed):
            self.bar.update(tid, description=f"rung {plan.rung} FAILED")
            self.bar.console.print(f"{event.key}: failed: {event.error}")
            self.bar.stop_task(tid)

    def _finished(self, tid: int, plan, status: str, val_loss: float | None) -> None:
        if status == "done":
            self.bar.update(tid, completed=plan.steps, loss=f"{val_loss:.3f} (val)")
        else:
            self.bar.update(tid, description=f"rung {plan.rung} DIVERGED", loss="-")
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


class ResumeNote(BaseObserver):
    """Where the run's jobs keep their resume points, so that an interrupted run can say what
    it kept and where each unfinished rung resumes (read from disk, as the rerun will)."""

    def __init__(self) -> None:
        self.resume_dirs: dict[int, Path] = {}

    def on_jobs(self, jobs: list) -> None:
        self.resume_dirs.update({j.plan.rung: Path(j.resume_dir) for j in jobs
                                 if j.kind == "rung"})

    def line(self, folder: Path) -> str:
        """One line: the rungs finished and kept, where unfinished ones resume, what to do."""
        from scalelab.execute.job import resume_step
        from scalelab.records import FINISHED

        if not (folder / "study.db").is_file():
            return "interrupted before anything was recorded; run the same command to start"
        again = "run the same command to resume"
        with StudyStore.open_readonly(folder) as store:
            rows = store.rungs()
        kept = sum(r["status"] in FINISHED for r in rows)
        parts = [f"interrupted: {kept} of {len(rows)} rungs finished and kept"]
        for r in rows:
            if r["status"] in FINISHED or r["rung"] not in self.resume_dirs:
                continue
            step = resume_step(self.resume_dirs[r["rung"]])
            if step:
                parts.append(f"rung {r['rung']} resumes from step {step}")
            elif r["status"] == "running":
                parts.append(f"rung {r['rung']} starts over (no checkpoint yet)")
        if rows and kept == len(rows):
            again = "run the same command to fit the law and write the report"
        return "; ".join([*parts, again])


@contextmanager
def interrupted_is_exit_130(folder: Path, note: ResumeNote) -> Iterator[None]:
    """Ctrl-C: one line on what was kept and how to resume, and exit code 130 (128 + SIGINT),
    as a shell reports an interrupted command."""
    try:
        yield
    except KeyboardInterrupt:
        err_console.print(note.line(folder), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


@contextmanager
def outputs_kept(store: StudyStore) -> Iterator[None]:
    """Jobs that could not all finish (StudyIncomplete): the outputs still show what did."""
    from scalelab.study import StudyIncomplete, write_outputs

    try:
        yield
    except StudyIncomplete:
        write_outputs(store)
        raise


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
    replan: bool = typer.Option(
        False, "--replan", help="resume a study whose model changed since it was planned (a "
        "factory edited, say): its unfinished rungs are planned again from the model as it is "
        "now, their curves and resume points dropped; refused when a finished rung was made by "
        "another model (a law over two models is wrong: use a new --out). Without it a changed "
        "model is refused"),
) -> None:
    from scalelab.study import default_out, run_study

    check_device(device)
    if spec_path is not None and preset is not None:
        raise UserError("give a SPEC file or --preset, not both")
    spec = load_spec(spec_path) if spec_path else preset_spec(preset or "default")
    if spec_path is not None and (note := base_note(spec_path)) is not None:
        console.print(note, highlight=False, soft_wrap=True)
    if quick:
        spec = quick_spec(spec)
    out = out or default_out(spec)
    options = execute_options(executor, address, storage)
    observers = mirrors(mlflow, spec.name)
    note = ResumeNote()
    # The bars stop (and show where each rung got to) before the interruption's line is printed.
    with interrupted_is_exit_130(out, note), rung_progress() as bar, incomplete_is_exit_1():
        bars = RungBars(bar, show_workers=executor_class(executor).remote)
        summary = run_study(spec, out, device, on_plan=bars.add_plans, execute=options,
                            observers=[bars, note, *observers], replan=replan)
    _print_summary(summary, out)


def _print_summary(summary: dict, out: Path) -> None:
    print_rung_tables(summary)
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


@app.command(help="Show the rung tables and fitted law of a study: what each rung is and "
                  "reached, then what it cost, sized to fit 100 columns.\n\n"
                  "Example: scalelab show studies/default")
def show(
    folder: Path = typer.Argument(..., help="study folder"),
    wide: bool = typer.Option(
        False, "--wide", help="one table of every column, counts and bytes exact, as wide as it "
        "needs (lines longer than the terminal are not cut)"),
    as_json: bool = typer.Option(
        False, "--json", help="print the study's summary as JSON (the content of summary.json, "
        "rebuilt from the database) instead of tables"),
) -> None:
    from scalelab.study import build_summary

    with StudyStore.open_readonly(folder) as store:
        summary = build_summary(store)
    if as_json:
        # Plain stdout, not the Rich console: no wrapping or markup inside the JSON.
        typer.echo(json.dumps(summary, indent=2))
        return
    print_rung_tables(summary, wide)
    for line in status_lines(summary) + fit_lines(summary):
        console.print(line, highlight=False)
