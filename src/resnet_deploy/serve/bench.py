"""`resnet-bench triton`: a served model's parity against PyTorch FP32 and its latency under load, as judged rows.

At each concurrency level the parity images are sent with that many requests in flight, so the server batches
them as it would under load (a batching bug shows in the level that has it), and compared with the PyTorch
reference by `parity.compare`; then `concurrency` workers send one random-normal batch after another until
`--requests` were sent or `--seconds` passed. Each level is one `results.Row` (runtime `triton-http` or
`triton-grpc`, its `concurrency` set) judged by `Row.judge` against the same tolerances as `compare`'s rows, so
the gate, JUnit, Markdown and JSON read it as they read any row. p50/p90/p99 are per request; images/s is what
the server answered per second of wall time (throughput), not batch / p50.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy import console
from resnet_deploy.artifact import Artifact
from resnet_deploy.bench.compare import read_parity_images
from resnet_deploy.bench.latency import random_inputs, summarize
from resnet_deploy.bench.measure import require_same_classes
from resnet_deploy.bench.options import DEFAULT_MAX_IMAGES
from resnet_deploy.devices import default_threads
from resnet_deploy.errors import UsageError
from resnet_deploy.parity import DEFAULT_TOLERANCES, compare, degenerate_warning, distinct_predictions
from resnet_deploy.pipeline import Pipeline
from resnet_deploy.pipeline.default_set import default_images
from resnet_deploy.preprocess import resize_batch
from resnet_deploy.provenance import environment, tool_versions
from resnet_deploy.results import CompareResult, Row, one_line
from resnet_deploy.serve.client import PROTOCOLS, Connection, ServedModel, load_level, parity_logits, parse_url
from resnet_deploy.tolerances import Tolerances
from resnet_deploy.verify import reference_logits

DEFAULT_CONCURRENCY = (1, 4, 16, 64)
DEFAULT_REQUESTS = 200
DEFAULT_SECONDS = 20.0


@dataclass
class TritonOptions:
    """What `resnet-bench triton` is asked to measure; checked when made, before the model loads."""

    url: str
    model: str
    protocol: str = "http"
    concurrency: list[int] = field(default_factory=lambda: list(DEFAULT_CONCURRENCY))
    requests: int = DEFAULT_REQUESTS  # per level, at most
    seconds: float = DEFAULT_SECONDS  # per level, at most
    batch: int = 1  # images per request
    size: tuple[int, int] | None = None  # (H, W); None = the model's crop
    images: Path | None = None  # parity images; None = ./calibration
    max_images: int = DEFAULT_MAX_IMAGES
    precision: str | None = None  # None = what the served model's config records
    tolerances: Tolerances = field(default_factory=Tolerances)
    command: str | None = None

    def __post_init__(self) -> None:
        self.url = parse_url(self.url)
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"unknown --protocol '{self.protocol}'", "choose http or grpc")
        if not self.model.strip():
            raise UsageError("--model is empty", "name a model the server serves")
        if not self.concurrency or min(self.concurrency) < 1:
            raise UsageError("--concurrency levels must be positive integers", "e.g. --concurrency 1,4,16,64")
        for option, value in (
            ("--requests", self.requests),
            ("--batch", self.batch),
            ("--max-images", self.max_images),
        ):
            if value < 1:
                raise UsageError(f"{option} {value}: must be at least 1")
        if not self.seconds > 0:
            raise UsageError(f"--seconds {self.seconds:g}: must be positive", "e.g. --seconds 20")
        if self.precision is not None and self.precision not in DEFAULT_TOLERANCES:
            raise UsageError(f"unknown --precision '{self.precision}'", f"choose {', '.join(DEFAULT_TOLERANCES)}")
        if self.images is not None and not Path(self.images).is_dir():
            raise UsageError(f"--images {self.images} is not a folder", "pass a folder of images")
        if self.images is None and not default_images().is_dir():
            raise UsageError("no parity images: no --images, no ./calibration folder here", "pass --images DIR")


def describe(options: TritonOptions) -> ServedModel:
    """The served model, asked of the server before the model loads: a server that is down, a model it does not
    have or an extra that is missing fails now, in one line."""

    async def ask() -> ServedModel:
        async with Connection(options.url, options.protocol) as conn:
            return await conn.describe(options.model)

    return asyncio.run(ask())


def run_triton(pipe: Pipeline, options: TritonOptions, served: ServedModel) -> CompareResult:
    """Parity and latency of `served` at every concurrency level, against `pipe`'s model as the reference."""
    start = time.perf_counter()
    precision = options.precision or served.precision
    if precision is None:
        raise UsageError(f"{served.where} does not record its precision (it was not written by resnet-export triton)",
                         "pass --precision fp32, fp16 or int8")  # fmt: skip
    crop = pipe.preprocess.crop
    size = options.size or (crop, crop)
    warned = list(pipe.notes) + _preprocess_warning(pipe, served)
    images, images_dir = _parity_images(pipe, options, warned)
    with console.step(f"reference logits (PyTorch FP32 eager, CPU) on {len(images)} images"):
        ref = reference_logits(pipe.model, resize_batch(images, size))
    rows = asyncio.run(_levels(options, served, precision, resize_batch(images, size), ref, size))
    result = _result(pipe, options, served, rows, images, images_dir, warned)
    result.reference_distinct_classes = distinct_predictions(ref)
    message = degenerate_warning(ref, pipe.source.num_classes)
    result.degenerate = message is not None
    result.warnings += [message] if message else []
    result.seconds = time.perf_counter() - start
    return result


