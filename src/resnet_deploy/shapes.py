"""Input shapes and the min/opt/max range an artifact is exported and profiled for.

The range is recorded in the manifest at export time so the TensorRT profile later matches what the
ONNX was verified at, and so runtimes can refuse a shape outside it with a clear message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resnet_deploy.errors import UsageError

Shape = tuple[int, int, int, int]

_SEP = re.compile(r"[x,X*]")


def _ints(text: str, what: str, hint: str) -> list[int]:
    """'1x3x224x224' -> [1, 3, 224, 224]; an empty or non-numeric part ('224x', '8xx3') is an error,
    not a guess."""
    try:
        return [int(p) for p in _SEP.split(text.strip())]
    except ValueError:
        raise UsageError(f"invalid {what} '{text}'", hint) from None


def parse_shape(text: str) -> Shape:
    """Parse `NxCxHxW` (e.g. `1x3x224x224`); `HxW` or `S` give batch 1, 3 channels."""
    dims = _ints(text, "shape", "write it as NxCxHxW, for example 1x3x224x224")
    if len(dims) == 1:
        dims = [1, 3, dims[0], dims[0]]
    elif len(dims) == 2:
        dims = [1, 3, *dims]
    elif len(dims) != 4:
        raise UsageError(
            f"invalid shape '{text}': {len(dims)} dimensions",
            "write it as NxCxHxW, for example 1x3x224x224",
        )
    shape: Shape = (dims[0], dims[1], dims[2], dims[3])
    check_shape(shape, text)
    return shape


def parse_size(text: str) -> tuple[int, int]:
    """Parse an image size `HxW` or `S` (square)."""
    dims = _ints(text, "size", "write it as HxW or S, e.g. 320x256 or 224")
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) <= 0:
        raise UsageError(f"invalid size '{text}'", "write it as HxW or S with positive numbers")
    return dims[0], dims[1]


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def check_shape(shape: Shape, text: str | None = None) -> None:
    label = text or format_shape(shape)
    if any(d <= 0 for d in shape):
        raise UsageError(f"invalid shape {label}: every dimension must be positive")
    if shape[1] != 3:
        raise UsageError(f"invalid shape {label}: ResNets take 3 channels, got {shape[1]}")


@dataclass(frozen=True)
class ShapeRange:
    """The shapes an artifact accepts: exactly `opt` when static, anything in [min, max] when dynamic."""

    min: Shape
    opt: Shape
    max: Shape
    dynamic: bool = True

    def __post_init__(self) -> None:
        for s in (self.min, self.opt, self.max):
            check_shape(s)
        for i, axis in enumerate(("batch", "channels", "height", "width")):
            if not self.min[i] <= self.opt[i] <= self.max[i]:
                raise UsageError(
                    f"invalid shape range: {axis} must satisfy min <= opt <= max, got "
                    f"{self.min[i]} / {self.opt[i]} / {self.max[i]}",
                    "fix --min-shape/--opt-shape/--max-shape",
                )

    @classmethod
    def static(cls, shape: Shape) -> ShapeRange:
        return cls(shape, shape, shape, dynamic=False)

    def contains(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != 4:
            return False
        return all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max, strict=True))

    def check(self, shape: tuple[int, ...], what: str = "the artifact") -> None:
        """Raise a clear error when `shape` is outside the range."""
        if self.contains(shape):
            return
        if not self.dynamic:
            raise UsageError(
                f"input {format_shape(shape)} does not fit {what}, which only accepts {format_shape(self.opt)}",
                "re-export with --dynamic (and --min-shape/--max-shape) to accept other shapes",
            )
        raise UsageError(
            f"input {format_shape(shape)} is outside {what}'s range "
            f"{format_shape(self.min)} .. {format_shape(self.max)}",
            "rebuild it with --min-shape/--max-shape covering this shape",
        )

    def verification_shapes(self) -> list[Shape]:
        """Min, opt, max, and an odd non-square size inside the range (catches H/W mix-ups)."""
        shapes: list[Shape] = [self.min, self.opt, self.max]
        if self.dynamic:
            h = min(max(97, self.min[2]), self.max[2])
            w = min(max(131, self.min[3]), self.max[3])
            if h == w:  # square would hide an H/W mix-up: one side moves by a pixel, inside the range
                if w < self.max[3]:
                    w += 1
                elif h > self.min[2]:
                    h -= 1
            shapes.append((min(2, self.max[0]), 3, h, w))
        unique: list[Shape] = []
        for s in shapes:
            if s not in unique:
                unique.append(s)
        return unique

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max), "dynamic": self.dynamic}

    @classmethod
    def from_dict(cls, d: dict) -> ShapeRange:
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]), bool(d.get("dynamic", True)))  # type: ignore[arg-type]


DEFAULT_MIN: Shape = (1, 3, 64, 64)
DEFAULT_MAX: Shape = (8, 3, 448, 448)


def make_range(
    dynamic: bool,
    crop: int,
    min_shape: str | None = None,
    opt_shape: str | None = None,
    max_shape: str | None = None,
) -> ShapeRange:
    """Build the range from CLI options; without --dynamic only --opt-shape may be given.

    An option typed empty (`--opt-shape "$UNSET"`) is an invalid shape, not "not given": `is None` tests."""
    opt = parse_shape(opt_shape) if opt_shape is not None else (1, 3, crop, crop)
    if not dynamic:
        if min_shape is not None or max_shape is not None:
            raise UsageError("--min-shape/--max-shape need --dynamic", "add --dynamic or drop them")
        return ShapeRange.static(opt)
    lo = (
        parse_shape(min_shape)
        if min_shape is not None
        else tuple(min(a, b) for a, b in zip(DEFAULT_MIN, opt, strict=True))
    )
    hi = (
        parse_shape(max_shape)
        if max_shape is not None
        else tuple(max(a, b) for a, b in zip(DEFAULT_MAX, opt, strict=True))
    )
    return ShapeRange(lo, opt, hi, dynamic=True)  # type: ignore[arg-type]
