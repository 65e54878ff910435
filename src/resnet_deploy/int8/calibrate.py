"""Calibration: ONNX Runtime's calibrator over the preprocessed images, fed in chunks (memory stays flat for
large sets) with a progress bar; the activation ranges it finds, summarized.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy import console, onnx_graph
from resnet_deploy.errors import UsageError
from resnet_deploy.int8.dataset import ImageReader
from resnet_deploy.int8.recipe import Recipe, ort_method
from resnet_deploy.preprocess import ImageSet

#: images per calibrator pass: ONNX Runtime's calibrators keep every intermediate output of a pass.
CHUNK_IMAGES = 8


def quiet_ort() -> contextlib.AbstractContextManager[None]:
    """ONNX Runtime's quantizer logs advice through `logging` (root logger); keep the console ours."""
    return console.quiet_logger()


def input_batch_size(model_path: Path, crop: int) -> tuple[str, int]:
    """The ONNX input's name and the batch size to calibrate with (its static batch, else 8)."""
    dims = onnx_graph.input_dims(model_path)
    if len(dims) == 4:
        for axis in (2, 3):
            if isinstance(dims[axis], int) and dims[axis] and dims[axis] != crop:
                raise UsageError(
                    f"{Path(model_path).name} takes {dims[2]}x{dims[3]} images but preprocessing crops {crop}x{crop}",
                    f"pass --crop {dims[axis]} or re-export with --dynamic",
                )
    batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] else 8
    return onnx_graph.input_name(model_path), batch


def calibrate(model_path: Path, images: ImageSet, method: str, rec: Recipe, crop: int) -> tuple[Any, float]:
    """Run ONNX Runtime's calibrator for `method` over `images`; returns (TensorsData, seconds)."""
    from onnxruntime.quantization.calibrate import create_calibrator  # onnxruntime is an extra

    input_name, batch = input_batch_size(model_path, crop)
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="calib-") as tmp,
        quiet_ort(),
        contextlib.redirect_stdout(io.StringIO()),  # the histogram calibrators print() their progress
        console.progress() as bar,
    ):
        task = bar.add_task(f"calibrating ({method}, {len(images)} images)", total=len(images))
        calibrator = create_calibrator(
            Path(model_path),
            rec.calibrated_ops(),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=ort_method(method),
            providers=["CPUExecutionProvider"],
            extra_options={"symmetric": rec.symmetric},
        )
        reader = ImageReader(images.tensors, input_name, batch, lambda n: bar.advance(task, n))
        # one shape per pass: the histogram calibrators stack a pass's outputs into one array
        chunk_batches = CHUNK_IMAGES if batch == 1 else 1
        while reader.chunk(chunk_batches):
            calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
    return ranges, time.perf_counter() - start


def range_summary(ranges: Any) -> dict[str, Any]:
    """A few numbers that tell whether the ranges look sane (counts, typical and widest |range|)."""
    widths = {}
    for name, data in ranges.items():
        lo, hi = data.range_value
        widths[name] = (float(np.min(lo)), float(np.max(hi)))
    absmax = {k: max(abs(lo), abs(hi)) for k, (lo, hi) in widths.items()}
    widest = max(absmax, key=absmax.__getitem__) if absmax else None
    vals = np.array(list(absmax.values())) if absmax else np.zeros(1)
    return {
        "tensors": len(widths),
        "median_absmax": float(np.median(vals)),
        "max_absmax": float(vals.max()),
        "widest_tensor": widest,
        "zero_range_tensors": int((vals == 0).sum()),
    }


def print_summary(images: ImageSet, method: str, seconds: float, summary: dict[str, Any], reused: bool) -> None:
    how = "reused cached ranges" if reused else f"calibrated in {seconds:.1f}s"
    console.info(
        f"  calibration: {len(images)} images, method {method}, {how}; {summary['tensors']} tensor ranges, "
        f"|max| median {summary['median_absmax']:.3g}, widest {summary['max_absmax']:.3g} ({summary['widest_tensor']})"
    )
    if summary["zero_range_tensors"]:
        console.warn(f"{summary['zero_range_tensors']} tensors never left 0 on the calibration images")
