"""Which backend runs which artifact on which device, whether it can here, and the one way to open one.

Backends are registered by name with the formats and devices they take and a "module:Class" factory imported
only when a runtime is made, so a missing optional package (onnxruntime, tensorrt) costs nothing until it is
asked for, and then says what to install. Why nothing can run an artifact is said here too (`why_none`).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resnet_deploy.artifact import Artifact, aoti_record, require_file
from resnet_deploy.devices import Device
from resnet_deploy.errors import MissingDependencyError, UsageError
from resnet_deploy.runtimes.base import Runtime
from resnet_deploy.runtimes.tensorrt_env import unavailable_reason as tensorrt_unavailable_reason


@dataclass(frozen=True)
class RuntimeSpec:
    """A backend in the registry: which artifact formats and devices it takes, how to make it."""

    name: str
    formats: tuple[str, ...]
    devices: tuple[str, ...]
    factory: str  # "module:function", imported lazily so missing optional packages cost nothing
    requires: tuple[str, ...] = ()  # importable modules it needs
    description: str = ""
    #: device -> why it cannot run there beyond a missing module (no GPU, no provider, no libnvinfer), or None
    check: Callable[[Device], str | None] | None = None
    #: (artifact, device) -> why this backend cannot run it there although it takes its format, or None
    artifact_check: Callable[[Artifact, Device], str | None] | None = None
    install_hint: str | None = None  # said when it is unavailable here

    def unavailable_reason(self, device: str | Device = "cpu") -> str | None:
        """None if it can run here, else why not (shown to the user)."""
        device = Device.parse(device)
        if device.kind not in self.devices:
            return f"{self.name} does not run on {device.kind}"
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return f"{self.name} needs the Python package '{mod}'"
        return self.check(device) if self.check else None

    def refuses(self, artifact: Artifact, device: str | Device = "cpu") -> str | None:
        """Why this backend cannot run `artifact` on `device` although it takes its format (an INT8 recipe it has
        no kernels for, a package compiled for another device), or None. `create` raises it; `compare` skips the
        pair and says so."""
        return self.artifact_check(artifact, Device.parse(device)) if self.artifact_check else None

    def create(self, artifact: Artifact, device: str | Device = "cpu", **options: Any) -> Runtime:
        """This backend running `artifact` on `device` (`cpu`, `cuda`, `cuda:N`). `options`: `threads` (CPU
        threads), and per backend `precision`/`channels_last` (torch-eager) or `buffers` (tensorrt).

        UsageError for what the caller can fix (a device spelling, an artifact of a format or on a device this
        backend does not take, a missing file); MissingDependencyError when this machine lacks what it needs.
        """
        device = Device.parse(device)
        if artifact.format not in self.formats:
            takers = [s.name for s in _REGISTRY.values() if artifact.format in s.formats]
            named = f" ({artifact.label})" if artifact.label != artifact.format else ""
            raise UsageError(
                f"{self.name} runs {'/'.join(self.formats)} artifacts, not {artifact.format}{named}",
                f"use {', '.join(takers)}" if takers else None,
            )
        kind = device.kind
        if kind not in self.devices:
            here = [s.name for s in _REGISTRY.values() if artifact.format in s.formats and kind in s.devices]
            raise UsageError(
                f"{self.name} runs on {' or '.join(self.devices)}, not {kind}",
                f"on {kind}, use {', '.join(here)}" if here else f"use device '{self.devices[0]}'",
            )
        refused = self.refuses(artifact, device)
        if refused:
            raise UsageError(f"{self.name} cannot run {artifact.label}: {refused}")
        if artifact.path is not None:
            require_file(artifact.path)
        reason = self.unavailable_reason(device)
        if reason:
            hint = "name a GPU that nvidia-smi lists" if device.missing_gpu() else self.install_hint
            raise MissingDependencyError(f"cannot run {artifact.label}: {reason}", hint)
        module, func = self.factory.split(":")
        factory = getattr(importlib.import_module(module), func)
        takes = _option_names(factory)
        unknown = sorted(set(options) - takes)
        if unknown:  # every backend also takes **_, so a typo (thread=2) would otherwise be ignored in silence
            raise UsageError(
                f"{self.name} takes no option {', '.join(unknown)}", f"its options: {', '.join(sorted(takes))}"
            )
        options.setdefault("name", self.name)
        return factory(artifact, device=device, **options)


def _option_names(factory: Any) -> set[str]:
    """The options a backend names in its signature (not the artifact and device every one takes)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(factory).parameters.values()
    return {p.name for p in params if p.kind in kinds} - {"self", "artifact", "device"}