async def _levels(
    options: TritonOptions, served: ServedModel, precision: str, images: np.ndarray, ref: np.ndarray, size: tuple
) -> list[Row]:
    """One judged row per concurrency level, each logged as it is measured."""
    x = random_inputs((options.batch, 3, size[0], size[1]), buffers=1)[0]
    rows = []
    async with Connection(options.url, options.protocol) as conn:
        for level in options.concurrency:
            with console.step(f"{served.name}: parity at concurrency {level}, then at most {options.requests} "
                              f"requests or {options.seconds:g} s"):  # fmt: skip
                logits = await parity_logits(conn, served, images, options.batch, level)
                require_same_classes(Artifact("triton", None, precision, name=served.where), logits, ref)
                parity = compare(ref, logits)
                times, wall = await load_level(conn, served, x, level, options.requests, options.seconds)
            stats = summarize(times, options.batch, warmup=level)
            stats = dataclasses.replace(stats, images_per_s=len(times) * options.batch / wall)
            row = Row(artifact_key=served.name, artifact_path=None, format="triton",
                      runtime=f"triton-{options.protocol}", precision=precision, device=served.device,
                      batch=options.batch, size=size, copies_included=True, latency=stats, parity=parity,
                      concurrency=level).judge(options.tolerances)  # fmt: skip
            console.info(one_line(row))
            rows.append(row)
    return rows


def _preprocess_warning(pipe: Pipeline, served: ServedModel) -> list[str]:
    """Parity feeds both sides the same tensors, so it cannot see a server whose clients preprocess otherwise."""
    recorded = served.preprocess
    mine = pipe.preprocess.to_dict()
    if recorded is None or {k: recorded.get(k) for k in mine} == mine:
        return []
    note = (f"the reference's preprocessing {pipe.preprocess.describe()} differs from what {served.where} was "
            f"exported with ({recorded}): pass --resize/--crop/--mean/--std as recorded")  # fmt: skip
    console.warn(note)
    return [note]


def _parity_images(pipe: Pipeline, options: TritonOptions, warned: list[str]) -> tuple[np.ndarray, str]:
    folder = Path(options.images) if options.images is not None else default_images()
    return read_parity_images(folder, pipe.preprocess, options.max_images, warned), str(folder)


def _result(
    pipe: Pipeline,
    options: TritonOptions,
    served: ServedModel,
    rows: list[Row],
    images: np.ndarray,
    images_dir: str,
    warned: list[str],
) -> CompareResult:
    served_info: dict[str, Any] = {
        "url": served.url,
        "protocol": served.protocol,
        "model": served.name,
        "backend": served.backend,
        "server_version": served.server_version,
        "recorded": served.recorded,
        "concurrency": list(options.concurrency),
        "requests": options.requests,
        "seconds": options.seconds,
    }
    crop = pipe.preprocess.crop
    return CompareResult(
        rows=rows,
        reference_distinct_classes=0,
        degenerate=False,
        images=len(images),
        threads=default_threads(),
        device="cpu",  # the reference's and this client's; each row says where the server ran it
        model=pipe.source.to_dict(),
        preprocess=pipe.preprocess.to_dict(),
        images_dir=images_dir,
        parity_size=(crop, crop),
        warmup=0,
        iters=options.requests,
        warnings=warned,
        expected=[served.name],
        tools=tool_versions(),
        environment=environment("cpu"),
        parity_images=images,
        command=options.command,
        served=served_info,
    )
