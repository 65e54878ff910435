"""The runtime interface every backend implements, and the registry that picks backends.

Like Polygraphy's runners: one small class per backend, all behind `run(batch) -> logits`, so the
benchmark and parity code never branch on the backend.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from resnet_deploy.errors import MissingDependencyError, UsageError
from resnet_deploy.shapes import ShapeRange, format_shape

SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".jit": "torchscript",
    ".pt": "torchscript",
    ".pt2": "program",
    ".engine": "engine",
    ".plan": "engine",
    ".trt": "engine",
}


def parse_device(device: str) -> str:
    """`device` as the runtimes spell it, `cpu`, `cuda` or `cuda:N`, whatever its case and spacing. Anything else
    ('gpu', 'mps', 'cuda:x') is refused as a spelling here, rather than reaching a backend as a device it
    "does not run on" with a hint to install a package. Whether a GPU is there is the registry's question."""
    text = str(device).strip().lower()
    kind, colon, index = text.partition(":")
    if text == "cpu" or (kind == "cuda" and (not colon or index.isdigit())):
        return text
    hint = "use cuda or cuda:N" if kind == "cuda" else "use cpu, cuda or cuda:N"
    raise UsageError(f"unknown device '{text}'", hint)


def device_name(device: str) -> str:
    """'cpu' or 'cuda:N', the one spelling runtimes, reports and --explain use ('cuda' is 'cuda:0')."""
    device = device.strip().lower()
    return device if device == "cpu" or ":" in device else f"{device}:0"


def device_index(device: str) -> int:
    """N of 'cuda:N' (0 for plain 'cuda')."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


@dataclass
class Artifact:
    """Something a runtime can run: a file (or, for eager PyTorch, the module itself)."""

    format: str
    path: Path | None = None
    precision: str = "fp32"
    input_range: ShapeRange | None = None
    key: str | None = None
    entry: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the nn.Module for format "pytorch"
    #: the name to report while `path` is the temp file an export is verified under, not yet renamed
    name: str | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = Path(self.path)  # a str from a caller's config: .name, .suffix and .exists() must work

    @property
    def label(self) -> str:
        return self.name or (self.path.name if self.path else (self.key or self.format))

    @classmethod
    def from_file(cls, path: Path | str) -> Artifact:
        """An artifact given on the command line: format from the suffix, precision from the file."""
        path = Path(path)
        require_file(path)
        fmt = SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise UsageError(
                f"cannot tell the format of {path.name}",
                "use .onnx, .ts/.pt (TorchScript), .pt2 (torch.export) or .engine/.plan (TensorRT)",
            )
        stat = path.stat()
        if stat.st_size == 0:  # an interrupted copy or a failed download: say so before any row runs
            raise UsageError(f"artifact {path} is empty (0 bytes)", "copy or export the file again")
        precision = _file_precision(fmt, str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        return cls(fmt, path, precision)


def require_file(path: Path) -> None:
    """An artifact's file is there, or the error that says so (before a backend's own, longer one)."""
    if path.is_dir():  # "does not exist" would send the user looking for a path that is right there
        raise UsageError(f"artifact {path} is a folder", "pass one .onnx, .pt/.ts, .pt2 or .engine file in it")
    if not path.is_file():
        raise UsageError(f"artifact {path} does not exist", "pass an .onnx, .pt/.ts, .pt2 or .engine file")


@functools.lru_cache(maxsize=64)
def _file_precision(fmt: str, path: str, mtime_ns: int, size: int) -> str:
    """Cached on the file's identity: `resnet-bench` checks each --artifact before the model loads and uses it
    after, and parsing a ResNet-50 ONNX graph to find its precision takes a while. A changed file misses."""
    if fmt != "onnx":
        return "fp32"
    from resnet_deploy.export.onnx import onnx_precision

    return onnx_precision(Path(path))


_R = TypeVar("_R", bound="Runtime")


class Runtime(ABC):
    """Runs NCHW float32 batches and returns float32 logits."""

    name: str = "runtime"
    precision: str = "fp32"
    device: str = "cpu"
    artifact: Artifact | None = None
    #: shapes this runtime accepts; None = any 4-D float32 NCHW batch with 3 channels
    input_range: ShapeRange | None = None
    #: set by `close`: the runtime has freed what it runs with
    closed: bool = False

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Host in, host out. Copies to and from the device count in timings taken through this."""

    def run_device(self, batch: Any) -> Any:
        """Device-resident path so GPU timings can exclude copies: a torch tensor in (on any device; one already
        on this runtime's device is used where it is), float32 logits out on this runtime's device.

        Backends that can bind device memory override it; the default goes through host memory.
        """
        import torch

        out = self.run(batch.detach().cpu().numpy())
        return torch.from_numpy(out).to(self.device)

    def synchronize(self) -> None:
        """Block until queued device work is done (no-op on the CPU)."""

    def check_input(self, batch: np.ndarray | Any) -> None:
        """Refuse what `run` would otherwise turn into wrong logits or a deep numpy/backend error: a non-array,
        integer pixels (raw 0..255 values, cast to float silently, give plausible-looking garbage), a shape
        that is not NCHW with 3 channels or one outside `input_range`. Floating dtypes are cast to float32."""
        if self.closed:
            raise UsageError(f"{self.describe()} is closed", "create a new runtime to run it again")
        shape = getattr(batch, "shape", None)
        if shape is None:
            raise UsageError(
                f"input is a {type(batch).__name__}, not an array",
                "pass a float32 NCHW numpy array (run_device: a torch tensor)",
            )
        dtype = getattr(batch, "dtype", None)
        if dtype is not None and not _floating(dtype):
            raise UsageError(
                f"input is {str(dtype).replace('torch.', '')}, not float32: raw pixels are not what the model takes",
                "preprocess the images with resnet_deploy.preprocess (Preprocess, load_folder): resize, crop, normalize",
            )
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != 3:
            raise UsageError(f"input {format_shape(shape)} is not an NCHW batch with 3 channels")
        if self.input_range is not None:
            self.input_range.check(shape, self.describe())

    def describe(self) -> str:
        what = self.artifact.label if self.artifact else self.name
        return f"{what} on {self.name}"

    def close(self) -> None:
        """Free the session, module or engine (and its GPU memory) now rather than at garbage collection, so a
        service that opens many artifacts does not hold them all. Safe to call twice; `run` afterwards is an
        error. Subclasses free their own and call this. `with create(...) as runtime:` closes on exit."""
        self.closed = True

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.precision} {self.device}>"


