"""The two ways `resnet-export trt` makes an engine: from a workspace's ONNX, or from any ONNX file.

Either way the engine is built (or reused while its inputs are unchanged), checked against PyTorch or
smoke-tested at the profile's shapes, and its build record is kept (manifest entry or sidecar JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy import console
from resnet_deploy.engines.environment import (
    build_environment,
    missing_tensorrt_error,
    tensorrt_unavailable_reason,
    write_sidecar,
)
from resnet_deploy.engines.profile import profile_shapes
from resnet_deploy.engines.tensorrt_api import build_engine
from resnet_deploy.errors import UsageError, VerificationError
from resnet_deploy.files import sha256_file
from resnet_deploy.runtimes.base import Artifact, device_index
from resnet_deploy.shapes import ShapeRange, format_shape
from resnet_deploy.workspace import now

if TYPE_CHECKING:
    from resnet_deploy.pipeline import Pipeline

# -- the two ways `resnet-export trt` builds -----------------------------------------------------


def source_onnx(
    pipe: Pipeline,
    precision: str,
    calib: Path | None = None,
    calib_method: str | None = None,
    calib_size: int | None = None,
) -> Artifact:
    """The workspace's ONNX for `precision`, exported (and verified) first if missing or stale."""
    if precision == "fp32":
        return pipe.onnx()
    try:
        if precision == "fp16":
            from resnet_deploy.export.precision import onnx_fp16

            return onnx_fp16(pipe)
        from resnet_deploy.calibration.quantize import DEFAULT_METHOD, onnx_int8
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("resnet_deploy"):
            raise
        raise UsageError(
            f"{precision.upper()} ONNX export is not available in this build ({exc.name} is missing)"
        ) from None
    if calib is None:  # never a folder picked for the caller: calibration decides the INT8 engine's accuracy
        raise UsageError("an INT8 engine needs calibration images", "pass --calib DIR, a folder of real images")
    return onnx_int8(pipe, Path(calib), calib_method or DEFAULT_METHOD, calib_size, target="tensorrt")


def _verify_engine(model: Any, profile: ShapeRange, precision: str, device: str, env: dict[str, Any]) -> Any:
    """A `check` for Pipeline.build: run the new engine against PyTorch at the profile's shapes."""

    def check(artifact: Any) -> dict[str, Any]:
        from resnet_deploy.benchmarks.parity import DEFAULT_TOLERANCES
        from resnet_deploy.export.verify import check_artifact

        artifact.input_range = profile
        artifact.entry = dict(env)  # built here, just now
        # INT8 on random inputs says little; parity on real images is resnet-bench compare's job.
        bound = DEFAULT_TOLERANCES[precision].max_rel_l2 if precision != "int8" else None
        shapes = profile.verification_shapes()
        return check_artifact(model, "tensorrt", artifact, shapes, bound or float("inf"), device)

    return check


def engine_for_pipeline(
    pipe: Pipeline,
    precision: str = "fp32",
    calib: Path | None = None,
    calib_method: str | None = None,
    calib_size: int | None = None,
    min_shape: str | None = None,
    opt_shape: str | None = None,
    max_shape: str | None = None,
    workspace_size: int | None = None,
    timing_cache: Path | None = None,
    device: str = "cuda:0",
) -> Artifact:
    """Find or export the ONNX for `precision`, then build (or reuse) its engine in the workspace."""
    profile = profile_shapes(
        min_shape, opt_shape, max_shape, recorded=pipe.shape_range, what=f"the {pipe.ws.name} ONNX"
    )
    onnx = source_onnx(pipe, precision, calib, calib_method, calib_size)
    reason = tensorrt_unavailable_reason()
    if reason:
        raise missing_tensorrt_error(reason, onnx.path, precision)

    env = build_environment(device_index(device))
    onnx_sha = (onnx.entry or {}).get("sha256") or sha256_file(onnx.path)
    cache = Path(timing_cache) if timing_cache else pipe.ws.path("timing.cache")
    key = f"tensorrt-{precision}"
    fingerprint = pipe.fingerprint(
        format="engine",
        precision=precision,
        onnx_sha256=onnx_sha,
        profile=profile.to_dict(),
        tensorrt_version=env["tensorrt_version"],
        compute_capability=env["compute_capability"],
        workspace_size=workspace_size,
    )

    def write(tmp: Path) -> dict[str, Any]:
        return build_engine(onnx.path, tmp, profile, precision, workspace_size, cache)

    built = pipe.build(
        key,
        f"{pipe.ws.name}-{precision}.engine",
        "engine",
        precision,
        fingerprint,
        write,
        _verify_engine(pipe.model, profile, precision, device, env),
        profile=profile.to_dict(),
        source_onnx=str(onnx.path.relative_to(pipe.ws.dir))
        if onnx.path.is_relative_to(pipe.ws.dir)
        else str(onnx.path),
        source_onnx_sha256=onnx_sha,
        gpu_name=env["gpu_name"],
        compute_capability=env["compute_capability"],
        tensorrt_version=env["tensorrt_version"],
        timing_cache=str(cache),
        workspace_size=workspace_size,
    )
    entry = dict(built.entry or {})
    write_sidecar(built.path, {**entry, "path": built.path.name})
    return Artifact("engine", built.path, precision, profile, key, entry)


