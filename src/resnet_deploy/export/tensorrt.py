"""TensorRT engines from the FP32 / FP16 / INT8 (Q/DQ) ONNX models, for TensorRT 10 and 11.

TensorRT 11 dropped weak typing: no `BuilderFlag.FP16/INT8`, no calibrators, no `EXPLICIT_BATCH`.
Precision therefore comes from the ONNX file (FP16 weights, or int8 Q/DQ nodes) and the network is
strongly typed. The same ONNX files build on TensorRT 10 with the `STRONGLY_TYPED` creation flag.
Flags are looked up by name, never by integer (the enum values moved between 10 and 11), and the only
calls 11 removed live in `_legacy_*` functions that run on TensorRT < 10 only.

Everything that does not need TensorRT (profiles, build-environment compatibility, sidecar files,
the "TensorRT is missing" message) is plain Python so it is tested on machines without a GPU.
`tensorrt` itself is imported lazily inside the functions that build or run.
"""

from __future__ import annotations

import importlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnet_deploy import console
from resnet_deploy.errors import MissingDependencyError, UsageError, VerificationError
from resnet_deploy.shapes import ShapeRange, format_shape, make_range, parse_shape
from resnet_deploy.workspace import atomic_write_text, now, sha256_file

#: The oldest TensorRT whose Python API has everything used here (name-based I/O, execute_async_v3).
MIN_VERSION = (8, 6)
PRECISIONS = ("fp32", "fp16", "int8")
#: no square brackets: the CLI prints errors through rich, which would take "[tensorrt]" for markup
INSTALL = "pip install 'tensorrt>=10' (the resnet-deploy tensorrt extra)"
AXES = ("batch", "channels", "height", "width")

# -- versions and the machine -------------------------------------------------------------------


def parse_version(text: str | None) -> tuple[int, ...]:
    """'10.7.0.post1' -> (10, 7, 0); unknown -> ()."""
    if not text:
        return ()
    out = []
    for part in str(text).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def _tensorrt_problem() -> str | None:
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return "TensorRT is not installed (no Python package 'tensorrt')"
    except Exception as exc:  # a wheel whose CUDA libraries do not load raises OSError & co
        return f"TensorRT does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    version = parse_version(getattr(trt, "__version__", ""))
    if version and version[:2] < MIN_VERSION:
        return f"TensorRT {trt.__version__} is too old (this needs 10.x or 11.x)"
    return None


def _gpu_problem() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() > 0:
            return None
    except Exception:
        pass
    return "no CUDA GPU is visible"


def tensorrt_unavailable_reason() -> str | None:
    """None if `tensorrt` imports and a CUDA GPU is visible, else why not, in plain words."""
    problems = [p for p in (_tensorrt_problem(), _gpu_problem()) if p]
    return " and ".join(problems) if problems else None


def install_hint(reason: str) -> str:
    """How to fix what `tensorrt_unavailable_reason` said."""
    no_trt = "TensorRT" in reason
    no_gpu = "GPU" in reason
    if no_trt and no_gpu:
        return f"on a machine with an NVIDIA GPU and driver: {INSTALL}, then run the same command there"
    if no_trt:
        return f"{INSTALL} (NVIDIA's wheels; they need an NVIDIA driver for CUDA 12 or newer)"
    return "run it on a machine with an NVIDIA GPU whose driver works (nvidia-smi lists the GPU)"


def missing_tensorrt_error(reason: str, onnx: Path | None = None, precision: str = "fp32") -> MissingDependencyError:
    """The one line `resnet-export trt` ends with where it cannot build: what, how to fix, what it made."""
    message = f"cannot build a TensorRT engine here: {reason}"
    if onnx is not None:
        message += (
            f"; the {precision.upper()} ONNX the engine is built from is ready at {onnx} "
            "(it runs on ONNX Runtime: resnet-bench compare)"
        )
    return MissingDependencyError(message, install_hint(reason))


