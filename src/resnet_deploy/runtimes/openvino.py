"""OpenVINO on the CPU, running the project's ONNX files as they are: FP32, FP16 and Q/DQ INT8.

On these CPUs OpenVINO runs the same FP32 file 2.4x faster than ONNX Runtime (README, "CPU runtimes"), so
a user deploying on a CPU compares with it; it is a runtime like the others, in every compare row, the gate
and --explain. Precision is pinned: OpenVINO would run FP32 models in bf16 on CPUs with AMX
(`INFERENCE_PRECISION_HINT` defaults to bf16 there), a precision the artifact is not; f32 keeps FP32 parity
(an FP16 file's weights are computed in f32 too, and Q/DQ INT8 runs on OpenVINO's int8 kernels either way).
The thread count is fixed like ONNX Runtime's, and each runtime runs one stream with one infer request
(latency, not throughput, mode).

That bf16 is what the "2.4x faster FP32" users see from OpenVINO is (a CPU with bf16 units: AMX, AVX512_BF16),
so it is offered too, as what it is: `openvino-cpu-bf16`, an FP32 file run in bf16, a row of precision "bf16"
judged with bf16's tolerance, as torch's TF32 rows are with TF32's. Asked for where the CPU has no bf16 units,
it fails (OpenVINO would quietly run f32 and the row would be mislabelled).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from resnet_deploy.artifact import Artifact
from resnet_deploy.devices import CPU, Device
from resnet_deploy.errors import UsageError, first_line
from resnet_deploy.runtimes.base import Runtime
from resnet_deploy.shapes import format_shape


@functools.cache
def _core() -> Any:
    import openvino as ov  # an extra: imported when an OpenVINO runtime is made

    return ov.Core()


#: OpenVINO's inference precision for each row precision the runtime offers
HINTS = {"fp32": "f32", "bf16": "bf16"}


def has_bf16() -> bool:
    """Whether OpenVINO computes bf16 natively on this CPU (it lists BF16 among its capabilities then)."""
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_onnx(source: str | bytes, threads: int | None, label: str, precision: str = "fp32") -> Any:
    """An ONNX file (its path, or the serialized model) compiled for the CPU as every OpenVINO runtime here is:
    f32 precision (bf16 when asked), a fixed thread count, one stream. The runtime and --explain (which adds
    stage outputs to the graph) both come here, so a graph is read alike whether it is benchmarked or diagnosed."""
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        return _core().compile_model(_core().read_model(source), "CPU", config)
    except Exception as exc:
        raise UsageError(f"OpenVINO cannot load {label}: {first_line(exc, 300)}") from None


def _compute_precision(artifact: Artifact, precision: str | None) -> str:
    """ "fp32" (every file as it is) or "bf16" (an FP32 file, on a CPU with bf16 units), or why not."""
    if precision in (None, "fp32"):
        return "fp32"
    if precision != "bf16":
        raise UsageError(f"openvino-cpu runs files as they are or FP32 ones in bf16, not in {precision}")
    if artifact.precision != "fp32":
        raise UsageError(f"openvino-cpu-bf16 runs FP32 files in bf16; {artifact.label} is {artifact.precision}")
    if not has_bf16():
        raise UsageError(
            "openvino-cpu-bf16: this CPU has no bf16 units (AMX or AVX512_BF16), so OpenVINO would run f32",
            "use openvino-cpu",
        )
    return "bf16"


class OpenVINORuntime(Runtime):
    def __init__(
        self,
        artifact: Artifact,
        device: str | Device = "cpu",
        name: str = "openvino-cpu",
        threads: int | None = None,
        precision: str | None = None,
        **_: Any,
    ) -> None:
        if artifact.path is None:
            raise UsageError("the OpenVINO runtime needs an ONNX file")
        compute = _compute_precision(artifact, precision)
        self.name = name if compute == "fp32" else f"{name}-{compute}"
        self.device = CPU
        self.artifact = artifact
        self.precision = artifact.precision if compute == "fp32" else compute
        self.threads = threads
        self.compiled = compile_onnx(str(artifact.path), threads, artifact.label, compute)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        shape = self.compiled.input(0).get_partial_shape()
        self.input_dims = [d.get_length() if d.is_static else -1 for d in shape]
        if len(self.input_dims) != 4 or self.input_dims[1] not in (3, -1):
            shown = "x".join(str(d) if d > 0 else "?" for d in self.input_dims)
            raise UsageError(
                f"{artifact.label} is not an RGB image model: its input is {shown}, not Nx3xHxW",
                "pass an ONNX export of the ResNet you name, e.g. from resnet-export onnx MODEL",
            )

    def check_input(self, batch: Any) -> None:
        super().check_input(batch)
        shape = tuple(batch.shape)
        for got, want in zip(shape, self.input_dims, strict=False):
            if want > 0 and want != got:
                accepted = "x".join(str(d) if d > 0 else "?" for d in self.input_dims)
                raise UsageError(
                    f"input {format_shape(shape)} does not fit {self.artifact.label}, which accepts {accepted}",
                    "re-export with --dynamic to accept other batch sizes and image sizes",
                )

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.check_input(batch)
        result = self.request.infer({0: np.ascontiguousarray(batch, np.float32)})
        return np.array(result[self.output], dtype=np.float32, copy=True)  # the request's buffer is reused

    def close(self) -> None:
        self.request = None
        self.compiled = None
        super().close()
