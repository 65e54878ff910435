"""Every artifact checks itself against the PyTorch model before it is reported as done.

The one module that runs a freshly made artifact on a runtime and judges it: at the shapes of its range on
random batches (FP32/FP16 exports), on the calibration images (INT8, where random inputs say little), or for an
engine built from a file with no model to compare with, a smoke test at the profile's shapes. The PyTorch
reference logits are computed here, in one place, for verification and for `resnet-bench compare` alike.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from resnet_deploy import console
from resnet_deploy.artifact import Artifact
from resnet_deploy.console import plural
from resnet_deploy.devices import Device
from resnet_deploy.errors import VerificationError
from resnet_deploy.parity import DEFAULT_TOLERANCES, ParityMetrics, check, compare
from resnet_deploy.runtimes import Runtime, create, run_batched
from resnet_deploy.shapes import Shape, ShapeRange, format_shape

#: FP32 artifacts must reproduce PyTorch to float rounding; measured ~4e-7 on resnet50.
FP32_REL_L2 = 1e-4
#: FP16 against PyTorch FP32 on the verification inputs (random normal, every shape). Measured about
#: 1e-3 on resnet18/50; a broken conversion (overflow to inf, wrong casts) is orders of magnitude off.
FP16_REL_L2 = 2e-2
#: an INT8 model whose logits point elsewhere than FP32's (cosine below this, on the calibration
#: images themselves) is broken, not merely lossy; it is not kept.
MIN_COSINE = 0.9
#: calibration images an INT8 model is compared with PyTorch on
INT8_CHECK_IMAGES = 64
#: images per PyTorch forward when computing reference logits (bounded memory for large folders)
REFERENCE_CHUNK = 16


@dataclass
class Verification:
    per_shape: dict[str, ParityMetrics] = field(default_factory=dict)

    @property
    def worst_rel_l2(self) -> float:
        return max(m.rel_l2 for m in self.per_shape.values())

    @property
    def worst_max_abs(self) -> float:
        return max(m.max_abs for m in self.per_shape.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "worst_rel_l2": self.worst_rel_l2,
            "worst_max_abs": self.worst_max_abs,
            "shapes": {
                k: {"rel_l2": m.rel_l2, "max_abs": m.max_abs, "cosine": m.cosine} for k, m in self.per_shape.items()
            },
        }

    def summary(self) -> str:
        return (
            f"worst rel L2 {self.worst_rel_l2:.2e}, max abs {self.worst_max_abs:.2e} over {', '.join(self.per_shape)}"
        )


def random_batch(shape: Shape, seed: int = 0) -> np.ndarray:
    """Normal noise is a fair stand-in for normalized images when checking an FP32 export."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def reference_logits(model: Any, images: np.ndarray, chunk: int = REFERENCE_CHUNK) -> np.ndarray:
    """PyTorch FP32 eager on the CPU over `images`, `chunk` at a time: the reference every artifact is judged by."""
    model = model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(images), chunk):
            batch = torch.from_numpy(np.ascontiguousarray(images[i : i + chunk], np.float32))
            outs.append(model(batch).float().numpy())
    return np.concatenate(outs)


