"""Corrections to a Q/DQ model after ONNX Runtime's quantizer made it, measured on a trained model (issue 24).

Bias correction (both recipes): each quantized Conv/Gemm's bias is shifted by the mean, per output channel,
of (FP32 output - the output of the same layer run on the FP32 input through its input Q/DQ with its
quantized weights) over the calibration images: NNCF's fast bias correction, measured for every layer at
once in one pass of the FP32 model with a quantized copy of each layer beside it ("isolated"). Quantization
shifts a layer's outputs on average, and a shift is what a bias absorbs exactly. A float bias (the `tensorrt`
recipe) takes the mean; an int32 bias (the `cpu` recipe) takes it in units of input scale x weight scale.
Correcting layer by layer after the earlier corrections ("sequential") scored the same and is N times slower;
correcting all from one pass of the INT8 model double-counts and scored worse.

Narrow first conv (the `cpu` recipe): on x86 without VNNI, ONNX Runtime's U8S8 kernels multiply with
VPMADDUBSW, which saturates when two u8 x s8 products add past 32767 (255 x 127 x 2 does, 255 x 64 x 2 does
not). The image-input conv (u8 codes over 0..255, large 7x7 weights) is where that shows, so its weights are
requantized to 7 bits ([-64, 63], scale x 2) with its int32 bias; on VNNI/AMX CPUs it costs nothing measurable.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy import onnx_graph
from resnet_deploy.onnx_graph import Graph

#: the layer types whose bias absorbs their quantization's mean error
CORRECTED = ("Conv", "Gemm")


class _Bias:
    """A Conv/Gemm's bias in a Q/DQ model: float, or int32 behind a DequantizeLinear (none: nothing to shift)."""

    def __init__(self, graph: Graph, node: Any) -> None:
        self.kind, self.tensor, self.scale = "none", None, 1.0
        name = node.input[2] if len(node.input) > 2 else ""
        dq = graph.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in graph.initializers:
            self.kind, self.tensor = "int32", graph.initializers[dq.input[0]]
            self.scale = numpy_helper.to_array(graph.initializers[dq.input[1]]).astype(np.float64)
        elif name in graph.initializers:
            self.kind, self.tensor = "float", graph.initializers[name]

    def value(self) -> np.ndarray | None:
        """The bias as a float, or None."""
        if self.tensor is None:
            return None
        return numpy_helper.to_array(self.tensor).astype(np.float64) * self.scale

    def shift(self, delta: np.ndarray) -> None:
        if self.tensor is None:
            return
        current = numpy_helper.to_array(self.tensor).astype(np.float64)
        if self.kind == "float":
            new = (current + delta).astype(np.float32)
        else:
            new = np.clip(np.round(current + delta / self.scale), -(2**31), 2**31 - 1).astype(np.int32)
        self.tensor.CopyFrom(numpy_helper.from_array(new, self.tensor.name))


