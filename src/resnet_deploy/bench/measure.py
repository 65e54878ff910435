"""Measuring one job: parity at each batch and size once, then latency in each copy mode, as judged rows.

A runtime that cannot load, or a shape it refuses, becomes error rows that say why (never a skip), so a gate
over them cannot pass what did not run.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from resnet_deploy import console
from resnet_deploy.artifact import Artifact
from resnet_deploy.bench.latency import measure
from resnet_deploy.bench.options import CompareOptions
from resnet_deploy.bench.plan import Job
from resnet_deploy.devices import Device
from resnet_deploy.errors import DeployError, VerificationError, environment_error, first_line
from resnet_deploy.parity import compare
from resnet_deploy.preprocess import resize_batch
from resnet_deploy.results import Row, one_line
from resnet_deploy.runtimes import Runtime, run_batched


def require_same_classes(art: Artifact, logits: np.ndarray, reference: np.ndarray) -> None:
    """An artifact of another model (another class count) is a mismatch to name as such, not a numpy
    shape error: the usual cause is an --artifact exported from other weights than MODEL/--weights."""
    got, want = logits.reshape(len(logits), -1).shape[1], reference.reshape(len(reference), -1).shape[1]
    if got != want:
        raise VerificationError(
            f"{art.label} outputs {got} values per image, but the model has {want} classes",
            "compare it against the model it was exported from: the same MODEL, --weights and --num-classes",
        )


def error_text(exc: BaseException) -> tuple[str, int]:
    exc = environment_error(exc) or exc
    if isinstance(exc, DeployError):
        return str(exc), exc.exit_code
    return first_line(exc, 300, named=True), 1


def copy_modes(device: Device) -> list[bool]:
    """copies included (host arrays in and out) and, on CUDA, device-resident as well"""
    return [True, False] if device.is_cuda else [True]


class Progress:
    """The optional progress bar: one step per warm-up or timed iteration, skipped rows count whole."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = console.progress() if enabled else None
        self.task: Any = self.bar.add_task("benchmark", total=total) if self.bar else None

    def __enter__(self) -> Progress:
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
class Bench:
    """What every job of one compare run is measured with, so each level below takes only its own loop."""

    options: CompareOptions
    threads: int
    images: np.ndarray
    refs: dict[tuple[int, int], np.ndarray]
    progress: Progress

    @property
    def device(self) -> Device:
        return Device.parse(self.options.device)

    @property
    def modes(self) -> list[bool]:
        return copy_modes(self.device)

    @property
    def steps_per_row(self) -> int:
        return self.options.warmup + self.options.iters

    def _row(
        self, job: Job, name: str, precision: str, batch: int, size: tuple[int, int], copies: bool, **kw: Any
    ) -> Row:
        """A row of `job`, judged (once) against the tolerance for its artifact and precision."""
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
            artifact=art,
            **kw,
        ).judge(self.options.tolerances)

    def job_rows(self, job: Job, sizes: list[tuple[int, int]], batches: list[int]) -> list[tuple[Row, int]]:
        """Every size x batch x copy mode of one job; a runtime that cannot load gives error rows."""
        if job.unusable is not None:
            return self._error_rows(job, sizes, batches, job.unusable, 1)
        try:
            with warnings.catch_warnings():  # TorchScript's deprecation notice, once per load
                warnings.simplefilter("ignore", FutureWarning)
                runtime = job.spec.create(job.artifact, self.device, threads=self.threads, **job.options)
        except Exception as exc:  # an artifact that cannot be loaded could not run: a failed check (exit 1)
            text, code = error_text(exc)  # ... unless what is missing is this machine's (exit 3)
            return self._error_rows(job, sizes, batches, text, code if code == 3 else 1)
        try:
            return [r for size in sizes for batch in batches for r in self._shape_rows(job, runtime, batch, size)]
        finally:
            runtime.close()
            free_device_memory(self.device)

    def _error_rows(
        self, job: Job, sizes: list[tuple[int, int]], batches: list[int], text: str, code: int
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

    def _parity(self, art: Artifact, runtime: Runtime, batch: int, size: tuple[int, int]) -> Any:
        """Parity of `runtime` at this batch and size against the reference (the images resized to `size`)."""
        shape = (batch, 3, size[0], size[1])
        if art.input_range is not None:
            art.input_range.check(shape, art.label)
        logits = run_batched(runtime, resize_batch(self.images, size), batch)
        require_same_classes(art, logits, self.refs[size])
        return compare(self.refs[size], logits)

    def _shape_rows(self, job: Job, runtime: Runtime, batch: int, size: tuple[int, int]) -> list[tuple[Row, int]]:
        """Parity at this batch and size once, then latency in each copy mode."""
        art = job.artifact
        shape = (batch, 3, size[0], size[1])
        self.progress.describe(f"{art.label} · {runtime.name} · {batch}x{size[0]}x{size[1]}")
        parity, error = None, None
        try:
            parity = self._parity(art, runtime, batch, size)
        except Exception as exc:
            error = error_text(exc)
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
                    error = error_text(exc)
            else:
                self.progress.tick(self.steps_per_row)
            text = error[0] if error else None
            r = self._row(job, runtime.name, runtime.precision, batch, size, copies, device=runtime.device,
                          latency=latency, parity=parity, error=text)  # fmt: skip
            out.append((r, error[1] if error else 0))
            if error is None:
                console.info(one_line(r))
            else:
                console.info(f"[red]✗[/] {r.label} {batch}x{size[0]}x{size[1]}: {error[0]}")
        return out


def free_device_memory(device: Device) -> None:
    """Hand a closed runtime's cached GPU memory back, so the next runtime (ONNX Runtime keeps its own
    arena beside torch's cache) starts from the same free memory whatever ran before it."""
    if device.is_cuda:
        gc.collect()
        torch.cuda.empty_cache()


def run_jobs(
    jobs: list[Job],
    options: CompareOptions,
    threads: int,
    sizes: list[tuple[int, int]],
    batches: list[int],
    images: np.ndarray,
    refs: dict[tuple[int, int], np.ndarray],
    measured: Callable[[list[tuple[Row, int]]], None],
) -> None:
    """Every job at every size and batch; each job's rows, with the exit code each would give (0 for a clean
    row), go to `measured` as soon as the job is done."""
    modes = len(copy_modes(options.device))
    total = len(jobs) * len(sizes) * len(batches) * modes * (options.warmup + options.iters)
    with Progress(options.progress, total) as progress:
        bench = Bench(options, threads, images, refs, progress)
        for job in jobs:
            measured(bench.job_rows(job, sizes, batches))
