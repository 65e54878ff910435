"""Every export checks itself against the PyTorch model before it is reported as done."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resnet_deploy.benchmarks.parity import ParityMetrics, compare
from resnet_deploy.errors import VerificationError
from resnet_deploy.runtimes.base import Runtime
from resnet_deploy.shapes import Shape, format_shape

#: FP32 artifacts must reproduce PyTorch to float rounding; measured ~4e-7 on resnet50.
FP32_REL_L2 = 1e-4


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


def reference_logits(model: Any, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(batch)).float().numpy()


#: model -> {(shape, seed): logits}. Every format is verified on the same random batches, and at a wide
#: range's max (ResNet-50 at 256x3x224x224) the PyTorch forward costs as much as the artifact's, so it
#: runs once per model, not once per format. Weak keys: a model that is gone takes its entries with it.
_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reference_for(model: Any, shape: Shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    batch = random_batch(shape, seed)
    cache = _REFERENCES.setdefault(model, {})
    if (shape, seed) not in cache:
        cache[(shape, seed)] = reference_logits(model, batch)
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
    artifact: Any,
    shapes: Sequence[Shape],
    max_rel_l2: float,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run a freshly written artifact against PyTorch; the manifest info for `Pipeline.build` on success."""
    from resnet_deploy import console
    from resnet_deploy.console import plural
    from resnet_deploy.runtimes.base import create

    with console.step(f"verify {artifact.key} against PyTorch at {plural(len(shapes), 'shape')}"):
        runtime = create(runtime_name, artifact, device)
        try:
            result = verify(model, runtime, shapes, max_rel_l2, artifact.key or "")
        finally:
            runtime.close()
    console.info(f"  {result.summary()}")
    return {"verification": result.to_dict()}
