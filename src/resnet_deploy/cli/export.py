"""`resnet-export`: onnx, torchscript, program (torch.export) and trt."""

from __future__ import annotations

from typing import Annotated

import typer

from resnet_deploy.cli import common
from resnet_deploy.pipeline import DEFAULT_MODEL, DEFAULT_WORKSPACE

app = typer.Typer(
    help="Export a torchvision ResNet to TorchScript, torch.export, ONNX (FP32/FP16/INT8) and TensorRT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@common.handle_errors
def onnx(
    model: common.Model = DEFAULT_MODEL,
    dynamic: common.Dynamic = False,
    min_shape: common.MinShape = None,
    opt_shape: common.OptShape = None,
    max_shape: common.MaxShape = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    weights: common.Weights = None,
    num_classes: common.NumClasses = None,
    trust_checkpoint: common.Trust = False,
    workspace: common.Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Export ONNX (one self-contained file), verified with ONNX Runtime against PyTorch."""
    pipe = common.open_pipeline(
        model, weights, num_classes, trust_checkpoint, workspace, dynamic, min_shape, opt_shape, max_shape
    )
    pipe.onnx(opset)
    common.print_written(pipe, ["onnx-fp32"])


@app.command()
@common.handle_errors
def torchscript(
    model: common.Model = DEFAULT_MODEL,
    dynamic: common.Dynamic = False,
    min_shape: common.MinShape = None,
    opt_shape: common.OptShape = None,
    max_shape: common.MaxShape = None,
    weights: common.Weights = None,
    num_classes: common.NumClasses = None,
    trust_checkpoint: common.Trust = False,
    workspace: common.Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Export TorchScript (traced), verified against PyTorch."""
    pipe = common.open_pipeline(
        model, weights, num_classes, trust_checkpoint, workspace, dynamic, min_shape, opt_shape, max_shape
    )
    pipe.torchscript()
    common.print_written(pipe, ["torchscript"])


@app.command()
@common.handle_errors
def program(
    model: common.Model = DEFAULT_MODEL,
    dynamic: common.Dynamic = False,
    min_shape: common.MinShape = None,
    opt_shape: common.OptShape = None,
    max_shape: common.MaxShape = None,
    weights: common.Weights = None,
    num_classes: common.NumClasses = None,
    trust_checkpoint: common.Trust = False,
    workspace: common.Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Export a torch.export program (.pt2), verified against PyTorch."""
    pipe = common.open_pipeline(
        model, weights, num_classes, trust_checkpoint, workspace, dynamic, min_shape, opt_shape, max_shape
    )
    pipe.program()
    common.print_written(pipe, ["program"])


main = common.main_wrapper(app)

if __name__ == "__main__":
    main()
