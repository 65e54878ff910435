"""Check an INT8 ONNX against TensorRT's explicit-quantization (Q/DQ) rules.

TensorRT 11 builds strongly typed networks only, so an ONNX that breaks these rules either fails to
build or silently runs layers in float. Every rule below reports the node it concerns:

- every QuantizeLinear/DequantizeLinear is int8 with zero point 0 (symmetric), float32 scale > 0;
- activations are quantized per tensor (scalar scale);
- Conv weights are int8 per channel on axis 0 (one scale per output channel);
- every Conv reads a dequantized activation and dequantized weights;
- no int32 bias quantization (TensorRT takes float biases and folds them itself);
- a QuantizeLinear feeds only DequantizeLinear nodes (Q/DQ come in pairs);
- each residual Add has Q/DQ on its identity input and none on its conv-branch input, so TensorRT
  can fuse conv + add + relu.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from resnet_deploy.errors import UsageError, VerificationError, first_line
from resnet_deploy.onnx_graph import QDQ_OPS, Graph, attribute


@dataclass(frozen=True)
class QdqViolation:
    """One place a model breaks a TensorRT Q/DQ rule."""

    node: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.node}: {self.message} [{self.rule}]"


def _check_qdq_node(node: Any, graph: Graph) -> Iterable[QdqViolation]:
    name = node.name or node.output[0]
    scale_name = node.input[1] if len(node.input) > 1 else ""
    zp_name = node.input[2] if len(node.input) > 2 else ""
    x = node.input[0]
    weight = graph.is_constant(x)

    if node.op_type == "DequantizeLinear" and weight and graph.constant_type(x) == onnx.TensorProto.INT32:
        yield QdqViolation(
            name, "int32-bias", f"dequantizes the int32 tensor '{x}': TensorRT takes float biases, not int32 ones"
        )
        return

    if not zp_name:
        if node.op_type == "QuantizeLinear":
            yield QdqViolation(name, "int8", "has no zero point, so it quantizes to uint8; TensorRT needs int8")
        elif weight and graph.constant_type(x) != onnx.TensorProto.INT8:
            yield QdqViolation(name, "int8", f"dequantizes '{x}', which is not int8")
    elif not graph.is_constant(zp_name):
        yield QdqViolation(name, "constant-qparams", f"zero point '{zp_name}' is not a constant")
    else:
        zp = graph.constant(zp_name)
        if graph.constant_type(zp_name) != onnx.TensorProto.INT8:
            kind = onnx.helper.tensor_dtype_to_np_dtype(graph.constant_type(zp_name)).name
            yield QdqViolation(name, "int8", f"zero point '{zp_name}' is {kind}; TensorRT needs int8")
        if np.any(zp != 0):
            yield QdqViolation(
                name,
                "symmetric",
                f"asymmetric: zero point '{zp_name}' is {np.unique(zp)[:4].tolist()}, TensorRT needs 0",
            )

    if not graph.is_constant(scale_name):
        yield QdqViolation(name, "constant-qparams", f"scale '{scale_name}' is not a constant")
        return
    scale = graph.constant(scale_name)
    if graph.constant_type(scale_name) != onnx.TensorProto.FLOAT:
        yield QdqViolation(name, "float-scale", f"scale '{scale_name}' is not float32")
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        yield QdqViolation(name, "scale", f"scale '{scale_name}' has values that are zero, negative or not finite")
    if not weight and scale.size != 1:
        yield QdqViolation(
            name, "per-tensor-activations", f"activation '{x}' is quantized per channel; TensorRT needs per tensor"
        )
    if node.op_type == "QuantizeLinear":
        for consumer in graph.consumers.get(node.output[0], []):
            if consumer.op_type != "DequantizeLinear":
                yield QdqViolation(
                    name, "qdq-pairs", f"feeds {consumer.op_type} '{consumer.name}'; a Q must feed DequantizeLinear"
                )


def _check_conv(node: Any, graph: Graph) -> Iterable[QdqViolation]:
    name = node.name or node.output[0]
    if graph.produced_by(node.input[0], "DequantizeLinear") is None:
        yield QdqViolation(
            name, "quantized-conv", f"input '{node.input[0]}' is not dequantized: this Conv runs in float"
        )
    dq = graph.produced_by(node.input[1], "DequantizeLinear")
    if dq is None:
        yield QdqViolation(name, "quantized-conv", f"weight '{node.input[1]}' is not dequantized: float weights")
    else:
        w = dq.input[0]
        q = graph.produced_by(w, "QuantizeLinear")
        w_float = q.input[0] if q is not None else w
        if not graph.is_constant(w_float):
            yield QdqViolation(name, "constant-weights", f"weight '{w_float}' is not a constant")
        scale = graph.constant(dq.input[1]) if len(dq.input) > 1 else None
        out_channels = graph.constant(w_float).shape[0] if graph.is_constant(w_float) else None
        if scale is not None and scale.size == 1:
            yield QdqViolation(
                name,
                "per-channel-weights",
                f"weight '{w_float}' is quantized per tensor; TensorRT needs per channel on axis 0",
            )
        elif scale is not None:
            axis = attribute(dq, "axis", 1)
            if axis != 0 or (out_channels is not None and scale.size != out_channels):
                yield QdqViolation(
                    name,
                    "per-channel-weights",
                    f"weight '{w_float}' is quantized per channel on axis {axis} with {scale.size} scales; "
                    f"TensorRT needs axis 0 ({out_channels} output channels)",
                )
    if len(node.input) > 2 and node.input[2] and graph.produced_by(node.input[2], "DequantizeLinear") is not None:
        yield QdqViolation(name, "int32-bias", f"bias '{node.input[2]}' is quantized; leave it float for TensorRT")


def check_model(model: Any) -> list[QdqViolation]:
    """Every TensorRT Q/DQ rule `model` (an onnx.ModelProto) breaks; empty when it is fine."""
    graph = Graph(model)
    ops = {n.op_type for n in graph.nodes}
    if not (ops & QDQ_OPS):
        return [QdqViolation(model.graph.name or "graph", "has-qdq", "no QuantizeLinear/DequantizeLinear: not INT8")]
    out: list[QdqViolation] = []
    for node in graph.nodes:
        if node.domain not in ("", "ai.onnx") and node.op_type in QDQ_OPS:
            out.append(
                QdqViolation(node.name, "onnx-domain", f"{node.op_type} is in domain '{node.domain}', not ONNX's")
            )
        if node.op_type in QDQ_OPS:
            out.extend(_check_qdq_node(node, graph))
        elif node.op_type == "Conv":
            out.extend(_check_conv(node, graph))
        elif node.op_type in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"):
            out.append(QdqViolation(node.name, "qdq-format", f"{node.op_type} is QOperator format; use Q/DQ"))
    for add, identity, branch in graph.residual_adds():
        name = add.name or add.output[0]
        if graph.produced_by(add.input[identity], "DequantizeLinear") is None:
            out.append(
                QdqViolation(
                    name,
                    "residual-identity",
                    f"identity input '{add.input[identity]}' has no Q/DQ; TensorRT cannot run this Add in INT8",
                )
            )
        if graph.produced_by(add.input[branch], "DequantizeLinear") is not None:
            out.append(
                QdqViolation(
                    name,
                    "residual-branch",
                    f"conv-branch input '{add.input[branch]}' has Q/DQ; it stops TensorRT fusing conv + add + relu",
                )
            )
    return out


def check_qdq(path: Path) -> list[QdqViolation]:
    """Read the ONNX at `path` and list every place it breaks TensorRT's Q/DQ rules."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} does not exist", "pass an INT8 .onnx file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise UsageError(f"cannot read {path.name} as ONNX: {first_line(exc, 160)}") from None
    return check_model(model)


def require_valid(path: Path, what: str | None = None) -> None:
    """Raise VerificationError naming the first violations; a violation is an error, not a warning."""
    violations = check_qdq(path)
    if violations:
        shown = "; ".join(str(v) for v in violations[:3])
        more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
        raise VerificationError(
            f"{what or Path(path).name} breaks TensorRT's Q/DQ rules in {len(violations)} places: {shown}{more}",
            "the file was not kept; report this with the model and command",
        )