def _floating(dtype: Any) -> bool:
    """A numpy dtype (kind 'f') or a torch dtype (is_floating_point) of floating point numbers."""
    kind = getattr(dtype, "kind", None)
    if kind is not None:
        return kind == "f"
    return bool(getattr(dtype, "is_floating_point", True))


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
    check: Callable[[str], str | None] | None = None
    #: artifact -> why this backend cannot run it although it takes its format, or None
    artifact_check: Callable[[Artifact], str | None] | None = None
    install_hint: str | None = None  # said when it is unavailable here

    def unavailable_reason(self, device: str = "cpu") -> str | None:
        """None if it can run here, else why not (shown to the user)."""
        kind = device.split(":")[0]
        if kind not in self.devices:
            return f"{self.name} does not run on {kind}"
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return f"{self.name} needs the Python package '{mod}'"
        return self.check(device) if self.check else None

    def refuses(self, artifact: Artifact) -> str | None:
        """Why this backend cannot run `artifact` although it takes its format (an INT8 recipe it has no
        kernels for), or None. `create` raises it; `compare` skips the pair and says so."""
        return self.artifact_check(artifact) if self.artifact_check else None

    def create(self, artifact: Artifact, device: str = "cpu", **options: Any) -> Runtime:
        """This backend running `artifact` on `device` (`cpu`, `cuda`, `cuda:N`). `options`: `threads` (CPU
        threads), and per backend `precision`/`channels_last` (torch-eager) or `buffers` (tensorrt).

        UsageError for what the caller can fix (a device spelling, an artifact of a format or on a device this
        backend does not take, a missing file); MissingDependencyError when this machine lacks what it needs.
        """
        device = parse_device(device)
        if artifact.format not in self.formats:
            takers = [s.name for s in _REGISTRY.values() if artifact.format in s.formats]
            named = f" ({artifact.label})" if artifact.label != artifact.format else ""
            raise UsageError(
                f"{self.name} runs {'/'.join(self.formats)} artifacts, not {artifact.format}{named}",
                f"use {', '.join(takers)}" if takers else None,
            )
        kind = device.split(":")[0]
        if kind not in self.devices:
            here = [s.name for s in _REGISTRY.values() if artifact.format in s.formats and kind in s.devices]
            raise UsageError(
                f"{self.name} runs on {' or '.join(self.devices)}, not {kind}",
                f"on {kind}, use {', '.join(here)}" if here else f"use device '{self.devices[0]}'",
            )
        refused = self.refuses(artifact)
        if refused:
            raise UsageError(f"{self.name} cannot run {artifact.label}: {refused}")
        if artifact.path is not None:
            require_file(artifact.path)
        reason = self.unavailable_reason(device)
        if reason:
            hint = "name a GPU that nvidia-smi lists" if _missing_gpu(device) else self.install_hint
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


