"""What `resnet-bench compare` checks before anything slow: device, runtime names, --artifact files, folders.

A benchmark that quietly measured something other than what was asked (a CPU fallback, a skipped file)
reads as a pass, so every request that cannot be met here fails now, with the reason and the fix. Each thing
is checked once: the device is parsed and probed, each --artifact opened, the --calib folder scanned, and the
results kept in the options for the run.
"""

from __future__ import annotations

from pathlib import Path

from resnet_deploy import console
from resnet_deploy.artifact import Artifact
from resnet_deploy.bench.options import CompareOptions
from resnet_deploy.devices import Device, default_threads
from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.preprocess import require_scan
from resnet_deploy.runtimes import RuntimeSpec, registry, runtimes_for


def validate(options: CompareOptions) -> CompareOptions:
    """Everything that can be checked before loading a model; `options` with what was found kept."""
    if options.checked:
        return options
    check_device(options.device)
    if options.cuda_graphs and not options.device.is_cuda:
        raise UsageError(
            f"--cuda-graphs needs a GPU: a CUDA graph replays GPU kernel launches, and --device is {options.device}",
            "add --device cuda, or drop --cuda-graphs",
        )
    check_runtime_names(options.runtimes, options.device)
    _check_numbers(options)
    if options.images is not None:
        options.images_scan = require_scan(Path(options.images), "parity image")
    if options.calib_dir is not None:
        if not options.build or options.artifacts:  # known now: the default set will not be built
            raise UsageError(
                "--calib only applies when compare builds the default set, which --no-build and --artifact skip",
                "drop --calib, or export INT8 with resnet-export onnx --int8 --calib DIR",
            )
        options.calibration = CalibrationRequest.from_options(True, Path(options.calib_dir), None, None)
    options.artifact_files = check_artifacts(options.artifacts, options.device, options.runtimes)
    options.checked = True
    return options


def check_device(device: Device) -> None:
    """A --device that names a GPU must find one here: never a CPU run labelled cuda."""
    reason = device.unavailable()
    if reason:
        raise MissingDependencyError(
            f"--device {device}: {reason}",
            "run on a machine with an NVIDIA GPU and a CUDA build of torch, naming a GPU nvidia-smi lists, "
            "or use --device cpu",
        )


def _check_numbers(options: CompareOptions) -> None:
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


def check_runtime_names(names: list[str] | None, device: Device) -> None:
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
        if device.kind not in spec.devices:
            other = spec.devices[0]
            elsewhere = _unavailable_on(spec, other)
            if elsewhere:
                raise MissingDependencyError(f"runtime {name} is not available here: {elsewhere}", spec.install_hint)
            raise UsageError(f"runtime {name} runs on {other}, not {device.kind}", f"add --device {other}")
        raise MissingDependencyError(f"runtime {name} is not available here: {reason}", spec.install_hint)


def _unavailable_on(spec: RuntimeSpec, device: str) -> str | None:
    try:
        return spec.unavailable_reason(device)
    except Exception as exc:  # a checker that cannot even import its package
        return str(exc)


def check_artifacts(paths: list[Path], device: Device, names: list[str] | None) -> list[Artifact]:
    """Each --artifact must exist, be a known format and have a runtime here: a file the user named that
    cannot run is an error (the gate would otherwise pass without ever checking it), not a skip. Returns
    them opened, for the run."""
    opened = []
    for path in paths:
        art = Artifact.from_file(Path(path))
        opened.append(art)
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
    return opened
