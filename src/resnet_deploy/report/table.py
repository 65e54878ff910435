"""The comparison as a terminal table, with the notes, floor and warnings under it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from resnet_deploy.console import console as default_console
from resnet_deploy.report.rows import columns, floor_lines, notes, row_cells, warning_lines
from resnet_deploy.results import CompareResult


def print_table(result: CompareResult, console: Any = None) -> None:
    """The table on `console` (default: stderr's); on a pipe or a CI log, at full width."""
    console = console or default_console
    title = f"{result.model.get('architecture', 'model')} · {result.device} · {result.threads} threads"
    if result.served is not None:
        served = result.served
        title = f"{result.model.get('architecture', 'model')} · triton {served['url']} ({served['protocol']})"
    table = Table(title=title, title_justify="left", show_edge=False)
    cols = columns(result)
    for col in cols:
        numeric = col in ("batch", "concurrency", "p50 ms", "p99 ms", "img/s", "speedup", "cosine", "rel L2", "top-1")
        table.add_column(col, justify="right" if numeric else "left", no_wrap=True)
    for row in result.rows:
        cells = row_cells(result, row)
        style = {"pass": "green", "FAIL": "bold red", "ERROR": "red"}[cells["result"]]
        cells["result"] = f"[{style}]{cells['result']}[/]"
        table.add_row(*(cells[c] for c in cols))
    if not console.is_terminal and console.width < 200:
        # A CI log or a pipe: rich would squeeze the table into 80 columns; print it at full width.
        console = Console(file=console.file, width=200, highlight=False, color_system=None)
    console.print(table)
    for line in [*notes(result), *floor_lines(result), *warning_lines(result)]:
        color = "yellow" if line.startswith("warning") else "red" if line.startswith(("error", "fail")) else "dim"
        console.print(f"[{color}]{line}[/]", soft_wrap=True)
