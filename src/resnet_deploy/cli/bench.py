"""`resnet-bench`: compare latency and accuracy parity of every artifact (filled in by issue 5)."""

from __future__ import annotations

import typer

from resnet_deploy.cli import common

app = typer.Typer(
    help="Benchmark latency and accuracy parity of exported ResNets.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def compare() -> None:
    """Benchmark every artifact in the workspace."""
    raise typer.Exit(2)


main = common.main_wrapper(app)
