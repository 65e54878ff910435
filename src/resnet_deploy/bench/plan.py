"""What one compare run will measure: which artifact on which runtimes (the jobs), at which batches and sizes,
and what the workspace needs first (the default set, for those shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resnet_deploy.artifact import Artifact
from resnet_deploy.bench.options import CompareOptions
from resnet_deploy.errors import UsageError
from resnet_deploy.pipeline import Pipeline
from resnet_deploy.pipeline.default_set import build_default_set, default_keys, fit_range
from resnet_deploy.provenance import cpu_has_bf16
from resnet_deploy.results import REFERENCE_RUNTIME
from resnet_deploy.runtimes import RuntimeSpec, registry, runtimes_for, why_none
from resnet_deploy.shapes import format_shape

#: the runtimes `--cuda-graphs` also runs as captured CUDA graphs (one per batch and size: fixed shapes)
GRAPH_RUNTIMES = ("torch-eager", "torchscript", "torch-export", "torch-aoti")
#: ONNX Runtime CUDA rows added beside its default (NCHW) kernels: its NHWC convolutions (`prefer_nhwc`),
#: which tensor cores want; which one is faster for FP16 and FP32 is what the rows measure
CUDA_ORT_VARIANTS: tuple[dict[str, Any], ...] = ({"prefer_nhwc": True},)
#: eager rows added on CUDA beside IEEE FP32: TF32 (PyTorch's own default for convolutions), FP16, and
#: FP16 in channels-last memory order (NHWC is what tensor-core convolutions want)
CUDA_EAGER_VARIANTS: tuple[dict[str, Any], ...] = (
    {"precision": "tf32"},
    {"precision": "fp16"},
    {"precision": "fp16", "channels_last": True},
)


@dataclass
class Job:
    """One artifact on one runtime (with that runtime's options): every shape of the run is measured on it."""

    artifact: Artifact
    spec: RuntimeSpec
    options: dict[str, Any]
    #: why a workspace artifact cannot stand for this model (other weights, missing, modified): its rows are
    #: errors saying so, never skipped, so a gate cannot pass a workspace that holds an artifact it did not check
    unusable: str | None = None


_FORMAT_ORDER = ("pytorch", "torchscript", "program", "aoti", "onnx", "engine")
_PRECISION_ORDER = ("fp32", "tf32", "bf16", "fp16", "int8")


def _reading_order(art: Artifact) -> tuple[int, int]:
    """FP32 first, then FP16, then INT8; within each, PyTorch's formats before ONNX before engines."""

    def rank(order: tuple[str, ...], value: str) -> int:
        return order.index(value) if value in order else len(order)

    return rank(_PRECISION_ORDER, art.precision), rank(_FORMAT_ORDER, art.format)


def jobs(pipe: Pipeline, options: CompareOptions, skipped: list[str]) -> list[Job]:
    """Every artifact (the reference, the workspace's in reading order, the --artifact files) on every runtime
    that takes it here; what none can run is said in `skipped`. A runtime named in --runtimes that would run
    nothing is an error: measuring nothing on it would read as a pass."""
    names, device = options.runtimes, options.device
    artifacts: list[tuple[Artifact, str | None]] = [(pipe.reference(), None)]
    # in reading order, not the order they were built in (INT8 is built first, to fail early on its images)
    artifacts += sorted(pipe.workspace_artifacts(), key=lambda pair: _reading_order(pair[0]))
    artifacts += [(art, None) for art in options.artifact_files]
    planned: list[Job] = []
    for art, unusable in artifacts:
        specs = runtimes_for(art.format, device, names)
        if not specs and (names is None or any(art.format in registry()[n].formats for n in names)):
            skipped.append(f"{art.label}: {why_none(art.format, device)}")
        for spec in specs:
            refused = spec.refuses(art, device)
            if refused:
                skipped.append(f"{art.label} on {spec.name}: {refused}")
                continue
            planned += _variants(Job(art, spec, {}, unusable), options)
    used = {j.spec.name for j in planned}
    for name in names or []:
        if name not in used:
            fmts = "/".join(registry()[name].formats)
            raise UsageError(
                f"--runtimes {name}: the workspace {pipe.ws.dir} has no {fmts} artifact for it to run",
                "export one first (resnet-export), pass --artifact FILE, or drop it from --runtimes",
            )
    return planned


def _variants(job: Job, options: CompareOptions) -> list[Job]:
    """The job and its variants: on CUDA eager's TF32/FP16/channels-last, ONNX Runtime CUDA's NHWC kernels, and
    with --cuda-graphs each torch runtime's rows again as replayed graphs; on a CPU with bf16 units OpenVINO's
    bf16 run of an FP32 file (its default there)."""
    name = job.spec.name
    if not options.device.is_cuda:
        bf16 = name == "openvino-cpu" and job.artifact.precision == "fp32" and cpu_has_bf16()
        return [job, Job(job.artifact, job.spec, {"precision": "bf16"}, job.unusable)] if bf16 else [job]
    extra = (
        CUDA_EAGER_VARIANTS if name == REFERENCE_RUNTIME else CUDA_ORT_VARIANTS if name == "onnxruntime-cuda" else ()
    )
    jobs = [job, *(Job(job.artifact, job.spec, dict(v), job.unusable) for v in extra)]
    if options.cuda_graphs and name in GRAPH_RUNTIMES:
        jobs += [Job(j.artifact, j.spec, {**j.options, "cuda_graphs": True}, j.unusable) for j in jobs]
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


def shapes(pipe: Pipeline, options: CompareOptions) -> tuple[list[int], list[tuple[int, int]]]:
    """The batches and sizes to run: as given, else batch 1 at the crop size, or, in a workspace exported static,
    the one shape its artifacts take (at any other every row would fail, saying to re-export)."""
    rng, crop = pipe.shape_range, pipe.preprocess.crop
    static = not rng.dynamic and bool(pipe.ws.artifacts)
    batch, size = (rng.opt[0], (rng.opt[2], rng.opt[3])) if static else (1, (crop, crop))
    return options.batches or [batch], options.sizes or [size]


def prepare_workspace(
    pipe: Pipeline, options: CompareOptions, batches: list[int], sizes: list[tuple[int, int]]
) -> tuple[list[str], list[str]]:
    """What compare needs before it measures: the default set, built into an empty workspace for the shapes
    it will run, and completed in one that lacks part of it (an interrupted build, a step that failed), so a
    gate never passes a workspace it did not fully check. Returns (built keys, notes for the report); what
    cannot be right fails here, before minutes of building."""
    if options.build and not options.artifacts:
        empty = not pipe.current_artifacts()
        if empty and options.fit_range:
            fit_range(pipe, batches, sizes)
        elif empty:  # the range was given: every row outside it would fail, after minutes of building
            _require_inside(pipe, batches, sizes)
        return build_default_set(pipe, options.device, options.calibration, only_missing=not empty)
    if not options.build and not options.artifacts and not pipe.ws.artifacts:
        # a --workspace typo, or the model's own folder passed as the workspace: not a clean pass
        return [], [
            f"{pipe.ws.dir} holds no artifacts of {pipe.ws.name}: only PyTorch runs (--workspace is the folder "
            f"resnet-export wrote to, which holds {pipe.ws.name}/; drop --no-build to build the default set)"
        ]
    return [], []


def expected_keys(pipe: Pipeline, options: CompareOptions) -> list[str]:
    """What the run is to check: the workspace's artifacts (after the default set was built or completed, which
    it then must hold too) and the --artifact files. The verdict names any of them no check ran on."""
    keys = list(pipe.ws.artifacts)
    if options.build and not options.artifacts:
        keys += [k for k in default_keys(options.device) if k not in keys]
    return keys + [a.key or a.label for a in options.artifact_files]


def _require_inside(pipe: Pipeline, batches: list[int], sizes: list[tuple[int, int]]) -> None:
    rng = pipe.shape_range
    outside = [(b, 3, h, w) for b in batches for h, w in sizes if not rng.contains((b, 3, h, w))]
    if outside:
        raise UsageError(
            f"the benchmark shape {format_shape(outside[0])} is outside the range "
            f"{format_shape(rng.min)} .. {format_shape(rng.max)} the default set would be exported for",
            "widen --min-shape/--max-shape to hold every --batch and --size, or drop them to fit the range "
            "to the benchmark",
        )
