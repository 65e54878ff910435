"""Report formats from a hand-made result: every row in every format, failures and errors named."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from resnet_deploy import report
from resnet_deploy.bench.latency import summarize
from resnet_deploy.errors import UsageError
from resnet_deploy.parity import DEFAULT_TOLERANCES, ParityMetrics, check
from resnet_deploy.results import CompareResult, Row

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _parity(cosine: float, top1: float, rel: float) -> ParityMetrics:
    return ParityMetrics(0.1, 0.01, rel, cosine, cosine - 0.001, top1, 0.9, 32)


def _row(key: str, runtime: str, precision: str, ms: float | None, parity: ParityMetrics | None, error=None) -> Row:
    lat = summarize([ms / 1e3 * f for f in (0.9, 1.0, 1.1, 1.3)], batch=1, warmup=1, threads=2) if ms else None
    violations = check(parity, DEFAULT_TOLERANCES[precision]) if parity else []
    return Row(
        artifact_key=key,
        artifact_path=None if key == "pytorch" else f"/ws/resnet18/{key}.onnx",
        format="pytorch" if key == "pytorch" else "onnx",
        runtime=runtime,
        precision=precision,
        device="cpu",
        batch=1,
        size=(64, 64),
        copies_included=True,
        latency=lat,
        parity=parity,
        violations=violations,
        passed=error is None and not violations,
        error=error,
    )


@pytest.fixture()
def result() -> CompareResult:
    rows = [
        _row("pytorch", "torch-eager", "fp32", 40.0, _parity(1.0, 1.0, 0.0)),
        _row("onnx-fp32", "onnxruntime-cpu", "fp32", 20.0, _parity(1.0, 1.0, 1e-7)),
        _row("onnx-int8", "onnxruntime-cpu", "int8", 10.0, _parity(0.95, 0.80, 0.3)),  # fails its tolerance
        _row("static", "onnxruntime-cpu", "fp32", None, None, error="input 1x3x96x96 does not fit static.onnx"),
    ]
    return CompareResult(
        rows=rows,
        reference_distinct_classes=9,
        degenerate=False,
        images=32,
        threads=2,
        device="cpu",
        model={"architecture": "resnet18", "weights": "ckpt.pt"},
        parity_size=(64, 64),
        images_dir="heldout",
        warmup=1,
        iters=4,
        error_codes=[2],
    )


def test_speedup_against_eager(result: CompareResult) -> None:
    assert result.speedup(result.rows[0]) == pytest.approx(1.0)
    assert result.speedup(result.rows[1]) == pytest.approx(2.0)
    assert result.speedup(result.rows[3]) is None
    assert not result.passed and result.exit_code == 2


def test_speedup_and_throughput_are_medians_and_a_stall_is_named(result: CompareResult) -> None:
    """One stall of 30x in the baseline's 30 iterations doubles its mean: a mean-based speedup would call every
    other row twice as fast as it is. The median ignores it, and the stall is named, once."""
    from resnet_deploy.results import noise_warning

    base = result.rows[0]
    times = [0.040] * 29 + [1.2]
    base.latency = summarize(times, batch=1, warmup=1, threads=2)
    assert base.latency.mean_ms > 75 and base.latency.p50_ms == pytest.approx(40.0)
    assert result.speedup(result.rows[1]) == pytest.approx(40.0 / result.rows[1].latency.p50_ms)
    assert base.latency.images_per_s == pytest.approx(1 / 0.040)
    assert noise_warning(result.rows[1:]) is None
    said = noise_warning(result.rows)
    assert said is not None and said.startswith(
        "noisy timing: p99 over 3x p50 in 1 row (pytorch · torch-eager b1 64x64)"
    )


def test_json_has_every_row(result: CompareResult) -> None:
    data = json.loads(report.to_json(result))
    assert len(data["rows"]) == 4
    assert data["rows"][1]["speedup"] == pytest.approx(2.0)
    assert data["rows"][1]["latency"]["p99_ms"] > 0
    assert {v["metric"] for v in data["rows"][2]["violations"]} == {"cosine", "top1_agreement"}
    assert data["rows"][3]["error"].startswith("input 1x3x96x96")
    assert data["passed"] is False


def test_csv_has_every_row_and_metric(result: CompareResult) -> None:
    records = list(csv.DictReader(io.StringIO(report.to_csv(result))))
    assert [r["artifact_key"] for r in records] == ["pytorch", "onnx-fp32", "onnx-int8", "static"]
    for rec in records[:3]:
        for key in (*report.LATENCY_FIELDS, *report.PARITY_FIELDS):
            assert rec[key] != "", key
    assert records[2]["passed"] == "False" and "cosine" in records[2]["violations"]
    assert records[3]["error"] and records[3]["p50_ms"] == ""


def test_markdown_names_failures(result: CompareResult) -> None:
    md = report.to_markdown(result)
    table_rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(table_rows) == 4
    header = next(line for line in md.splitlines() if line.startswith("| artifact"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert len(columns) == len(set(columns)) and "rel L2" in columns, columns  # each column once
    assert "2 of 4 rows fail" in md
    assert "**FAIL**" in md and "**ERROR**" in md
    assert "/ws/resnet18/onnx-int8.onnx" in md  # the failing file is named
    assert "does not fit static.onnx" in md


def test_table_prints_every_row(result: CompareResult) -> None:
    from rich.console import Console

    out = Console(file=io.StringIO(), width=250)
    report.print_table(result, out)
    text = out.file.getvalue()
    for key in ("pytorch", "onnx-fp32", "onnx-int8", "static", "2.00x", "FAIL", "ERROR"):
        assert key in text


def test_plot_is_a_png(result: CompareResult, tmp_path: Path) -> None:
    from PIL import Image

    written = report.write_reports(result, plot_path=tmp_path / "sub" / "plot.png")
    png = written[0].read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(written[0]) as img:
        img.load()
        assert img.format == "PNG" and img.width > 500 and img.height > 200


@pytest.mark.parametrize(
    ("option", "name", "message"),
    [
        ("--json", "a_folder", "is a folder"),
        ("--json", "a_folder", "a_folder/report.json"),  # the hint names a file with the report's suffix
        ("--junit", "a_folder", "is a folder"),
        ("--json", "/proc/r.json", "/proc is not writable"),  # os.access says yes to root here; a write says no
        ("--csv", "a_file/r.csv", "a_file is a file, not a folder"),
        ("--markdown", "-", "only --json writes to stdout"),
        ("--plot", "latency.pdf", "written as a PNG"),
    ],
)
def test_report_paths_are_checked_before_the_run(tmp_path: Path, option: str, name: str, message: str) -> None:
    from typer.testing import CliRunner

    from resnet_deploy.cli.bench import app

    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    workspace = tmp_path / "ws"
    args = ["compare", "resnet18", "--workspace", str(workspace), option, name if name == "-" else str(tmp_path / name)]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 2 and message in " ".join(run.output.split()) and "Traceback" not in run.output
    assert not workspace.exists()  # refused before the model loaded or anything was built


def test_two_reports_on_one_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--json and --csv both write"):
        report.check_report_paths({"--json": tmp_path / "r.txt", "--csv": tmp_path / "r.txt"})


def test_a_report_that_cannot_be_written_is_one_line(result: CompareResult, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="cannot write --csv"):
        report.write_reports(result, csv_path=tmp_path / "taken")
    assert list(tmp_path.iterdir()) == [tmp_path / "taken"]  # and no temp file beside it


def test_command_line_names_the_console_script_under_python_m(monkeypatch) -> None:
    """Reports say how they were made: `python -m resnet_deploy.cli.bench` is `resnet-bench`, not `bench.py`."""
    import sys

    import resnet_deploy.cli.bench as bench
    from resnet_deploy.cli import common

    monkeypatch.setattr(sys, "argv", [bench.__file__, "compare", "--batch", "1,8"])
    assert common.command_line() == "resnet-bench compare --batch 1,8"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/resnet-bench", "compare", "--images", "my photos"])
    assert common.command_line() == "resnet-bench compare --images 'my photos'"
