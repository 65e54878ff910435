"""TorchScript by tracing. Deprecated upstream in favour of torch.export, still what many servers load.

A trace records each convolution as `aten::_convolution` with cuDNN's `benchmark` and `allow_tf32`
flags as constants: the file keeps the settings of the process that traced it, whatever the process
that runs it sets. PyTorch's default allows TF32 for convolutions, so a plain trace is a TF32 model on
every GPU (about 1e-3 relative error, outside FP32 parity). So the trace is taken under fixed settings:
IEEE FP32, which is what the file is verified as, and cuDNN's autotuner on, as the torch runtimes use.
(The TorchScript runtime reads the flags back, `runtimes.torch.traced_conv_flags`.)
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch

from resnet_deploy.export.onnx import example_input
from resnet_deploy.runtimes.torch import cuda_math
from resnet_deploy.shapes import ShapeRange

#: the cuDNN settings every traced convolution carries (part of the artifact's fingerprint)
CUDNN_SETTINGS = {"fp32_precision": "ieee", "benchmark": True}


def export_torchscript(model: Any, path: Path, shape_range: ShapeRange) -> dict[str, Any]:
    """Trace at the opt shape. A traced ResNet has no shape-dependent control flow, so it runs at any size."""
    tf32 = CUDNN_SETTINGS["fp32_precision"] == "tf32"
    with (
        warnings.catch_warnings(),
        torch.inference_mode(False),
        torch.no_grad(),
        cuda_math(tf32=tf32, benchmark=bool(CUDNN_SETTINGS["benchmark"])),
    ):
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example_input(shape_range), check_trace=False)
        buffer = io.BytesIO()  # deprecation warning: users asked for TorchScript on purpose
        torch.jit.save(traced, buffer)
    # written from Python: torch's own file writer aborts the process when the disk fills (a C++ terminate,
    # no exception), where a Python write raises an OSError that is said in one line
    Path(path).write_bytes(buffer.getvalue())
    return {"cudnn": CUDNN_SETTINGS}
