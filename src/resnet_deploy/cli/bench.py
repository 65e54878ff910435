"""`resnet-bench`: compare latency and accuracy parity of every artifact against PyTorch FP32.

The command body only parses options, calls `benchmarks.compare.run_compare` and writes reports;
the work lives in benchmarks/.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from resnet_deploy.cli import common
from resnet_deploy.errors import UsageError
from resnet_deploy.pipeline import DEFAULT_MODEL, DEFAULT_WORKSPACE

app = typer.Typer(
    help="Benchmark latency and accuracy parity of exported ResNets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Runtimes = Annotated[
    str | None,
    typer.Option(
        "--runtimes",
        help="Comma-separated runtimes (torch-eager, torchscript, torch-export, onnxruntime-cpu, onnxruntime-cuda, "
        "onnxruntime-tensorrt, tensorrt). Default: every one that can run here. Naming one that cannot is an error.",
    ),
]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda (cuda:N).")]
Batch = Annotated[
    str | None,
    typer.Option(
        "--batch", help="Comma-separated batch sizes, e.g. 1,8. Default: 1, or the batch a static workspace takes."
    ),
]
Size = Annotated[
    str | None,
    typer.Option(
        "--size",
        help="Comma-separated image sizes HxW or S, e.g. 224,320x256. Default: the model's crop, or the size a "
        "static workspace takes.",
    ),
]
Warmup = Annotated[int, typer.Option("--warmup", help="Untimed iterations before timing.")]
Iters = Annotated[int, typer.Option("--iters", help="Timed iterations per row.")]
Threads = Annotated[
    int | None,
    typer.Option("--threads", help="CPU threads for every runtime. Default: the cores this process may use."),
]
Images = Annotated[
    Path | None,
    typer.Option("--images", help="Folder of real images for parity. Default: ./calibration."),
]
MaxImages = Annotated[int, typer.Option("--max-images", help="Use at most this many parity images (evenly spread).")]
FLAG = common.FLAG
Artifacts = Annotated[
    list[Path] | None,
    typer.Option(
        "--artifact",
        help="Also compare this .onnx/.ts/.pt2/.engine file against the model (repeatable). "
        "With --artifact the default set is not built.",
        metavar="FILE",
    ),
]
Build = Annotated[
    bool,
    typer.Option(
        "--build/--no-build", help="Build the default artifact set when the workspace has none.", metavar=FLAG
    ),
]
Calib = Annotated[
    Path | None,
    typer.Option(
        "--calib",
        help="Calibration images for the default set's INT8 ONNX (built only into an empty workspace). "
        "Default: ./calibration.",
    ),
]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write every row as JSON ('-' = stdout).")]
MarkdownOut = Annotated[Path | None, typer.Option("--markdown", help="Write a Markdown report (fits a CI summary).")]
CsvOut = Annotated[Path | None, typer.Option("--csv", help="Write every row as CSV.")]
PlotOut = Annotated[Path | None, typer.Option("--plot", help="Write a PNG of latency and speedup per runtime.")]
GateFlag = Annotated[
    bool,
    typer.Option(
        "--gate",
        help="CI gate: exit 1 when any artifact/runtime is outside its tolerances, 0 when all pass.",
        metavar=FLAG,
    ),
]
JunitOut = Annotated[
    Path | None,
    typer.Option("--junit", help="Write JUnit XML: one test case per artifact x runtime x shape."),
]
TolerancesFile = Annotated[
    Path | None,
    typer.Option(
        "--tolerances",
        help="TOML file of parity bounds per precision, metric and artifact (see examples/tolerances.toml).",
    ),
]
FloorFlag = Annotated[
    bool,
    typer.Option(
        "--floor",
        help="Measure this device's peak matrix rates and copy bandwidth, and report how far each row is "
        "from its floor (FLOPs / peak rate). Adds a few seconds.",
        metavar=FLAG,
    ),
]
ExplainFlag = Annotated[
    bool,
    typer.Option(
        "--explain", help="For failing artifacts, show where they diverge: stem, layer1-4 or head.", metavar=FLAG
    ),
]


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
    from resnet_deploy.shapes import parse_size

    sizes = [parse_size(s) for s in _split(text, "--size")]
    _once_each(sizes, text or "", "--size", lambda hw: f"{hw[0]}x{hw[1]}")
    return sizes or None


@app.command()
@common.handle_errors
def compare(
    model: common.Model = DEFAULT_MODEL,
    runtimes: Runtimes = None,
    device: Device = "cpu",
    batch: Batch = None,
    size: Size = None,
    warmup: Warmup = 5,
    iters: Iters = 30,
    threads: Threads = None,
    images: Images = None,
    max_images: MaxImages = 100,
    artifact: Artifacts = None,
    build: Build = True,
    calib: Calib = None,
    weights: common.Weights = None,
    num_classes: common.NumClasses = None,
    trust_checkpoint: common.Trust = False,
    resize: common.Resize = None,
    crop: common.Crop = None,
    mean: common.Mean = None,
    std: common.Std = None,
    workspace: common.Workspace = DEFAULT_WORKSPACE,
    min_shape: common.MinShape = None,
    opt_shape: common.OptShape = None,
    max_shape: common.MaxShape = None,
    json_out: JsonOut = None,
    markdown: MarkdownOut = None,
    csv_out: CsvOut = None,
    plot: PlotOut = None,
    gate: GateFlag = False,
    junit: JunitOut = None,
    tolerances: TolerancesFile = None,
    explain: ExplainFlag = False,
    floor: FloorFlag = False,
) -> None:
    """Benchmark every artifact in the workspace on every runtime that can run it here, with parity.

    With an empty workspace it first builds TorchScript, .pt2, ONNX FP32/FP16, ONNX INT8 (from ./calibration) and, with TensorRT and a GPU, engines, for the range --min/--max-shape (default 1x3x64x64 .. 8x3x448x448, or exactly the --batch/--size shapes when those fall outside it).

    Exit 0 when every row ran, 1 when an artifact is not the model it stands for (made from other weights or classes, or its file changed since export), 2 on usage errors (including a shape an artifact does not accept), 3 when a requested runtime is not available here. With --gate: exit 1 when any row is outside its tolerances (--tolerances FILE, else the per-precision defaults).
    """  # paragraphs on one line each: typer's help keeps a docstring's line breaks, which cut sentences mid-way
    from rich.markup import escape

    from resnet_deploy import console
    from resnet_deploy.benchmarks import gate as parity_gate
    from resnet_deploy.benchmarks import report
    from resnet_deploy.benchmarks.compare import CompareOptions, run_compare
    from resnet_deploy.benchmarks.preflight import validate_options
    from resnet_deploy.benchmarks.tolerances import load_tolerances
    from resnet_deploy.console import stdout_console

    given = common.shapes_given(min_shape, opt_shape, max_shape)
    options = CompareOptions(
        runtimes=_split(runtimes, "--runtimes") or None,
        device=device,
        batches=parse_batches(batch),
        sizes=parse_sizes(size),
        warmup=warmup,
        iters=iters,
        threads=threads,
        images=images,
        max_images=max_images,
        artifacts=list(artifact or []),
        build=build,
        calib_dir=calib,
        floor=floor,
        fit_range=not given,
    )
    validate_options(options)  # fail on bad options before the model loads
    report.check_report_paths(
        {"--json": json_out, "--markdown": markdown, "--csv": csv_out, "--plot": plot, "--junit": junit}
    )
    options.tolerances = load_tolerances(tolerances)  # and on a bad tolerance file
    pipe = common.open_pipeline(
        model,
        weights,
        num_classes,
        trust_checkpoint,
        workspace,
        dynamic=True if given else None,
        min_shape=min_shape,
        opt_shape=opt_shape,
        max_shape=max_shape,
        resize=resize,
        crop=crop,
        mean=mean,
        std=std,
        static_by_default=False,  # the default set is dynamic unless the workspace recorded otherwise
    )
    stdout_json = json_out is not None and str(json_out) == "-"
    options.partial_json = None if stdout_json else json_out  # what was measured survives a kill or a timeout
    options.command = common.command_line()
    before = _mtime(options.partial_json)
    try:
        result = run_compare(pipe, options)
    except KeyboardInterrupt:
        if options.partial_json is not None and _mtime(options.partial_json) != before:
            console.warn(f'the rows measured before the interrupt are in {json_out} (marked "partial": true)')
        raise
    # the results on stdout (`> results.txt` keeps them), progress on stderr; with --json - stdout is the JSON's
    report.print_table(result, None if stdout_json else stdout_console())
    # --json is complete already: run_compare wrote it last (options.partial_json), command included
    written = report.write_reports(result, None, markdown, csv_out, plot)
    for path in ([options.partial_json] if options.partial_json else []) + written:
        console.info(escape(f"report: {path}"))
    if stdout_json:
        sys.stdout.write(report.to_json(result))
    code = parity_gate.finish(
        result, pipe, options.tolerances, gate=gate, junit=junit, explain=explain, markdown_path=markdown
    )
    raise typer.Exit(code)


def _mtime(path: Path | None) -> int | None:
    """When `path` was last written, or None: tells a report this run wrote from one an earlier run left."""
    return path.stat().st_mtime_ns if path is not None and path.is_file() else None


main = common.main_wrapper(app)

if __name__ == "__main__":
    main()
