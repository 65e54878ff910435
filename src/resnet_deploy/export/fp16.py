"""FP16 ONNX: weights and activations in float16, float32 input and output kept.

TensorRT 11 builds strongly typed networks, so FP16 has to be in the file; keeping the I/O in
float32 means callers feed and read the same arrays as for the FP32 model (the casts sit inside).
The converter ships with onnxruntime (`onnxruntime.transformers.float16`): no extra dependency.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import onnx

from resnet_deploy import onnx_graph


def convert_fp16(source: Path, target: Path) -> dict[str, Any]:
    """Write an FP16 copy of the ONNX at `source` to `target` (float32 inputs/outputs kept); returns its record."""
    from onnxruntime.transformers.float16 import convert_float_to_float16  # onnxruntime is an extra

    model = onnx.load(str(source))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values clamped to fp16 range" for tiny weights
        model = convert_float_to_float16(model, keep_io_types=True)
    onnx_graph.topological_sort(model)  # the converter appends the input casts at the end of the node list
    onnx.save(model, str(target))
    onnx_graph.check_onnx(target)
    return {"source": Path(source).name, "io_types": "float32"}
