"""What a runtime says when a model or a session fails: the cause, not a wrapper's banner.

These paths matter most on a GPU (a TorchScript fuser or a CUDA provider that fails there and not
here), but what decides the message is plain Python and runs here on real TorchScript and ONNX Runtime.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from resnet_deploy.errors import UsageError
from resnet_deploy.runtimes import Artifact
from resnet_deploy.runtimes.torch import TorchScriptRuntime, error_cause


class _Flat(torch.nn.Module):
    """A classifier whose head takes exactly 3x2x2 inputs, like old ResNets' fixed-size pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


def _traced(tmp_path):
    path = tmp_path / "flat.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(_Flat().eval(), torch.randn(1, 3, 2, 2)).save(str(path))
    return path


def test_torchscript_failure_names_its_cause_not_the_interpreter_banner(tmp_path) -> None:
    runtime = TorchScriptRuntime(Artifact("torchscript", _traced(tmp_path), "fp32"))
    assert runtime.run(np.ones((2, 3, 2, 2), np.float32)).shape == (2, 4)
    with pytest.raises(UsageError) as err:
        runtime.run(np.ones((1, 3, 4, 4), np.float32))
    message = str(err.value)
    assert "cannot be multiplied" in message and "1x48" in message, message
    assert "TorchScript interpreter" not in message
    assert "--dynamic" in err.value.hint


def test_error_cause_takes_torchscripts_last_line_and_anything_elses_first(tmp_path) -> None:
    module = torch.jit.load(str(_traced(tmp_path)))
    with pytest.raises(RuntimeError) as err:
        module(torch.ones(1, 3, 4, 4))
    assert str(err.value).startswith("The following operation failed in the TorchScript interpreter")
    assert error_cause(err.value).startswith("RuntimeError: ") and "cannot be multiplied" in error_cause(err.value)
    assert error_cause(ValueError("first line\nsecond line")) == "first line"
    assert error_cause(RuntimeError("")) == "RuntimeError"


class _OutOfMemory(torch.nn.Module):
    """Raises what the CUDA caching allocator raises when a batch does not fit (the text is what matters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.flatten(1)


def test_out_of_memory_asks_for_a_smaller_batch_not_a_re_export(tmp_path) -> None:
    path = tmp_path / "oom.ts"
    torch.jit.script(_OutOfMemory()).save(str(path))
    runtime = TorchScriptRuntime(Artifact("torchscript", path, "fp32"))
    with pytest.raises(UsageError) as err:
        runtime.run(np.ones((4, 3, 2, 2), np.float32))
    assert "CUDA out of memory" in err.value.message
    assert "smaller --batch" in err.value.hint and "--dynamic" not in err.value.hint


# -- ONNX Runtime: a provider that did not start, or nodes it leaves to the CPU -------------------------


def _two_node_onnx(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["a"], name="abs0"), helper.make_node("Neg", ["a"], ["y"], name="neg0")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "two.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # what ONNX Runtime 1.2x-1.3x reads (onnx's own default may be newer)
    onnx.save(model, str(path))
    return path


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_a_cuda_provider_that_cannot_start_is_a_missing_dependency_not_a_refused_node(tmp_path) -> None:
    """With CPU fallback disabled, ONNX Runtime reports a CUDA provider whose libraries did not load (so
    every node went to the CPU) exactly as it reports one node it cannot run. This ONNX Runtime cannot
    start the CUDA provider (a CPU-only build, or no GPU), which is the first case."""
    import onnxruntime as ort

    from resnet_deploy.errors import MissingDependencyError
    from resnet_deploy.runtimes.onnxruntime import open_session

    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        pytest.skip("the CUDA provider can start here")
    with pytest.raises(MissingDependencyError, match=r"could not start CUDAExecutionProvider for two\.onnx"):
        open_session(str(_two_node_onnx(tmp_path)), "CUDAExecutionProvider", "cuda:0", None, "two.onnx")


def test_sessions_leave_onnxruntimes_process_wide_log_quiet(tmp_path) -> None:
    """On an H200 that logger printed 200+ red cuDNN-frontend "Error" lines during a passing compare. Here it
    prints its warning for a CUDA provider it cannot find, which open_session must silence as well. A fresh
    process: the logger's level is process-wide, and another test may have set it already."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from resnet_deploy.runtimes.onnxruntime import open_session\n"
        "try:\n"
        "    open_session(sys.argv[1], 'CUDAExecutionProvider', 'cuda:0', None, 'two.onnx')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    path = str(_two_node_onnx(tmp_path))
    run = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr  # it reached open_session: no import error passing for quiet
    assert "onnxruntime:Default" not in run.stderr, run.stderr
    # without open_session the same request does print it, so this test stays able to fail
    bare = script.replace(
        "open_session(sys.argv[1], 'CUDAExecutionProvider', 'cuda:0', None, 'two.onnx')",
        "import onnxruntime as o; o.InferenceSession(sys.argv[1], providers=[('CUDAExecutionProvider', {'device_id': '0'})])",
    )
    if not torch.cuda.is_available():
        assert run.stdout.strip() == "MissingDependencyError", run.stdout
        assert (
            "onnxruntime:Default"
            in subprocess.run([sys.executable, "-c", bare, path], capture_output=True, text=True, timeout=120).stderr
        )


