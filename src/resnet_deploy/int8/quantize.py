"""Stage: an FP32 ONNX and calibration images in, an INT8 Q/DQ ONNX and what calibration saw out.

Both recipes (`recipe.py`) calibrate the same way (`calibrate.py`), reuse cached ranges while their inputs
are unchanged (`cache.py`), and quantize with ONNX Runtime's `quantize_static` in QDQ format; the `tensorrt`
recipe then gets TensorRT's residual placement (`place_qdq.py`). The pipeline decides when to build, checks
the file (`qdq_check.py`, parity on the calibration images) and records it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from resnet_deploy.errors import UsageError
from resnet_deploy.int8.cache import CalibrationCache
from resnet_deploy.int8.calibrate import calibrate, input_batch_size, print_summary, quiet_ort, range_summary
from resnet_deploy.int8.correct import classifier, correct_biases, narrow_first_conv
from resnet_deploy.int8.place_qdq import place_residual_qdq
from resnet_deploy.int8.recipe import Recipe, ort_method
from resnet_deploy.preprocess import ImageSet
from resnet_deploy.shapes import ShapeRange, format_shape


def crop_outside_range(crop: int, rng: ShapeRange) -> UsageError | None:
    """Calibration images are the preprocessing's square crops: a crop the exported range does not hold
    (a 64x64 static export, a 64..96 dynamic one, with the default crop 224) would calibrate and check the
    INT8 model at a size it was never exported or verified for. The pipeline raises it before any export;
    compare's default set, where INT8 was not asked for by name, skips INT8 and says it."""
    if rng.min[2] <= crop <= rng.max[2] and rng.min[3] <= crop <= rng.max[3]:
        return None
    span = format_shape(rng.opt) if not rng.dynamic else f"{format_shape(rng.min)} .. {format_shape(rng.max)}"
    return UsageError(
        f"INT8 calibrates on the preprocessing's {crop}x{crop} crops, but the model is exported for {span}",
        f"pass --crop (and --resize) inside that range, or export a range that holds {crop}x{crop}",
    )


def quantize(
    fp32: Path, target: Path, images: ImageSet, method: str, rec: Recipe, cache: CalibrationCache, crop: int
) -> dict[str, Any]:
    """Write the INT8 model of `fp32` to `target`: ranges from `cache` when it holds them for these inputs, else
    calibrated on `images` (and cached). Returns what calibration did: seconds, whether the cache was used, and
    a summary of the ranges."""
    with tempfile.TemporaryDirectory(prefix="int8-") as work:
        source = _pre_processed(fp32, Path(work)) if rec.pre_process else _linked(fp32, Path(work))
        cached = cache.load()
        if cached is not None:
            ranges, seconds, reused = cached.ranges, float(cached.info.get("seconds", 0.0)), True
        else:
            ranges, seconds = calibrate(source, images, method, rec, crop)
            reused = False
        summary = range_summary(ranges)
        if not reused:
            cache.save(ranges, {"seconds": round(seconds, 2), "summary": summary})
        print_summary(images, method, seconds, summary, reused)
        ort_cache = Path(work) / "ranges.json"
        cache.write_ort_cache(ranges, ort_cache)
        _quantize_static(source, target, rec, method, ort_cache)
        corrected = _corrections(source, target, rec, ranges, images, crop)
    return {"seconds": round(seconds, 2), "cache_reused": reused, "ranges": summary, **corrected}


def _corrections(source: Path, target: Path, rec: Recipe, ranges: Any, images: ImageSet, crop: int) -> dict[str, Any]:
    """The recipe's edits of what `quantize_static` wrote: TensorRT's residual placement, the 7-bit first conv,
    bias correction (against `source`, the FP32 model that was quantized). Returns what was done."""
    model, fp32 = onnx.load(str(target)), onnx.load(str(source))
    done: dict[str, Any] = {}
    if rec.residual_placement:
        done["residual_edits"] = place_residual_qdq(model, ranges)
    if rec.narrow_first_conv:
        done["narrowed_first_conv"] = narrow_first_conv(model, fp32)
    if rec.bias_correction:
        _, batch = input_batch_size(source, crop)
        done["bias_corrected_layers"] = correct_biases(fp32, model, images.tensors, batch)
    onnx.save(model, str(target))
    return done


def _linked(fp32: Path, work: Path) -> Path:
    """`fp32` as seen from `work`: ONNX Runtime's quantizer writes its shape-inferred copy (`<name>-inferred.onnx`)
    beside the model it is given, which must be this run's temp folder, never the workspace."""
    link = work / Path(fp32).name
    try:
        link.symlink_to(Path(fp32).resolve())
    except OSError:  # a file system without links
        shutil.copyfile(fp32, link)
    return link


def _pre_processed(fp32: Path, work: Path) -> Path:
    """ONNX Runtime's shape inference and graph optimization, which its CPU quantization recipe expects."""
    from onnxruntime.quantization.shape_inference import quant_pre_process  # onnxruntime is an extra

    out = work / "pre.onnx"
    with quiet_ort():
        quant_pre_process(str(fp32), str(out))
    return out


def _quantize_static(source: Path, target: Path, rec: Recipe, method: str, ranges_file: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # onnxruntime is an extra

    with quiet_ort():
        quantize_static(
            str(source),
            str(target),
            None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(rec.op_types) if rec.op_types else None,
            per_channel=True,
            reduce_range=False,
            activation_type=getattr(QuantType, rec.activation_type),
            weight_type=getattr(QuantType, rec.weight_type),
            calibrate_method=ort_method(method),
            nodes_to_exclude=classifier(source) if rec.float_classifier else [],
            extra_options=dict(rec.extra_options),
            calibration_cache_path=str(ranges_file),
        )
