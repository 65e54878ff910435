"""What `resnet-bench compare` checks before anything slow: device, runtime names, --artifact files.

A benchmark that quietly measured something other than what was asked (a CPU fallback, a skipped file)
reads as a pass, so every request that cannot be met here fails now, with the reason and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from resnet_deploy import console
from resnet_deploy.benchmarks.latency import default_threads
from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.preprocess import require_inputs
from resnet_deploy.runtimes.base import Artifact, RuntimeSpec, cuda_reason, parse_device, registry, runtimes_for

if TYPE_CHECKING:
    from resnet_deploy.benchmarks.compare import CompareOptions


def normalize_device(device: str) -> str:
    """--device spelled as the runtimes spell it (`parse_device`), and a GPU that is there when it names one."""
    device = parse_device(device)
    reason = cuda_reason(device)
    if reason:
        raise MissingDependencyError(
            f"--device {device}: {reason}",
            "run on a machine with an NVIDIA GPU and a CUDA build of torch, naming a GPU nvidia-smi lists, "
            "or use --device cpu",
        )
    return device


def check_runtime_names(names: list[str] | None, device: str) -> None:
    """Unknown names are usage errors; known ones that cannot run here fail now, never fall back."""
    if not names:
        return
    specs = registry()
    for name in names:
        spec = specs.get(name)
        if spec is None:
            raise UsageError(f"unknown runtime '{name}'", "choose from: " + ", ".join(specs))
        reason = spec.unavailable_reason(device)
        if reason is None:
            continue
        kind = device.split(":")[0]
        if kind not in spec.devices:
            other = spec.devices[0]
            elsewhere = _unavailable_on(spec, other)
            if elsewhere:
                raise MissingDependencyError(f"runtime {name} is not available here: {elsewhere}", spec.install_hint)
            raise UsageError(f"runtime {name} runs on {other}, not {kind}", f"add --device {other}")
        raise MissingDependencyError(f"runtime {name} is not available here: {reason}", spec.install_hint)


def _unavailable_on(spec: RuntimeSpec, device: str) -> str | None:
    try:
        return spec.unavailable_reason(device)
    except Exception as exc:  # a checker that cannot even import its package
        return str(exc)


def validate_options(options: CompareOptions) -> str:
    """Everything that can be checked before loading a model; returns the normalized device."""
    device = normalize_device(options.device)
    check_runtime_names(options.runtimes, device)
    if options.batches is not None and (not options.batches or any(b < 1 for b in options.batches)):
        raise UsageError("--batch values must be positive integers")
    if options.iters < 1 or options.warmup < 0:
        raise UsageError("--iters must be >= 1 and --warmup >= 0")
    if options.threads is not None and options.threads < 1:
        raise UsageError("--threads must be >= 1")
    cores = default_threads()
    if options.threads is not None and options.threads > cores:
        console.warn(
            f"--threads {options.threads} is more than the {cores} cores this process may use: "
            "threads will contend and every row will be slower than it can be"
        )
    if options.max_images is not None and options.max_images < 1:
        raise UsageError("--max-images must be >= 1")
    if options.images is not None:
        require_inputs(Path(options.images), "parity image")
    if options.calib_dir is not None:
        if not options.build or options.artifacts:  # known now: the default set will not be built
            raise UsageError(
                "--calib only applies when compare builds the default set, which --no-build and --artifact skip",
                "drop --calib, or export INT8 with resnet-export onnx --int8 --calib DIR",
            )
        require_inputs(Path(options.calib_dir), "calibration image")
    check_artifacts(options.artifacts, device, options.runtimes)
    return device


def check_artifacts(paths: list[Path], device: str, names: list[str] | None) -> None:
    """Each --artifact must exist, be a known format and have a runtime here: a file the user named that
    cannot run is an error (the gate would otherwise pass without ever checking it), not a skip."""
    for path in paths:
        art = Artifact.from_file(Path(path))
        if runtimes_for(art.format, device, names):
            continue
        takers = [s.name for s in registry().values() if art.format in s.formats]
        wanted = [n for n in takers if names is None or n in names]
        if not wanted:
            raise UsageError(
                f"--artifact {art.label} is {art.format}, which none of --runtimes {','.join(names or [])} runs",
                f"add one that does: {', '.join(takers)}",
            )
        try:
            check_runtime_names(wanted, device)
        except DeployError as exc:
            raise type(exc)(f"--artifact {art.label}: {exc.message}", exc.hint) from None


def why_none(fmt: str, device: str) -> str:
    reasons = [
        f"{s.name}: {s.unavailable_reason(device)}"
        for s in registry().values()
        if fmt in s.formats and s.unavailable_reason(device)
    ]
    return "no runtime can run it here (" + "; ".join(reasons) + ")" if reasons else f"no runtime takes {fmt}"
