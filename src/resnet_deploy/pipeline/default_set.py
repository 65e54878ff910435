"""The default artifact set `resnet-bench compare` builds: every format the tool exports, for this device.

TorchScript, torch.export .pt2, ONNX FP32/FP16/INT8 and, with TensorRT and a GPU, engines; each is built (or
reused while fresh) through the pipeline, so it is verified against PyTorch as it is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from resnet_deploy import console
from resnet_deploy.artifact import Artifact
from resnet_deploy.devices import Device
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.int8.quantize import crop_outside_range
from resnet_deploy.runtimes.tensorrt_env import unavailable_reason as tensorrt_unavailable_reason
from resnet_deploy.shapes import ShapeRange, format_shape

if TYPE_CHECKING:
    from resnet_deploy.pipeline.core import Pipeline

#: parity and calibration images when none are given: the photos bundled with the project
DEFAULT_IMAGES = Path("calibration")


def default_calibration(given: CalibrationRequest | None) -> CalibrationRequest | None:
    """The calibration the default set's INT8 uses: the one asked for (`--calib`), else ./calibration if there."""
    if given is not None:
        return given
    return CalibrationRequest(DEFAULT_IMAGES) if DEFAULT_IMAGES.is_dir() else None


def build_default_set(
    pipe: Pipeline, device: str | Device, calibration: CalibrationRequest | None
) -> tuple[list[str], list[str]]:
    """Build (or reuse) the default set; returns (built keys, warnings about what was skipped and why).

    INT8 needs calibration images (`calibration`, else ./calibration): the TensorRT recipe always, the CPU
    recipe only when benchmarking the CPU, where it is the fast one.
    """
    device = Device.parse(device)
    built: list[str] = []
    notes: list[str] = []

    def add(artifact: Artifact) -> None:
        if artifact.key:
            built.append(artifact.key)

    console.info(f"[bold]building the default artifact set in {escape(str(pipe.ws.dir))}[/] (skip with --no-build)")
    # INT8 first: it reads the calibration images before exporting anything, so a folder it cannot use
    # fails the command in seconds, not after the slower exports
    calibration = default_calibration(calibration)
    if calibration is None:
        notes.append(
            "no ./calibration folder: INT8 ONNX skipped (pass --calib DIR, or export it with resnet-export onnx --int8)"
        )
    elif outside := crop_outside_range(pipe.preprocess.crop, pipe.shape_range):
        # INT8 is part of the set, not what was asked for: skipped and said, the rest still runs
        notes.append(f"INT8 ONNX skipped: {outside}")
        calibration = None
    else:
        # the TensorRT recipe (symmetric int8, what an engine is built from; its accuracy is checked here on
        # ONNX Runtime's CPU provider) and, when benchmarking the CPU, the CPU recipe (uint8 activations: the
        # one that is fast on ONNX Runtime's x86 kernels), both from one read of the images
        images = calibration.load(pipe.preprocess)
        add(pipe.int8(CalibrationRequest(calibration.folder, calibration.size, calibration.method), images=images))
        if not device.is_cuda:
            cpu = CalibrationRequest(calibration.folder, calibration.size, calibration.method, "cpu")
            add(pipe.int8(cpu, images=images))
    add(pipe.torchscript())
    add(pipe.program())
    add(pipe.onnx())
    add(pipe.fp16())
    if device.is_cuda:
        notes.extend(_build_engines(pipe, device, calibration, add))
    return built, notes


def fit_range(pipe: Pipeline, batches: list[int], sizes: list[tuple[int, int]]) -> bool:
    """Before a build: if the benchmark's shapes fall outside the dynamic range, export for them instead.

    The new range spans exactly the shapes asked for and the model's crop (its opt), not the union
    with the default 64..448 px: every export is verified at its range's max, and ResNet-50 at
    256x3x448x448 would take minutes of CPU per format. Returns True when the range changed.
    """
    rng = pipe.shape_range
    wanted = [(b, 3, h, w) for b in batches for h, w in sizes]
    if not rng.dynamic or all(rng.contains(s) for s in wanted):
        return False
    shapes = [*wanted, rng.opt]
    lo = tuple(min(s[i] for s in shapes) for i in range(4))
    hi = tuple(max(s[i] for s in shapes) for i in range(4))
    pipe.set_range(ShapeRange(lo, rng.opt, hi, dynamic=True))  # type: ignore[arg-type]
    console.info(
        f"exporting for {format_shape(lo)} .. {format_shape(hi)} to cover --batch/--size "
        f"(the default range is {format_shape(rng.min)} .. {format_shape(rng.max)}; set it with --min/--max-shape)"
    )
    return True


def _build_engines(pipe: Pipeline, device: Device, calibration: CalibrationRequest | None, add) -> list[str]:
    """One engine per ONNX precision (the pipeline reuses the ONNX just built)."""
    reason = tensorrt_unavailable_reason()
    if reason:
        return [f"TensorRT engines skipped: {reason}"]
    dev = device.indexed
    add(pipe.engine("fp32", device=dev))
    add(pipe.engine("fp16", device=dev))
    if calibration is not None:
        add(
            pipe.engine(
                "int8", CalibrationRequest(calibration.folder, calibration.size, calibration.method), device=dev
            )
        )
    return []
