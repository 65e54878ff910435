"""The two ways `resnet-export trt` makes an engine: from a workspace's ONNX, or from any ONNX file.

Either way the engine is built (or reused while its inputs are unchanged), checked against PyTorch or
smoke-tested at the profile's shapes, and its build record is kept (manifest entry or sidecar JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy import console, onnx_graph, verify
from resnet_deploy.artifact import Artifact
from resnet_deploy.devices import Device
from resnet_deploy.engines.build import build, require_tensorrt
from resnet_deploy.engines.profile import profile_shapes
from resnet_deploy.errors import UsageError
from resnet_deploy.files import atomic_path, sha256_file
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.parity import DEFAULT_TOLERANCES
from resnet_deploy.pipeline.step import Step
from resnet_deploy.runtimes.tensorrt_env import build_environment, write_sidecar
from resnet_deploy.shapes import ShapeRange
from resnet_deploy.workspace import now

if TYPE_CHECKING:
    from resnet_deploy.pipeline.core import Pipeline


def source_onnx(pipe: Pipeline, precision: str, calibration: CalibrationRequest | None = None) -> Artifact:
    """The workspace's ONNX for `precision`, exported (and verified) first if missing or stale."""
    if precision == "fp32":
        return pipe.onnx()
    if precision == "fp16":
        return pipe.fp16()
    if calibration is None:  # never a folder picked for the caller: calibration decides the INT8 engine's accuracy
        raise UsageError("an INT8 engine needs calibration images", "pass --calib DIR, a folder of real images")
    if calibration.target != "tensorrt":
        raise UsageError(f"an INT8 engine is built from the tensorrt recipe, not --target {calibration.target}")
    return pipe.int8(calibration)


@dataclass
class EngineSettings:
    """How an engine is built, whatever it is built from: the profile's shapes (each, when not given, from the
    ONNX's recorded range or its fixed dims), the builder's scratch memory, the timing cache, the GPU."""

    min_shape: str | None = None
    opt_shape: str | None = None
    max_shape: str | None = None
    workspace_size: int | None = None
    timing_cache: Path | None = None
    device: str | Device = "cuda:0"

    def profile(
        self, recorded: ShapeRange | None = None, dims: list[int | str] | None = None, what: str = ""
    ) -> ShapeRange:
        return profile_shapes(self.min_shape, self.opt_shape, self.max_shape, recorded, dims, what or "the ONNX model")


def build_engine(
    pipe: Pipeline, precision: str = "fp32", calibration: CalibrationRequest | None = None, **settings: Any
) -> Artifact:
    """Find or export the ONNX for `precision`, then build (or reuse) its engine in the workspace.
    `settings`: the fields of `EngineSettings`."""
    build_with = EngineSettings(**settings)
    device = Device.parse(build_with.device).indexed
    workspace_size, timing_cache = build_with.workspace_size, build_with.timing_cache
    profile = build_with.profile(recorded=pipe.shape_range, what=f"the {pipe.ws.name} ONNX")
    onnx = source_onnx(pipe, precision, calibration)
    require_tensorrt(onnx.path, precision)
    env = build_environment(device.index)
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
    relative = onnx.path.relative_to(pipe.ws.dir) if onnx.path.is_relative_to(pipe.ws.dir) else onnx.path
    info = {
        "profile": profile.to_dict(),
        "source_onnx": str(relative),
        "source_onnx_sha256": onnx_sha,
        "gpu_name": env["gpu_name"],
        "compute_capability": env["compute_capability"],
        "tensorrt_version": env["tensorrt_version"],
        "timing_cache": str(cache),
        "workspace_size": workspace_size,
    }
    built = pipe.build(
        Step(
            key,
            f"{pipe.ws.name}-{precision}.engine",
            "engine",
            precision,
            fingerprint,
            lambda tmp: build(onnx.path, tmp, profile, precision, workspace_size, cache),
            _verified_engine(pipe.model, profile, precision, device, env),
            info,
        )
    )
    entry = dict(built.entry or {})
    write_sidecar(built.path, {**entry, "path": built.path.name})
    return Artifact("engine", built.path, precision, profile, key, entry)


def _verified_engine(model: Any, profile: ShapeRange, precision: str, device: Device, env: dict[str, Any]) -> Any:
    """A `check` for Pipeline.build: run the new engine against PyTorch at the profile's shapes."""

    def check(artifact: Artifact) -> dict[str, Any]:
        artifact.input_range = profile
        artifact.entry = dict(env)  # built here, just now
        # INT8 on random inputs says little; parity on real images is resnet-bench compare's job.
        bound = DEFAULT_TOLERANCES[precision].max_rel_l2 if precision != "int8" else None
        shapes = profile.verification_shapes()
        return verify.check_artifact(model, "tensorrt", artifact, shapes, bound or float("inf"), device)

    return check


def engine_from_onnx(
    onnx_path: Path, precision: str | None = None, output: Path | None = None, **settings: Any
) -> Path:
    """Build an engine from any ONNX file (no workspace); its build record goes to `<engine>.json`.
    `settings`: the fields of `EngineSettings`."""
    build_with = EngineSettings(**settings)
    device = Device.parse(build_with.device).indexed
    workspace_size, timing_cache = build_with.workspace_size, build_with.timing_cache
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        what = "is a folder" if onnx_path.is_dir() else "does not exist"
        raise UsageError(f"ONNX file {onnx_path} {what}", "pass the path of an .onnx file to --onnx")
    graph = onnx_graph.read_onnx(onnx_path)
    actual = onnx_graph.precision(graph)
    if precision is not None and precision != actual:
        raise UsageError(
            f"{onnx_path.name} is a {actual.upper()} model, not {precision.upper()}",
            "TensorRT takes precision from the ONNX: drop --fp16/--int8, or pass the matching ONNX",
        )
    profile = build_with.profile(dims=onnx_graph.input_dims(graph), what=onnx_path.name)
    require_tensorrt(onnx_path, actual, in_workspace=False)
    engine_file = Path(output) if output else onnx_path.with_suffix(".engine")
    cache = Path(timing_cache) if timing_cache else engine_file.parent / "timing.cache"
    env = build_environment(device.index)
    with atomic_path(engine_file) as tmp:
        with console.step(f"build {actual.upper()} TensorRT engine -> {engine_file}"):
            built = build(onnx_path, tmp, profile, actual, workspace_size, cache)
        smoke = Artifact("engine", tmp, actual, profile, "engine", dict(env), name=engine_file.name)
        verify.smoke_test_engine(smoke, profile, device)
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
