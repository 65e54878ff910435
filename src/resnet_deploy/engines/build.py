"""Stage: an ONNX file and an optimization profile in, a serialized TensorRT engine and its build record out.

The precision is the ONNX file's (TensorRT 11 builds strongly typed networks only); the record says what the
engine was built with and for (TensorRT version, profile, build time). The pipeline decides when to build,
smoke-tests or verifies the engine and keeps the record (manifest entry or sidecar JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnet_deploy.engines.tensorrt_api import build_engine
from resnet_deploy.errors import MissingDependencyError
from resnet_deploy.runtimes.tensorrt_env import install_hint, unavailable_reason
from resnet_deploy.shapes import ShapeRange


def missing_tensorrt_error(
    reason: str, onnx: Path | None = None, precision: str = "fp32", in_workspace: bool = True
) -> MissingDependencyError:
    """The one line `resnet-export trt` ends with where it cannot build: what, how to fix, what it made.
    `compare` finds a workspace's ONNX by itself; a file from elsewhere (`trt --onnx`) needs --artifact."""
    message = f"cannot build a TensorRT engine here: {reason}"
    if onnx is not None:
        run_it = "resnet-bench compare" if in_workspace else f"resnet-bench compare --artifact {onnx}"
        message += f"; the {precision.upper()} ONNX the engine is built from is ready at {onnx} (it runs on ONNX Runtime: {run_it})"
    return MissingDependencyError(message, install_hint(reason))


def require_tensorrt(onnx: Path | None = None, precision: str = "fp32", in_workspace: bool = True) -> None:
    """Refuse, with what was already made, where no engine can be built (no TensorRT, or no GPU)."""
    reason = unavailable_reason()
    if reason:
        raise missing_tensorrt_error(reason, onnx, precision, in_workspace)


def build(
    onnx: Path,
    engine: Path,
    profile: ShapeRange,
    precision: str,
    workspace_size: int | None = None,
    timing_cache: Path | None = None,
) -> dict[str, Any]:
    """Build the engine of `onnx` into `engine` (the caller makes that atomic); returns its build record."""
    require_tensorrt(onnx, precision)
    return build_engine(onnx, engine, profile, precision, workspace_size, timing_cache)
