"""What a result was made with and on: tool versions, the CPU's and GPU's names, the environment of a run.

Every artifact record and every benchmark report carries these, so two results can be told apart by what
made them, not only by when.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import importlib.util
import platform
from pathlib import Path
from typing import Any

from resnet_deploy.devices import Device, default_threads

#: the modules whose versions a record carries
TOOLS = ("torch", "torchvision", "onnx", "onnxruntime", "openvino", "tensorrt")


def tool_versions() -> dict[str, str]:
    """Distribution -> version for this package and each tool, as it imports here.

    Keyed by the distribution that provides the module Python imports, so onnxruntime-gpu installed
    beside (and shadowing) the CPU-only onnxruntime is recorded as onnxruntime-gpu with its version,
    not as both. Read once per process (scanning the installed distributions takes ~0.1 s, and every
    artifact record asks).
    """
    return dict(_tool_versions())


@functools.cache
def _tool_versions() -> dict[str, str]:
    out = {"resnet-deploy": _version_of("resnet-deploy")}
    owners = md.packages_distributions()
    for module in TOOLS:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        package_dir = Path(spec.origin).resolve().parent
        for dist_name in dict.fromkeys(owners.get(module, [module])):
            try:
                dist = md.distribution(dist_name)
            except md.PackageNotFoundError:
                continue
            if Path(str(dist.locate_file(module))).resolve() == package_dir:
                out[dist.metadata["Name"]] = dist.version
                break
        else:  # an unusual install (source tree, zip): the distribution named like the module
            out[module] = _version_of(module)
    return {name: version for name, version in out.items() if version}


def _version_of(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return ""


def torch_version() -> str:
    """torch's version as it reports it, which a `.pt2` or an AOTInductor package is tied to."""
    import torch

    return str(torch.__version__)


def compiled_for(device: str | Device) -> dict[str, str | None]:
    """What compiled code made here depends on: torch's version, the device kind and, on CUDA, the GPU's name
    and compute capability. An AOTInductor package records it when compiled and compares it when loaded."""
    device = Device.parse(device)
    gpu = gpu_info(device.index) if device.is_cuda else None
    return {
        "torch_version": torch_version(),
        "device": device.kind,
        "gpu_name": (gpu or {}).get("gpu_name"),
        "compute_capability": (gpu or {}).get("compute_capability"),
    }


#: Inductor's names of the vector instruction sets its CPU kernels are compiled for -> the CPU flag each needs
VECTOR_ISA_FLAGS = {"avx2": "avx2", "avx512": "avx512f", "avx512_vnni": "avx512_vnni", "amx_tile": "amx_tile"}


def cpu_vector_flags() -> list[str]:
    """Which of those flags this CPU has (what a CPU package compiled here may use): part of what one is made
    from, so a workspace moved to a CPU with others rebuilds it."""
    flags = cpu_flags() or frozenset()
    return sorted(flag for flag in VECTOR_ISA_FLAGS.values() if flag in flags)


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The instruction-set flags the CPU reports (`avx2`, `avx512f`, `amx_tile`, ...), or None where the OS does
    not say (no /proc/cpuinfo): code compiled for a CPU with one this CPU lacks would die of an illegal
    instruction, not raise."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512_BF16): where OpenVINO runs an FP32 file in bf16 by
    default, and `compare` adds that row (`openvino-cpu-bf16`) beside f32's."""
    return bool({"amx_bf16", "avx512_bf16"} & (cpu_flags() or frozenset()))


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info(index: int = 0) -> dict[str, str] | None:
    """Name and compute capability ('8.9') of CUDA device `index`, through torch or pycuda."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(index)
            return {"gpu_name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(index)
        major, minor = dev.compute_capability()
        return {"gpu_name": dev.name(), "compute_capability": f"{major}.{minor}"}
    except Exception:
        return None


def environment(device: str | Device) -> dict[str, Any]:
    """What the numbers were measured on: device name, CUDA and cuDNN versions, Python, CPU."""
    device = Device.parse(device)
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_threads_available": default_threads(),
    }
    if not device.is_cuda:
        env["device_name"] = env["cpu"]
        return env
    import torch

    props = torch.cuda.get_device_properties(device.index)
    env.update(
        device_name=props.name,
        compute_capability=f"{props.major}.{props.minor}",
        device_memory_gib=round(props.total_memory / 2**30, 1),
        multiprocessors=props.multi_processor_count,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
    )
    return env
