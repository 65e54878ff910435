"""ONNX Runtime with one explicitly chosen execution provider.

ONNX Runtime quietly falls back to the CPU when a provider fails to load; a benchmark labelled
"cuda" that ran on the CPU is worse than no benchmark, so the session's providers are checked.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from resnet_deploy import onnx_graph
from resnet_deploy.artifact import Artifact
from resnet_deploy.devices import CPU, Device
from resnet_deploy.errors import MissingDependencyError, UsageError
from resnet_deploy.runtimes.base import Runtime
from resnet_deploy.shapes import ShapeRange, format_shape

PROVIDERS = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntime(Runtime):
    def __init__(
        self,
        artifact: Artifact,
        device: str | Device = "cpu",
        name: str | None = None,
        threads: int | None = None,
        prefer_nhwc: bool = False,
        **_: Any,
    ) -> None:
        device = Device.parse(device)
        if name is None:
            name = "onnxruntime-cuda" if device.is_cuda else "onnxruntime-cpu"
        if prefer_nhwc and name != "onnxruntime-cuda":
            raise UsageError(f"prefer_nhwc is an option of onnxruntime-cuda, not {name}", "drop it")
        self.name = f"{name}-nhwc" if prefer_nhwc else name
        self.provider = PROVIDERS[name]
        self.device = session_device(name, device)
        self.artifact = artifact
        self.precision = artifact.precision
        self.threads = threads
        tensorrt = self.provider == "TensorrtExecutionProvider"
        # TensorRT builds FP32 layers as TF32 unless told not to, and ONNX Runtime has no option to tell it:
        # so its FP32 rows are TF32 rows, judged with TF32's tolerance (the native engines clear the flag)
        if tensorrt and self.precision == "fp32":
            self.precision = "tf32"
        profile = artifact.input_range if tensorrt else None
        # NHWC: the CUDA provider's channels-last convolutions (tensor cores' layout), the layout change inside
        nhwc = {"prefer_nhwc": "1"} if prefer_nhwc else None
        self.session = open_session(
            str(artifact.path), self.provider, self.device, threads, artifact.label, profile, nhwc
        )
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dims = list(inp.shape)  # ints for static dims, names for dynamic ones
        _require_image_input(self.input_dims, inp.name, artifact.label)
        out = self.session.get_outputs()[0]
        self.output_name = out.name
        self.num_classes = out.shape[1] if isinstance(out.shape[1], int) else None  # for device-resident outputs
        self.input_range = profile

    def check_input(self, batch: Any) -> None:
        super().check_input(batch)
        shape = tuple(batch.shape)
        for d, want in zip(shape, self.input_dims, strict=False):
            if isinstance(want, int) and want != d:
                accepted = "x".join(str(x) if isinstance(x, int) else "?" for x in self.input_dims)
                raise UsageError(
                    f"input {format_shape(shape)} does not fit {self.artifact.label}, which accepts {accepted}",
                    "re-export with --dynamic to accept other batch sizes and image sizes",
                )

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.check_input(batch)
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]

    def run_device(self, batch: Any) -> Any:
        """Bind torch CUDA tensors directly (IO binding) so no host copy is timed."""
        import torch

        if not self.device.is_cuda:
            return super().run_device(batch)
        self.check_input(batch)
        # bound by pointer as float32 NCHW on the session's GPU, so converted to exactly that first (a no-op
        # when it is so): a half tensor bound as float32 would be read as the wrong bytes, twice as many
        batch = batch.to(device=self.device, dtype=torch.float32).contiguous()
        binding = self.session.io_binding()
        dev_id = self.device.index
        binding.bind_input(self.input_name, "cuda", dev_id, np.float32, list(batch.shape), batch.data_ptr())
        out = None
        if self.num_classes is None:
            # a class dimension the graph leaves symbolic: ONNX Runtime allocates the output, and reading
            # it here goes through the host, so this is not copy-free (ResNet exports never take this path)
            binding.bind_output(self.output_name, "cuda", dev_id)
        else:
            out = torch.empty((batch.shape[0], self.num_classes), dtype=torch.float32, device=batch.device)
            binding.bind_output(self.output_name, "cuda", dev_id, np.float32, list(out.shape), out.data_ptr())
        # ONNX Runtime works on its own stream: what is queued on torch's (the conversion above, kernels still
        # reading memory that `out` was just given) must be done before it reads or writes these buffers
        torch.cuda.current_stream(batch.device).synchronize()
        self.session.run_with_iobinding(binding)
        if out is None:
            return torch.from_numpy(binding.copy_outputs_to_cpu()[0]).to(batch.device)
        return out

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
        super().close()


def _require_image_input(dims: list[Any], name: str, label: str) -> None:
    """Refuse a graph that does not take Nx3xHxW now: every row would otherwise fail on its shape with
    "re-export with --dynamic", which cannot help a model of another kind (a grayscale or non-image one)."""
    if len(dims) == 4 and (dims[1] == 3 or not isinstance(dims[1], int)):  # a symbolic channel count is checked per run
        return
    shown = "x".join(str(d) if isinstance(d, int) else "?" for d in dims)
    raise UsageError(
        f"{label} is not an RGB image model: its input '{name}' is {shown}, not Nx3xHxW",
        "pass an ONNX export of the ResNet you name, e.g. from resnet-export onnx MODEL",
    )


def session_device(name: str, device: str | Device) -> Device:
    """Where backend `name` runs: the CPU provider on the CPU, the GPU ones on `device` (cuda:0 when the
    run itself is on the CPU). The runtime and --explain both ask here."""
    device = Device.parse(device)
    if PROVIDERS[name] == "CPUExecutionProvider":
        return CPU
    return device.indexed if device.is_cuda else Device.parse("cuda:0")


#: ONNX Runtime graph rewrites every session is made without. `WeightBiasQuantization` (ONNX Runtime 1.20+)
#: gives a Q/DQ convolution with a float bias an int32-quantized bias and a DequantizeLinear for it. The CUDA
#: provider has no int32 DequantizeLinear, so on an H200 those nodes fell to the CPU and the TensorRT recipe's
#: INT8 file (float biases by design: TensorRT folds them into the fused kernel) could not run on CUDA at all.
#: Without the rewrite, every provider runs the file as it was exported. Unknown names are ignored.
DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def new_session(ort: Any, source: str | bytes, opts: Any, providers: list[Any]) -> Any:
    """`ort.InferenceSession` as this module makes every one: without `DISABLED_OPTIMIZERS`."""
    return ort.InferenceSession(source, sess_options=opts, providers=providers, disabled_optimizers=DISABLED_OPTIMIZERS)


def _session_options(ort: Any, threads: int | None, log_level: int = 4) -> Any:
    """`log_level` 4 (fatal only): every failure reaches the user as the exception this module turns into
    one line, so ONNX Runtime's own colored error lines would only say it twice."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = log_level
    return opts


