"""How commands answer: rich tables for people, JSON for scripts (--json), one line on stderr
for errors, progress on stderr while a long step runs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False)
progress_console = Console(stderr=True, highlight=False)


def emit_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def note(message: str) -> None:
    """A line for people that scripts need not parse (stderr)."""
    typer.echo(message, err=True)


@contextlib.contextmanager
def working(message: str) -> Iterator[None]:
    """A spinner on stderr while a long request runs (nothing when stderr is not a terminal)."""
    with progress_console.status(message):
        yield


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(Text(_cell(value)) for value in row))
    console.print(grid)


def facts(title: str | None, pairs: Sequence[tuple[str, Any]]) -> None:
    if title:
        console.print(Text(title, style="italic"))
    grid = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in pairs:
        if value is not None and value != "":
            grid.add_row(name, Text(_cell(value)))
    console.print(grid)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "-"
    return str(value)


def mib(value: object) -> str:
    return f"{int(value) / 2**20:.0f} MiB" if isinstance(value, int | float) else "-"