def engine_from_onnx(
    onnx_path: Path,
    precision: str | None = None,
    output: Path | None = None,
    min_shape: str | None = None,
    opt_shape: str | None = None,
    max_shape: str | None = None,
    workspace_size: int | None = None,
    timing_cache: Path | None = None,
    device: str = "cuda:0",
) -> Path:
    """Build an engine from any ONNX file (no workspace); its build record goes to `<engine>.json`."""
    from resnet_deploy.export.onnx import input_dims, onnx_precision, read_onnx
    from resnet_deploy.files import atomic_path

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        what = "is a folder" if onnx_path.is_dir() else "does not exist"
        raise UsageError(f"ONNX file {onnx_path} {what}", "pass the path of an .onnx file to --onnx")
    graph = read_onnx(onnx_path)
    actual = onnx_precision(graph)
    if precision is not None and precision != actual:
        raise UsageError(
            f"{onnx_path.name} is a {actual.upper()} model, not {precision.upper()}",
            "TensorRT takes precision from the ONNX: drop --fp16/--int8, or pass the matching ONNX",
        )
    profile = profile_shapes(min_shape, opt_shape, max_shape, onnx_dims=input_dims(graph), what=onnx_path.name)
    reason = tensorrt_unavailable_reason()
    if reason:
        raise missing_tensorrt_error(reason, onnx_path, actual, in_workspace=False)
    engine_file = Path(output) if output else onnx_path.with_suffix(".engine")
    cache = Path(timing_cache) if timing_cache else engine_file.parent / "timing.cache"
    env = build_environment(device_index(device))
    with atomic_path(engine_file) as tmp:
        with console.step(f"build {actual.upper()} TensorRT engine -> {engine_file}"):
            built = build_engine(onnx_path, tmp, profile, actual, workspace_size, cache)
        _smoke_test(tmp, actual, profile, device, env, engine_file.name)
        sha256 = sha256_file(tmp)
    info = {
        "format": "engine",
        "path": engine_file.name,
        "precision": actual,
        "sha256": sha256,
        "created": now(),
        "source_onnx": str(onnx_path.resolve()),
        "source_onnx_sha256": sha256_file(onnx_path),
        **env,
        **built,
        "timing_cache": str(cache),
        "workspace_size": workspace_size,
    }
    write_sidecar(engine_file, info)
    return engine_file


def _smoke_test(
    engine_file: Path, precision: str, profile: ShapeRange, device: str, env: dict[str, Any], name: str
) -> None:
    """No model to compare with here: check the engine runs at min/opt/max and gives finite logits.
    `engine_file` is still the temp file; errors name the engine as `name`."""
    import numpy as np

    from resnet_deploy.export.verify import random_batch
    from resnet_deploy.runtimes.base import create

    runtime = create(
        "tensorrt", Artifact("engine", engine_file, precision, profile, "engine", dict(env), name=name), device
    )
    try:
        for i, shape in enumerate([profile.min, profile.opt, profile.max]):
            out = runtime.run(random_batch(shape, seed=i))
            if out.shape[0] != shape[0] or not np.isfinite(out).all():
                raise VerificationError(
                    f"the engine gives {'non-finite' if out.shape[0] == shape[0] else 'wrongly shaped'} output at "
                    f"{format_shape(shape)}",
                    "the engine was not kept; check the ONNX on ONNX Runtime first",
                )
    finally:
        runtime.close()
    console.info(
        f"  ran at {format_shape(profile.min)}, {format_shape(profile.opt)}, {format_shape(profile.max)}: finite logits"
    )