def open_session(
    source: str | bytes,
    provider: str,
    device: str | Device,
    threads: int | None,
    label: str,
    profile: ShapeRange | None = None,
    provider_options: dict[str, str] | None = None,
) -> Any:
    """An InferenceSession on exactly `provider`, or a clear error: the one place sessions are made.

    The runtime and `--explain` (which adds stage outputs to the graph) both come here, so a graph is
    read with the same provider options whether it is benchmarked or diagnosed: IEEE FP32 on CUDA (the
    CUDA provider enables TF32 by default) and no node quietly moved to the CPU. For TensorRT's provider,
    a dynamic `profile` becomes its one optimization profile, as for a native engine: without one it
    builds an engine for the first input shape and rebuilds whenever a later one falls outside.
    `provider_options` are applied over these, for a diagnosis that changes one (benchmarks/gpu/conv_algos.py).
    """
    import onnxruntime as ort

    # ONNX Runtime's process-wide logger prints notes that are not failures on its own: on an H200, 200+ red
    # "[cudnn_frontend] Error: No execution plans support the graph" lines while cuDNN moved on to another plan,
    # and a "No registered plugin EP device" warning per CUDA session. A failure reaches the user as this
    # module's one-line exception, so that logger is fatal-only too (the sessions' own logs are set apart).
    ort.set_default_logger_severity(4)
    opts = _session_options(ort, threads)
    providers: list[Any] = [provider]
    if provider != "CPUExecutionProvider":
        import torch  # noqa: F401  loads the CUDA and cuDNN libraries (the nvidia-* wheels) the provider links to

        options: dict[str, Any] = {"device_id": Device.parse(device).index}
        if provider == "CUDAExecutionProvider":
            # FP32 means IEEE FP32, as for the torch runtimes: the CUDA provider enables TF32 by default
            options["use_tf32"] = "0"
        if provider == "TensorrtExecutionProvider" and profile is not None and profile.dynamic:
            options.update(tensorrt_profile_options(onnx_graph.input_name(source), profile))
        options.update(provider_options or {})
        # a node the GPU provider cannot run would otherwise run on the CPU, unannounced
        opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        providers = [(provider, options)]
    try:
        session = new_session(ort, source, opts, providers)
    except Exception as exc:
        text = load_error_text(exc)
        if "fallback" in text.lower():
            # Either the provider did not start at all (its libraries did not load: every node fell to
            # the CPU) or it refused some nodes. ONNX Runtime's error says neither, so ask it again with
            # the CPU allowed and its node placement logged.
            raise _fallback_error(ort, source, provider, providers, threads, label, text) from None
        hint = None
        if "IR version" in text:  # written by an onnx package newer than this ONNX Runtime reads
            hint = "upgrade onnxruntime, or re-save the file with an IR version it reads (model.ir_version = 10)"
        raise UsageError(f"ONNX Runtime cannot load {label}: {text}", hint) from None
    if provider not in session.get_providers():
        raise _not_started(provider, label, session.get_providers())
    return session


