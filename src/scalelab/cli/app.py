"""The Typer app every command module registers on, and the shared Rich console."""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


def check_device(device: str | None) -> None:
    """`--device`: one line and exit code 2 for anything but auto, cpu or cuda (None: the
    spec's own)."""
    from scalelab.errors import UserError

    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")


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
