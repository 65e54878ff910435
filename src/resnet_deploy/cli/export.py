"""`resnet-export`: onnx, torchscript, program (torch.export), aoti (AOTInductor), trt, and triton (a model repository).

Each command parses its options (the shared groups are `common`'s), opens the pipeline and asks it for the
artifacts; everything that can be wrong with the options is reported before the model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from resnet_deploy.cli import common
from resnet_deploy.console import stdout_console
from resnet_deploy.engines.profile import parse_bytes, precision_from_flags
from resnet_deploy.errors import UsageError
from resnet_deploy.export.aoti import check_request as check_aoti_request
from resnet_deploy.export.onnx import DEFAULT_OPSET, check_opset
from resnet_deploy.files import check_output_file
from resnet_deploy.int8.recipe import TARGETS
from resnet_deploy.models import ARCHITECTURES, resolve_architecture
from resnet_deploy.pipeline import DEFAULT_MODEL, DEFAULT_WORKSPACE
from resnet_deploy.pipeline.core import aoti_key
from resnet_deploy.pipeline.engines import engine_from_onnx
from resnet_deploy.runtimes.tensorrt_env import sidecar_path
from resnet_deploy.serve.repository import BACKENDS, ModelPlan, RepositoryRequest, write_repository
from resnet_deploy.workspace import Workspace

app = typer.Typer(
    help="Export a torchvision ResNet to TorchScript, torch.export, ONNX (FP32/FP16/INT8) and TensorRT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# what `trt --onnx FILE` takes from the file instead: the model, its weights and preprocessing, INT8 scales
MODEL_OPTIONS = (
    "model",
    "weights",
    "num_classes",
    "trust_checkpoint",
    "resize",
    "crop",
    "mean",
    "std",
    "calib",
    "calib_method",
    "calib_size",
    "workspace",
)

Opset = Annotated[int, typer.Option(help="ONNX opset.")]
Fp16 = Annotated[
    bool, typer.Option("--fp16", help="FP16 (float32 input/output kept), for TensorRT.", metavar=common.FLAG)
]
Target = Annotated[
    str | None,
    typer.Option(
        "--target",
        help=f"INT8 recipe ({' or '.join(TARGETS)}): tensorrt (symmetric int8 Q/DQ, TensorRT's rules; the default) "
        "or cpu (U8S8, fastest on ONNX Runtime's x86 CPU provider).",
        show_default=False,
    ),
]
OnnxFile = Annotated[
    Path | None, typer.Option("--onnx", help="Build from this ONNX file instead of a model name (no workspace needed).")
]
Output = Annotated[
    Path | None, typer.Option("--output", "-o", help="Engine file for --onnx (default: beside the ONNX).")
]
WorkspaceSize = Annotated[
    str | None, typer.Option("--workspace-size", help="Builder scratch memory limit, e.g. 4G or 512M.")
]
TimingCache = Annotated[
    Path | None,
    typer.Option("--timing-cache", help="Timing cache file, reused and updated (default: in the workspace)."),
]


@app.command()
@common.handle_errors
@common.option_groups
def onnx(
    *,
    model: common.ModelArgs,
    shapes: common.ShapeArgs,
    opset: Opset = DEFAULT_OPSET,
    fp16: Fp16 = False,
    calibration: common.CalibArgs,
    target: Target = None,
    preprocess: common.PreprocessArgs,
) -> None:
    """Export ONNX (one self-contained file), verified with ONNX Runtime against PyTorch; optionally FP16/INT8."""
    check_opset(opset)
    request = calibration.request(target)
    pipe = common.open_pipeline(model, preprocess, shapes, dynamic=shapes.dynamic)
    keys = ["onnx-fp32"]
    if request is not None:  # first: it checks the crop and reads the images before exporting the FP32 ONNX
        pipe.int8(request, opset)
    pipe.onnx(opset)
    if fp16:
        pipe.fp16(opset)
        keys.append("onnx-fp16")
    if request is not None:
        keys.append(f"onnx-int8-{request.target}")
    common.print_written(pipe, keys)


@common.handle_errors
@common.option_groups
def _export_torch_format(
    ctx: typer.Context, *, model: common.ModelArgs, shapes: common.ShapeArgs, preprocess: common.PreprocessArgs
) -> None:
    """`torchscript` and `program` differ only in the exporter, so they share one command body. They take the
    preprocessing options too: the crop sets the default shape, and the workspace records them for `compare`."""
    pipe = common.open_pipeline(model, preprocess, shapes, dynamic=shapes.dynamic)
    artifact = pipe.torchscript() if ctx.info_name == "torchscript" else pipe.program()
    common.print_written(pipe, [artifact.key])


app.command("torchscript", help="Export TorchScript (traced), verified against PyTorch.")(_export_torch_format)
app.command("program", help="Export a torch.export program (.pt2), verified against PyTorch.")(_export_torch_format)


AotiFp16 = Annotated[
    bool,
    typer.Option("--fp16", help="FP16 inside the package (float32 input/output kept); CUDA only.", metavar=common.FLAG),
]
AotiDevice = Annotated[
    str,
    typer.Option("--device", help="cpu or cuda (cuda:N): what the package is compiled for, and verified on."),
]


@app.command()
@common.handle_errors
@common.option_groups
def aoti(
    *,
    model: common.ModelArgs,
    shapes: common.ShapeArgs,
    fp16: AotiFp16 = False,
    device: AotiDevice = "cpu",
    preprocess: common.PreprocessArgs,
) -> None:
    """Compile the torch.export program with AOTInductor into a package (.pt2) for the CPU or a CUDA GPU, verified against PyTorch; prints the compile time.

    BatchNorm folded (freezing); on CUDA channels-last and max-autotune. The package runs only under this torch and on this GPU (torch-aoti refuses others). Static at the crop size by default: pass --dynamic and --min/--max-shape for a range.
    """  # paragraphs on one line each: typer's help keeps a docstring's line breaks
    dev = check_aoti_request(device, fp16)  # before the model loads: --fp16 on the CPU, no GPU for cuda
    pipe = common.open_pipeline(model, preprocess, shapes, dynamic=shapes.dynamic)
    key = aoti_key(dev, fp16)
    before = dict(pipe.ws.artifacts.get(key) or {})
    artifact = pipe.aoti(dev, fp16)
    common.print_written(pipe, [key])
    entry = pipe.ws.artifacts[key]
    seconds = (entry.get("aoti") or {}).get("compile_seconds")
    reused = before.get("created") == entry.get("created")
    when = f" (when it was built, {entry.get('created')}: reused now)" if reused else ""
    took = f"{seconds:.1f} s" if isinstance(seconds, int | float) else "not recorded"
    stdout_console().print(escape(f"compile time of {artifact.label}: {took}{when}"))


@app.command()
@common.handle_errors
@common.option_groups
def trt(
    ctx: typer.Context,
    *,
    model: common.ModelArgs,
    fp16: Fp16 = False,
    calibration: common.CalibArgs,
    onnx_file: OnnxFile = None,
    output: Output = None,
    shapes: common.RangeArgs,
    workspace_size: WorkspaceSize = None,
    timing_cache: TimingCache = None,
    preprocess: common.PreprocessArgs,
) -> None:
    """Build a TensorRT engine (FP32, FP16 or INT8) from the workspace's ONNX, exporting it first if needed.

    Shapes default to the range the ONNX was exported for. Without TensorRT or a GPU it still makes the ONNX it would build from, then says what is missing.
    """  # one line: typer's help keeps a docstring's line breaks, which cut the sentence mid-way
    size = parse_bytes(workspace_size)
    for option, path, example in (
        ("--timing-cache", timing_cache, "timing.cache"),
        ("--output", output, "model.engine"),
    ):
        if path is not None:
            check_output_file(option, path, example)
    precision = precision_from_flags(fp16, calibration.int8)
    if onnx_file is not None:
        _refuse_model_options(ctx)  # the file fixes the model, its preprocessing and its INT8 scales
        built = engine_from_onnx(onnx_file, precision, output, min_shape=shapes.min_shape, opt_shape=shapes.opt_shape,
                                 max_shape=shapes.max_shape, workspace_size=size, timing_cache=timing_cache)  # fmt: skip
        stdout_console().print(escape(f"engine: {built}\nbuild record: {sidecar_path(built)}"))  # the result
        return
    if output is not None:
        raise UsageError("--output only applies with --onnx", "engines built from a model go to the workspace")
    request = calibration.request()  # before the model loads
    # the ONNX an engine is built from: the range the workspace recorded; in a new workspace, the profile
    # asked for (else the dynamic defaults), so the ONNX made first covers it
    pipe = common.open_pipeline(model, preprocess, shapes, dynamic=True if shapes.given else None,
                                static_by_default=False, shapes_if_new=True)  # fmt: skip
    artifact = pipe.engine(precision or "fp32", request, min_shape=shapes.min_shape, opt_shape=shapes.opt_shape,
                           max_shape=shapes.max_shape, workspace_size=size, timing_cache=timing_cache)  # fmt: skip
    common.print_written(pipe, [artifact.key])


def _refuse_model_options(ctx: typer.Context) -> None:
    """With --onnx, options about the model, its preprocessing and INT8 scales would be ignored: refused."""
    ignored = common.typed_options(ctx, MODEL_OPTIONS)
    if ignored:
        one = len(ignored) == 1
        raise UsageError(
            f"{', '.join(ignored)} {'does' if one else 'do'} not apply with --onnx",
            f"the ONNX file fixes the model, preprocessing and INT8 scales: drop {'it' if one else 'them'}, "
            "or build from a model name without --onnx",
        )


@dataclass
class RepositoryArgs(common.OptionGroup):
    """Which workspace's artifacts become which Triton models, where."""

    model: Annotated[str, typer.Argument(help=", ".join(ARCHITECTURES))] = DEFAULT_MODEL
    workspace: Annotated[Path, typer.Option("--workspace", help="Where artifacts/<model>/ lives.")] = DEFAULT_WORKSPACE
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The model repository to write (replaced whole if an earlier run wrote it)."
        ),
    ] = Path("model_repository")
    artifacts: Annotated[
        str | None,
        typer.Option("--artifacts", help="Comma-separated manifest keys, e.g. onnx-fp32,onnx-fp16. Default: all."),
    ] = None
    max_batch: Annotated[
        int | None, typer.Option("--max-batch", help="max_batch_size. Default: each artifact's recorded max batch.")
    ] = None
    instances: Annotated[int, typer.Option("--instances", help="Model instances (instance_group count).")] = 1
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help=f"{' or '.join(BACKENDS)}: auto = each format's Triton backend (ONNX Runtime, TensorRT, PyTorch); "
            "python = a Python-backend model running resnet-deploy's runtime, any artifact (.pt2 included).",
        ),
    ] = "auto"
    device: Annotated[
        str | None,
        typer.Option("--device", help="cpu or cuda: the instance group's kind. Default: CPU, engines on a GPU."),
    ] = None

    def request(self) -> RepositoryRequest:
        keys = None
        if self.artifacts is not None:
            keys = [k.strip() for k in self.artifacts.split(",")]
            if not all(keys):
                raise UsageError(f"invalid --artifacts '{self.artifacts}': an empty item", "e.g. --artifacts onnx-fp32")
        return RepositoryRequest(keys, self.max_batch, self.instances, self.backend, self.device)


