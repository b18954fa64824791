"""Commands of a study: run, report, show."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scalelab.cli.app import app, console
from scalelab.spec import EXAMPLE_SPEC, StudySpec, load_spec, quick_spec
from scalelab.store import StudyStore

# The study modules import torch (seconds); they are imported inside the commands that need
# them, so `scalelab fit` and `--help` start fast.

RUN_HELP = f"""Train the ladder of a study, fit its scaling law and write its report.

Without SPEC the default study runs: a GPT ladder of 6 rungs (about 1e4 to 1e6 non-embedding \
parameters) on this Python's standard-library source. Running the same command again on an \
interrupted study resumes it: finished rungs are kept, an unfinished one continues from its last \
checkpoint.

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


@app.command(help=RUN_HELP)
def run(
    spec_path: Path | None = typer.Argument(None, metavar="[SPEC.yaml]", help="study spec"),
    out: Path | None = typer.Option(None, "--out", help="study folder [default: studies/NAME]"),
    quick: bool = typer.Option(False, "--quick", help="a 1-2 minute version for a first look"),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu or cuda [default: the spec's device, auto]"),
) -> None:
    from scalelab.records import RungPlan
    from scalelab.study import default_out, run_study

    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("must be auto, cpu or cuda", param_hint="--device")
    spec = load_spec(spec_path) if spec_path else StudySpec()
    if quick:
        spec = quick_spec(spec)
    out = out or default_out(spec)

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}/s"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as bar:
        tasks: dict[int, int] = {}

        def on_plan(plans: list[RungPlan]) -> None:
            for p in plans:
                tasks[p.rung] = bar.add_task(
                    f"rung {p.rung} ({p.n_nonembed:,} params)", total=p.steps, loss="-",
                    rate="-", start=False)

        def on_step(plan: RungPlan, step: int, loss: float) -> None:
            if step % 10 and step != plan.steps:
                return
            task = bar.tasks[tasks[plan.rung]]
            if not task.started:
                bar.start_task(tasks[plan.rung])
            speed = task.speed
            rate = f"{speed * plan.units_per_step:,.0f}" if speed else "-"
            bar.update(tasks[plan.rung], completed=step, loss=f"{loss:.3f}", rate=rate)

        def on_done(plan: RungPlan, result: dict) -> None:
            tid = tasks[plan.rung]
            if result["status"] == "done":
                bar.update(tid, completed=plan.steps, loss=f"{result['val_loss']:.3f} (val)")
            else:
                bar.update(tid, description=f"rung {plan.rung} DIVERGED", loss="-")
            bar.stop_task(tid)

        summary = run_study(spec, out, device, on_step, on_done, on_plan)
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
