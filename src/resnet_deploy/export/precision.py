"""FP16 ONNX: weights and activations in float16, float32 input and output kept.

TensorRT 11 builds strongly typed networks, so FP16 has to be in the file; keeping the I/O in
float32 means callers feed and read the same arrays as for the FP32 model (the casts sit inside).
The converter ships with onnxruntime (`onnxruntime.transformers.float16`): no extra dependency.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resnet_deploy.pipeline import Pipeline
    from resnet_deploy.runtimes.base import Artifact

#: FP16 against PyTorch FP32 on the verification inputs (random normal, every shape). Measured about
#: 1e-3 on resnet18/50; a broken conversion (overflow to inf, wrong casts) is orders of magnitude off.
FP16_REL_L2 = 2e-2


def topological_sort(model: Any) -> None:
    """Reorder `model.graph.node` so each node follows the producers of its inputs (stable otherwise)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input at node {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(source: Path, target: Path) -> None:
    """Write an FP16 copy of the ONNX at `source` to `target` (float32 inputs/outputs kept)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from resnet_deploy.export.onnx import check_onnx

    model = onnx.load(str(source))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values clamped to fp16 range" for tiny weights
        model = convert_float_to_float16(model, keep_io_types=True)
    topological_sort(model)  # the converter appends the input casts at the end of the node list
    onnx.save(model, str(target))
    check_onnx(target)


def onnx_fp16(pipe: Pipeline, opset: int | None = None) -> Artifact:
    """The FP16 ONNX of `pipe`'s model (manifest key `onnx-fp16`), made from the FP32 ONNX and verified
    on ONNX Runtime's CPU provider against PyTorch at the shapes of the model's range."""
    from resnet_deploy.export.onnx import DEFAULT_OPSET

    opset = opset or DEFAULT_OPSET
    fp32 = pipe.onnx(opset)
    return pipe.build(
        "onnx-fp16",
        f"{pipe.ws.name}.fp16.onnx",
        "onnx",
        "fp16",
        pipe.fingerprint(format="onnx", precision="fp16", opset=opset, source_sha256=pipe.ws.sha256(fp32.path)),
        lambda tmp: convert_fp16(fp32.path, tmp),
        pipe.verify_against_model("onnxruntime-cpu", max_rel_l2=FP16_REL_L2),
        opset=opset,
        source=fp32.path.name,
        io_types="float32",
    )
