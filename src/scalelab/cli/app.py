"""The Typer app every command module registers on, and the shared Rich console."""

import typer
from rich.console import Console

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
# rung table.
console = Console() if Console().is_terminal else Console(width=160)
err_console = Console(stderr=True)
