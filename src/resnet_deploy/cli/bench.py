"""`resnet-bench`: compare latency and accuracy parity of every artifact against PyTorch FP32; `triton` does the
same for a model a Triton server serves, under load.

The command bodies only turn their option groups into `CompareOptions` / `TritonOptions`, call
`bench.compare.run_compare` / `serve.bench.run_triton`, write the reports and hand the result to the gate; the work
lives in bench/, serve/, report/ and gate/.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from resnet_deploy import console, report
from resnet_deploy.bench.compare import run_compare
from resnet_deploy.bench.options import DEFAULT_MAX_IMAGES, CompareOptions
from resnet_deploy.bench.preflight import validate
from resnet_deploy.cli import common
from resnet_deploy.console import stdout_console
from resnet_deploy.errors import UsageError
from resnet_deploy.gate.finish import finish
from resnet_deploy.pipeline import Pipeline
from resnet_deploy.results import DEFAULT_ITERS, DEFAULT_WARMUP, CompareResult
from resnet_deploy.runtimes import registry
from resnet_deploy.serve.bench import DEFAULT_CONCURRENCY, DEFAULT_REQUESTS, DEFAULT_SECONDS, TritonOptions, run_triton
from resnet_deploy.serve.bench import describe as describe_served
from resnet_deploy.shapes import parse_size
from resnet_deploy.tolerances import load_tolerances

app = typer.Typer(
    help="Benchmark latency and accuracy parity of exported ResNets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
FLAG = common.FLAG


@dataclass
class BenchArgs(common.OptionGroup):
    """What to run, where, at which shapes, how long."""

    runtimes: Annotated[
        str | None,
        typer.Option(
            "--runtimes",
            help=f"Comma-separated runtimes ({', '.join(registry())}). Default: every one that can run here. "
            "Naming one that cannot is an error.",
        ),
    ] = None
    device: Annotated[str, typer.Option("--device", help="cpu or cuda (cuda:N).")] = "cpu"
    batch: Annotated[
        str | None,
        typer.Option(
            "--batch", help="Comma-separated batch sizes, e.g. 1,8. Default: 1, or the batch a static workspace takes."
        ),
    ] = None
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            help="Comma-separated image sizes HxW or S, e.g. 224,320x256. Default: the model's crop, or the size a "
            "static workspace takes.",
        ),
    ] = None
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed iterations before timing.")] = DEFAULT_WARMUP
    iters: Annotated[int, typer.Option("--iters", help="Timed iterations per row.")] = DEFAULT_ITERS
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="CPU threads for every runtime. Default: the cores this process may use."),
    ] = None
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            "--cuda-graphs",
            help="Also run the PyTorch runtimes (eager, TorchScript, .pt2, AOTInductor) as CUDA graphs, one "
            "captured per batch and size: rows named ...-graph. CUDA only.",
            metavar=FLAG,
        ),
    ] = False


@dataclass
class InputArgs(common.OptionGroup):
    """The images parity runs on, and the artifacts to run."""

    images: Annotated[
        Path | None, typer.Option("--images", help="Folder of real images for parity. Default: ./calibration.")
    ] = None
    max_images: Annotated[
        int, typer.Option("--max-images", help="Use at most this many parity images (evenly spread).")
    ] = DEFAULT_MAX_IMAGES
    artifact: Annotated[
        list[Path] | None,
        typer.Option(
            "--artifact",
            help="Also compare this .onnx/.ts/.pt2/.engine file against the model (repeatable). "
            "With --artifact the default set is not built.",
            metavar="FILE",
        ),
    ] = None
    build: Annotated[
        bool,
        typer.Option(
            "--build/--no-build", help="Build the default artifact set when the workspace has none.", metavar=FLAG
        ),
    ] = True
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib",
            help="Calibration images for the default set's INT8 ONNX (built only into an empty workspace). "
            "Default: ./calibration.",
        ),
    ] = None


@dataclass
class _TableReports(common.OptionGroup):
    """The row reports both commands write (JSON, Markdown, CSV); each adds its own."""

    json_out: Annotated[Path | None, typer.Option("--json", help="Write every row as JSON ('-' = stdout).")] = None
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Write a Markdown report (fits a CI summary).")
    ] = None
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write every row as CSV.")] = None

    @property
    def to_stdout(self) -> bool:
        return self.json_out is not None and str(self.json_out) == "-"

    def paths(self) -> dict[str, Path | None]:
        return {"--json": self.json_out, "--markdown": self.markdown, "--csv": self.csv_out}

    def check(self) -> None:
        """Every report can be written where asked: checked before the minutes of the run."""
        report.check_report_paths(self.paths())


@dataclass
class ReportArgs(_TableReports):
    """The report files a run writes."""

    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of latency and speedup per runtime.")] = None
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write JUnit XML: one test case per artifact x runtime x shape.")
    ] = None

    def paths(self) -> dict[str, Path | None]:
        return {**super().paths(), "--plot": self.plot, "--junit": self.junit}


@dataclass
class GateArgs(common.OptionGroup):
    """The CI gate and the diagnoses around it."""

    gate: Annotated[
        bool,
        typer.Option(
            "--gate",
            help="CI gate: exit 1 when any artifact/runtime is outside its tolerances, 0 when all pass.",
            metavar=FLAG,
        ),
    ] = False
    tolerances: Annotated[
        Path | None,
        typer.Option(
            "--tolerances",
            help="TOML file of parity bounds per precision, metric and artifact (see examples/tolerances.toml).",
        ),
    ] = None
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="For failing artifacts, show where they diverge: stem, layer1-4 or head.", metavar=FLAG
        ),
    ] = False
    require: Annotated[
        str | None,
        typer.Option(
            "--require",
            help="With --gate: artifacts that must be checked (manifest keys, file names or globs, comma-separated, "
            "e.g. onnx-fp32,onnx-int8-*); one no check ran on fails the gate.",
        ),
    ] = None
    floor: Annotated[
        bool,
        typer.Option(
            "--floor",
            help="Measure this device's peak matrix rates and copy bandwidth, and report how far each row is "
            "from its floor (FLOPs / peak rate). Adds a few seconds.",
            metavar=FLAG,
        ),
    ] = False


@app.callback()
def _main() -> None:
    """Benchmark latency and accuracy parity of exported ResNets."""


def _split(text: str | None, option: str) -> list[str]:
    """Comma-separated items; an empty one (`1,,8`, `--runtimes ""`) is a typo, not a default."""
    if text is None:
        return []
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise UsageError(f"invalid {option} '{text}': an empty item", "separate the items with single commas")
    return parts


def _once_each(values: list[Any], text: str, option: str, show: Callable[[Any], str] = str) -> None:
    """A value listed twice would run, report and gate the same rows twice (JUnit cases with one name)."""
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise UsageError(f"invalid {option} '{text}': {show(twice)} is listed twice", "list each value once")


def parse_batches(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        batches = [int(b) for b in _split(text, "--batch")]
    except ValueError:
        raise UsageError(f"invalid --batch '{text}'", "give comma-separated positive integers, e.g. 1,8") from None
    if not batches or any(b < 1 for b in batches):
        raise UsageError(f"invalid --batch '{text}'", "give comma-separated positive integers, e.g. 1,8")
    _once_each(batches, text, "--batch")
    return batches


def parse_sizes(text: str | None) -> list[tuple[int, int]] | None:
    sizes = [parse_size(s) for s in _split(text, "--size")]
    _once_each(sizes, text or "", "--size", lambda hw: f"{hw[0]}x{hw[1]}")
    return sizes or None


def compare_options(bench: BenchArgs, inputs: InputArgs, gating: GateArgs, shapes: common.RangeArgs) -> CompareOptions:
    """The run's options from the flags, checked (before the model loads) and with the tolerances read."""
    options = CompareOptions(
        runtimes=_split(bench.runtimes, "--runtimes") or None,
        device=bench.device,
        batches=parse_batches(bench.batch),
        sizes=parse_sizes(bench.size),
        warmup=bench.warmup,
        iters=bench.iters,
        threads=bench.threads,
        cuda_graphs=bench.cuda_graphs,
        images=inputs.images,
        max_images=inputs.max_images,
        artifacts=list(inputs.artifact or []),
        build=inputs.build,
        calib_dir=inputs.calib,
        floor=gating.floor,
        fit_range=not shapes.given,
        command=common.command_line(),
    )
    validate(options)
    return options