def cuda_reason(device: str) -> str | None:
    """Why torch cannot run on `device` here (no CUDA GPU, or not that many), or None: the one check the
    registry and --device both make."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch
    except ImportError:
        return "CUDA timing needs torch"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return _missing_gpu(device)


def _missing_gpu(device: str) -> str | None:
    """`cuda:N` past the GPUs torch counts (ONNX Runtime sees the same ones), or None; else torch's "invalid
    device ordinal" deep inside the first copy, or ONNX Runtime's own words when a session is made."""
    import torch

    count = torch.cuda.device_count()
    if device.startswith("cuda") and count and device_index(device) >= count:
        return f"{device} is not here: torch sees {count} CUDA GPU(s), numbered from 0"
    return None


def _ort_reason(provider: str) -> Callable[[str], str | None]:
    def check(device: str) -> str | None:
        import onnxruntime as ort

        if provider not in ort.get_available_providers():
            return f"ONNX Runtime here has no {provider} (it has {', '.join(ort.get_available_providers())})"
        return _missing_gpu(device)

    return check


def _ort_tensorrt_reason(device: str) -> str | None:
    """onnxruntime-gpu lists its TensorRT provider whether or not TensorRT's libraries are here."""
    reason = _ort_reason("TensorrtExecutionProvider")(device)
    if reason:
        return reason
    import ctypes

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


def _tensorrt_reason(device: str) -> str | None:
    from resnet_deploy.engines import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason()


def _cpu_int8_recipe(artifact: Artifact) -> str | None:
    """TensorRT takes symmetric int8 Q/DQ only: the CPU recipe's uint8 activations would fail every row (its
    provider may not hand nodes to the CPU here)."""
    inputs = (artifact.entry or {}).get("inputs") or {}
    if artifact.key == "onnx-int8-cpu" or inputs.get("target") == "cpu":
        return "it is the CPU INT8 recipe (uint8 activations), which TensorRT does not take: use onnx-int8-tensorrt"
    return None


_REGISTRY: dict[str, RuntimeSpec] = {}


def register(spec: RuntimeSpec) -> RuntimeSpec:
    _REGISTRY[spec.name] = spec
    return spec


def registry() -> dict[str, RuntimeSpec]:
    return dict(_REGISTRY)


def runtimes_for(fmt: str, device: str = "cpu", names: list[str] | None = None) -> list[RuntimeSpec]:
    """The registered runtimes that take `fmt` and can run on `device` here."""
    device = parse_device(device)
    out = []
    for spec in _REGISTRY.values():
        if fmt in spec.formats and (names is None or spec.name in names):
            if spec.unavailable_reason(device) is None:
                out.append(spec)
    return out


def create(name: str, artifact: Artifact, device: str = "cpu", **options: Any) -> Runtime:
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
        check=cuda_reason,
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
        check=cuda_reason,
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
        check=cuda_reason,
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
