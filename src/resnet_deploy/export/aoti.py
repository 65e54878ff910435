"""AOTInductor: the torch.export program compiled ahead of time into one Python-free package (`.pt2`).

Eager PyTorch pays Python and a kernel launch per operator; Inductor fuses the network into generated kernels
(C++ on the CPU, Triton and cuBLAS/cuDNN on CUDA) and AOTInductor packages them with the weights as a shared
library that `torch._inductor.aoti_load_package` (or libtorch from C++) runs without tracing anything again.
What the package is made from is `program.py`'s export (the same symbolic sizes), so both take the same shapes.

- BatchNorm is folded into the convolutions by Inductor's freezing (weights become constants); eval mode.
- On CUDA: channels-last (what tensor-core convolutions want) and max-autotune (each GEMM/convolution timed
  among ATen's and Triton's kernels on this very GPU), FP16 when asked, float32 input and output kept either way.
- The compiled code is tied to the torch that made it and, on CUDA, to the GPU: the record (also written into
  the package's own metadata, for a package passed as a file) says which, and the runtime refuses another.
- Compiling takes seconds to minutes; Inductor's cache goes to the folder the caller names (the workspace's),
  so a rebuild with the same inputs reuses the kernels it compiled before.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from resnet_deploy.artifact import AOTI_METADATA_KEY
from resnet_deploy.console import quiet_logger
from resnet_deploy.devices import Device
from resnet_deploy.errors import MissingDependencyError, UsageError
from resnet_deploy.export.onnx import example_input
from resnet_deploy.export.program import exported_program
from resnet_deploy.provenance import compiled_for
from resnet_deploy.shapes import ShapeRange

#: Inductor settings on the CPU: freezing folds BatchNorm and the weights into constants the C++ kernels read.
#: No precompiled headers: Inductor keeps them in one folder per process, fixed from `tempfile.gettempdir()` when
#: it is imported, which is the workspace's scratch folder (removed after) when an export imported it first;
#: compiling without them costs about 2 s of a resnet18's 12.
CPU_SETTINGS: dict[str, Any] = {"freezing": True, "aot_inductor.precompile_headers": False}
#: on CUDA also max-autotune: every matmul and convolution timed among ATen's (cuBLAS/cuDNN) and Triton's
#: kernels at compile time, on the GPU the package is for (minutes, once; the cache keeps the choices)
CUDA_SETTINGS: dict[str, Any] = {
    **CPU_SETTINGS,
    "max_autotune": True,
    "max_autotune_gemm_backends": "ATEN,TRITON",
    "max_autotune_conv_backends": "ATEN,TRITON",
}


def compile_settings(device: str | Device) -> dict[str, Any]:
    """The Inductor settings a package for `device` is compiled with (part of what it is made from)."""
    return dict(CUDA_SETTINGS if Device.parse(device).is_cuda else CPU_SETTINGS)


def check_request(device: str | Device, fp16: bool) -> Device:
    """What cannot be built here is refused before the model loads: FP16 on the CPU, CUDA without a GPU (never
    a CPU package quietly made instead)."""
    device = Device.parse(device)
    if fp16 and not device.is_cuda:
        raise UsageError(
            "--fp16 AOTInductor packages are built for CUDA only (CPU FP16 convolutions are slow, not a deployment)",
            "drop --fp16, or add --device cuda on a machine with an NVIDIA GPU",
        )
    reason = device.unavailable()
    if reason:
        raise MissingDependencyError(
            f"--device {device}: {reason}",
            "compile on the machine with the GPU it is to run on (a CUDA package is built for one GPU), "
            "or use --device cpu",
        )
    return device


class DeployedModel(torch.nn.Module):
    """What is compiled: float32 NCHW in, float32 logits out, whatever runs inside (FP16, channels-last), as the
    FP16 ONNX keeps its I/O types, so callers feed every artifact the same arrays."""

    def __init__(self, model: Any, fp16: bool, channels_last: bool) -> None:
        super().__init__()
        self.model, self.fp16, self.channels_last = model, fp16, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.fp16:
            x = x.half()
        return self.model(x).float()


def deployed_model(model: Any, device: Device, fp16: bool) -> DeployedModel:
    """A copy of `model` on `device` in eval mode, FP16 if asked, channels-last on CUDA (the CPU reference stays)."""
    module = copy.deepcopy(model).eval().to(device.name)
    if fp16:
        module = module.half()
    if device.is_cuda:
        module = module.to(memory_format=torch.channels_last)
    return DeployedModel(module, fp16, device.is_cuda).eval()


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Around Inductor's C++ work: no working C++ compiler is one line naming the fix, not a traceback; and torch's
    C++ extension helper's "No CUDA runtime is found" (true of a CPU build, no problem for it) stays off the
    command's output."""
    import torch._inductor.exc

    with quiet_logger("torch.utils.cpp_extension"):
        try:
            yield
        except torch._inductor.exc.InvalidCxxCompiler:
            raise MissingDependencyError(
                "AOTInductor compiles C++ and finds no working C++ compiler here",
                "install one, e.g. apt-get install g++, or point CXX at it",
            ) from None


