"""An engine's optimization profile: min/opt/max from the flags, the ONNX's recorded range and fixed dims.

A profile must stay inside the range the ONNX was exported and verified for, and keep the dimensions
the ONNX fixed. Plain Python, tested without TensorRT.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from resnet_deploy.errors import UsageError
from resnet_deploy.shapes import ShapeRange, format_shape, make_range, parse_shape

PRECISIONS = ("fp32", "fp16", "int8")
AXES = ("batch", "channels", "height", "width")

# -- optimization profile ------------------------------------------------------------------------


def _fixed_axes(dims: Sequence[int | str] | None) -> list[int | None]:
    if dims is None:
        return [None] * 4
    if len(dims) != 4:
        raise UsageError(
            f"the model input has {len(dims)} dimensions ({'x'.join(str(d) for d in dims)})",
            "a ResNet takes NCHW input: pass an ONNX exported by resnet-export onnx",
        )
    return [d if isinstance(d, int) and d > 0 else None for d in dims]


def check_fixed_axes(dims: Sequence[int | str] | None, profile: ShapeRange, what: str = "the ONNX model") -> None:
    """A dimension the model fixed (e.g. batch 1 in a static ONNX) must be that size in the profile."""
    for axis, fixed in enumerate(_fixed_axes(dims)):
        if fixed is None:
            continue
        if not profile.min[axis] == profile.opt[axis] == profile.max[axis] == fixed:
            raise UsageError(
                f"{what} has a fixed {AXES[axis]} of {fixed}, but the profile asks for "
                f"{profile.min[axis]} / {profile.opt[axis]} / {profile.max[axis]} (min / opt / max)",
                "keep that dimension in --min-shape/--opt-shape/--max-shape, or re-export with --dynamic",
            )


def profile_shapes(
    min_shape: str | None = None,
    opt_shape: str | None = None,
    max_shape: str | None = None,
    recorded: ShapeRange | None = None,
    onnx_dims: Sequence[int | str] | None = None,
    what: str = "the ONNX model",
) -> ShapeRange:
    """The engine's one optimization profile.

    Each of min/opt/max comes from its flag, else from `recorded` (the range the workspace's ONNX was
    exported and verified for), else from the ONNX input's fixed dims plus the usual dynamic defaults.
    A profile must stay inside the recorded range (the ONNX was only checked there) and keep the
    dimensions the ONNX fixed.
    """
    fixed = _fixed_axes(onnx_dims)
    if recorded is None:
        base = make_range(True, 224)
        recorded_like = [
            tuple(f if f is not None else d for f, d in zip(fixed, s, strict=True))
            for s in (base.min, base.opt, base.max)
        ]
        lo0, opt0, hi0 = recorded_like
    else:
        lo0, opt0, hi0 = recorded.min, recorded.opt, recorded.max
    lo = parse_shape(min_shape) if min_shape is not None else lo0
    opt = parse_shape(opt_shape) if opt_shape is not None else opt0
    hi = parse_shape(max_shape) if max_shape is not None else hi0
    profile = ShapeRange(lo, opt, hi, dynamic=lo != hi)  # type: ignore[arg-type]
    check_fixed_axes(onnx_dims, profile, what)
    if recorded is not None and not (recorded.contains(profile.min) and recorded.contains(profile.max)):
        if not recorded.dynamic:
            raise UsageError(
                f"{what} is static ({format_shape(recorded.opt)}), so the engine cannot take "
                f"{format_shape(profile.min)} .. {format_shape(profile.max)}",
                "re-export it first: resnet-export onnx MODEL --dynamic --min-shape ... --max-shape ...",
            )
        raise UsageError(
            f"profile {format_shape(profile.min)} .. {format_shape(profile.max)} is outside the range "
            f"{format_shape(recorded.min)} .. {format_shape(recorded.max)} that {what} was exported and verified for",
            "re-export it first with resnet-export onnx MODEL --dynamic --min-shape/--max-shape covering the profile",
        )
    return profile


def parse_bytes(text: str | None) -> int | None:
    """'4G', '512M', '1.5GiB', '1073741824' -> bytes; None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise UsageError(f"invalid size '{text}'", "write it like 4G, 512M or a number of bytes")
    scale = 1024 ** " kmgt".index(m.group(2).lower() or " ")
    value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise UsageError(f"invalid size '{text}': must be positive")
    return value


def precision_from_flags(fp16: bool, int8: bool) -> str | None:
    """fp16 / int8 / fp32 from the CLI flags (None: neither given, so the ONNX decides). What INT8 needs besides
    the flag (calibration images, unless the ONNX carries its scales) is the calibration request's check."""
    if fp16 and int8:
        raise UsageError(
            "--fp16 and --int8 exclude each other", "pick one (INT8 engines keep FP32 where not quantized)"
        )
    return "int8" if int8 else "fp16" if fp16 else None
