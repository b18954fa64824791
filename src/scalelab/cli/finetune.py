"""`scalelab finetune`: full and PEFT fine-tuning of a trained study's rungs on a second task.

Every argument is checked on a read-only view of the study first (bad input: one line, exit code
2, nothing written), then the study is opened for writing (its lock: one writer at a time).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from scalelab.cli.app import app, check_device, console, named_progress
from scalelab.cli.study import ADDRESS_OPTION, EXECUTOR_OPTION, MLFLOW_OPTION
from scalelab.errors import UserError
from scalelab.finetune.methods import DEFAULT_METHODS
from scalelab.finetune.second_task import ON_HELP

FINETUNE_HELP = f"""Fine-tune every finished rung of a study on a second task with each method \
(full fine-tuning and PEFT), from the rung's final weights, with the same budget and batches for \
every method; measure trainable parameters, zero-shot and fine-tuned validation loss, time, \
tokens/s, peak memory and bytes on disk; store each result in study.db, fit a law per method and \
the gap of each method to full fine-tuning against N, and rebuild the report.

Methods (default {",".join(DEFAULT_METHODS)}):

    full                 every weight trains; lr 1x the rung's own peak
    lora:r=R             LoRA of rank R on every Linear layer but the output;
                         alpha 16, dropout 0, lr 3x the rung's peak
       :alpha=A :dropout=P :targets=all|attn|mlp|NAME+NAME :lr=X|Mx
    ia3                  IA3 scaling vectors (attention projections, MLP
                         inner activation); lr 10x; :targets=... :lr=...

The second task (--on): {ON_HELP}. The default is this Python's standard-library test/ \
folder (.py files, byte-level), which the default study left out of its training data.

Running the same command again resumes: finished fine-tunes are kept, an interrupted one \
continues from its last checkpoint; --redo makes them again. Each fine-tune is a job of the \
executor, as a rung is in `scalelab run`: --executor ray trains them side by side as Ray \
tasks, and --mlflow mirrors each one (its curve by step, its measurements) as a child run of \
the study's.

Examples:

    scalelab finetune studies/default
    scalelab finetune studies/default --methods full,lora:r=8,lora:r=8:targets=attn,ia3
    scalelab finetune studies/mine --rungs 0,2 \\
        --on '{{name: text, path: notes/, extensions: [.md]}}'
"""


@contextlib.contextmanager
def notes() -> Iterator[None]:
    """Warnings of the task loaders (binary files skipped) as one `note:` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    for msg in dict.fromkeys(str(w.message) for w in caught):
        console.print(f"note: {msg}", highlight=False)


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def finetune_table(records: list[dict]) -> Table:
    from scalelab.report.html import fmt_bytes

    table = Table(title="fine-tunes", title_justify="left")
    for col in ("name", "rung", "N (non-emb)", "trainable", "zero-shot", "val loss", "time s",
                "units/s", "peak mem", "train state", "file"):
        table.add_column(col, justify="right")
    for f in records:
        table.add_row(
            f["name"], str(f["of_rung"]), _f(f["n_nonembed"], ",d"),
            f"{_f(f.get('trainable_params'), ',d')} "
            f"({_f(100 * (f.get('trainable_fraction') or 0), '.3g')}%)",
            _f(f.get("zero_shot_loss"), ".4f"), _f(f.get("val_loss"), ".4f") if f["status"] ==
            "done" else f["status"], _f(f.get("train_seconds"), ".1f"),
            _f(f.get("units_per_s"), ",.0f"), fmt_bytes(f.get("peak_mem_bytes")),
            fmt_bytes(f.get("train_state_bytes")), fmt_bytes(f.get("bytes")))
    return table


def gap_lines(analysis: dict) -> list[str]:
    lines = []
    for g in analysis.get("gaps") or []:
        pts = "; ".join(f"N={p['n_nonembed']:,}: {p['gap']:+.4f} [{p['lo']:+.4f}, {p['hi']:+.4f}]"
                        for p in g["points"])
        lines.append(f"{g['method']} - {g['vs']} (nats): {pts}")
        t = g.get("trend")
        if t:
            lines.append(f"  trend: {t['slope_per_decade']:+.4f} nats per decade of N "
                         f"[{t['lo']:+.4f}, {t['hi']:+.4f}]: {t['verdict']}")
    return lines


@app.command(help=FINETUNE_HELP)
def finetune(
    folder: Path = typer.Argument(..., help="study folder"),
    on: str | None = typer.Option(None, "--on", help=f"second task: {ON_HELP}"),
    methods: str | None = typer.Option(
        None, "--methods", help=f"comma-separated methods [default: {','.join(DEFAULT_METHODS)}]"),
    rungs: str | None = typer.Option(None, "--rungs",
                                     help="rung indices, comma-separated [default: all]"),
    tokens: int | None = typer.Option(
        None, "--tokens", help="fine-tuning budget per model, in the second task's unit "
                               "[default: 25% of the smallest chosen rung's D]"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    redo: bool = typer.Option(False, "--redo", help="make stored fine-tunes again"),
    executor: str = EXECUTOR_OPTION,
    address: str | None = ADDRESS_OPTION,
    mlflow: str | None = MLFLOW_OPTION,
) -> None:
    import torch

    from scalelab.cli.study import execute_options, incomplete_is_exit_1, mirrors, outputs_kept
    from scalelab.finetune.driver import run_finetunes
    from scalelab.finetune.plan import plan_finetune
    from scalelab.storage import StudyStore
    from scalelab.study import use_executor, write_outputs
    from scalelab.train.measure import resolve_device

    check_device(device)
    try:
        import peft  # noqa: F401
    except ImportError:
        raise UserError("fine-tuning needs the optional package peft: "
                        "pip install 'scalelab[finetune]'") from None
    with StudyStore.open_readonly(folder) as ro, notes():
        study = ro.study()
        if study is None:
            raise UserError(f"{folder} has no study recorded")
        args = dict(on=on, methods=methods, which=rungs, tokens=tokens, redo=redo)
        plan = plan_finetune(folder, study, ro.rungs(), ro.finetunes(), **args)
    dev = resolve_device(device)
    if plan.spec.measure.threads:
        torch.set_num_threads(plan.spec.measure.threads)
    console.print(f"second task {plan.second.slug}: {plan.task.fingerprint().get('files', '?')} "
                  f"files, {(plan.jobs[0].plan.D if plan.jobs else plan.D):,} "
                  f"{plan.task.unit}s per fine-tune; "
                  f"{len(plan.jobs)} to train, {len(plan.kept)} kept")
    observers = mirrors(mlflow, plan.spec.name)
    with use_executor(None, execute_options(executor, address, None), plan.spec) as ex, \
            StudyStore.create_or_open(folder) as store, incomplete_is_exit_1():
        # Re-plan under the lock: another process may have changed the study in between.
        plan = plan_finetune(folder, store.study(), store.rungs(), store.finetunes(), **args)
        for observer in observers:  # each fine-tune a child run of the study's MLflow run
            observer.on_study(store.folder, store.study()["spec"])
        with named_progress() as on_progress, outputs_kept(store):
            records = run_finetunes(store, plan, dev, on_event=lambda m: console.print(m),
                                    on_progress=on_progress, executor=ex, observers=observers)
        summary = write_outputs(store)
    for observer in observers:  # the report into the study's MLflow run
        observer.on_outputs(store.folder, summary)
    console.print(finetune_table(records))
    for a in summary.get("finetune_scaling") or []:
        if a["task"] == plan.second.slug:
            for line in gap_lines(a):
                console.print(line)
    console.print(f"report: {Path(folder) / 'report.html'}")
