"""Progress and messages on stderr, so stdout stays clean for --json and friends."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False, soft_wrap=True)  # logs: one message, one line


def stdout_console() -> Console:
    """For results, the one thing a command prints to stdout (`> results.txt` keeps them; progress stays on stderr)."""
    return Console(highlight=False, soft_wrap=True)


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """A spinner while the step runs, then `✓ message (time)`; on error the spinner just goes away."""
    start = time.perf_counter()
    message = escape(message)  # paths and names are shown as typed: `ft[red].pt` is not markup
    with console.status(message + " ..."):
        yield
    console.print(f"[green]✓[/] {message} [dim]({time.perf_counter() - start:.1f}s)[/]")


@contextlib.contextmanager
def quiet_logger(name: str | None = None) -> Iterator[None]:
    """Errors only from the `logging` logger `name` (None: the root) while the block runs: libraries' advice and
    notes (ONNX Runtime's quantizer, torch's C++ extension helper) would otherwise interleave with ours."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}")


def progress() -> Progress:
    """A bar for loops over images or iterations."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 missing key`, `2 missing keys`: messages read as written by a person, not `1 missing keys`."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def listing(items: list[str], shown: int = 3) -> str:
    """`a, b` when that is all of them, `first: a, b, c` when more were left out."""
    return ("first: " if len(items) > shown else "") + ", ".join(items[:shown])
