"""The only place TensorRT's builder API is called: network, parser, config, timing cache, build.

TensorRT 11 dropped weak typing: no `BuilderFlag.FP16/INT8`, no calibrators, no `EXPLICIT_BATCH`.
Precision therefore comes from the ONNX file (FP16 weights, or int8 Q/DQ nodes) and the network is
strongly typed. The same ONNX files build on TensorRT 10 with the `STRONGLY_TYPED` creation flag.
Flags are looked up by name, never by integer (the enum values moved between 10 and 11), and the only
calls 11 removed live in `_legacy_*` functions that run on TensorRT < 10 only (tests/test_tensorrt.py
checks that statically). `tensorrt` itself is imported lazily, inside these functions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from resnet_deploy import console
from resnet_deploy.engines.profile import check_fixed_axes
from resnet_deploy.errors import UsageError, VerificationError
from resnet_deploy.files import atomic_write_bytes
from resnet_deploy.runtimes.tensorrt_env import import_tensorrt, trt_logger, trt_major
from resnet_deploy.shapes import ShapeRange, format_shape


def _legacy_network_flags(trt: Any) -> int:
    """TensorRT < 10 only: explicit batch was still a flag (11 removed the name)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _legacy_precision_flags(trt: Any, config: Any, precision: str) -> None:
    """TensorRT < 9 only (no strongly typed networks): let the builder use the ONNX's precision."""
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ: no calibrator


def create_network(trt: Any, builder: Any, precision: str, config: Any) -> tuple[Any, bool]:
    """(network, strongly typed?): always strongly typed on 11; via the STRONGLY_TYPED flag (by name) on
    9-10; on 8.6, which has no such flag, weakly typed with the precision flag the ONNX needs."""
    major = trt_major(trt)
    if major >= 11:
        return builder.create_network(), True  # strong typing is always on; the flag is deprecated and ignored
    flags = 0
    if major < 10:
        flags |= _legacy_network_flags(trt)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:
        flags |= 1 << int(strongly_typed)
    elif major < 10:
        _legacy_precision_flags(trt, config, precision)
    return builder.create_network(flags), strongly_typed is not None


def _parse_onnx(trt: Any, network: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, trt_logger(trt))
    if parser.parse_from_file(str(onnx_path)):
        return parser
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    for err in errors[:10]:
        console.warn(f"TensorRT ONNX parser: {err}")
    first = errors[0] if errors else "no details"
    more = f" (and {len(errors) - 1} more above)" if len(errors) > 1 else ""
    raise VerificationError(
        f"TensorRT cannot parse {Path(onnx_path).name}: {first}{more}",
        "check the ONNX with onnx.checker; use an ONNX made by resnet-export onnx",
    )


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    """A cache only saves build time, so one that cannot be used is replaced (and overwritten after the
    build), never a reason to fail. TensorRT says so in one of two ways, and which one for which file
    differs between versions: None from create_timing_cache, or False from set_timing_cache (a blob it
    cannot parse, a truncated file, or one made by another GPU or TensorRT version)."""
    blob = b""
    if path is not None and path.is_file():
        blob = path.read_bytes()
    cache = config.create_timing_cache(blob)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        why = "cannot be used (unreadable, or made by another GPU or TensorRT version)"
        console.warn(f"timing cache {path} {why}: starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _save_timing_cache(config: Any, path: Path | None) -> None:
    if path is None:
        return
    cache = config.get_timing_cache()
    if cache is None:
        return
    atomic_write_bytes(path, bytes(memoryview(cache.serialize())))


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    profile: ShapeRange,
    precision: str = "fp32",
    workspace_size: int | None = None,
    timing_cache: Path | None = None,
    allow_tf32: bool = False,
) -> dict[str, Any]:
    """Build a serialized engine from `onnx_path` into `engine_path` (the caller makes that atomic).

    Returns what was built: input name, profile, TensorRT version, build seconds.
    """
    trt = import_tensorrt()
    start = time.perf_counter()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    network, strongly_typed = create_network(trt, builder, precision, config)
    parser = _parse_onnx(trt, network, onnx_path)
    if network.num_inputs != 1:
        raise UsageError(f"{Path(onnx_path).name} has {network.num_inputs} inputs; a ResNet has one")
    tensor = network.get_input(0)
    input_name = tensor.name
    check_fixed_axes([int(d) for d in tensor.shape], profile, Path(onnx_path).name)

    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, profile.min, profile.opt, profile.max)
    if config.add_optimization_profile(opt_profile) < 0:  # the profile's index, or -1 if TensorRT finds it invalid
        raise UsageError(
            f"TensorRT rejected the profile {format_shape(profile.min)} / {format_shape(profile.opt)} / "
            f"{format_shape(profile.max)} (min / opt / max) for {Path(onnx_path).name} (its messages are above)",
            "pass --min-shape/--opt-shape/--max-shape inside the range the ONNX was exported for",
        )
    if workspace_size:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_size)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if precision == "fp32" and not allow_tf32 and tf32 is not None:
        config.clear_flag(tf32)  # FP32 engines stay FP32 (TF32 would cost ~1e-3 relative error)
    _load_timing_cache(config, timing_cache)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise VerificationError(
            f"TensorRT could not build an engine from {Path(onnx_path).name} (its messages are above)",
            "try a larger --workspace-size, or report the messages with the command",
        )
    Path(engine_path).write_bytes(bytes(memoryview(serialized)))
    _save_timing_cache(config, timing_cache)
    del parser
    return {
        "input_name": input_name,
        "profile": profile.to_dict(),
        "tensorrt_version": trt.__version__,
        "strongly_typed": strongly_typed,
        "tf32": bool(allow_tf32 or precision != "fp32"),
        "build_seconds": round(time.perf_counter() - start, 1),
    }