def gpu_info(index: int = 0) -> dict[str, str] | None:
    """Name and compute capability ('8.9') of CUDA device `index`, through torch or pycuda."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(index)
            return {"gpu_name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(index)
        major, minor = dev.compute_capability()
        return {"gpu_name": dev.name(), "compute_capability": f"{major}.{minor}"}
    except Exception:
        return None


def build_environment(device_index: int = 0) -> dict[str, Any]:
    """What an engine built (or run) here depends on: TensorRT version, GPU name, compute capability."""
    env: dict[str, Any] = {"tensorrt_version": None, "gpu_name": None, "compute_capability": None}
    try:
        env["tensorrt_version"] = importlib.import_module("tensorrt").__version__
    except Exception:
        pass
    env.update(gpu_info(device_index) or {})
    return env


def device_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


# -- compatibility of an engine with this machine -----------------------------------------------


def compatibility(
    built: dict[str, Any], here: dict[str, Any], label: str = "the engine"
) -> tuple[list[str], list[str]]:
    """(errors, warnings) for running an engine built in `built` on `here`.

    A serialized engine only loads on the TensorRT version it was built with and on GPUs of the same
    compute capability; another GPU model of the same capability works but was not tuned for.
    Unknown fields are not held against the engine (TensorRT still refuses a truly foreign one).
    """
    errors: list[str] = []
    warnings: list[str] = []
    b_ver, h_ver = built.get("tensorrt_version"), here.get("tensorrt_version")
    if b_ver and h_ver and parse_version(b_ver)[:3] != parse_version(h_ver)[:3]:
        errors.append(f"TensorRT {b_ver} (this machine has TensorRT {h_ver})")
    b_cc, h_cc = built.get("compute_capability"), here.get("compute_capability")
    if b_cc and h_cc and str(b_cc) != str(h_cc):
        errors.append(
            f"a GPU of compute capability {b_cc} ({built.get('gpu_name') or 'unknown GPU'}; "
            f"this one is {h_cc}, {here.get('gpu_name') or 'unknown GPU'})"
        )
    b_gpu, h_gpu = built.get("gpu_name"), here.get("gpu_name")
    if not errors and b_gpu and h_gpu and b_gpu != h_gpu:
        warnings.append(f"{label} was tuned on {b_gpu}, not this {h_gpu}: it runs, but rebuild it here for best speed")
    if not b_ver and not b_cc:
        warnings.append(
            f"{label} has no build record (manifest entry or .json sidecar): cannot check where it was built"
        )
    return errors, warnings


def check_compatible(built: dict[str, Any], here: dict[str, Any], label: str) -> None:
    """Raise a plain error when the engine was built for another TensorRT or GPU; warn otherwise."""
    errors, warnings = compatibility(built, here, label)
    for w in warnings:
        console.warn(w)
    if errors:
        raise UsageError(
            f"{label} was built elsewhere, with " + " and with ".join(errors),
            "engines only run on the TensorRT version and GPU architecture they were built with: rebuild it on "
            "this machine with resnet-export trt (same options)",
        )


# -- sidecar: the build record next to an engine file -------------------------------------------


def sidecar_path(engine_file: Path) -> Path:
    engine_file = Path(engine_file)
    return engine_file.with_name(engine_file.name + ".json")


def write_sidecar(engine_file: Path, info: dict[str, Any]) -> Path:
    path = sidecar_path(engine_file)
    atomic_write_text(path, json.dumps(info, indent=2, default=str) + "\n")
    return path


def read_sidecar(engine_file: Path) -> dict[str, Any] | None:
    path = sidecar_path(engine_file)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        console.warn(f"ignoring {path}: {exc}")
        return None
    return data if isinstance(data, dict) else None


def build_record(engine_file: Path, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The engine's build info: its manifest entry if it has one, else its sidecar, else {}."""
    if entry and (entry.get("tensorrt_version") or entry.get("compute_capability")):
        return entry
    return read_sidecar(engine_file) or dict(entry or {})


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
    lo = parse_shape(min_shape) if min_shape else lo0
    opt = parse_shape(opt_shape) if opt_shape else opt0
    hi = parse_shape(max_shape) if max_shape else hi0
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


def precision_from_flags(fp16: bool, int8: bool, calib: Path | None) -> str | None:
    """fp16 / int8 / fp32 from the CLI flags (None: neither given, so the ONNX decides)."""
    if fp16 and int8:
        raise UsageError(
            "--fp16 and --int8 exclude each other", "pick one (INT8 engines keep FP32 where not quantized)"
        )
    if calib is not None and not int8:
        raise UsageError("--calib only applies with --int8", "add --int8, or drop --calib")
    if int8 and calib is None:
        raise UsageError("--int8 needs calibration images", "add --calib DIR, e.g. --calib ./calibration")
    return "int8" if int8 else "fp16" if fp16 else None


# -- TensorRT: building --------------------------------------------------------------------------

_LOGGER: Any = None


def import_tensorrt() -> Any:
    """`tensorrt`, or the one-line error saying what is missing and how to get it."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise missing_tensorrt_error(reason)
    return importlib.import_module("tensorrt")


def trt_logger(trt: Any) -> Any:
    """One logger per process, as TensorRT recommends; warnings and errors go to stderr."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def trt_major(trt: Any) -> int:
    version = parse_version(getattr(trt, "__version__", ""))
    return version[0] if version else 0


def _legacy_network_flags(trt: Any) -> int:
    """TensorRT < 10 only: explicit batch was still a flag (11 removed the name)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _legacy_precision_flags(trt: Any, config: Any, precision: str) -> None:
    """TensorRT < 9 only (no strongly typed networks): let the builder use the ONNX's precision."""
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ: no calibrator


