"""TorchScript by tracing. Deprecated upstream in favour of torch.export, still what many servers load."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from resnet_deploy.shapes import ShapeRange


def export_torchscript(model: Any, path: Path, shape_range: ShapeRange) -> None:
    """Trace at the opt shape. A traced ResNet has no shape-dependent control flow, so it runs at any size."""
    import torch

    from resnet_deploy.export.onnx import example_input

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example_input(shape_range), check_trace=False)
        torch.jit.save(traced, str(path))  # deprecation warning: users asked for TorchScript on purpose
