"""`resnet-export`: onnx, torchscript, program (torch.export) and trt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnet_deploy.cli import common
from resnet_deploy.pipeline import DEFAULT_MODEL, DEFAULT_WORKSPACE
from resnet_deploy.preprocess import INPUT_SUFFIXES_TEXT

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


@app.command()
@common.handle_errors
def onnx(
    model: common.Model = DEFAULT_MODEL,
    dynamic: common.Dynamic = None,
    min_shape: common.MinShape = None,
    opt_shape: common.OptShape = None,
    max_shape: common.MaxShape = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    fp16: Annotated[
        bool,
        typer.Option(
            "--fp16", help="Also write an FP16 ONNX (float32 input/output kept), for TensorRT.", metavar=common.FLAG
        ),
    ] = False,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8", help="Also write an INT8 ONNX with explicit Q/DQ, calibrated on --calib.", metavar=common.FLAG
        ),
    ] = False,
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib",
            help=f"Folder of calibration images (searched recursively; {INPUT_SUFFIXES_TEXT.replace('/', ' ')}; .npy/.npz hold "
            "preprocessed tensors). Use 500+ images from the deployment domain.",
        ),
    ] = None,
    calib_method: Annotated[
        str | None,
        typer.Option(
            "--calib-method",
            help="entropy | minmax | percentile. Default percentile (99.999%): robust to outlier images, "
            "keeps the logit scale (see docs).",
            show_default=False,
        ),
    ] = None,
    calib_size: Annotated[
        int | None,
        typer.Option("--calib-size", help="Use N images, spread evenly over the sorted files (default: all)."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="INT8 recipe: tensorrt (symmetric int8 Q/DQ, TensorRT's rules; the default) or cpu (U8S8, "
            "fastest on ONNX Runtime's x86 CPU provider).",
            show_default=False,
        ),
    ] = None,
    resize: common.Resize = None,
    crop: common.Crop = None,
    mean: common.Mean = None,
    std: common.Std = None,
    weights: common.Weights = None,
    num_classes: common.NumClasses = None,
    trust_checkpoint: common.Trust = False,
    workspace: common.Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Export ONNX (one self-contained file), verified with ONNX Runtime against PyTorch; optionally FP16/INT8."""
    from resnet_deploy.calibration.dataset import check_int8_options
    from resnet_deploy.calibration.quantize import DEFAULT_METHOD
    from resnet_deploy.export.onnx import check_opset

    # everything that can be wrong with the options is reported before the model loads
    check_opset(opset)
    check_int8_options(int8, calib, calib_size, calib_method, target)
    calib_method, target = calib_method or DEFAULT_METHOD, target or "tensorrt"
    pipe = common.open_pipeline(
        model,
        weights,
        num_classes,
        trust_checkpoint,
        workspace,
        dynamic=dynamic,
        min_shape=min_shape,
        opt_shape=opt_shape,
        max_shape=max_shape,
        resize=resize,
        crop=crop,
        mean=mean,
        std=std,
    )
    keys = ["onnx-fp32"]
    if int8:  # first: it checks the crop and reads the images before exporting the FP32 ONNX it starts from
        from resnet_deploy.calibration.quantize import onnx_int8

        onnx_int8(pipe, calib, calib_method, calib_size, target, opset)  # type: ignore[arg-type]
    pipe.onnx(opset)
    if fp16:
        from resnet_deploy.export.precision import onnx_fp16

        onnx_fp16(pipe, opset)
        keys.append("onnx-fp16")
    if int8:
        keys.append(f"onnx-int8-{target}")
    common.print_written(pipe, keys)


@common.handle_errors
def _export_torch_format(
    ctx: typer.Context,
    model: common.Model = DEFAULT_MODEL,
    dynamic: common.Dynamic = None,
    min_shape: common.MinShape = None,
    opt_shape: common.OptShape = None,
    max_shape: common.MaxShape = None,
    resize: common.Resize = None,
    crop: common.Crop = None,
    mean: common.Mean = None,
    std: common.Std = None,
    weights: common.Weights = None,
    num_classes: common.NumClasses = None,
    trust_checkpoint: common.Trust = False,
    workspace: common.Workspace = DEFAULT_WORKSPACE,
) -> None:
    """`torchscript` and `program` differ only in the exporter, so they share one command body. They take the
    preprocessing options too: the crop sets the default shape, and the workspace records them for `compare`."""
    pipe = common.open_pipeline(
        model,
        weights,
        num_classes,
        trust_checkpoint,
        workspace,
        dynamic=dynamic,
        min_shape=min_shape,
        opt_shape=opt_shape,
        max_shape=max_shape,
        resize=resize,
        crop=crop,
        mean=mean,
        std=std,
    )
    artifact = pipe.torchscript() if ctx.info_name == "torchscript" else pipe.program()
    common.print_written(pipe, [artifact.key])


