"""`resnet-bench compare`: every artifact x every runtime that can run it here x batch x size.

For each combination one `Row` holds latency (benchmarks/latency.py) and parity against the
PyTorch FP32 eager reference (benchmarks/parity.py), checked against the precision's tolerance.

Parity inputs, explicitly:
- The parity images (`--images`, default ./calibration) go through the model's own preprocessing
  (resize, center crop, normalize), so at the model's crop size they are exactly what the model sees
  in deployment. That is the main parity number.
- At any other `--size HxW` the same crop-size tensors are bilinearly resized to HxW; the reference
  runs on those same tensors, so the comparison is still like for like (it checks the artifact at
  that shape, not the model's accuracy at that resolution).
- Each row's parity is run at the row's batch size (the last chunk padded by repeating images), so a
  batch-dependent bug shows up in the row that has it.
- The reference logits always come from PyTorch FP32 eager on the CPU (no TF32, no autotuning).

Latency is measured on random inputs (not the parity images), after warm-up, with the CPU thread
count fixed for every runtime (torch and ONNX Runtime alike). On CUDA every runtime gets two rows:
host arrays in and out (copies included) and device-resident CUDA tensors (copies excluded).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy import console
from resnet_deploy.benchmarks.default_set import DEFAULT_IMAGES, prepare_workspace
from resnet_deploy.benchmarks.latency import default_threads, measure
from resnet_deploy.benchmarks.parity import (
    Tolerance,
    Violation,
    check,
    compare,
    degenerate_warning,
    distinct_predictions,
)
from resnet_deploy.benchmarks.preflight import validate_options, why_none
from resnet_deploy.benchmarks.report import write_reports
from resnet_deploy.benchmarks.results import (
    DEFAULT_ITERS,
    DEFAULT_WARMUP,
    REFERENCE_RUNTIME,
    CompareResult,
    Row,
    noise_warning,
    one_line,
)
from resnet_deploy.benchmarks.tolerances import Tolerances
from resnet_deploy.errors import DeployError, UsageError, VerificationError, environment_error, first_line
from resnet_deploy.preprocess import describe_ignored, load_folder, resize_batch
from resnet_deploy.runtimes.base import Artifact, Runtime, RuntimeSpec, device_index, registry, runtimes_for
from resnet_deploy.shapes import format_shape

if TYPE_CHECKING:
    from resnet_deploy.pipeline import Pipeline

DEFAULT_MAX_IMAGES = 100
#: eager rows added on CUDA beside IEEE FP32: TF32 (PyTorch's own default for convolutions), FP16, and
#: FP16 in channels-last memory order (NHWC is what tensor-core convolutions want)
CUDA_EAGER_VARIANTS: tuple[dict[str, Any], ...] = (
    {"precision": "tf32"},
    {"precision": "fp16"},
    {"precision": "fp16", "channels_last": True},
)


@dataclass
class CompareOptions:
    runtimes: list[str] | None = None  # registry names; None = every runtime available here
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N"
    batches: list[int] | None = None  # None = 1, or the batch a static workspace takes
    sizes: list[tuple[int, int]] | None = None  # (H, W); None = the crop size, or the size a static workspace takes
    warmup: int = DEFAULT_WARMUP
    iters: int = DEFAULT_ITERS
    threads: int | None = None  # None = the cores this process may use
    images: Path | None = None  # parity images; None = ./calibration
    max_images: int | None = DEFAULT_MAX_IMAGES  # evenly spread subset of a large folder
    artifacts: list[Path] = field(default_factory=list)  # extra files from anywhere
    build: bool = True  # build the default set when the workspace has no artifacts (and no --artifact)
    calib_dir: Path | None = None  # for the default INT8 build; None = ./calibration when it exists
    #: per precision and per artifact (`load_tolerances`); a {precision: Tolerance} mapping is taken too
    tolerances: Tolerances | Mapping[str, Tolerance] = field(default_factory=Tolerances)
    floor: bool = False  # measure this device's peak rates and report each row's distance from its floor
    #: when the default set is built and --batch/--size fall outside the pipeline's (default) range, export
    #: for exactly the shapes asked for instead; False when the user gave the range (--min/--max-shape)
    fit_range: bool = True
    progress: bool = True
    #: rewritten (atomically) after each artifact x runtime with the rows so far, `"partial": true`, so a run that
    #: is killed or times out leaves what it measured, and at the end with all of them; the CLI points it at --json
    partial_json: Path | None = None
    command: str | None = None  # the command line, for the reports (partial ones included)

    def __post_init__(self) -> None:
        if isinstance(self.tolerances, Mapping):  # one Tolerance per precision, as DEFAULT_TOLERANCES: no rules
            self.tolerances = Tolerances(dict(self.tolerances))


# -- the run --------------------------------------------------------------------------------------


@dataclass
class _Job:
    artifact: Artifact
    spec: RuntimeSpec
    options: dict[str, Any]
    #: why a workspace artifact cannot stand for this model (other weights, missing, modified): its rows are
    #: errors saying so, never skipped, so a gate cannot pass a workspace that holds an artifact it did not check
    unusable: str | None = None


def _load_parity_images(pipe: Pipeline, options: CompareOptions, warned: list[str]) -> tuple[np.ndarray, str | None]:
    folder = options.images
    if folder is None and DEFAULT_IMAGES.is_dir():
        folder = DEFAULT_IMAGES
    if folder is None:
        warned.append(
            "no parity images (no ./calibration folder and no --images): parity uses 16 random-normal inputs, "
            "which says little about INT8/FP16 accuracy; pass --images DIR of real images"
        )
        crop = pipe.preprocess.crop
        rng = np.random.default_rng(0)
        return rng.standard_normal((16, 3, crop, crop), dtype=np.float32), None
    images = load_folder(Path(folder), pipe.preprocess, options.max_images, "parity image")
    for path, why in images.skipped:
        warned.append(f"skipped parity image {path.name}: {why}")
    if images.ignored:
        warned.append(f"parity images: {describe_ignored(images.ignored)}")
    return images.tensors, str(folder)


def _reference_logits(model: Any, images: np.ndarray, chunk: int = 16) -> np.ndarray:
    """export.verify.reference_logits over a folder of images, `chunk` at a time (bounded memory)."""
    from resnet_deploy.export.verify import reference_logits

    model = model.eval()
    return np.concatenate(
        [reference_logits(model, np.ascontiguousarray(images[i : i + chunk])) for i in range(0, len(images), chunk)]
    )


def _run_batched(runtime: Runtime, images: np.ndarray, batch: int) -> np.ndarray:
    """Logits for every image, `batch` at a time; the last chunk is padded by wrapping around."""
    n = len(images)
    outs = []
    for i in range(0, n, batch):
        idx = np.arange(i, i + batch) % n
        out = np.asarray(runtime.run(images[idx]))
        outs.append(out[: min(batch, n - i)])
    return np.concatenate(outs)


def _require_same_classes(art: Artifact, logits: np.ndarray, reference: np.ndarray) -> None:
    """An artifact of another model (another class count) is a mismatch to name as such, not a numpy
    shape error: the usual cause is an --artifact exported from other weights than MODEL/--weights."""
    got, want = logits.reshape(len(logits), -1).shape[1], reference.reshape(len(reference), -1).shape[1]
    if got != want:
        raise VerificationError(
            f"{art.label} outputs {got} values per image, but the model has {want} classes",
            "compare it against the model it was exported from: the same MODEL, --weights and --num-classes",
        )


_FORMAT_ORDER = ("pytorch", "torchscript", "program", "onnx", "engine")
_PRECISION_ORDER = ("fp32", "tf32", "fp16", "int8")


def _reading_order(art: Artifact) -> tuple[int, int]:
    """FP32 first, then FP16, then INT8; within each, PyTorch's formats before ONNX before engines."""

    def rank(order: tuple[str, ...], value: str) -> int:
        return order.index(value) if value in order else len(order)

    return rank(_PRECISION_ORDER, art.precision), rank(_FORMAT_ORDER, art.format)