def tensorrt_profile_options(input_name: str, profile: ShapeRange) -> dict[str, str]:
    """The TensorRT provider's explicit profile, in its "name:1x3x64x64" format."""
    return {
        f"trt_profile_{which}_shapes": f"{input_name}:{format_shape(shape)}"
        for which, shape in (("min", profile.min), ("opt", profile.opt), ("max", profile.max))
    }


#: ONNX Runtime's C++ source location and function signature inside its messages, e.g.
#: "/onnxruntime_src/onnxruntime/core/graph/model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, ...) "
_SOURCE_LOCATION = re.compile(r"[\w./\\-]+\.(?:cc|cpp|cu|h):\d+ [\w:~<>*&]+\(.*?\)\s*")


def load_error_text(exc: BaseException, limit: int = 300) -> str:
    """The first line of ONNX Runtime's error without its C++ source location and signature: those take
    200+ characters before the cause ("Unsupported model IR version: 14, max supported IR version: 13"),
    which a plain cut at the start would drop."""
    lines = str(exc).splitlines()
    text = _SOURCE_LOCATION.sub("", lines[0]) if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_started(provider: str, label: str, started: list[str], why: str | None = None) -> MissingDependencyError:
    return MissingDependencyError(
        f"ONNX Runtime could not start {provider} for {label} (session has {started})" + (f": {why}" if why else ""),
        "onnxruntime-gpu must be built for the CUDA major version torch uses "
        "(python -c 'import onnxruntime.capi.build_and_package_info as i; print(i.cuda_version)')",
    )


def _fallback_error(
    ort: Any, source: str | bytes, provider: str, providers: list[Any], threads: int | None, label: str, text: str
) -> Exception:
    """The error for a session refused because nodes would run on the CPU: which provider, which nodes."""
    try:
        with _captured_stderr() as log:
            probe = new_session(ort, source, _session_options(ort, threads, 0), providers)
        started = probe.get_providers()
        del probe
    except Exception:
        return UsageError(f"ONNX Runtime's {provider} cannot run every node of {label}: {text}")
    if provider not in started:
        return _not_started(provider, label, started, _load_failure(log.text))
    on_cpu = node_placements(log.text).get("CPUExecutionProvider")
    if on_cpu and on_cpu[1]:
        shown = ", ".join(on_cpu[1][:8]) + (f" and {on_cpu[0] - 8} more" if on_cpu[0] > 8 else "")
        text = f"{on_cpu[0]} node(s) would run on the CPU: {shown}"
    return UsageError(
        f"ONNX Runtime's {provider} cannot run every node of {label}: {text}",
        "run it with --device cpu, or on TensorRT",
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PLACED = re.compile(r"\s*(?:All nodes|Node\(s\)) placed on \[([^\]]+)\]\. Number of nodes: (\d+)")
_NODE = re.compile(r"\s+(\S+ \(.*\))\s*$")


def node_placements(log: str) -> dict[str, tuple[int, list[str]]]:
    """provider -> (node count, ["OpType (node name)", ...]) from ONNX Runtime's verbose session log.

    ONNX Runtime (session_state.cc, VerifyEachNodeIsAssignedToAnEp) logs " All nodes placed on [P].
    Number of nodes: N" when one provider takes the whole graph (no names), else per provider " Node(s)
    placed on [P]. Number of nodes: N" followed by one "  OpType (name)" line per node.
    """
    out: dict[str, tuple[int, list[str]]] = {}
    current: str | None = None
    for raw in log.splitlines():
        line = _ANSI.sub("", raw)
        marker = line.find("VerifyEachNodeIsAssignedToAnEp] ")
        if marker < 0:
            current = None
            continue
        message = line[marker + len("VerifyEachNodeIsAssignedToAnEp] ") :]
        head = _PLACED.match(message)
        if head:
            current = head.group(1)
            out[current] = (int(head.group(2)), [])
        elif current and (node := _NODE.match(message)):
            out[current][1].append(node.group(1))
    return out


def _load_failure(log: str) -> str | None:
    """ONNX Runtime's own line saying why a provider did not start, e.g. "Failed to load library
    libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file"."""
    for raw in log.splitlines():
        line = _ANSI.sub("", raw).strip()
        if ("[E:" in line or "[W:" in line) and "Failed to" in line:
            return line[line.index("Failed to") :][:300]
    return None


class _Captured:
    text = ""


@contextmanager
def _captured_stderr() -> Iterator[_Captured]:
    """What is written to file descriptor 2 inside the block (ONNX Runtime logs there from C++)."""
    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", "replace")
