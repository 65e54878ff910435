"""The runtime interface every backend implements: `Runtime.run(np.ndarray) -> np.ndarray`.

Like Polygraphy's `BaseRunner`: one small class per backend (torch.py, onnxruntime.py, tensorrt.py), all behind
`run(batch) -> logits`, with the lifecycle (checking input, closing, `with`) here, so the benchmark and parity
code never branch on the backend. Which backend runs what, and whether it can here, is `registry.py`'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar

import numpy as np

from resnet_deploy.artifact import Artifact
from resnet_deploy.errors import UsageError
from resnet_deploy.shapes import ShapeRange, format_shape

_R = TypeVar("_R", bound="Runtime")


class Runtime(ABC):
    """Runs NCHW float32 batches and returns float32 logits."""

    name: str = "runtime"
    precision: str = "fp32"
    device: str = "cpu"
    artifact: Artifact | None = None
    #: shapes this runtime accepts; None = any 4-D float32 NCHW batch with 3 channels
    input_range: ShapeRange | None = None
    #: set by `close`: the runtime has freed what it runs with
    closed: bool = False

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Host in, host out. Copies to and from the device count in timings taken through this."""

    def run_device(self, batch: Any) -> Any:
        """Device-resident path so GPU timings can exclude copies: a torch tensor in (on any device; one already
        on this runtime's device is used where it is), float32 logits out on this runtime's device.

        Backends that can bind device memory override it; the default goes through host memory.
        """
        import torch

        out = self.run(batch.detach().cpu().numpy())
        return torch.from_numpy(out).to(self.device)

    def synchronize(self) -> None:
        """Block until queued device work is done (no-op on the CPU)."""

    def check_input(self, batch: np.ndarray | Any) -> None:
        """Refuse what `run` would otherwise turn into wrong logits or a deep numpy/backend error: a non-array,
        integer pixels (raw 0..255 values, cast to float silently, give plausible-looking garbage), a shape
        that is not NCHW with 3 channels or one outside `input_range`. Floating dtypes are cast to float32."""
        if self.closed:
            raise UsageError(f"{self.describe()} is closed", "create a new runtime to run it again")
        shape = getattr(batch, "shape", None)
        if shape is None:
            raise UsageError(
                f"input is a {type(batch).__name__}, not an array",
                "pass a float32 NCHW numpy array (run_device: a torch tensor)",
            )
        dtype = getattr(batch, "dtype", None)
        if dtype is not None and not _floating(dtype):
            raise UsageError(
                f"input is {str(dtype).replace('torch.', '')}, not float32: raw pixels are not what the model takes",
                "preprocess the images with resnet_deploy.preprocess (Preprocess, load_folder): resize, crop, normalize",
            )
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != 3:
            raise UsageError(f"input {format_shape(shape)} is not an NCHW batch with 3 channels")
        if self.input_range is not None:
            self.input_range.check(shape, self.describe())

    def describe(self) -> str:
        what = self.artifact.label if self.artifact else self.name
        return f"{what} on {self.name}"

    def close(self) -> None:
        """Free the session, module or engine (and its GPU memory) now rather than at garbage collection, so a
        service that opens many artifacts does not hold them all. Safe to call twice; `run` afterwards is an
        error. Subclasses free their own and call this. `with create(...) as runtime:` closes on exit."""
        self.closed = True

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.precision} {self.device}>"


def _floating(dtype: Any) -> bool:
    """A numpy dtype (kind 'f') or a torch dtype (is_floating_point) of floating point numbers."""
    kind = getattr(dtype, "kind", None)
    if kind is not None:
        return kind == "f"
    return bool(getattr(dtype, "is_floating_point", True))


def run_batched(runtime: Runtime, images: np.ndarray, batch: int) -> np.ndarray:
    """Logits for every image, `batch` at a time. Every call is at exactly `batch` (the last chunk is padded by
    wrapping around, and its padding dropped), so an artifact with a static batch runs a set of any size, and a
    batch-dependent bug shows up at the batch that has it."""
    n = len(images)
    outs = []
    for i in range(0, n, batch):
        idx = np.arange(i, i + batch) % n
        out = np.asarray(runtime.run(images[idx]))
        outs.append(out[: min(batch, n - i)])
    return np.concatenate(outs)