app.command("torchscript", help="Export TorchScript (traced), verified against PyTorch.")(_export_torch_format)
app.command("program", help="Export a torch.export program (.pt2), verified against PyTorch.")(_export_torch_format)


@app.command()
@common.handle_errors
def trt(
    ctx: typer.Context,
    model: common.Model = DEFAULT_MODEL,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Build from the FP16 ONNX (FP32 inputs/outputs).", metavar=common.FLAG)
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Build from the INT8 Q/DQ ONNX (needs --calib).", metavar=common.FLAG)
    ] = False,
    calib: Annotated[
        Path | None, typer.Option("--calib", help="Folder of calibration images for --int8, e.g. ./calibration.")
    ] = None,
    calib_method: Annotated[
        str | None, typer.Option("--calib-method", help="INT8 calibration method (as for resnet-export onnx --int8).")
    ] = None,
    calib_size: Annotated[
        int | None,
        typer.Option("--calib-size", help="Use N images, spread evenly over the sorted files (default: all)."),
    ] = None,
    onnx_file: Annotated[
        Path | None,
        typer.Option("--onnx", help="Build from this ONNX file instead of a model name (no workspace needed)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Engine file for --onnx (default: beside the ONNX).")
    ] = None,
    min_shape: common.MinShape = None,
    opt_shape: common.OptShape = None,
    max_shape: common.MaxShape = None,
    workspace_size: Annotated[
        str | None, typer.Option("--workspace-size", help="Builder scratch memory limit, e.g. 4G or 512M.")
    ] = None,
    timing_cache: Annotated[
        Path | None,
        typer.Option("--timing-cache", help="Timing cache file, reused and updated (default: in the workspace)."),
    ] = None,
    weights: common.Weights = None,
    num_classes: common.NumClasses = None,
    trust_checkpoint: common.Trust = False,
    resize: common.Resize = None,
    crop: common.Crop = None,
    mean: common.Mean = None,
    std: common.Std = None,
    workspace: common.Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Build a TensorRT engine (FP32, FP16 or INT8) from the workspace's ONNX, exporting it first if needed.

    Shapes default to the range the ONNX was exported for. Without TensorRT or a GPU it still makes the ONNX it would build from, then says what is missing.
    """  # one line: typer's help keeps a docstring's line breaks, which cut the sentence mid-way
    from rich.markup import escape

    from resnet_deploy import engines
    from resnet_deploy.calibration.dataset import check_int8_options
    from resnet_deploy.console import stdout_console
    from resnet_deploy.errors import UsageError
    from resnet_deploy.files import check_output_file

    size = engines.parse_bytes(workspace_size)
    for option, path, example in (
        ("--timing-cache", timing_cache, "timing.cache"),
        ("--output", output, "model.engine"),
    ):
        if path is not None:
            check_output_file(option, path, example)
    if onnx_file is not None:
        # the file fixes the model, its preprocessing and its INT8 scales: options about those would be ignored
        ignored = common.typed_options(ctx, MODEL_OPTIONS)
        if ignored:
            raise UsageError(
                f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply with --onnx",
                f"the ONNX file fixes the model, preprocessing and INT8 scales: drop {'it' if len(ignored) == 1 else 'them'}, "
                "or build from a model name without --onnx",
            )
        precision = engines.precision_from_flags(fp16, int8, None, calibrated=True)
        path = engines.engine_from_onnx(
            onnx_file, precision, output, min_shape, opt_shape, max_shape, size, timing_cache
        )
        stdout_console().print(escape(f"engine: {path}\nbuild record: {engines.sidecar_path(path)}"))  # the result
        return
    if output is not None:
        raise UsageError("--output only applies with --onnx", "engines built from a model go to the workspace")
    precision = engines.precision_from_flags(fp16, int8, calib)
    check_int8_options(precision == "int8", calib, calib_size, calib_method)  # before the model loads
    # the ONNX an engine is built from: the range the workspace recorded; in a new workspace, the profile
    # asked for (else the dynamic defaults), so the ONNX made first covers it
    pipe = common.open_pipeline(
        model,
        weights,
        num_classes,
        trust_checkpoint,
        workspace,
        dynamic=True if common.shapes_given(min_shape, opt_shape, max_shape) else None,
        min_shape=min_shape,
        opt_shape=opt_shape,
        max_shape=max_shape,
        resize=resize,
        crop=crop,
        mean=mean,
        std=std,
        static_by_default=False,
        shapes_if_new=True,
    )
    artifact = engines.engine_for_pipeline(
        pipe, precision or "fp32", calib, calib_method, calib_size, min_shape, opt_shape, max_shape, size, timing_cache
    )
    common.print_written(pipe, [artifact.key])


main = common.main_wrapper(app)

if __name__ == "__main__":
    main()