@app.command()
@common.handle_errors
@common.option_groups
def triton(*, repository: RepositoryArgs) -> None:
    """Write a Triton model repository: one model per artifact in the workspace, each with its config.pbtxt (batch and dims from the recorded range, dynamic batching, instance group), the file, the class labels and a README saying how to start tritonserver on it.

    Refused in one line, with nothing written: an empty workspace, a static artifact, a .pt2 without --backend python, a --max-batch over what an artifact was verified for.
    """  # paragraphs on one line each: typer's help keeps a docstring's line breaks
    request = repository.request()  # options checked before the workspace is read
    ws = Workspace(repository.workspace, resolve_architecture(repository.model))
    plans = write_repository(ws, repository.output, request, common.command_line())
    _print_repository(repository.output, plans)


def _print_repository(output: Path, plans: list[ModelPlan]) -> None:
    """The closing summary, on stdout: each model written and what it serves, one line each (no table to squeeze)."""
    out = stdout_console()
    out.print(escape(f"model repository: {output}"))
    for p in plans:
        dims = "x".join("H" if d == -1 and i == 1 else "W" if d == -1 else str(d) for i, d in enumerate(p.dims))
        backend = f"python ({p.runtime})" if p.python else p.backend
        where = f"{p.instances} {'GPU' if p.gpu else 'CPU'} instance{'s' if p.instances > 1 else ''}"
        line = f"  {p.name}: {backend}, {p.precision}, {p.input_name} Nx{dims} (N <= {p.max_batch}), {where}"
        out.print(escape(line))
    out.print(escape(f"how to serve it: {output / 'README.md'}"))


main = common.main_wrapper(app)

if __name__ == "__main__":
    main()
