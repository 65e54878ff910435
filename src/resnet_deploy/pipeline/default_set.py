"""The default artifact set `resnet-bench compare` builds: every format the tool exports, for this device.

TorchScript, torch.export .pt2, ONNX FP32/FP16/INT8 and, with TensorRT and a GPU, engines; each is built (or
reused while fresh) through the pipeline, so it is verified against PyTorch as it is made.
"""

from __future__ import annotations

from collections.abc import Callable
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

#: the 11 sample photos shipped inside the package (public domain / CC0, see their README.md)
PACKAGED_PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


def default_images() -> Path:
    """Parity and calibration images when none are given: ./calibration when there is one (a folder of your
    own, or the repository's link to the photos below), else the photos shipped in the package, so the main job
    is the same wherever the package is installed."""
    local = Path("calibration")
    return local if local.is_dir() else PACKAGED_PHOTOS


def default_calibration(given: CalibrationRequest | None) -> CalibrationRequest | None:
    """The calibration the default set's INT8 uses: the one asked for (`--calib`), else `default_images()`."""
    if given is not None:
        return given
    folder = default_images()
    return CalibrationRequest(folder) if folder.is_dir() else None


def default_keys(device: str | Device) -> list[str]:
    """The manifest keys of the default set on `device`: every format; on the CPU the CPU INT8 recipe too (the
    fast one there), on a GPU TensorRT's engines instead."""
    keys = ["onnx-int8-tensorrt", "torchscript", "program", "onnx-fp32", "onnx-fp16"]
    if Device.parse(device).is_cuda:
        return [*keys, "tensorrt-fp32", "tensorrt-fp16", "tensorrt-int8"]
    return [*keys, "onnx-int8-cpu"]


def build_default_set(
    pipe: Pipeline, device: str | Device, calibration: CalibrationRequest | None, only_missing: bool = False
) -> tuple[list[str], list[str]]:
    """Build (or reuse) the default set; returns (built keys, warnings about what was skipped and why).
    `only_missing`: build only what the workspace does not record (completing it); what it records stays as it
    is, to be judged (an artifact from other weights fails its rows, it is not quietly rebuilt).

    INT8 needs calibration images (`calibration`, else ./calibration): the TensorRT recipe always, the CPU
    recipe only when benchmarking the CPU, where it is the fast one.
    """
    device = Device.parse(device)
    built: list[str] = []

    def wanted(key: str) -> bool:
        return not only_missing or key not in pipe.ws.artifacts

    def add(make: Callable[[], Artifact]) -> None:
        built.append(make().key or "")

    keys = [k for k in default_keys(device) if wanted(k)]
    int8 = [k.removeprefix("onnx-int8-") for k in keys if k.startswith("onnx-int8-")]
    rest = [k for k in keys if k in ("torchscript", "program", "onnx-fp32", "onnx-fp16")]
    notes = []
    if calibration is not None and not int8:  # asked for, and said when it is not used
        notes.append(f"--calib {calibration.folder} not used: the workspace already holds the INT8 ONNX it would make")
    if not keys:
        return [], notes
    verb = "completing" if only_missing else "building"
    console.info(f"[bold]{verb} the default artifact set in {escape(str(pipe.ws.dir))}[/] (skip with --no-build)")
    # INT8 first: it reads the calibration images before exporting anything, so a folder it cannot use
    # fails the command in seconds, not after the slower exports
    calibration = default_calibration(calibration)
    notes += _build_int8(pipe, calibration, int8, add) if int8 else []
    builders = {
        "torchscript": pipe.torchscript,
        "program": pipe.program,
        "onnx-fp32": pipe.onnx,
        "onnx-fp16": pipe.fp16,
    }
    for key in rest:
        add(builders[key])
    engines = [k.removeprefix("tensorrt-") for k in keys if k.startswith("tensorrt-")]
    notes.extend(_build_engines(pipe, device, calibration, engines, add) if engines else [])
    return built, notes


def _build_int8(
    pipe: Pipeline,
    calibration: CalibrationRequest | None,
    targets: list[str],
    add: Callable[[Callable[[], Artifact]], None],
) -> list[str]:
    """The INT8 recipes of the default set, from one read of the calibration images; or why they are skipped."""
    if calibration is None:
        return [
            "no ./calibration folder: INT8 ONNX skipped (pass --calib DIR, or export it with resnet-export onnx --int8)"
        ]
    outside = crop_outside_range(pipe.preprocess.crop, pipe.shape_range)
    if outside:  # INT8 is part of the set, not what was asked for: skipped and said, the rest still runs
        return [f"INT8 ONNX skipped: {outside}"]
    # the TensorRT recipe (symmetric int8, what an engine is built from; its accuracy is checked here on ONNX
    # Runtime's CPU provider) and, when benchmarking the CPU, the CPU recipe (uint8 activations: the one that
    # is fast on ONNX Runtime's x86 kernels)
    images = calibration.load(pipe.preprocess)
    for target in targets:
        request = CalibrationRequest(calibration.folder, calibration.size, calibration.method, target)
        add(lambda request=request: pipe.int8(request, images=images))
    return []


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


def _build_engines(
    pipe: Pipeline,
    device: Device,
    calibration: CalibrationRequest | None,
    precisions: list[str],
    add: Callable[[Callable[[], Artifact]], None],
) -> list[str]:
    """One engine per ONNX precision (the pipeline reuses the ONNX just built)."""
    reason = tensorrt_unavailable_reason()
    if reason:
        return [f"TensorRT engines skipped: {reason}"] if precisions else []
    dev = device.indexed
    for precision in precisions:
        if precision == "int8" and calibration is None:
            continue
        request = CalibrationRequest(calibration.folder, calibration.size, calibration.method) if calibration else None
        add(lambda precision=precision, request=request: pipe.engine(precision, request, device=dev))
    return []
