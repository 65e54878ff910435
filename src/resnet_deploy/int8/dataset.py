"""Calibration images: the request (folder, size, method, target), checked and scanned once, then read
through the model's own preprocessing and fed to ONNX Runtime's calibrators.

Loading and preprocessing is `resnet_deploy.preprocess.load_folder` (the same code the parity images go
through); this module only says what calibration asked for and saw, and batches the tensors for ONNX Runtime.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.markup import escape

from resnet_deploy import console
from resnet_deploy.console import plural
from resnet_deploy.errors import UsageError
from resnet_deploy.int8.recipe import DEFAULT_METHOD, DEFAULT_TARGET, check_method, recipe
from resnet_deploy.preprocess import FolderScan, ImageSet, Preprocess, describe_ignored, load_folder, require_scan

#: Below this many images the ranges are a demo, not a calibration (the README says 500 or more).
FEW_IMAGES = 100


@dataclass(frozen=True)
class CalibrationRequest:
    """What INT8 calibration was asked for. Made once per command (`from_options`), before the model loads:
    every option is checked here, and the folder is scanned here, once; `load` reads what that scan found."""

    folder: Path
    size: int | None = None
    method: str = DEFAULT_METHOD
    target: str = DEFAULT_TARGET

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "method", check_method(self.method))
        recipe(self.target)  # an unknown target is refused now
        if self.size is not None and self.size <= 0:
            raise UsageError(f"--calib-size must be positive, got {self.size}")

    @classmethod
    def from_options(
        cls, int8: bool, calib: Path | None, size: int | None, method: str | None, target: str | None = None
    ) -> CalibrationRequest | None:
        """The calibration options of `resnet-export onnx` and `trt`, checked before the model loads: given without
        --int8 they would be dropped after minutes of export, and a folder INT8 cannot use fails the same way.
        None without --int8."""
        options = {"--calib": calib, "--calib-size": size, "--calib-method": method, "--target": target}
        given = [name for name, value in options.items() if value is not None]
        if given and not int8:
            one = len(given) == 1
            raise UsageError(
                f"{', '.join(given)} only appl{'ies' if one else 'y'} with --int8",
                f"add --int8{' --calib DIR' if calib is None else ''}, or drop {'it' if one else 'them'}",
            )
        if not int8:
            return None
        if calib is None:  # never a folder picked for the caller: calibration decides the INT8 model's accuracy
            raise UsageError("--int8 needs --calib DIR, a folder of real images", "e.g. --calib ./calibration")
        request = cls(calib, size, method or DEFAULT_METHOD, target or DEFAULT_TARGET)
        request.scan  # noqa: B018  a folder with nothing to read fails now, in a second
        return request

    @functools.cached_property
    def scan(self) -> FolderScan:
        """The folder's inputs, found once (an error when it holds none)."""
        return require_scan(self.folder, "calibration image")

    def load(self, pre: Preprocess) -> ImageSet:
        """The calibration set: `size` files spread evenly over the scan, preprocessed; what was skipped and
        why, and what was used, are said."""
        images = load_folder(self.folder, pre, self.size, what="calibration image", scan=self.scan)
        _report(images, self.folder, self.size, pre)
        return images


def load_calibration_set(folder: Path, pre: Preprocess, size: int | None = None) -> ImageSet:
    """Load `folder` (recursively), pick `size` files evenly spread, list what was skipped and why."""
    return CalibrationRequest(folder, size).load(pre)


def _report(images: ImageSet, folder: Path, size: int | None, pre: Preprocess) -> None:
    for path, reason in images.skipped:
        console.warn(f"calibration: skipped {path}: {reason}")
    if images.ignored:
        console.warn(f"calibration: {describe_ignored(images.ignored)}")
    skipped = f", skipped {len(images.skipped)} (listed above)" if images.skipped else ""
    files = plural(len(images.paths), "file")
    if size is not None and images.available > size:
        files = f"{len(images.paths)} of {images.available} files (--calib-size {size}, spread evenly)"
    console.info(
        f"calibration set: {plural(len(images), 'image')} from {files} in "
        f"{escape(str(folder))}{skipped} (preprocessing: {pre.describe()})"
    )
    if len(images) < FEW_IMAGES:
        console.warn(
            f"only {plural(len(images), 'calibration image')}: fine for a demo, but use 500 or more from the "
            "deployment domain for ranges you can ship"
        )


class ImageReader:
    """Yields {input_name: (B, 3, H, W) float32} batches of real, preprocessed images: an ONNX Runtime
    `CalibrationDataReader` (which any class with `get_next` is, by its `__subclasshook__`).

    `limit` batches per pass (then None), so a calibrator can be fed in chunks and never holds the
    intermediate outputs of the whole set; `rewind()` is not needed, `start` moves on.
    """

    def __init__(
        self,
        images: np.ndarray,
        input_name: str,
        batch_size: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
            raise UsageError(f"calibration tensors have shape {images.shape}, expected (N,3,H,W) with N > 0")
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.input_name = input_name
        self.batch_size = max(1, int(batch_size))
        self.on_batch = on_batch
        self.position = 0
        self.stop_at = len(self.images)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def chunk(self, batches: int) -> bool:
        """Limit the next pass to `batches` batches; False when all images were read."""
        if self.position >= len(self.images):
            return False
        self.stop_at = min(len(self.images), self.position + batches * self.batch_size)
        return True

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.stop_at:
            return None
        batch = self.images[self.position : min(self.position + self.batch_size, self.stop_at)]
        self.position += len(batch)
        if self.on_batch:
            self.on_batch(len(batch))
        return {self.input_name: batch}

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.stop_at = start_index, min(end_index, len(self.images))