def _jobs(pipe: Pipeline, options: CompareOptions, device: str, skipped: list[str]) -> list[_Job]:
    names = options.runtimes
    artifacts: list[tuple[Artifact, str | None]] = [(pipe.reference(), None)]
    # in reading order, not the order they were built in (INT8 is built first, to fail early on its images)
    artifacts += sorted(pipe.workspace_artifacts(), key=lambda pair: _reading_order(pair[0]))
    for path in options.artifacts:
        art = Artifact.from_file(Path(path))
        art.key = f"file:{art.path.name}" if art.path else art.key
        artifacts.append((art, None))
    jobs: list[_Job] = []
    for art, unusable in artifacts:
        specs = runtimes_for(art.format, device, names)
        if not specs:
            if names is None or any(art.format in registry()[n].formats for n in names):
                why = why_none(art.format, device)
                skipped.append(f"{art.label}: {why}")
            continue
        for spec in specs:
            refused = spec.refuses(art)
            if refused:
                skipped.append(f"{art.label} on {spec.name}: {refused}")
                continue
            jobs.append(_Job(art, spec, {}, unusable))
            if spec.name == REFERENCE_RUNTIME and device.startswith("cuda"):
                jobs.extend(_Job(art, spec, dict(variant)) for variant in CUDA_EAGER_VARIANTS)
    used = {j.spec.name for j in jobs}
    for name in names or []:
        if name not in used:  # asked for by name: measuring nothing on it would read as a pass
            fmts = "/".join(registry()[name].formats)
            raise UsageError(
                f"--runtimes {name}: the workspace {pipe.ws.dir} has no {fmts} artifact for it to run",
                "export one first (resnet-export), pass --artifact FILE, or drop it from --runtimes",
            )
    return jobs


