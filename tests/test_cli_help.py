"""--help reads as prose: typer keeps a command docstring's line breaks, so a paragraph wrapped in the source
comes out cut mid-sentence at every terminal width (`... ONNX INT8 (from` / `./calibration) and ...`)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from resnet_deploy.cli import bench, export

COMMANDS = [(app, info) for app in (export.app, bench.app) for info in app.registered_commands]


@pytest.mark.parametrize(("app", "info"), COMMANDS, ids=[info.name or info.callback.__name__ for _, info in COMMANDS])
def test_each_help_paragraph_is_one_line_in_the_source(app, info) -> None:
    doc = (info.help or info.callback.__doc__ or "").strip()
    assert doc, f"{info.callback.__name__} has no help text"
    paragraphs = [p.strip() for p in doc.split("\n\n")]
    assert all("\n" not in p for p in paragraphs), paragraphs


def test_help_text_is_shown_whole() -> None:
    result = CliRunner().invoke(bench.app, ["compare", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "ONNX INT8 (from ./calibration) and, with TensorRT and a GPU, engines" in result.output


@pytest.mark.parametrize(("app", "info"), COMMANDS, ids=[info.name or info.callback.__name__ for _, info in COMMANDS])
def test_no_option_help_is_cut_in_an_80_column_terminal(app, info) -> None:
    """rich cuts a word longer than its column with "…": a run of suffixes joined by "/" was one such word."""
    name = info.name or info.callback.__name__
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, result.output
