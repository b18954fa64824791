"""`scalelab list`: the registered tasks, families, compression methods, presets and laws."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from scalelab.catalog import KINDS, Entry, catalog
from scalelab.cli.app import app, console


@app.command("list")
def list_(
    kind: str | None = typer.Argument(
        None, metavar="[KIND]", help=f"one of {', '.join(KINDS)} [default: all of them]"),
) -> None:
    """List what scalelab knows by name, each with its options and their defaults, read from
    the registries a study uses: tasks and families (the spec's `task.name`, `family.name` and
    their options), compression methods (`--methods`, `compress.methods`), presets
    (`scalelab run --preset`) and law forms (`scalelab fit --law`)."""
    for k in KINDS if kind is None else [kind]:
        entries = catalog(k)  # an unknown kind: one line, exit 2, before anything is printed
        console.print(f"[bold]{k}[/bold]")
        for entry in entries:
            _print_entry(entry)
        console.print()


def _print_entry(entry: Entry) -> None:
    # Text, not markup: types and syntax such as list[str] or distill[:RUNG] contain brackets.
    facts = "; ".join(f"{key}: {value}" for key, value in entry.facts.items())
    console.print(Text.assemble("  ", (entry.name, "bold cyan"), "  ", entry.summary))
    if facts:
        console.print(Text(f"    {facts}", style="dim"))
    if not entry.options:
        return
    table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
    for column in ("option", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    for opt in entry.options:
        default = "required" if opt.required else json.dumps(opt.default)
        table.add_row(*map(Text, (f"    {opt.name}", opt.type, default, opt.description)))
    console.print(table, highlight=False)