def opt_shape_notes(artifacts: list[Artifact], shapes: list[tuple[int, int, int, int]]) -> list[str]:
    """TensorRT times and picks its kernels at the profile's opt shape only; rows at other shapes run
    those kernels, so a batch-256 row of an engine tuned for batch 1 understates what TensorRT can do.
    Said beside the numbers rather than hidden (the engine's real profile is known once it is loaded)."""
    notes = []
    for art in artifacts:
        if art.format != "engine" or art.input_range is None:
            continue
        opt = tuple(art.input_range.opt)
        others = sorted({format_shape(s) for s in shapes if tuple(s) != opt and art.input_range.contains(s)})
        if others:
            notes.append(
                f"{art.label} was tuned for {format_shape(opt)} (its profile's opt shape); its rows at "
                f"{', '.join(others)} run kernels chosen for that shape: to measure TensorRT at its best for "
                f"one of them, rebuild with --opt-shape set to it"
            )
    return notes


def _shapes(pipe: Pipeline, options: CompareOptions) -> tuple[list[int], list[tuple[int, int]]]:
    """The batches and sizes to run: as given, else batch 1 at the crop size, or, in a workspace exported static,
    the one shape its artifacts take (at any other every row would fail, saying to re-export)."""
    rng, crop = pipe.shape_range, pipe.preprocess.crop
    static = not rng.dynamic and bool(pipe.ws.artifacts)
    batch, size = (rng.opt[0], (rng.opt[2], rng.opt[3])) if static else (1, (crop, crop))
    return options.batches or [batch], options.sizes or [size]


def _error_text(exc: BaseException) -> tuple[str, int]:
    exc = environment_error(exc) or exc
    if isinstance(exc, DeployError):
        return str(exc), exc.exit_code
    return first_line(exc, 300, named=True), 1