#: model -> {(shape, seed): logits}. Every format is verified on the same random batches, and at a wide
#: range's max (ResNet-50 at 256x3x224x224) the PyTorch forward costs as much as the artifact's, so it
#: runs once per model, not once per format. Weak keys: a model that is gone takes its entries with it.
_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reference_for(model: Any, shape: Shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    batch = random_batch(shape, seed)
    cache = _REFERENCES.setdefault(model, {})
    if (shape, seed) not in cache:
        cache[(shape, seed)] = reference_logits(model, batch, chunk=len(batch))
    return batch, cache[(shape, seed)]


def verify(
    model: Any,
    runtime: Runtime,
    shapes: Sequence[Shape],
    max_rel_l2: float = FP32_REL_L2,
    what: str = "the export",
) -> Verification:
    """Run `runtime` and the PyTorch model at each shape; raise VerificationError beyond `max_rel_l2`."""
    result = Verification()
    for i, shape in enumerate(shapes):
        batch, reference = _reference_for(model, tuple(shape), i)
        result.per_shape[format_shape(shape)] = compare(reference, runtime.run(batch))
    if not result.worst_rel_l2 <= max_rel_l2:  # also catches NaN
        raise VerificationError(
            f"{what} does not match PyTorch: {result.summary()} (tolerance rel L2 {max_rel_l2:g})",
            "report this with the model and the command; the artifact was not kept",
        )
    return result


def check_artifact(
    model: Any,
    runtime_name: str,
    artifact: Artifact,
    shapes: Sequence[Shape],
    max_rel_l2: float,
    device: str | Device = "cpu",
) -> dict[str, Any]:
    """Run a freshly written artifact against PyTorch; the manifest info for `Pipeline.build` on success."""
    with console.step(f"verify {artifact.key} against PyTorch at {plural(len(shapes), 'shape')}"):
        with create(runtime_name, artifact, device) as runtime:
            result = verify(model, runtime, shapes, max_rel_l2, artifact.key or "")
    console.info(f"  {result.summary()}")
    return {"verification": result.to_dict()}


def check_on_images(model: Any, artifact: Artifact, images: np.ndarray, batch: int) -> dict[str, Any]:
    """An INT8 model against PyTorch on (up to 64 of) its calibration images, on ONNX Runtime's CPU provider.

    The ranges were fitted to these very images, so this catches a broken model (refused), not bad calibration:
    a model that is lossy beyond the default INT8 bounds is kept with a warning, as the gate judges held-out
    images."""
    key = artifact.key or artifact.label
    sample = images[: min(len(images), INT8_CHECK_IMAGES)]
    with console.step(f"compare {key} with PyTorch on {len(sample)} calibration images"):
        with create("onnxruntime-cpu", artifact, "cpu") as runtime:
            metrics = compare(reference_logits(model, sample), run_batched(runtime, sample, batch))
    agree = round(metrics.top1_agreement * metrics.count)
    console.info(
        f"  INT8 vs FP32 on calibration images: top-1 agreement {metrics.top1_agreement:.1%} "
        f"({agree} of {metrics.count}), cosine {metrics.cosine:.4f} (min {metrics.min_cosine:.4f}), "
        f"rel L2 {metrics.rel_l2:.2e}"
    )
    console.info(
        "  [dim](images the ranges were fitted to: judge held-out ones with resnet-bench compare --images DIR --gate)[/]"
    )
    misses = check(metrics, DEFAULT_TOLERANCES["int8"])
    if misses and metrics.cosine >= MIN_COSINE:  # kept (lossy, not broken), but the gate would fail it now
        console.warn(
            f"{key} misses the default INT8 parity bounds on its own calibration images "
            f"({'; '.join(map(str, misses))}): resnet-bench compare --gate will fail it on these images. "
            "More calibration images (--calib-size), another --calib-method, or INT8 bounds that fit the "
            "model (--tolerances) decide that"
        )
    if not metrics.cosine >= MIN_COSINE:
        raise VerificationError(
            f"{key} is broken, not just lossy: mean cosine {metrics.cosine:.3f} against PyTorch on the "
            f"calibration images (needs >= {MIN_COSINE})",
            "try --calib-method minmax, more calibration images, or report it",
        )
    return {
        "on": "calibration images",
        "count": metrics.count,
        "worst_rel_l2": metrics.rel_l2,
        "cosine": metrics.cosine,
        "min_cosine": metrics.min_cosine,
        "top1_agreement": metrics.top1_agreement,
    }


def smoke_test_engine(artifact: Artifact, profile: ShapeRange, device: str | Device) -> None:
    """No model to compare with (an engine built from any ONNX file): the engine runs at min/opt/max and gives
    finite logits of the right batch, or it is not kept."""
    with create("tensorrt", artifact, device) as runtime:
        for i, shape in enumerate([profile.min, profile.opt, profile.max]):
            out = runtime.run(random_batch(shape, seed=i))
            if out.shape[0] != shape[0] or not np.isfinite(out).all():
                raise VerificationError(
                    f"the engine gives {'non-finite' if out.shape[0] == shape[0] else 'wrongly shaped'} output at "
                    f"{format_shape(shape)}",
                    "the engine was not kept; check the ONNX on ONNX Runtime first",
                )
    console.info(
        f"  ran at {format_shape(profile.min)}, {format_shape(profile.opt)}, {format_shape(profile.max)}: finite logits"
    )