@app.command()
@common.handle_errors
@common.option_groups
def compare(
    *,
    model: common.ModelArgs,
    bench: BenchArgs,
    inputs: InputArgs,
    preprocess: common.PreprocessArgs,
    shapes: common.RangeArgs,
    reports: ReportArgs,
    gating: GateArgs,
) -> None:
    """Benchmark every artifact in the workspace on every runtime that can run it here, with parity.

    With an empty workspace it first builds TorchScript, .pt2, ONNX FP32/FP16, ONNX INT8 (from ./calibration) and, with TensorRT and a GPU, engines, for the range --min/--max-shape (default 1x3x64x64 .. 8x3x448x448, or exactly the --batch/--size shapes when those fall outside it).

    Exit 0 when every row ran, 1 when an artifact is not the model it stands for (made from other weights or classes, or its file changed since export), 2 on usage errors (including a shape an artifact does not accept), 3 when a requested runtime is not available here. With --gate: exit 1 when any row is outside its tolerances (--tolerances FILE, else the per-precision defaults).
    """  # paragraphs on one line each: typer's help keeps a docstring's line breaks, which cut sentences mid-way
    options = compare_options(bench, inputs, gating, shapes)  # bad options fail before the model loads
    required = _required(gating)
    reports.check()
    options.tolerances = load_tolerances(gating.tolerances)  # and so does a bad tolerance file
    # the default set is dynamic unless the workspace recorded otherwise
    pipe = common.open_pipeline(model, preprocess, shapes, dynamic=True if shapes.given else None,
                                static_by_default=False)  # fmt: skip
    result = _run(pipe, options, reports)
    code = finish(result, pipe.model, options.tolerances, gate=gating.gate, junit=reports.junit,  # type: ignore[arg-type]
                  explain=gating.explain, markdown_path=reports.markdown, require=required)  # fmt: skip
    raise typer.Exit(code)


