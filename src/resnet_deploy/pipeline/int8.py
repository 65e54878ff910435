"""The INT8 artifact: what it is made from, where its ranges are cached, how it is written and checked.

Reused while the FP32 ONNX, the calibration set (pixels after preprocessing), method, target and ONNX
Runtime are unchanged; a `tensorrt` model is checked against TensorRT's Q/DQ rules, and every INT8 model
against PyTorch on its calibration images, before it is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy import console, onnx_graph, verify
from resnet_deploy.artifact import Artifact
from resnet_deploy.int8.cache import CalibrationCache
from resnet_deploy.int8.calibrate import input_batch_size
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.int8.qdq_check import require_valid
from resnet_deploy.int8.quantize import crop_outside_range, quantize
from resnet_deploy.int8.recipe import Recipe, recipe
from resnet_deploy.pipeline.step import Step
from resnet_deploy.preprocess import ImageSet

if TYPE_CHECKING:
    from resnet_deploy.pipeline.core import Pipeline


def build_int8(
    pipe: Pipeline, request: CalibrationRequest, opset: int | None = None, images: ImageSet | None = None
) -> Artifact:
    """Calibrate on `request`'s images and write an INT8 Q/DQ ONNX (manifest key onnx-int8-TARGET).
    `images`: that folder already loaded (the default set calibrates two recipes on one read)."""
    import onnxruntime as ort  # an extra: its version is part of what the ranges depend on

    outside = crop_outside_range(pipe.preprocess.crop, pipe.shape_range)
    if outside:
        raise outside
    if images is None:  # first: bad images fail before any export
        images = request.load(pipe.preprocess)
    fp32 = pipe.onnx(opset)
    fp32_sha, calib_hash = pipe.ws.sha256(fp32.path), images.fingerprint()
    target, method = request.target, request.method
    rec = recipe(target)
    key, stem = f"onnx-int8-{target}", f"{pipe.ws.name}.int8-{target}"
    cache = CalibrationCache(
        pipe.ws.path(f"{stem}.calib.json"),
        {
            "onnx_sha256": fp32_sha,
            "calibration_sha256": calib_hash,
            "images": len(images),
            "preprocess": pipe.preprocess.to_dict(),
            "method": method,
            "target": target,
            "recipe": rec.to_dict(),  # which tensors are calibrated
            "onnxruntime": ort.__version__,
        },
    )
    fingerprint = pipe.fingerprint(
        format="onnx",
        precision="int8",
        target=target,
        method=method,
        source_sha256=fp32_sha,
        calibration_sha256=calib_hash,
        recipe=rec.to_dict(),
        onnxruntime=ort.__version__,
    )

    def write(tmp: Path) -> dict[str, Any]:
        done = quantize(fp32.path, tmp, images, method, rec, cache, pipe.preprocess.crop)
        return {"calibration": _calibration_record(request, rec, images, calib_hash, cache, done)}

    return pipe.build(Step(key, f"{stem}.onnx", "onnx", "int8", fingerprint, write, _checker(pipe, images, target)))


def _calibration_record(
    request: CalibrationRequest,
    rec: Recipe,
    images: ImageSet,
    sha256: str,
    cache: CalibrationCache,
    done: dict[str, Any],
) -> dict[str, Any]:
    """What calibration saw, in the artifact's record."""
    return {
        "folder": str(request.folder),
        "sha256": sha256,
        "size": len(images),
        "skipped": [[p.as_posix(), reason] for p, reason in images.skipped],
        "method": request.method,
        "target": request.target,
        "recipe": rec.to_dict(),
        "cache": str(cache.path.name),
        **done,  # seconds, cache_reused, ranges, and what the recipe's corrections did
    }


def _checker(pipe: Pipeline, images: ImageSet, target: str) -> Any:
    """The INT8 file's check: the ONNX checker, TensorRT's Q/DQ rules for that recipe, then parity with PyTorch
    on the calibration images."""

    def check(artifact: Artifact) -> dict[str, Any]:
        onnx_graph.check_onnx(artifact.path)
        details: dict[str, Any] = {}
        if target == "tensorrt":
            with console.step("check Q/DQ placement against TensorRT's rules"):
                require_valid(artifact.path, f"the {artifact.key} model")
            details["qdq_check"] = "passed"
        _, batch = input_batch_size(artifact.path, pipe.preprocess.crop)
        details["verification"] = verify.check_on_images(pipe.model, artifact, images.tensors, batch)
        return details

    return check
