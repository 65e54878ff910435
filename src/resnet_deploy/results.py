"""What `resnet-bench compare` measured: one `Row` per artifact x runtime x batch x size x copy mode, judged
once against the tolerance that applies to it, and the `CompareResult` holding them with what the run was
made of.

Plain data, kept apart from the run (bench/compare.py), so that the reports, the gate, the floor and JUnit
read results without depending on how they were produced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from resnet_deploy.artifact import Artifact
from resnet_deploy.console import plural
from resnet_deploy.devices import Device
from resnet_deploy.parity import ParityMetrics, Tolerance, Violation, check
from resnet_deploy.tolerances import Tolerances

DEFAULT_WARMUP = 5
DEFAULT_ITERS = 30
#: the runtime, at FP32 on the same device, every row's speedup divides by
REFERENCE_RUNTIME = "torch-eager"


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per batch; `images_per_s` = batch / median (p50) latency: one stall on a busy machine moves
    the mean of 30 iterations by whole percents, the median not at all."""

    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    images_per_s: float
    iterations: int
    warmup: int
    batch: int
    copies_included: bool
    timer: str  # "perf_counter" or "cuda-events"
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Row:
    """One artifact on one runtime at one batch size and image size (H, W)."""

    artifact_key: str
    artifact_path: str | None
    format: str
    runtime: str
    precision: str
    device: str
    batch: int
    size: tuple[int, int]
    copies_included: bool
    latency: LatencyStats | None = None
    parity: ParityMetrics | None = None
    violations: list[Violation] = field(default_factory=list)
    passed: bool = False
    error: str | None = None
    #: the bounds it was judged by (`judge`); None until then
    tolerance: Tolerance | None = None
    #: the tolerances `judge` read them from: the gate re-judges a row only for other tolerances than these
    judged_by: Tolerances | None = field(default=None, repr=False, compare=False)
    #: what ran, for a diagnosis after the run (--explain); not part of the report
    artifact: Artifact | None = field(default=None, repr=False, compare=False)
    #: requests in flight at once (`resnet-bench triton`'s load levels); None for a runtime called in-process
    concurrency: int | None = None

    def judge(self, tolerances: Tolerances) -> Row:
        """Judge this row, once, against the bounds that apply to its artifact (per precision, overridden per
        artifact): the table, the JSON and the gate all read this judgement, so they cannot disagree."""
        self.tolerance = tolerances.tolerance_for(self.precision, self.artifact_key, self.artifact_path)
        self.judged_by = tolerances
        if not self.tolerance.checks and self.error is None:  # no bound is no check: never a pass
            self.error = f"no parity check is active for this {self.precision} artifact ({tolerances.source})"
        self.violations = check(self.parity, self.tolerance) if self.parity is not None and not self.error else []
        self.passed = self.error is None and not self.violations
        return self

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, 3, self.size[0], self.size[1])

    @property
    def label(self) -> str:
        """Short and unique within a run, e.g. `onnx-int8 · onnxruntime-cpu` (`· c16` at a load level)."""
        level = f" · c{self.concurrency}" if self.concurrency is not None else ""
        return f"{self.artifact_key} · {self.runtime}{level}"

    def to_dict(self) -> dict[str, Any]:
        level = {} if self.concurrency is None else {"concurrency": self.concurrency}
        return {
            "artifact_key": self.artifact_key,
            "artifact_path": self.artifact_path,
            "format": self.format,
            "runtime": self.runtime,
            "precision": self.precision,
            "device": self.device,
            "batch": self.batch,
            "size": list(self.size),
            "copies_included": self.copies_included,
            "latency": self.latency.to_dict() if self.latency else None,
            "parity": self.parity.to_dict() if self.parity else None,
            "violations": [asdict(v) | {"text": str(v)} for v in self.violations],
            "tolerance": self.tolerance.to_dict() if self.tolerance else None,
            "passed": self.passed,
            "error": self.error,
            **level,
        }


