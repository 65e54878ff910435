"""Is TensorRT usable here, on which GPU, and was an engine built for this machine?

What the TensorRT runtime checks before it deserializes an engine, and what the engine builder (engines/)
records when it makes one: the build environment (TensorRT version, GPU name, compute capability), the
compatibility of an engine's record with this machine, and the sidecar JSON that carries that record next to
an engine built outside a workspace. Plain Python: `tensorrt` is imported only by `import_tensorrt`, so all of
this runs, and is tested, where TensorRT is not installed.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

from resnet_deploy import console
from resnet_deploy.errors import MissingDependencyError, UsageError, first_line
from resnet_deploy.files import atomic_write_text
from resnet_deploy.provenance import gpu_info

#: The oldest TensorRT whose Python API has everything used here (name-based I/O, execute_async_v3).
MIN_VERSION = (8, 6)

#: no square brackets: the CLI prints errors through rich, which would take "[tensorrt]" for markup
INSTALL = "pip install 'tensorrt>=10' (the resnet-deploy tensorrt extra)"

# -- versions and the machine -------------------------------------------------------------------


def parse_version(text: str | None) -> tuple[int, ...]:
    """'10.7.0.post1' -> (10, 7, 0); unknown -> ()."""
    if not text:
        return ()
    out = []
    for part in str(text).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def _tensorrt_problem() -> str | None:
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return "TensorRT is not installed (no Python package 'tensorrt')"
    except Exception as exc:  # a wheel whose CUDA libraries do not load raises OSError & co
        return f"TensorRT does not load ({first_line(exc, 160, named=True)})"
    version = parse_version(getattr(trt, "__version__", ""))
    if version and version[:2] < MIN_VERSION:
        return f"TensorRT {trt.__version__} is too old (this needs 8.6 or newer; 10.x or 11.x are tested)"
    return None


def _gpu_problem() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() > 0:
            return None
    except Exception:
        pass
    return "no CUDA GPU is visible"


def unavailable_reason() -> str | None:
    """None if `tensorrt` imports and a CUDA GPU is visible, else why not, in plain words."""
    problems = [p for p in (_tensorrt_problem(), _gpu_problem()) if p]
    return " and ".join(problems) if problems else None


def install_hint(reason: str) -> str:
    """How to fix what `tensorrt_unavailable_reason` said."""
    no_trt = "TensorRT" in reason
    no_gpu = "GPU" in reason
    if no_trt and no_gpu:
        return f"on a machine with an NVIDIA GPU and driver: {INSTALL}, then run the same command there"
    if no_trt:
        return (
            f"{INSTALL} (NVIDIA's wheels, built for CUDA 13: driver R580 or newer; with an older driver "
            "pip install 'tensorrt-cu12>=10')"
        )
    return "run it on a machine with an NVIDIA GPU whose driver works (nvidia-smi lists the GPU)"


def build_environment(device_index: int = 0) -> dict[str, Any]:
    """What an engine built (or run) here depends on: TensorRT version, GPU name, compute capability."""
    env: dict[str, Any] = {"tensorrt_version": None, "gpu_name": None, "compute_capability": None}
    try:
        env["tensorrt_version"] = importlib.import_module("tensorrt").__version__
    except Exception:
        pass
    env.update(gpu_info(device_index) or {})
    return env


_LOGGER: Any = None


def import_tensorrt() -> Any:
    """`tensorrt`, or the one-line error saying what is missing and how to get it."""
    reason = unavailable_reason()
    if reason:
        raise MissingDependencyError(f"TensorRT cannot be used here: {reason}", install_hint(reason))
    return importlib.import_module("tensorrt")


def trt_logger(trt: Any) -> Any:
    """One logger per process, as TensorRT recommends; warnings and errors go to stderr."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def trt_major(trt: Any) -> int:
    version = parse_version(getattr(trt, "__version__", ""))
    return version[0] if version else 0


# -- compatibility of an engine with this machine -----------------------------------------------


def compatibility(
    built: dict[str, Any], here: dict[str, Any], label: str = "the engine"
) -> tuple[list[str], list[str]]:
    """(errors, warnings) for running an engine built in `built` on `here`.

    A serialized engine only loads on the TensorRT version it was built with and on GPUs of the same
    compute capability; another GPU model of the same capability works but was not tuned for.
    Unknown fields are not held against the engine (TensorRT still refuses a truly foreign one).
    """
    errors: list[str] = []
    warnings: list[str] = []
    b_ver, h_ver = built.get("tensorrt_version"), here.get("tensorrt_version")
    if b_ver and h_ver and parse_version(b_ver)[:3] != parse_version(h_ver)[:3]:
        errors.append(f"TensorRT {b_ver} (this machine has TensorRT {h_ver})")
    b_cc, h_cc = built.get("compute_capability"), here.get("compute_capability")
    if b_cc and h_cc and str(b_cc) != str(h_cc):
        errors.append(
            f"a GPU of compute capability {b_cc} ({built.get('gpu_name') or 'unknown GPU'}; "
            f"this one is {h_cc}, {here.get('gpu_name') or 'unknown GPU'})"
        )
    b_gpu, h_gpu = built.get("gpu_name"), here.get("gpu_name")
    if not errors and b_gpu and h_gpu and b_gpu != h_gpu:
        warnings.append(f"{label} was tuned on {b_gpu}, not this {h_gpu}: it runs, but rebuild it here for best speed")
    if not b_ver and not b_cc:
        warnings.append(
            f"{label} has no build record (manifest entry or .json sidecar): cannot check where it was built"
        )
    return errors, warnings


def check_compatible(built: dict[str, Any], here: dict[str, Any], label: str) -> None:
    """Raise a plain error when the engine was built for another TensorRT or GPU; warn otherwise."""
    errors, warnings = compatibility(built, here, label)
    for w in warnings:
        console.warn(w)
    if errors:
        raise UsageError(
            f"{label} was built elsewhere, with " + " and with ".join(errors),
            "engines only run on the TensorRT version and GPU architecture they were built with: rebuild it on "
            "this machine with resnet-export trt (same options)",
        )


# -- sidecar: the build record next to an engine file -------------------------------------------


def sidecar_path(engine_file: Path) -> Path:
    engine_file = Path(engine_file)
    return engine_file.with_name(engine_file.name + ".json")


def write_sidecar(engine_file: Path, info: dict[str, Any]) -> Path:
    path = sidecar_path(engine_file)
    atomic_write_text(path, json.dumps(info, indent=2, default=str) + "\n")
    return path


def read_sidecar(engine_file: Path) -> dict[str, Any] | None:
    path = sidecar_path(engine_file)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        console.warn(f"ignoring {path}: {exc}")
        return None
    return data if isinstance(data, dict) else None


def build_record(engine_file: Path, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The engine's build info: its manifest entry if it has one, else its sidecar, else {}."""
    if entry and (entry.get("tensorrt_version") or entry.get("compute_capability")):
        return entry
    return read_sidecar(engine_file) or dict(entry or {})
