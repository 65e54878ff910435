"""TensorRT's residual placement for a Q/DQ model ONNX Runtime's quantizer made: Q/DQ on every residual Add's
identity input, none on its conv-branch input, so TensorRT fuses conv + bias + add + relu into one INT8 kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy.errors import VerificationError
from resnet_deploy.onnx_graph import QDQ_OPS, Graph


def place_residual_qdq(model: Any, ranges: Any) -> int:
    """Q/DQ on every residual Add's identity input, none on its conv-branch input. Returns edits made.

    ONNX Runtime's QDQ quantizer does not quantize Add, so the identity input arrives as float: it
    is pointed at the existing DQ of the same tensor (shared with the next convs), or given a new
    symmetric int8 Q/DQ pair from its calibrated range (a downsample conv's output).
    """
    graph = Graph(model)
    new_nodes: dict[str, list[Any]] = {}  # Add node name -> nodes to insert before it
    edits = 0
    for add, identity, branch in graph.residual_adds():
        name = add.name or add.output[0]
        x = add.input[identity]
        if graph.produced_by(x, "DequantizeLinear") is None:
            dq_out = None
            for q in graph.consumers.get(x, []):
                if q.op_type == "QuantizeLinear":
                    dqs = [c for c in graph.consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]
                    if dqs:
                        dq_out = dqs[0].output[0]
                        break
            if dq_out is None:
                if x not in ranges:
                    raise VerificationError(f"no calibrated range for residual input '{x}' of {name}")
                lo, hi = ranges[x].range_value
                absmax = float(max(abs(np.min(lo)), abs(np.max(hi))))
                scale = absmax / 127.0 if absmax > 0 else 1.0
                s_name, z_name = f"{x}_residual_scale", f"{x}_residual_zero_point"
                model.graph.initializer.extend(
                    [
                        numpy_helper.from_array(np.array(scale, np.float32), s_name),
                        helper.make_tensor(z_name, TensorProto.INT8, [], [0]),
                    ]
                )
                q_out, dq_out = f"{x}_residual_QuantizeLinear", f"{x}_residual_DequantizeLinear"
                new_nodes.setdefault(name, []).extend(
                    [
                        helper.make_node("QuantizeLinear", [x, s_name, z_name], [q_out], q_out),
                        helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], dq_out),
                    ]
                )
            add.input[identity] = dq_out
            edits += 1
        if graph.produced_by(add.input[branch], "DequantizeLinear") is not None:
            add.input[branch] = graph.through_qdq(add.input[branch])
            edits += 1
    if new_nodes:
        ordered = []
        for node in model.graph.node:
            ordered.extend(new_nodes.get(node.name, []))
            ordered.append(node)
        del model.graph.node[:]
        model.graph.node.extend(ordered)
    _drop_dead_qdq(model)
    return edits


def _drop_dead_qdq(model: Any) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads any more (after rewiring)."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in QDQ_OPS and n.output[0] not in used]
        if not dead:
            return
        for n in dead:
            model.graph.node.remove(n)