@dataclass
class CompareResult:
    rows: list[Row]
    reference_distinct_classes: int
    degenerate: bool
    images: int
    threads: int
    device: str
    model: dict[str, Any] = field(default_factory=dict)  # architecture, weights, num_classes
    preprocess: dict[str, Any] = field(default_factory=dict)
    images_dir: str | None = None
    parity_size: tuple[int, int] = (224, 224)
    warmup: int = DEFAULT_WARMUP
    iters: int = DEFAULT_ITERS
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # artifact/runtime pairs not run here, and why
    built: list[str] = field(default_factory=list)  # artifact keys built by this run
    #: artifact keys the run was to check: the workspace's (after the default set was completed), --artifact files
    expected: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tools: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # device name, CUDA/cuDNN, Python, CPU
    command: str | None = None  # the command line, when run from the CLI
    floor: dict[str, Any] | None = None  # benchmarks/floor.py: ceilings, FLOPs per image, per-row floors
    error_codes: list[int] = field(default_factory=list)  # exit codes of the rows that errored
    partial: bool = False  # written while the run goes on: the rows measured so far
    #: the parity images as the model sees them (crop size), for --explain; not part of the report
    parity_images: np.ndarray | None = field(default=None, repr=False)
    #: `resnet-bench triton`: the server, protocol and model measured, and the load test's bounds; None for compare
    served: dict[str, Any] | None = None

    @property
    def on_cuda(self) -> bool:
        """Measured on a GPU: every runtime has a copies-included and a device-resident row."""
        return Device.parse(self.device).is_cuda

    @property
    def errors(self) -> list[Row]:
        return [r for r in self.rows if r.error]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def exit_code(self) -> int:
        """0 when every row ran; else the exit code of the first row's error (2 usage, 3 missing)."""
        return self.error_codes[0] if self.error_codes else 0

    def baseline(self, row: Row) -> Row | None:
        """PyTorch FP32 eager on the same device, batch, size and copy mode: what speedup divides by."""
        for r in self.rows:
            if (
                r.runtime == REFERENCE_RUNTIME
                and r.precision == "fp32"
                and r.device == row.device
                and r.batch == row.batch
                and r.size == row.size
                and r.copies_included == row.copies_included
                and r.latency is not None
            ):
                return r
        return None

    def speedup(self, row: Row) -> float | None:
        """Baseline p50 latency / this row's p50 latency (>1 = faster than PyTorch eager): medians, so that one
        stall in either row does not move the ratio."""
        base = self.baseline(row)
        if base is None or row.latency is None or base.latency is None or row.latency.p50_ms <= 0:
            return None
        return base.latency.p50_ms / row.latency.p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "preprocess": self.preprocess,
            "device": self.device,
            "threads": self.threads,
            "warmup": self.warmup,
            "iters": self.iters,
            "images": self.images,
            "images_dir": self.images_dir,
            "parity_size": list(self.parity_size),
            "reference": "PyTorch FP32 eager (CPU)",
            "reference_distinct_classes": self.reference_distinct_classes,
            "degenerate": self.degenerate,
            "passed": self.passed,
            "warnings": self.warnings,
            "skipped": self.skipped,
            "built": self.built,
            "expected": self.expected,
            "seconds": round(self.seconds, 2),
            "tools": self.tools,
            "environment": self.environment,
            "command": self.command,
            "rows": [r.to_dict() | {"speedup": self.speedup(r)} for r in self.rows],
            "floor": self.floor,
            "partial": self.partial,
            **({"served": self.served} if self.served is not None else {}),
        }


#: p99 over this many times p50: the row was interrupted (another process, a clock change), not just jittery
NOISY_P99_OVER_P50 = 3.0


def noise_warning(rows: list[Row]) -> str | None:
    """Name the rows whose slowest iterations took several times their median. Their p50, images/s and speedup
    still hold (medians ignore the stalls), but their p99 is the machine's, not the runtime's."""
    noisy = [r for r in rows if r.latency is not None and 0 < r.latency.p50_ms * NOISY_P99_OVER_P50 < r.latency.p99_ms]
    if not noisy:
        return None
    named = ", ".join(f"{r.label} b{r.batch} {r.size[0]}x{r.size[1]}" for r in noisy[:3])
    more = f" and {len(noisy) - 3} more" if len(noisy) > 3 else ""
    return (
        f"noisy timing: p99 over {NOISY_P99_OVER_P50:g}x p50 in {plural(len(noisy), 'row')} ({named}{more}); "
        "something else was using the machine: p50, images/s and speedup are medians and hold, p99 does not "
        "(rerun on an idle machine for tail latency)"
    )


def one_line(r: Row) -> str:
    """A row as the progress log shows it when it is measured."""
    lat = r.latency
    par = r.parity
    mark = "[green]✓[/]" if r.passed else "[red]✗[/]"
    bits = [f"{mark} {r.label} {r.precision} b{r.batch} {r.size[0]}x{r.size[1]}"]
    if not r.copies_included:
        bits.append("(device-resident)")
    if lat:
        bits.append(f"p50 {lat.p50_ms:.2f} ms, {lat.images_per_s:.1f} img/s")
    if par:
        bits.append(f"cosine {par.cosine:.6f}, top-1 {par.top1_agreement:.1%}")
    if r.violations:
        bits.append("[red]" + "; ".join(str(v) for v in r.violations) + "[/]")
    return " ".join(bits)