def run_compare(pipe: Pipeline, options: CompareOptions) -> CompareResult:
    """Build (if asked and needed), then benchmark and parity-check every artifact x runtime x shape."""
    import torch

    from resnet_deploy.pipeline import tool_versions

    start = time.perf_counter()
    device = validate_options(options)
    threads = options.threads or default_threads()
    crop = pipe.preprocess.crop
    batches, sizes = _shapes(pipe, options)
    # what opening the model found worth saying (a preprocessing unlike the record) comes first
    warned: list[str] = list(pipe.notes)
    skipped: list[str] = []

    built, notes = prepare_workspace(pipe, options, device, batches, sizes)
    warned += notes

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        jobs = _jobs(pipe, options, device, skipped)  # first: a --runtimes with nothing to run fails before any work
        images, images_dir = _load_parity_images(pipe, options, warned)
        with console.step(f"reference logits (PyTorch FP32 eager, CPU) on {len(images)} images"):
            refs = {size: _reference_logits(pipe.model, resize_batch(images, size)) for size in sizes}
        # the degenerate check is made at the crop size, on the images exactly as the model sees them
        main_ref = refs[(crop, crop)] if (crop, crop) in refs else _reference_logits(pipe.model, images)
        distinct = distinct_predictions(main_ref)
        degenerate_msg = degenerate_warning(main_ref, pipe.source.num_classes)
        if degenerate_msg:
            warned.append(degenerate_msg)

        result = CompareResult(
            rows=[],
            reference_distinct_classes=distinct,
            degenerate=degenerate_msg is not None,
            images=len(images),
            threads=threads,
            device=device,
            model=pipe.source.to_dict(),
            preprocess=pipe.preprocess.to_dict(),
            images_dir=images_dir,
            parity_size=(crop, crop),
            warmup=options.warmup,
            iters=options.iters,
            warnings=warned,
            skipped=skipped,
            built=built,
            tools=tool_versions(),
            environment=environment(device),
            parity_images=images,
            partial=True,
            command=options.command,
        )

        def measured(rows: list[tuple[Row, int]]) -> None:
            result.rows += [r for r, _ in rows]
            result.error_codes += [code for _, code in rows if code]
            result.seconds = time.perf_counter() - start
            if options.partial_json is not None:
                write_reports(result, Path(options.partial_json))

        _run_jobs(jobs, options, device, threads, sizes, batches, images, refs, measured)
        result.partial = False
        noisy = noise_warning(result.rows)
        if noisy:
            warned.append(noisy)
        warned += opt_shape_notes([j.artifact for j in jobs], [(b, 3, h, w) for b in batches for h, w in sizes])
        if options.floor:
            try:
                result.floor = _floor(result.rows, pipe, device)
                if result.floor.get("warning"):
                    warned.append(result.floor["warning"])
            except Exception as exc:  # said, and in the exit code, but the rows already measured are reported
                text, code = _error_text(exc)
                warned.append(f"--floor not computed: {text}")
                result.error_codes.append(code)
    finally:
        torch.set_num_threads(previous_threads)
    result.seconds = time.perf_counter() - start
    if options.partial_json is not None:  # complete now
        write_reports(result, Path(options.partial_json))
    return result


