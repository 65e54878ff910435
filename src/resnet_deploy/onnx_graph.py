"""The one ONNX reader and walker: a user's file opened with a clear error, its input, opset and precision, the
checker, and `Graph` (producers, consumers and constants by tensor name) that the Q/DQ rules, the INT8
placement and `--explain` walk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from resnet_deploy.errors import UsageError, VerificationError, first_line

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def read_onnx(path: Path | str) -> Any:
    """The graph of a user's ONNX file (weights stored outside it are not read), or a one-line error.

    A user's file is first opened here (`--artifact`, `trt --onnx`): a checkpoint or a text file passed
    where an ONNX belongs would otherwise end in a protobuf DecodeError traceback.
    """
    path = Path(path)
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise UsageError(
            f"{path.name} is not a readable ONNX model ({first_line(exc, 160, named=True)})",
            "pass an .onnx file written by resnet-export onnx or another ONNX exporter",
        ) from None


def _model(source: Path | str | bytes | Any) -> Any:
    """A ModelProto from a path, serialized bytes, or a model already read (a ResNet-50 takes a while to parse)."""
    if isinstance(source, bytes):
        return onnx.load_from_string(source)
    return read_onnx(source) if isinstance(source, str | Path) else source


def opset(source: Path | str | Any) -> int:
    return next(o.version for o in _model(source).opset_import if o.domain in ("", "ai.onnx"))


def precision(source: Path | str | Any) -> str:
    """fp32, fp16 or int8, read from the graph (Q/DQ nodes -> int8, fp16 initializers -> fp16)."""
    model = _model(source)
    ops = {n.op_type for n in model.graph.node}
    if QDQ_OPS & ops or "QLinearConv" in ops:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def input_name(source: Path | str | bytes | Any) -> str:
    return _model(source).graph.input[0].name


def output_name(source: Path | str | bytes | Any) -> str:
    return _model(source).graph.output[0].name


def input_dims(source: Path | str | bytes | Any) -> list[int | str]:
    """The input's dims: ints for fixed ones, names for dynamic ones (the same list ONNX Runtime shows)."""
    model = _model(source)
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def check_onnx(path: Path) -> Any:
    """onnx.checker plus strict shape inference; returns the inferred model."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    except Exception as exc:
        raise VerificationError(f"{Path(path).name} fails onnx.checker: {first_line(exc)}") from None


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


def attribute(node: Any, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


class Graph:
    """Producers, consumers and constants of an ONNX graph, looked up by tensor name.

    Constants are converted to numpy when first asked for: walking a ResNet-50 for its stage ends should not
    copy its 100 MB of weights."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.initializers = {t.name: t for t in model.graph.initializer}
        self._constant_nodes: dict[str, Any] = {}  # output -> TensorProto of a Constant node
        self._arrays: dict[str, np.ndarray] = {}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
            if node.op_type == "Constant":
                value = attribute(node, "value")
                if value is not None:
                    self._constant_nodes[node.output[0]] = value
        self.graph_inputs = {i.name for i in model.graph.input} - set(self.initializers)

    def is_constant(self, name: str) -> bool:
        return name in self.initializers or name in self._constant_nodes

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, None for a computed tensor."""
        if name not in self._arrays:
            proto = self.initializers.get(name, self._constant_nodes.get(name))
            if proto is None:
                return None
            self._arrays[name] = numpy_helper.to_array(proto)
        return self._arrays[name]

    def constant_type(self, name: str) -> int | None:
        """The TensorProto data type of a constant, None for a computed tensor."""
        proto = self.initializers.get(name, self._constant_nodes.get(name))
        return None if proto is None else proto.data_type

    def produced_by(self, name: str, op_type: str) -> Any | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def through_qdq(self, name: str) -> str:
        """The float tensor behind a DQ(Q(x)) chain (x itself when there is none)."""
        while True:
            node = self.producer.get(name)
            if node is None or node.op_type not in QDQ_OPS:
                return name
            name = node.input[0]

    def is_weight(self, name: str) -> bool:
        """A constant, or a constant seen through DequantizeLinear/Cast (a quantized or FP16 weight)."""
        node = self.producer.get(name)
        if node is None:
            return name in self.initializers
        if node.op_type == "Constant":
            return True
        return node.op_type in ("DequantizeLinear", "Cast") and self.is_weight(node.input[0])

    def depths(self) -> dict[str, int]:
        """Longest path (in non-Q/DQ nodes) from the graph inputs to each tensor."""
        depth: dict[str, int] = dict.fromkeys(self.graph_inputs, 0)
        for node in self.nodes:  # ONNX graphs are topologically sorted
            d = max((depth.get(i, 0) for i in node.input if i and not self.is_constant(i)), default=0)
            step = 0 if node.op_type in QDQ_OPS else 1
            for out in node.output:
                depth[out] = d + step
        return depth

    def residual_adds(self) -> list[tuple[Any, int, int]]:
        """(Add node, identity input index, conv-branch input index) for every residual Add.

        A residual Add sums two activations, at least one coming from a Conv. The identity input is the
        shorter path from the network input: the block input itself, or the downsample conv's output.
        """
        depth = self.depths()
        out = []
        for node in self.nodes:
            if node.op_type != "Add" or len(node.input) != 2 or any(self.is_constant(i) for i in node.input):
                continue
            sources = [self.through_qdq(i) for i in node.input]
            producers = [self.producer.get(s) for s in sources]
            conv_like = [p is not None and p.op_type in ("Conv", "BatchNormalization") for p in producers]
            if not any(conv_like):
                continue
            d = [depth.get(s, 0) for s in sources]
            if d[0] == d[1]:
                if conv_like[0] == conv_like[1]:
                    continue  # no way to tell the branches apart; not a ResNet residual
                branch = 0 if conv_like[0] else 1
            else:
                branch = 0 if d[0] > d[1] else 1
            out.append((node, 1 - branch, branch))
        return out
