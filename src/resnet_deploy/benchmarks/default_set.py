"""The default artifact set `resnet-bench compare` builds into an empty workspace.

Every format the tool exports, each verified against PyTorch as it is built (pipeline.py): TorchScript,
torch.export .pt2, ONNX FP32/FP16/INT8 and, with TensorRT and a GPU, engines. Kept apart from the
benchmark itself so that what gets built and what gets measured can change independently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from resnet_deploy import console
from resnet_deploy.runtimes.base import Artifact, device_name

if TYPE_CHECKING:
    from resnet_deploy.benchmarks.compare import CompareOptions
    from resnet_deploy.pipeline import Pipeline

#: parity and calibration images when none are given: the photos bundled with the project
DEFAULT_IMAGES = Path("calibration")


def build_default_set(pipe: Pipeline, device: str, calib_dir: Path | None) -> tuple[list[str], list[str]]:
    """Build (or reuse) the default set; returns (built keys, warnings about what was skipped and why).

    INT8 needs calibration images (`calib_dir`, else ./calibration): the TensorRT recipe always, the CPU
    recipe only when benchmarking the CPU, where it is the fast one.
    """
    built: list[str] = []
    notes: list[str] = []

    def add(artifact: Any) -> None:
        if isinstance(artifact, Artifact) and artifact.key:
            built.append(artifact.key)

    console.info(f"[bold]building the default artifact set in {escape(str(pipe.ws.dir))}[/] (skip with --no-build)")
    # INT8 first: it reads the calibration images before exporting anything, so a folder it cannot use
    # fails the command in seconds, not after the slower exports
    calib = calib_dir if calib_dir is not None else (DEFAULT_IMAGES if DEFAULT_IMAGES.is_dir() else None)
    if calib is None:
        notes.append(
            "no ./calibration folder: INT8 ONNX skipped (pass --calib DIR, or export it with resnet-export onnx --int8)"
        )
    else:
        try:
            from resnet_deploy.calibration.dataset import load_calibration_set
            from resnet_deploy.calibration.quantize import crop_outside_range, onnx_int8
        except ImportError:
            notes.append("INT8 quantization is not available in this install: skipped")
        else:
            outside = crop_outside_range(pipe)
            if outside:  # INT8 is part of the set, not what was asked for: skipped and said, the rest still runs
                notes.append(f"INT8 ONNX skipped: {outside}")
                calib = None
            else:
                # the TensorRT recipe (symmetric int8, what an engine is built from; its accuracy is checked
                # here on ONNX Runtime's CPU provider) and, when benchmarking the CPU, the CPU recipe (uint8
                # activations: the one that is fast on ONNX Runtime's x86 kernels)
                images = load_calibration_set(Path(calib), pipe.preprocess)  # read (and reported) once, for both
                add(onnx_int8(pipe, Path(calib), target="tensorrt", images=images))
                if not device.startswith("cuda"):
                    add(onnx_int8(pipe, Path(calib), target="cpu", images=images))
    with warnings.catch_warnings():  # TorchScript's deprecation notice: it is still asked for
        warnings.simplefilter("ignore", FutureWarning)
        add(pipe.torchscript())
    add(pipe.program())
    add(pipe.onnx())
    try:
        from resnet_deploy.export.precision import onnx_fp16
    except ImportError:
        notes.append("FP16 ONNX export is not available in this install: skipped")
    else:
        add(onnx_fp16(pipe))
    if device.startswith("cuda"):
        notes.extend(_build_engines(pipe, device, calib, add))
    return built, notes


def prepare_workspace(
    pipe: Pipeline, options: CompareOptions, device: str, batches: list[int], sizes: list[tuple[int, int]]
) -> tuple[list[str], list[str]]:
    """What compare needs before it measures: the default set, built into an empty workspace for the shapes
    it will run. Returns (built keys, notes for the report); what cannot be right fails here, before minutes
    of building."""
    from resnet_deploy.errors import UsageError
    from resnet_deploy.shapes import format_shape

    if options.build and not options.artifacts and not pipe.current_artifacts():
        if options.fit_range:
            fit_range(pipe, batches, sizes)
        else:  # the range was given: every row outside it would fail, after minutes of building
            rng = pipe.shape_range
            outside = [(b, 3, h, w) for b in batches for h, w in sizes if not rng.contains((b, 3, h, w))]
            if outside:
                raise UsageError(
                    f"the benchmark shape {format_shape(outside[0])} is outside the range "
                    f"{format_shape(rng.min)} .. {format_shape(rng.max)} the default set would be exported for",
                    "widen --min-shape/--max-shape to hold every --batch and --size, or drop them to fit the range "
                    "to the benchmark",
                )
        return build_default_set(pipe, device, options.calib_dir)
    if not options.build and not options.artifacts and not pipe.ws.artifacts:
        # a --workspace typo, or the model's own folder passed as the workspace: not a clean pass
        return [], [
            f"{pipe.ws.dir} holds no artifacts of {pipe.ws.name}: only PyTorch runs (--workspace is the folder "
            f"resnet-export wrote to, which holds {pipe.ws.name}/; drop --no-build to build the default set)"
        ]
    if options.calib_dir is not None:  # the workspace had artifacts: said, not dropped in silence
        return [], [
            f"--calib {options.calib_dir} not used: the workspace already holds artifacts, and the default set "
            "is built only into an empty one (re-export INT8 with resnet-export onnx --int8 --calib DIR)"
        ]
    return [], []


def fit_range(pipe: Pipeline, batches: list[int], sizes: list[tuple[int, int]]) -> bool:
    """Before a build: if the benchmark's shapes fall outside the dynamic range, export for them instead.

    The new range spans exactly the shapes asked for and the model's crop (its opt), not the union
    with the default 64..448 px: every export is verified at its range's max, and ResNet-50 at
    256x3x448x448 would take minutes of CPU per format. Returns True when the range changed.
    """
    from resnet_deploy.shapes import ShapeRange, format_shape

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


def _build_engines(pipe: Pipeline, device: str, calib: Path | None, add: Callable[[Any], None]) -> list[str]:
    """One engine per ONNX precision (engines.engine_for_pipeline reuses the ONNX just built)."""
    try:
        from resnet_deploy import engines
    except ImportError:
        return ["TensorRT engine building is not available in this install: skipped"]
    reason = engines.tensorrt_unavailable_reason()
    if reason:
        return [f"TensorRT engines skipped: {reason}"]
    dev = device_name(device)
    add(engines.engine_for_pipeline(pipe, "fp32", device=dev))
    add(engines.engine_for_pipeline(pipe, "fp16", device=dev))
    if calib is not None:
        add(engines.engine_for_pipeline(pipe, "int8", calib=Path(calib), device=dev))
    return []