def _ort_reason(provider: str) -> Callable[[Device], str | None]:
    def check(device: Device) -> str | None:
        import onnxruntime as ort

        if provider not in ort.get_available_providers():
            return f"ONNX Runtime here has no {provider} (it has {', '.join(ort.get_available_providers())})"
        return device.missing_gpu()

    return check


def _ort_tensorrt_reason(device: Device) -> str | None:
    """onnxruntime-gpu lists its TensorRT provider whether or not TensorRT's libraries are here."""
    reason = _ort_reason("TensorrtExecutionProvider")(device)
    if reason:
        return reason

    if importlib.util.find_spec("tensorrt") is not None:
        try:
            importlib.import_module("tensorrt")  # loads libnvinfer from the tensorrt wheels
        except Exception:
            pass
    try:
        ctypes.CDLL("libnvinfer.so.10")
    except OSError:
        return "ONNX Runtime's TensorRT provider needs TensorRT 10 (libnvinfer.so.10), which cannot be loaded here"
    return None


def _tensorrt_reason(device: Device) -> str | None:
    return tensorrt_unavailable_reason()


def _cpu_int8_recipe(artifact: Artifact, device: Device) -> str | None:
    """TensorRT takes symmetric int8 Q/DQ only: the CPU recipe's uint8 activations would fail every row (its
    provider may not hand nodes to the CPU here)."""
    inputs = (artifact.entry or {}).get("inputs") or {}
    if artifact.key == "onnx-int8-cpu" or inputs.get("target") == "cpu":
        return "it is the CPU INT8 recipe (uint8 activations), which TensorRT does not take: use onnx-int8-tensorrt"
    return None


def _aoti_device(artifact: Artifact, device: Device) -> str | None:
    """An AOTInductor package holds code for one device kind: a CPU package in a CUDA run (or the reverse) is
    skipped there, saying which package would run (torch versions and GPUs are the runtime's to refuse)."""
    made = aoti_record(artifact).get("device")
    if made and made != device.kind:
        return f"it was compiled for {made}: run it with --device {made}, or export one with resnet-export aoti --device {device.kind}"
    return None


_REGISTRY: dict[str, RuntimeSpec] = {}


def register(spec: RuntimeSpec) -> RuntimeSpec:
    _REGISTRY[spec.name] = spec
    return spec


def registry() -> dict[str, RuntimeSpec]:
    return dict(_REGISTRY)


def runtimes_for(fmt: str, device: str | Device = "cpu", names: list[str] | None = None) -> list[RuntimeSpec]:
    """The registered runtimes that take `fmt` and can run on `device` here."""
    device = Device.parse(device)
    out = []
    for spec in _REGISTRY.values():
        if fmt in spec.formats and (names is None or spec.name in names):
            if spec.unavailable_reason(device) is None:
                out.append(spec)
    return out


def why_none(fmt: str, device: str | Device) -> str:
    """Why no registered runtime can run `fmt` on `device` here, each backend's reason named."""
    reasons = [
        f"{s.name}: {s.unavailable_reason(device)}"
        for s in _REGISTRY.values()
        if fmt in s.formats and s.unavailable_reason(device)
    ]
    return "no runtime can run it here (" + "; ".join(reasons) + ")" if reasons else f"no runtime takes {fmt}"