def environment(device: str) -> dict[str, Any]:
    """What the numbers were measured on: device name, CUDA and cuDNN versions, Python, CPU."""
    import platform

    import torch

    from resnet_deploy.benchmarks.floor import cpu_name

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_threads_available": default_threads(),
    }
    if device.startswith("cuda"):
        index = device_index(device)
        props = torch.cuda.get_device_properties(index)
        env.update(
            device_name=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            device_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        env["device_name"] = env["cpu"]
    return env


def _floor(rows: list[Row], pipe: Pipeline, device: str) -> dict[str, Any]:
    from resnet_deploy.benchmarks.floor import beaten_warning, floors, measure_ceilings, parameter_count

    with console.step(f"peak matrix rates and copy bandwidth of {device} (for the floor)"):
        ceilings = measure_ceilings(device)
    flops, per_row = floors(rows, pipe.model, ceilings, pipe.source.num_classes)
    return {
        "ceilings": ceilings.to_dict(),
        "flops_per_image": flops,
        "parameters": parameter_count(pipe.model),
        "rows": [f.to_dict() for f in per_row],
        "warning": beaten_warning(per_row, ceilings),
    }


def _copy_modes(device: str) -> list[bool]:
    """copies included (host arrays in and out) and, on CUDA, device-resident as well"""
    return [True, False] if device.startswith("cuda") else [True]


class _Progress:
    """The optional progress bar: one step per warm-up or timed iteration, skipped rows count whole."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = console.progress() if enabled else None
        self.task: Any = self.bar.add_task("benchmark", total=total) if self.bar else None

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def tick(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, steps)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text)


@dataclass
class _Bench:
    """What every job of one compare run is measured with, so each level below takes only its own loop."""

    options: CompareOptions
    device: str
    threads: int
    images: np.ndarray
    refs: dict[tuple[int, int], np.ndarray]
    progress: _Progress

    @property
    def modes(self) -> list[bool]:
        return _copy_modes(self.device)

    @property
    def steps_per_row(self) -> int:
        return self.options.warmup + self.options.iters

    def _row(
        self, job: _Job, name: str, precision: str, batch: int, size: tuple[int, int], copies: bool, **kw: Any
    ) -> Row:
        art = job.artifact
        return Row(
            artifact_key=art.key or art.format,
            artifact_path=str(art.path) if art.path else None,
            format=art.format,
            runtime=name,
            precision=precision,
            device=kw.pop("device", self.device),
            batch=batch,
            size=size,
            copies_included=copies,
            **kw,
        )

    def job_rows(self, job: _Job, sizes: list[tuple[int, int]], batches: list[int]) -> list[tuple[Row, int]]:
        """Every size x batch x copy mode of one job; a runtime that cannot load gives error rows."""
        art = job.artifact
        if job.unusable is not None:
            return self._error_rows(job, sizes, batches, job.unusable, 1)
        try:
            with warnings.catch_warnings():  # TorchScript's deprecation notice, once per load
                warnings.simplefilter("ignore", FutureWarning)
                runtime = job.spec.create(art, self.device, threads=self.threads, **job.options)
        except Exception as exc:
            return self._error_rows(job, sizes, batches, *_error_text(exc))
        try:
            return [r for size in sizes for batch in batches for r in self._shape_rows(job, runtime, batch, size)]
        finally:
            runtime.close()
            _free_device_memory(self.device)

    def _error_rows(
        self, job: _Job, sizes: list[tuple[int, int]], batches: list[int], text: str, code: int
    ) -> list[tuple[Row, int]]:
        """Every size x batch x copy mode of a job that cannot run, each an error row saying why."""
        precision = job.options.get("precision", job.artifact.precision)
        rows = [
            (self._row(job, job.spec.name, precision, batch, size, copies, error=text), code)
            for size in sizes
            for batch in batches
            for copies in self.modes
        ]
        self.progress.tick(len(rows) * self.steps_per_row)
        return rows

    def _shape_rows(self, job: _Job, runtime: Runtime, batch: int, size: tuple[int, int]) -> list[tuple[Row, int]]:
        """Parity at this batch and size once, then latency in each copy mode."""
        art = job.artifact
        shape = (batch, 3, size[0], size[1])
        self.progress.describe(f"{art.label} · {runtime.name} · {batch}x{size[0]}x{size[1]}")
        tol = self.options.tolerances.tolerance_for(
            runtime.precision, art.key or art.format, str(art.path) if art.path else None
        )
        parity = None
        violations: list[Violation] = []
        error: tuple[str, int] | None = None
        try:
            if art.input_range is not None:
                art.input_range.check(shape, art.label)
            logits = _run_batched(runtime, resize_batch(self.images, size), batch)
            _require_same_classes(art, logits, self.refs[size])
            parity = compare(self.refs[size], logits)
            violations = check(parity, tol)
        except Exception as exc:
            error = _error_text(exc)
        out = []
        for copies in self.modes:
            latency = None
            if error is None:
                try:
                    latency = measure(
                        runtime,
                        shape,
                        self.options.warmup,
                        self.options.iters,
                        device_resident=not copies,
                        threads=self.threads,
                        on_iteration=self.progress.tick,
                    )
                except Exception as exc:
                    error = _error_text(exc)
            else:
                self.progress.tick(self.steps_per_row)
            r = self._row(
                job,
                runtime.name,
                runtime.precision,
                batch,
                size,
                copies,
                device=runtime.device,
                latency=latency,
                parity=parity,
                violations=violations,
                passed=error is None and not violations,
                error=error[0] if error else None,
            )
            out.append((r, error[1] if error else 0))
            if error is None:
                console.info(one_line(r))
            else:
                console.info(f"[red]✗[/] {r.label} {batch}x{size[0]}x{size[1]}: {error[0]}")
        return out


def _free_device_memory(device: str) -> None:
    """Hand a closed runtime's cached GPU memory back, so the next runtime (ONNX Runtime keeps its own
    arena beside torch's cache) starts from the same free memory whatever ran before it."""
    if device.startswith("cuda"):
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def _run_jobs(
    jobs: list[_Job],
    options: CompareOptions,
    device: str,
    threads: int,
    sizes: list[tuple[int, int]],
    batches: list[int],
    images: np.ndarray,
    refs: dict[tuple[int, int], np.ndarray],
    measured: Callable[[list[tuple[Row, int]]], None],
) -> None:
    """Every job at every size and batch; each job's rows, with the exit code each would give (0 for a clean
    row), go to `measured` as soon as the job is done."""
    modes = len(_copy_modes(device))
    total = len(jobs) * len(sizes) * len(batches) * modes * (options.warmup + options.iters)
    with _Progress(options.progress, total) as progress:
        bench = _Bench(options, device, threads, images, refs, progress)
        for job in jobs:
            measured(bench.job_rows(job, sizes, batches))
