"""The Typer app every command module registers on, and the shared Rich console."""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from importlib import metadata

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(
    name="scalelab",
    help="Train a ladder of models, fit scaling laws, compress, and pick the model to ship.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Markdown: paragraphs re-flow to the terminal and indented or fenced examples stay as written.
    rich_markup_mode="markdown",
)
# Rich wraps at 80 columns when output is not a terminal (pipes, CI logs): too narrow for the
# rung table. A width set in COLUMNS is the user's and kept.
console = (Console() if Console().is_terminal or os.environ.get("COLUMNS", "").isdigit()
           else Console(width=160))
err_console = Console(stderr=True)


def _version(show: bool) -> None:
    if show:
        print(f"scalelab {metadata.version('scalelab')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the installed version and exit")) -> None:
    """Train a ladder of models, fit scaling laws, compress, and pick the model to ship."""


def choices(options: type[StrEnum]) -> str:
    """The values of a choice for messages and help: "auto, cpu or cuda"."""
    values = [m.value for m in options]
    return ", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0]


def check_choice(option: str, value: str | None, options: type[StrEnum]) -> None:
    """A choice option given as text: one line and exit code 2 for a value not among `options`
    (None: not given). Typer's own choice check would print a usage panel instead of the one
    line every other bad input gets."""
    from scalelab.errors import UserError

    if value is not None and value not in {m.value for m in options}:
        raise UserError(f"{option} must be {choices(options)}, got {value!r}")


def check_device(device: str | None) -> None:
    """`--device`: one of `spec.Device` (None: the spec's own)."""
    from scalelab.spec import Device

    check_choice("--device", device, Device)


@contextmanager
def named_progress() -> Iterator[Callable[[str, int, int, float], None]]:
    """Progress bars for work that reports `on_progress(name, step, total, loss)` (variants,
    fine-tunes): one bar per name, updated every 10 steps; gone when the block ends."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        bars: dict[str, int] = {}

        def on_progress(name: str, step: int, total: int, loss: float) -> None:
            if name not in bars:
                bars[name] = bar.add_task(name, total=total, loss="-")
            if step % 10 == 0 or step == total:
                bar.update(bars[name], completed=step, loss=f"{loss:.3f}")

        yield on_progress
