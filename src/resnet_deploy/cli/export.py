"""`resnet-export`: onnx, torchscript, program (torch.export) and trt.

Each command parses its options (the shared groups are `common`'s), opens the pipeline and asks it for the
artifacts; everything that can be wrong with the options is reported before the model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from resnet_deploy.cli import common
from resnet_deploy.console import stdout_console
from resnet_deploy.engines.profile import parse_bytes, precision_from_flags
from resnet_deploy.errors import UsageError
from resnet_deploy.export.onnx import DEFAULT_OPSET, check_opset
from resnet_deploy.files import check_output_file
from resnet_deploy.int8.recipe import TARGETS
from resnet_deploy.pipeline.engines import engine_from_onnx
from resnet_deploy.runtimes.tensorrt_env import sidecar_path

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


main = common.main_wrapper(app)

if __name__ == "__main__":
    main()