def _required(gating: GateArgs | TritonGateArgs) -> list[str]:
    """--require's patterns, which only a gate can hold the run to."""
    required = _split(gating.require, "--require")
    if required and not gating.gate:
        raise UsageError("--require only applies with --gate", "add --gate, or drop --require")
    _once_each(required, gating.require or "", "--require")
    return required


def _run(pipe: Pipeline, options: CompareOptions, reports: ReportArgs) -> CompareResult:
    """The run, with its rows on stdout and in the report files; --json is rewritten as rows come in, so an
    interrupted run keeps what it measured."""
    options.partial_json = None if reports.to_stdout else reports.json_out
    before = _mtime(options.partial_json)
    try:
        result = run_compare(pipe, options)
    except KeyboardInterrupt:
        if options.partial_json is not None and _mtime(options.partial_json) != before:
            console.warn(f'the rows measured before the interrupt are in {reports.json_out} (marked "partial": true)')
        raise
    # the results on stdout (`> results.txt` keeps them), progress on stderr; with --json - stdout is the JSON's
    report.print_table(result, None if reports.to_stdout else stdout_console())
    # --json is complete already: run_compare wrote it last (options.partial_json), command included
    written = report.write_reports(result, None, reports.markdown, reports.csv_out, reports.plot)
    for path in ([options.partial_json] if options.partial_json else []) + written:
        console.info(escape(f"report: {path}"))
    if reports.to_stdout:
        sys.stdout.write(report.to_json(result))
    return result


def _mtime(path: Path | None) -> int | None:
    """When `path` was last written, or None: tells a report this run wrote from one an earlier run left."""
    return path.stat().st_mtime_ns if path is not None and path.is_file() else None


@dataclass
class ServerArgs(common.OptionGroup):
    """The served model: where, over which protocol, and what it is."""

    url: Annotated[str, typer.Option("--url", help="The server, HOST:PORT (HTTP 8000, gRPC 8001 by default).")]
    served: Annotated[str, typer.Option("--model", help="The served model's name, e.g. resnet50-onnx-fp32.")]
    protocol: Annotated[str, typer.Option("--protocol", help="http or grpc.")] = "http"
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="fp32, fp16 or int8: its tolerances. Default: what its config records."),
    ] = None


