"""ONNX export with the dynamo exporter: one self-contained file, dynamic batch/height/width."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import TensorProto, helper
from torch.export import Dim

from resnet_deploy import onnx_graph
from resnet_deploy.errors import UsageError
from resnet_deploy.shapes import ShapeRange

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18
#: below this the exporter's down-conversion fails on ResNet's ReduceMean (axes became an input at 18)
MIN_OPSET = 18


@functools.cache
def max_opset() -> tuple[int, str]:
    """The highest opset an export can be written at and verified here, and what sets that limit.

    Above onnx's newest opset torch's converter fails with a logged traceback; above the newest ONNX
    Runtime loads, the file is written but cannot be verified. Both only after the model loaded and
    exported, so the CLI asks here first. ONNX Runtime's limit is probed with a one-node model (about
    a millisecond a session): it has no API that says it.
    """
    limit, who = int(onnx.defs.onnx_opset_version()), f"onnx {onnx.__version__}"
    try:
        import onnxruntime as ort
    except ImportError:
        return limit, who
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", value[:1], value[1:])
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    for opset in range(limit, MIN_OPSET - 1, -1):
        probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        try:
            ort.InferenceSession(probe.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception:
            continue
        return opset, f"ONNX Runtime {ort.__version__}" if opset < limit else who
    return limit, who


def check_opset(opset: int) -> None:
    """Refuse an opset outside what torch's exporter writes and this machine can verify, before any work."""
    if opset < MIN_OPSET:
        raise UsageError(
            f"--opset {opset} is below {MIN_OPSET}, the lowest torch's exporter writes a ResNet at",
            f"use --opset {MIN_OPSET} or higher",
        )
    highest, who = max_opset()
    if opset > highest:
        raise UsageError(
            f"--opset {opset} is above {highest}, the highest {who} supports (every export is verified on it)",
            f"use an --opset from {MIN_OPSET} to {highest}",
        )


def example_input(shape_range: ShapeRange) -> Any:
    """An example at the opt size; batch >= 2 when dynamic so the exporter does not specialize batch 1."""
    n, c, h, w = shape_range.opt
    if shape_range.dynamic and n == 1 and shape_range.max[0] >= 2:
        n = 2
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0))


def dynamic_shapes(shape_range: ShapeRange) -> dict[str, dict[int, Any]] | None:
    if not shape_range.dynamic:
        return None
    dims: dict[int, Any] = {}
    for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
        if shape_range.min[axis] != shape_range.max[axis]:
            dims[axis] = Dim(name, min=1)
    return {"x": dims}


def export_onnx(model: Any, path: Path, shape_range: ShapeRange, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write `model` to `path` as one ONNX file (weights inline), checked by onnx.checker; returns its record."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example_input(shape_range),),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=True,
            dynamic_shapes=dynamic_shapes(shape_range),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    written = onnx_graph.opset(path)
    if written != opset:
        # torch exports at its native opset and converts; a failed down-conversion keeps the native one
        raise UsageError(
            f"torch's exporter could not produce opset {opset} for this model (it wrote opset {written})",
            f"use --opset {written} or higher",
        )
    onnx_graph.check_onnx(path)
    return {"opset": opset}