def test_node_placements_read_from_onnxruntimes_own_verbose_log(tmp_path) -> None:
    import onnxruntime as ort

    from resnet_deploy.runtimes.onnxruntime import _captured_stderr, _session_options, node_placements

    with _captured_stderr() as log:
        ort.InferenceSession(
            str(_two_node_onnx(tmp_path)), _session_options(ort, None, 0), providers=["CPUExecutionProvider"]
        )
    assert node_placements(log.text) == {"CPUExecutionProvider": (2, [])}, log.text[-2000:]


def test_node_placements_name_the_nodes_of_each_provider() -> None:
    """The per-provider form ONNX Runtime logs when the graph is split (session_state.cc)."""
    from resnet_deploy.runtimes.onnxruntime import node_placements

    prefix = "2026-11-22 11:41:39.201500048 [V:onnxruntime:, session_state.cc:1585 VerifyEachNodeIsAssignedToAnEp] "
    log = "\n".join(
        [
            prefix + "Node placements",
            prefix + " Node(s) placed on [CPUExecutionProvider]. Number of nodes: 2",
            prefix + "  ReduceMean (node_mean)",
            prefix + "  DequantizeLinear (fc.weight_DequantizeLinear)",
            prefix + " Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 1",
            prefix + "  Conv (node_conv1)",
            "2026-11-22 11:41:39.201667800 [V:onnxruntime:, session_state.cc:193 CreateGraphInfo] SaveMLValueNameIndexMapping",
        ]
    )
    assert node_placements(log) == {
        "CPUExecutionProvider": (2, ["ReduceMean (node_mean)", "DequantizeLinear (fc.weight_DequantizeLinear)"]),
        "CUDAExecutionProvider": (1, ["Conv (node_conv1)"]),
    }


def test_an_onnx_file_too_new_for_onnxruntime_names_the_ir_version(tmp_path) -> None:
    """ONNX Runtime puts 200+ characters of C++ source location and signature before the cause; the
    message keeps the cause (here: a file saved by an onnx package newer than this ONNX Runtime reads)."""
    import onnx

    from resnet_deploy.runtimes.onnxruntime import OnnxRuntime

    path = _two_node_onnx(tmp_path)
    model = onnx.load(str(path))
    model.ir_version = 99  # no ONNX Runtime reads this
    onnx.save(model, str(path))
    with pytest.raises(UsageError) as info:
        OnnxRuntime(Artifact.from_file(path))
    text = str(info.value)
    assert "Unsupported model IR version: 99" in text, text
    assert ".cc:" not in text and "onnxruntime::" not in text, text
    assert "model.ir_version" in text  # the fix


@pytest.mark.parametrize("dims", [["N", 10], ["N", 1, "H", "W"]], ids=["not-an-image", "grayscale"])
def test_an_onnx_that_does_not_take_rgb_images_is_refused_as_such(tmp_path, dims) -> None:
    """Not "re-export with --dynamic": no shape option makes a grayscale or non-image model take RGB."""
    import onnx
    from onnx import TensorProto, helper

    from resnet_deploy.runtimes.onnxruntime import OnnxRuntime

    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path = tmp_path / "other.onnx"
    onnx.save(model, str(path))
    shown = "x".join("?" if isinstance(d, str) else str(d) for d in dims)
    with pytest.raises(UsageError) as info:
        OnnxRuntime(Artifact.from_file(path))
    assert f"other.onnx is not an RGB image model: its input 'x' is {shown}, not Nx3xHxW" in str(info.value)
    assert "--dynamic" not in str(info.value)


def test_a_corrupt_torchscript_file_is_one_line_cut_at_a_sentence(tmp_path) -> None:
    """torch's message for a damaged zip runs on past any limit; it is cut where a sentence ends."""
    path = tmp_path / "broken.ts"
    path.write_bytes(np.random.default_rng(0).bytes(4096))  # not a zip archive at all
    with pytest.raises(UsageError) as info:
        TorchScriptRuntime(Artifact.from_file(path))
    message = info.value.message
    assert message.startswith("cannot load TorchScript file broken.ts: PytorchStreamReader failed"), message
    assert message.endswith(".") and "there is a high" not in message, message
