"""TorchScript by tracing. Deprecated upstream in favour of torch.export, still what many servers load.

A trace records each convolution as `aten::_convolution` with cuDNN's `benchmark` and `allow_tf32`
flags as constants: the file keeps the settings of the process that traced it, whatever the process
that runs it sets. PyTorch's default allows TF32 for convolutions, so a plain trace is a TF32 model on
every GPU (about 1e-3 relative error, outside FP32 parity). So the trace is taken under fixed settings:
IEEE FP32, which is what the file is verified as, and cuDNN's autotuner on, as the torch runtimes use.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from resnet_deploy.shapes import ShapeRange

#: the cuDNN settings every traced convolution carries (part of the artifact's fingerprint)
CUDNN_SETTINGS = {"fp32_precision": "ieee", "benchmark": True}
#: positions of `benchmark` and `allow_tf32` among aten::_convolution's inputs
_BENCHMARK_ARG, _TF32_ARG = 9, 12


def export_torchscript(model: Any, path: Path, shape_range: ShapeRange) -> None:
    """Trace at the opt shape. A traced ResNet has no shape-dependent control flow, so it runs at any size."""
    import torch

    from resnet_deploy.export.onnx import example_input
    from resnet_deploy.runtimes.torch import cuda_math

    tf32 = CUDNN_SETTINGS["fp32_precision"] == "tf32"
    with (
        warnings.catch_warnings(),
        torch.inference_mode(False),
        torch.no_grad(),
        cuda_math(tf32=tf32, benchmark=bool(CUDNN_SETTINGS["benchmark"])),
    ):
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example_input(shape_range), check_trace=False)
        torch.jit.save(traced, str(path))  # deprecation warning: users asked for TorchScript on purpose


def traced_conv_flags(module: Any) -> set[tuple[bool, bool]]:
    """(benchmark, allow_tf32) of every traced convolution in `module`: what it will run with on a GPU.

    Empty for a scripted module (its convolutions read the process's settings like eager PyTorch).
    """
    flags = set()
    for node in module.inlined_graph.nodes():
        if node.kind() == "aten::_convolution":
            args = list(node.inputs())
            flags.add((bool(args[_BENCHMARK_ARG].toIValue()), bool(args[_TF32_ARG].toIValue())))
    return flags
