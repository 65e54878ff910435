"""The TensorRT Q/DQ checker: clean on what we write, and it names the node for each broken rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy.errors import UsageError, VerificationError
from resnet_deploy.int8.qdq_check import check_model, check_qdq, require_valid
from resnet_deploy.onnx_graph import Graph
from tests.test_precision import Shared, shared


@pytest.fixture(scope="module")
def models(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Shared:
    return shared(trained, tmp_path_factory)


@pytest.fixture
def trt_model(models: Shared) -> onnx.ModelProto:
    """A fresh copy of the real tensorrt-target INT8 model, to break in one place."""
    return onnx.load(str(models.int8("tensorrt").path))


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _replace_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    _init(model, name).CopyFrom(numpy_helper.from_array(value, name))


def _rules(violations: list) -> set[str]:
    return {v.rule for v in violations}


def test_real_tensorrt_model_passes(models: Shared) -> None:
    assert check_qdq(models.int8("tensorrt").path) == []
    require_valid(models.int8("tensorrt").path)  # does not raise


def test_real_model_has_qdq_where_tensorrt_wants_it(trt_model: onnx.ModelProto) -> None:
    graph = Graph(trt_model)
    adds = graph.residual_adds()
    assert len(adds) == 8  # resnet18: 8 basic blocks
    for add, identity, branch in adds:
        assert graph.produced_by(add.input[identity], "DequantizeLinear") is not None
        assert graph.producer[add.input[branch]].op_type == "Conv"
    convs = [n for n in trt_model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 20
    for conv in convs:  # nothing between a conv's output and what reads it
        for consumer in graph.consumers[conv.output[0]]:
            assert consumer.op_type in ("Add", "Relu", "QuantizeLinear"), consumer.op_type
            if consumer.op_type == "QuantizeLinear":  # only the downsample conv feeding a residual Add
                assert any(
                    a.input[i] == consumer.output[0].replace("_QuantizeLinear", "_DequantizeLinear") for a, i, _ in adds
                )
    biases = [n.input[2] for n in convs if len(n.input) > 2]
    assert biases and all(_init(trt_model, b).data_type == TensorProto.FLOAT for b in biases)


def test_asymmetric_zero_point_is_flagged(trt_model: onnx.ModelProto) -> None:
    q = next(n for n in trt_model.graph.node if n.op_type == "QuantizeLinear")
    _replace_init(trt_model, q.input[2], np.array(3, np.int8))
    violations = check_model(trt_model)
    assert "symmetric" in _rules(violations)
    flagged = [v for v in violations if v.rule == "symmetric"]
    assert q.name in {v.node for v in flagged}
    assert "zero point" in flagged[0].message and "[3]" in flagged[0].message


def test_uint8_zero_point_is_flagged(trt_model: onnx.ModelProto) -> None:
    q = next(n for n in trt_model.graph.node if n.op_type == "QuantizeLinear")
    _replace_init(trt_model, q.input[2], np.array(128, np.uint8))
    assert "int8" in _rules(check_model(trt_model))


def test_per_tensor_conv_weights_are_flagged(trt_model: onnx.ModelProto) -> None:
    graph = Graph(trt_model)
    conv = next(n for n in trt_model.graph.node if n.op_type == "Conv")
    dq = graph.producer[conv.input[1]]
    scale = numpy_helper.to_array(_init(trt_model, dq.input[1]))
    _replace_init(trt_model, dq.input[1], np.array(scale.max(), np.float32))
    _replace_init(trt_model, dq.input[2], np.array(0, np.int8))
    violations = [v for v in check_model(trt_model) if v.rule == "per-channel-weights"]
    assert [v.node for v in violations] == [conv.name]
    assert "per tensor" in violations[0].message


def test_per_channel_weights_on_the_wrong_axis_are_flagged(trt_model: onnx.ModelProto) -> None:
    graph = Graph(trt_model)
    conv = next(n for n in trt_model.graph.node if n.op_type == "Conv")
    dq = graph.producer[conv.input[1]]
    for attr in dq.attribute:
        if attr.name == "axis":
            attr.i = 1
    assert "per-channel-weights" in _rules(check_model(trt_model))


def test_residual_placement_is_checked(trt_model: onnx.ModelProto) -> None:
    graph = Graph(trt_model)
    add, identity, branch = graph.residual_adds()[0]
    # identity input back to float, and a Q/DQ pair put on the conv branch instead
    add.input[identity] = graph.through_qdq(add.input[identity])
    x = add.input[branch]
    scale = next(t.name for t in trt_model.graph.initializer if t.name.endswith("_scale") and not t.dims)
    zp = helper.make_tensor("branch_zp", TensorProto.INT8, [], [0])
    trt_model.graph.initializer.append(zp)
    q = helper.make_node("QuantizeLinear", [x, scale, "branch_zp"], ["branch_q"], "branch_Q")
    dq = helper.make_node("DequantizeLinear", ["branch_q", scale, "branch_zp"], ["branch_dq"], "branch_DQ")
    idx = list(trt_model.graph.node).index(add)
    trt_model.graph.node.insert(idx, dq)
    trt_model.graph.node.insert(idx, q)
    add.input[branch] = "branch_dq"
    violations = check_model(trt_model)
    assert {"residual-identity", "residual-branch"} <= _rules(violations)
    assert all(v.node == add.name for v in violations if v.rule.startswith("residual"))


def test_cpu_recipe_model_is_not_tensorrt_clean(models: Shared) -> None:
    rules = _rules(check_qdq(models.int8("cpu").path))
    assert "symmetric" in rules or "int8" in rules


def test_fp32_model_is_not_int8(models: Shared) -> None:
    violations = check_qdq(models.pipe.ws.path("resnet18.onnx"))
    assert _rules(violations) == {"has-qdq"}
    with pytest.raises(VerificationError, match="TensorRT's Q/DQ rules"):
        require_valid(models.pipe.ws.path("resnet18.onnx"))


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        check_qdq(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(UsageError, match="cannot read"):
        check_qdq(tmp_path / "junk.onnx")


# -- small models built with onnx.helper -------------------------------------------------------------


def _tiny(
    act_zp: np.ndarray = np.array(0, np.int8),
    w_scale: np.ndarray | None = None,
    w_axis: int = 0,
    int32_bias: bool = False,
) -> onnx.ModelProto:
    """input -> Q -> DQ -> Conv(DQ(int8 weights), bias) -> output, 4 output channels."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    w_scale = np.full(4, 0.01, np.float32) if w_scale is None else w_scale
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(act_zp, "x_zp"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zp"], ["x_q"], "input_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], "input_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], "weight_DQ", axis=w_axis),
    ]
    if int32_bias:
        inits += [
            numpy_helper.from_array(np.arange(4, dtype=np.int32), "b_q"),
            numpy_helper.from_array(np.full(4, 5e-4, np.float32), "b_scale"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale"], ["b"], "bias_DQ", axis=0))
    else:
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "b"))
    nodes.append(helper.make_node("Conv", ["x_dq", "w", "b"], ["output"], "conv", pads=[1, 1, 1, 1]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def test_tiny_clean_model_passes() -> None:
    assert check_model(_tiny()) == []


def test_tiny_asymmetric_activation_is_flagged() -> None:
    violations = check_model(_tiny(act_zp=np.array(-5, np.int8)))
    assert {(v.node, v.rule) for v in violations} == {("input_Q", "symmetric"), ("input_DQ", "symmetric")}


def test_tiny_per_tensor_weights_are_flagged() -> None:
    violations = check_model(_tiny(w_scale=np.array(0.01, np.float32)))
    assert [(v.node, v.rule) for v in violations] == [("conv", "per-channel-weights")]


def test_tiny_int32_bias_is_flagged() -> None:
    rules = {(v.node, v.rule) for v in check_model(_tiny(int32_bias=True))}
    assert ("bias_DQ", "int32-bias") in rules and ("conv", "int32-bias") in rules


def test_tiny_model_runs_on_onnxruntime(tmp_path: Path) -> None:
    """The hand-built model is a real, runnable ONNX (so the checker is tested on valid graphs)."""
    import onnxruntime as ort

    onnx.save(_tiny(), str(tmp_path / "tiny.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.ones((1, 3, 8, 8), np.float32)})[0]
    assert out.shape == (1, 4, 8, 8) and np.isfinite(out).all()