@dataclass
class LoadArgs(common.OptionGroup):
    """The load test: concurrency levels, each bounded in requests and time, and the requests' shape."""

    concurrency: Annotated[
        str, typer.Option("--concurrency", help="Comma-separated requests in flight, one level each.")
    ] = ",".join(map(str, DEFAULT_CONCURRENCY))
    requests: Annotated[int, typer.Option("--requests", help="At most this many timed requests per level.")] = (
        DEFAULT_REQUESTS
    )
    seconds: Annotated[float, typer.Option("--seconds", help="At most this long per level.")] = DEFAULT_SECONDS
    batch: Annotated[int, typer.Option("--batch", help="Images per request.")] = 1
    size: Annotated[str | None, typer.Option("--size", help="Image size HxW or S. Default: the model's crop.")] = None
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder of real images for parity. Default: ./calibration.")
    ] = None
    max_images: Annotated[
        int, typer.Option("--max-images", help="Use at most this many parity images (evenly spread).")
    ] = DEFAULT_MAX_IMAGES


@dataclass
class TritonReportArgs(_TableReports):
    """The report files a served-model run writes."""

    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write JUnit XML: one test case per concurrency level.")
    ] = None

    def paths(self) -> dict[str, Path | None]:
        return {**super().paths(), "--junit": self.junit}


@dataclass
class TritonGateArgs(common.OptionGroup):
    """The CI gate over the served model's rows."""

    gate: Annotated[
        bool,
        typer.Option("--gate", help="CI gate: exit 1 when any level is outside its tolerances.", metavar=FLAG),
    ] = False
    tolerances: Annotated[
        Path | None, typer.Option("--tolerances", help="TOML file of parity bounds (see examples/tolerances.toml).")
    ] = None
    require: Annotated[
        str | None, typer.Option("--require", help="With --gate: served model names (or globs) that must be checked.")
    ] = None


def triton_options(server: ServerArgs, load: LoadArgs) -> TritonOptions:
    """The run's options from the flags, checked before anything connects or loads."""
    try:
        levels = [int(c) for c in _split(load.concurrency, "--concurrency")]
    except ValueError:
        raise UsageError(f"invalid --concurrency '{load.concurrency}'", "e.g. --concurrency 1,4,16,64") from None
    _once_each(levels, load.concurrency, "--concurrency")
    return TritonOptions(
        url=server.url,
        model=server.served,
        protocol=server.protocol,
        concurrency=levels,
        requests=load.requests,
        seconds=load.seconds,
        batch=load.batch,
        size=parse_size(load.size) if load.size is not None else None,
        images=load.images,
        max_images=load.max_images,
        precision=server.precision,
        command=common.command_line(),
    )


@app.command()
@common.handle_errors
@common.option_groups
def triton(
    *,
    model: common.ModelArgs,
    server: ServerArgs,
    load: LoadArgs,
    preprocess: common.PreprocessArgs,
    reports: TritonReportArgs,
    gating: TritonGateArgs,
) -> None:
    """Check a model a Triton server serves: parity of its logits against PyTorch FP32 (MODEL, --weights as for compare) and, per concurrency level, throughput and p50/p90/p99 latency of asynchronous requests.

    Exit 0 when every level ran, 2 on a bad request or option (a shape or dtype the model refuses, a model the server does not have, a bad --url), 3 when no server answers or tritonclient is missing. With --gate: exit 1 when any level is outside its tolerances.
    """  # paragraphs on one line each: typer's help keeps a docstring's line breaks
    options = triton_options(server, load)
    required = _required(gating)
    reports.check()
    options.tolerances = load_tolerances(gating.tolerances)
    served = describe_served(options)  # a server that is down or lacks the model fails before the model loads
    pipe = common.open_pipeline(model, preprocess, common.RangeArgs())
    result = run_triton(pipe, options, served)
    report.print_table(result, None if reports.to_stdout else stdout_console())
    json_path = None if reports.to_stdout else reports.json_out
    for path in report.write_reports(result, json_path, reports.markdown, reports.csv_out):
        console.info(escape(f"report: {path}"))
    if reports.to_stdout:
        sys.stdout.write(report.to_json(result))
    code = finish(result, pipe.model, options.tolerances, gate=gating.gate, junit=reports.junit,
                  markdown_path=reports.markdown, require=required)  # fmt: skip
    raise typer.Exit(code)


main = common.main_wrapper(app)

if __name__ == "__main__":
    main()