def create_network(trt: Any, builder: Any, precision: str, config: Any) -> Any:
    """A strongly typed network: always so on 11; via the STRONGLY_TYPED flag (by name) on 9-10."""
    major = trt_major(trt)
    if major >= 11:
        return builder.create_network()  # strong typing is always on; the flag is deprecated and ignored
    flags = 0
    if major < 10:
        flags |= _legacy_network_flags(trt)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:
        flags |= 1 << int(strongly_typed)
    elif major < 10:
        _legacy_precision_flags(trt, config, precision)
    return builder.create_network(flags)


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
    blob = b""
    if path is not None and path.is_file():
        blob = path.read_bytes()
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        console.warn(f"timing cache {path} is from another GPU or TensorRT version: starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _save_timing_cache(config: Any, path: Path | None) -> None:
    if path is None:
        return
    cache = config.get_timing_cache()
    if cache is None:
        return
    from resnet_deploy.workspace import atomic_write_bytes

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
    network = create_network(trt, builder, precision, config)
    parser = _parse_onnx(trt, network, onnx_path)
    if network.num_inputs != 1:
        raise UsageError(f"{Path(onnx_path).name} has {network.num_inputs} inputs; a ResNet has one")
    tensor = network.get_input(0)
    input_name = tensor.name
    check_fixed_axes([int(d) for d in tensor.shape], profile, Path(onnx_path).name)

    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
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
        "strongly_typed": True,
        "tf32": bool(allow_tf32 or precision != "fp32"),
        "build_seconds": round(time.perf_counter() - start, 1),
    }


# -- the two ways `resnet-export trt` builds -----------------------------------------------------


def source_onnx(
    pipe: Any,
    precision: str,
    calib: Path | None = None,
    calib_method: str | None = None,
    calib_size: int | None = None,
) -> Any:
    """The workspace's ONNX for `precision`, exported (and verified) first if missing or stale."""
    if precision == "fp32":
        return pipe.onnx()
    try:
        if precision == "fp16":
            from resnet_deploy.export.precision import onnx_fp16

            return onnx_fp16(pipe)
        from resnet_deploy.calibration.quantize import onnx_int8
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("resnet_deploy"):
            raise
        raise UsageError(
            f"{precision.upper()} ONNX export is not available in this build ({exc.name} is missing)"
        ) from None
    options: dict[str, Any] = {"size": calib_size, "target": "tensorrt"}
    if calib_method:
        options["method"] = calib_method
    return onnx_int8(pipe, Path(calib) if calib else Path("calibration"), **options)


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
    pipe: Any,
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
) -> Any:
    """Find or export the ONNX for `precision`, then build (or reuse) its engine in the workspace."""
    from resnet_deploy.runtimes.base import Artifact

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
    built: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        built.update(build_engine(onnx.path, tmp, profile, precision, workspace_size, cache))

    pipe.build(
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
    entry = dict(pipe.ws.artifacts[key])
    if built:
        entry.update({k: v for k, v in built.items() if k not in entry or k == "build_seconds"})
        pipe.ws.artifacts[key] = entry
        pipe.ws.save()
    path = pipe.ws.dir / entry["path"]
    write_sidecar(path, {**entry, "path": path.name})
    return Artifact("engine", path, precision, profile, key, entry)


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
    from resnet_deploy.export.onnx import input_dims, onnx_precision
    from resnet_deploy.workspace import atomic_path

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UsageError(f"ONNX file {onnx_path} does not exist", "pass the path of an .onnx file to --onnx")
    actual = onnx_precision(onnx_path)
    if precision is not None and precision != actual:
        raise UsageError(
            f"{onnx_path.name} is a {actual.upper()} model, not {precision.upper()}",
            "TensorRT takes precision from the ONNX: drop --fp16/--int8, or pass the matching ONNX",
        )
    profile = profile_shapes(min_shape, opt_shape, max_shape, onnx_dims=input_dims(onnx_path), what=onnx_path.name)
    reason = tensorrt_unavailable_reason()
    if reason:
        raise missing_tensorrt_error(reason, onnx_path, actual)
    engine_file = Path(output) if output else onnx_path.with_suffix(".engine")
    cache = Path(timing_cache) if timing_cache else engine_file.parent / "timing.cache"
    env = build_environment(device_index(device))
    with atomic_path(engine_file) as tmp:
        with console.step(f"build {actual.upper()} TensorRT engine -> {engine_file}"):
            built = build_engine(onnx_path, tmp, profile, actual, workspace_size, cache)
        _smoke_test(tmp, actual, profile, device, env)
    info = {
        "format": "engine",
        "path": engine_file.name,
        "precision": actual,
        "sha256": sha256_file(engine_file),
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


def _smoke_test(engine_file: Path, precision: str, profile: ShapeRange, device: str, env: dict[str, Any]) -> None:
    """No model to compare with here: check the engine runs at min/opt/max and gives finite logits."""
    import numpy as np

    from resnet_deploy.export.verify import random_batch
    from resnet_deploy.runtimes.base import Artifact, create

    runtime = create("tensorrt", Artifact("engine", engine_file, precision, profile, "engine", dict(env)), device)
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


__all__ = [
    "build_engine",
    "build_environment",
    "check_compatible",
    "compatibility",
    "engine_for_pipeline",
    "engine_from_onnx",
    "missing_tensorrt_error",
    "parse_bytes",
    "precision_from_flags",
    "profile_shapes",
    "read_sidecar",
    "tensorrt_unavailable_reason",
    "write_sidecar",
]
