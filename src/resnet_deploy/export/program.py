"""torch.export `.pt2`: the non-deprecated successor of TorchScript, with symbolic batch/height/width."""

from __future__ import annotations

import copy
import functools
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.export import Dim

from resnet_deploy import console
from resnet_deploy.export.onnx import example_input
from resnet_deploy.shapes import ShapeRange


def export_program(model: Any, path: Path, shape_range: ShapeRange) -> dict[str, Any]:
    """Write `model` as a torch.export program with symbolic batch/height/width; returns its record."""
    program = exported_program(model, shape_range)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    # written from Python: torch's own file writer aborts the process when the disk fills (no exception)
    Path(path).write_bytes(buffer.getvalue())
    return {}


def exported_program(model: Any, shape_range: ShapeRange, example: Any = None) -> Any:
    """`model` through torch.export for `shape_range` (an ExportedProgram): what the `.pt2` saves and what
    AOTInductor compiles, so both take the same sizes. `example`: the input to trace with (default
    `example_input(shape_range)`, on the CPU); an AOTInductor build for CUDA passes one on the GPU."""
    # Dim.DYNAMIC, not named Dims with bounds: ResNet's strides add guards (width > 32, ...) that
    # torch.export would otherwise report as violated constraints; it derives the valid range itself.
    dims = None
    if shape_range.dynamic:
        dims = {"x": {a: Dim.DYNAMIC for a in (0, 2, 3) if shape_range.min[a] != shape_range.max[a]}}
        if (2 in dims["x"] or 3 in dims["x"]) and strided_maxpool_specializes():  # only sizes are affected
            model = unstride_maxpools(model)
            console.info(
                f"torch {torch.__version__} fixes the parity of a strided max-pool's input size when exporting; "
                "the stem max-pool is exported as a stride-1 pool plus a strided slice (same numbers, any size)"
            )
    example = example_input(shape_range) if example is None else example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (example,), dynamic_shapes=dims)


@functools.cache
def strided_maxpool_specializes() -> bool:
    """Whether this torch's export of MaxPool2d(3, 2, 1) only accepts sizes of the example's parity.

    Seen with torch 2.11: its pooling shape function rounds with a branch on `(H - 1) % 2`, so a .pt2
    exported at 224x224 refuses 97x131. Fixed in later releases; probed rather than version-checked.
    """
    pool = torch.nn.MaxPool2d(3, 2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(
            pool, (torch.randn(1, 1, 8, 8),), dynamic_shapes={"input": {2: Dim.DYNAMIC, 3: Dim.DYNAMIC}}
        )
    try:
        program.module()(torch.randn(1, 1, 9, 9))
    except Exception:
        return True
    return False


class StridedMaxPool(torch.nn.Module):
    """MaxPool2d(k, stride s, padding p) as a stride-1 pool followed by every s-th output.

    Output position o of the strided pool covers inputs s*o - p .. s*o - p + k - 1, exactly what the
    stride-1 pool computes at position s*o, so the numbers are identical (a max rounds nothing). The
    stride-1 pool does s*s times the work of the strided one; for ResNet's stem that is a few percent of
    the network's time, paid only where `strided_maxpool_specializes()`.
    """

    def __init__(self, pool: torch.nn.MaxPool2d) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = pool.kernel_size, pool.stride, pool.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride if isinstance(self.stride, tuple) else (self.stride, self.stride)
        y = torch.nn.functional.max_pool2d(x, self.kernel, 1, self.padding)
        return y[:, :, :: s[0], :: s[1]]


def unstride_maxpools(model: Any) -> Any:
    """A copy of `model` with each strided, floor-mode, undilated MaxPool2d replaced by `StridedMaxPool`."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if (
            isinstance(module, torch.nn.MaxPool2d)
            and not module.ceil_mode
            and module.dilation in (1, (1, 1))
            and module.stride not in (1, (1, 1))
        ):
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], StridedMaxPool(module))
    return model