@contextlib.contextmanager
def ieee_fp32(device: Device) -> Iterator[None]:
    """IEEE FP32 while compiling for CUDA: Inductor's Triton convolution and matmul templates bake TF32 in or out
    from the process's flags at compile time, and PyTorch's default (TF32 convolutions) would make an "fp32"
    package a TF32 one. Set through the legacy `allow_tf32` flags, not per operator as `runtimes.torch.cuda_math`
    does: Inductor and torch.export read the legacy ones, which raise once conv and RNN were set apart."""
    if not device.is_cuda:
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


@contextlib.contextmanager
def inductor_cache(folder: Path | None) -> Iterator[None]:
    """Inductor's (and Triton's) caches in `folder` for one compile, the process's own afterwards. A folder this
    compile made is removed again when it fails: a failed export leaves nothing behind."""
    if folder is None:
        yield
        return
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir  # torch's, only when compiling

    folder = Path(folder)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with temporary_cache_dir(str(folder)):
            yield
    except BaseException:
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _import_inductor() -> None:
    """Inductor, imported (seconds: only when compiling, not whenever the pipeline is) outside any temp folder a
    caller set for the process: the workspace's scratch folder is `tempfile.tempdir` while an artifact is built,
    and Inductor fixes its precompiled-header folder from `tempfile.gettempdir()` when imported, so a second
    compile in the process would look for headers in a scratch folder removed since."""
    saved = tempfile.tempdir
    tempfile.tempdir = None
    try:
        import torch._inductor.codecache
        import torch._inductor.cpu_vec_isa  # noqa: F401  the vector instructions the CPU kernels use
    finally:
        tempfile.tempdir = saved


def export_aoti(
    model: Any,
    path: Path,
    shape_range: ShapeRange,
    device: str | Device = "cpu",
    fp16: bool = False,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Compile `model` for `shape_range` on `device` into the AOTInductor package `path` (must end in .pt2);
    returns its record: what it was compiled for, the settings, and how long the compile took."""
    _import_inductor()
    device = check_request(device, fp16)
    settings = compile_settings(device)
    with compiling():  # Inductor finds the C++ compiler to probe the CPU's vector instructions
        isa = {} if device.is_cuda else {"cpu_isa": str(torch._inductor.cpu_vec_isa.pick_vec_isa())}
    record = {
        **compiled_for(device),
        **isa,
        "precision": "fp16" if fp16 else "fp32",
        "channels_last": device.is_cuda,
        "input": shape_range.to_dict(),
    }
    module = deployed_model(model, device, fp16)
    configs = {**settings, "aot_inductor.metadata": {AOTI_METADATA_KEY: json.dumps(record)}}
    start = time.perf_counter()
    with torch.no_grad():
        program = exported_program(module, shape_range, example_input(shape_range).to(device.name))
    with torch.no_grad(), ieee_fp32(device), inductor_cache(cache_dir), compiling():
        torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs)
    seconds = time.perf_counter() - start
    return {"aoti": {**record, "inductor": settings, "compile_seconds": round(seconds, 2)}}