def _dequantized(graph: Graph, dq: Any) -> np.ndarray:
    """The float value of a DequantizeLinear of a constant (a quantized weight)."""
    codes = numpy_helper.to_array(graph.initializers[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(graph.initializers[dq.input[1]]).astype(np.float64)
    zero = graph.constant(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float64)
    shape = [1] * codes.ndim
    if scale.size > 1:
        shape[onnx_graph.attribute(dq, "axis", 1)] = -1
    return ((codes - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)


def _quantized_layers(fp32: Any, qdq: Any) -> tuple[Graph, list[Any], dict[str, str]]:
    """The Q/DQ model's graph, its quantized Conv/Gemm nodes (weights behind a DequantizeLinear of a constant),
    and each one's output name in the FP32 model (matched by node name)."""
    graph = Graph(qdq)
    fp32_out = {n.name: n.output[0] for n in fp32.graph.node if n.op_type in CORRECTED and n.name}
    layers = []
    for node in graph.nodes:
        dq = graph.producer.get(node.input[1]) if node.op_type in CORRECTED else None
        if node.name in fp32_out and dq is not None and dq.op_type == "DequantizeLinear":
            if dq.input[0] in graph.initializers:
                layers.append(node)
    return graph, layers, fp32_out


def _isolated_model(fp32: Any, graph: Graph, layers: list[Any]) -> tuple[bytes, dict[str, str]]:
    """The FP32 model plus, beside each layer, a copy that reads the FP32 input through the INT8 model's input
    Q/DQ and uses its quantized weights and bias: one pass measures every layer's own error."""
    model = copy.deepcopy(fp32)
    by_name = {n.name: n for n in model.graph.node}
    nodes, outputs = [], {}
    for node in layers:
        prefix, x = f"biascheck_{node.name}", by_name[node.name].input[0]
        dq = graph.producer.get(node.input[0])
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = graph.producer[dq.input[0]]
            scale, zero = copy.deepcopy(graph.initializers[q.input[1]]), copy.deepcopy(graph.initializers[q.input[2]])
            scale.name, zero.name = f"{prefix}_scale", f"{prefix}_zero"
            model.graph.initializer.extend([scale, zero])
            nodes += [
                helper.make_node("QuantizeLinear", [x, scale.name, zero.name], [f"{prefix}_q"]),
                helper.make_node("DequantizeLinear", [f"{prefix}_q", scale.name, zero.name], [f"{prefix}_x"]),
            ]
            x = f"{prefix}_x"
        weight = _dequantized(graph, graph.producer[node.input[1]])
        bias = _Bias(graph, node).value()
        bias = np.zeros(weight.shape[0]) if bias is None else bias
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(weight, f"{prefix}_w"),
                numpy_helper.from_array(bias.astype(np.float32), f"{prefix}_b"),
            ]
        )
        copy_node = helper.make_node(node.op_type, [x, f"{prefix}_w", f"{prefix}_b"], [f"{prefix}_y"])
        copy_node.attribute.extend(copy.deepcopy(list(node.attribute)))
        nodes.append(copy_node)
        outputs[node.name] = f"{prefix}_y"
    model.graph.node.extend(nodes)
    for node in layers:
        for name in (outputs[node.name], by_name[node.name].output[0]):
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return model.SerializeToString(), outputs


def _channel_means(serialized: bytes, names: list[str], images: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """Per output channel, the mean of each named tensor over the images, in one pass (graph unoptimized, so
    the copies run as written)."""
    import onnxruntime as ort  # an extra

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = dict.fromkeys(names, 0)
    for start in range(0, len(images), batch):
        for name, value in zip(names, session.run(names, {input_name: images[start : start + batch]}), strict=True):
            axes = (0, 2, 3) if value.ndim == 4 else (0,)
            sums[name] = sums.get(name, 0) + value.astype(np.float64).sum(axis=axes)
            counts[name] += value.size // value.shape[1]
    return {name: sums[name] / counts[name] for name in names}


def correct_biases(fp32: Any, qdq: Any, images: np.ndarray, batch: int) -> int:
    """Shift every quantized Conv/Gemm's bias in `qdq` (in place) by its own mean output error on `images`.
    `fp32`: the model that was quantized (node names shared). Returns how many layers were corrected."""
    graph, layers, fp32_out = _quantized_layers(fp32, qdq)
    if not layers:
        return 0
    serialized, copies = _isolated_model(fp32, graph, layers)
    names = [fp32_out[n.name] for n in layers] + [copies[n.name] for n in layers]
    means = _channel_means(serialized, names, np.ascontiguousarray(images, np.float32), batch)
    for node in layers:
        _Bias(graph, node).shift(means[fp32_out[node.name]] - means[copies[node.name]])
    return len(layers)


def narrow_first_conv(qdq: Any, fp32: Any) -> bool:
    """Requantize the first Conv's int8 weights to 7 bits (scale x 2, codes in [-64, 63], from the FP32
    weights) and its int32 bias with them. False when the model has no quantized first Conv."""
    graph, layers, _ = _quantized_layers(fp32, qdq)
    first = next((n for n in fp32.graph.node if n.op_type == "Conv"), None)
    node = next((n for n in layers if first is not None and n.name == first.name), None)
    if node is None:
        return False
    dq = graph.producer[node.input[1]]
    weights = Graph(fp32).constant(first.input[1]).astype(np.float64)
    codes, scale_tensor = graph.initializers[dq.input[0]], graph.initializers[dq.input[1]]
    scale = numpy_helper.to_array(scale_tensor).astype(np.float64) * 2.0
    narrowed = np.clip(np.round(weights / scale.reshape([-1] + [1] * (weights.ndim - 1))), -64, 63).astype(np.int8)
    codes.CopyFrom(numpy_helper.from_array(narrowed, codes.name))
    scale_tensor.CopyFrom(numpy_helper.from_array(scale.astype(np.float32), scale_tensor.name))
    bias = _Bias(graph, node)
    if bias.kind == "int32":
        bias_dq = graph.producer[node.input[2]]
        bias_scale = graph.initializers[bias_dq.input[1]]
        halved = np.round(numpy_helper.to_array(bias.tensor).astype(np.float64) / 2.0).astype(np.int32)
        bias.tensor.CopyFrom(numpy_helper.from_array(halved, bias.tensor.name))
        doubled = (numpy_helper.to_array(bias_scale).astype(np.float64) * 2.0).astype(np.float32)
        bias_scale.CopyFrom(numpy_helper.from_array(doubled, bias_scale.name))
    return True


def classifier(model_path: Any) -> list[str]:
    """The classifier's node name (the last Gemm: `fc`), which both recipes keep in float: its INT8 error lands
    on the logits themselves, where it costs the most top-1 agreement for the least time."""
    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    return [n.name for n in nodes if n.op_type == "Gemm"][-1:]
