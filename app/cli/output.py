"""What every command prints through: one console, one-line errors that end the command, tables, raw JSON."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

console = Console()
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")]


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    shown = Table(title=title)
    for column in columns:
        shown.add_column(column)
    for row in rows:
        shown.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(shown)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