def create(name: str, artifact: Artifact, device: str | Device = "cpu", **options: Any) -> Runtime:
    """Runtime `name` (see `registry()`) running `artifact` on `device`: the one way every caller opens one.
    `RuntimeSpec.create` says which options it takes and what it raises."""
    if name not in _REGISTRY:
        raise UsageError(f"unknown runtime '{name}'", "choose from: " + ", ".join(_REGISTRY))
    return _REGISTRY[name].create(artifact, device, **options)


_ORT_GPU_HINT = "pip install onnxruntime-gpu (instead of onnxruntime) on a machine with CUDA"

register(
    RuntimeSpec(
        "torch-eager",
        ("pytorch",),
        ("cpu", "cuda"),
        "resnet_deploy.runtimes.torch:TorchEagerRuntime",
        ("torch",),
        "PyTorch eager",
        check=Device.unavailable,
    )
)
register(
    RuntimeSpec(
        "torchscript",
        ("torchscript",),
        ("cpu", "cuda"),
        "resnet_deploy.runtimes.torch:TorchScriptRuntime",
        ("torch",),
        "TorchScript",
        check=Device.unavailable,
    )
)
register(
    RuntimeSpec(
        "torch-export",
        ("program",),
        ("cpu", "cuda"),
        "resnet_deploy.runtimes.torch:TorchExportRuntime",
        ("torch",),
        "torch.export .pt2",
        check=Device.unavailable,
    )
)
register(
    RuntimeSpec(
        "torch-aoti",
        ("aoti",),
        ("cpu", "cuda"),
        "resnet_deploy.runtimes.aoti:AotiRuntime",
        ("torch",),
        "AOTInductor package",
        check=Device.unavailable,
        artifact_check=_aoti_device,
    )
)
register(
    RuntimeSpec(
        "onnxruntime-cpu",
        ("onnx",),
        ("cpu",),
        "resnet_deploy.runtimes.onnxruntime:OnnxRuntime",
        ("onnxruntime",),
        "ONNX Runtime, CPU provider",
        install_hint="pip install onnxruntime",
    )
)
register(
    RuntimeSpec(
        "openvino-cpu",
        ("onnx",),
        ("cpu",),
        "resnet_deploy.runtimes.openvino:OpenVINORuntime",
        ("openvino",),
        "OpenVINO, CPU",
        install_hint="pip install openvino (the resnet-deploy openvino extra)",
    )
)
register(
    RuntimeSpec(
        "onnxruntime-cuda",
        ("onnx",),
        ("cuda",),
        "resnet_deploy.runtimes.onnxruntime:OnnxRuntime",
        ("onnxruntime",),
        "ONNX Runtime, CUDA provider",
        check=_ort_reason("CUDAExecutionProvider"),
        install_hint=_ORT_GPU_HINT,
    )
)
register(
    RuntimeSpec(
        "onnxruntime-tensorrt",
        ("onnx",),
        ("cuda",),
        "resnet_deploy.runtimes.onnxruntime:OnnxRuntime",
        ("onnxruntime",),
        "ONNX Runtime, TensorRT provider",
        check=_ort_tensorrt_reason,
        artifact_check=_cpu_int8_recipe,
        install_hint=f"{_ORT_GPU_HINT}, and 'tensorrt-cu13>=10.13,<11' (its TensorRT provider links TensorRT 10, "
        "not 11; native engines take either)",
    )
)
register(
    RuntimeSpec(
        "tensorrt",
        ("engine",),
        ("cuda",),
        "resnet_deploy.runtimes.tensorrt:TensorRTRuntime",
        (),
        "TensorRT engine",
        check=_tensorrt_reason,
        install_hint="pip install 'tensorrt>=10' (the resnet-deploy tensorrt extra) on a machine with an NVIDIA GPU",
    )
)
