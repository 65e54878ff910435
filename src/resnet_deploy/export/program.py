"""torch.export `.pt2`: the non-deprecated successor of TorchScript, with symbolic batch/height/width."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from resnet_deploy.shapes import ShapeRange


def export_program(model: Any, path: Path, shape_range: ShapeRange) -> None:
    import torch
    from torch.export import Dim

    from resnet_deploy.export.onnx import example_input

    # Dim.DYNAMIC, not named Dims with bounds: ResNet's strides add guards (width > 32, ...) that
    # torch.export would otherwise report as violated constraints; it derives the valid range itself.
    dims = None
    if shape_range.dynamic:
        dims = {"x": {a: Dim.DYNAMIC for a in (0, 2, 3) if shape_range.min[a] != shape_range.max[a]}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (example_input(shape_range),), dynamic_shapes=dims)
    torch.export.save(program, str(path))
