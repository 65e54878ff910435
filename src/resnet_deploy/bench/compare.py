"""`resnet-bench compare`: every artifact x every runtime that can run it here x batch x size.

For each combination one `Row` holds latency (bench/latency.py) and parity against the PyTorch FP32 eager
reference (parity.py), judged against the precision's tolerance. This module is the run: it checks the
options (preflight.py), completes the workspace and plans the jobs (plan.py), computes the reference, has
each job measured (measure.py) and collects the result.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnet_deploy import console
from resnet_deploy.bench import floor, plan
from resnet_deploy.bench.measure import error_text, run_jobs
from resnet_deploy.bench.options import CompareOptions
from resnet_deploy.bench.preflight import validate
from resnet_deploy.devices import default_threads
from resnet_deploy.parity import degenerate_warning, distinct_predictions
from resnet_deploy.pipeline import Pipeline
from resnet_deploy.pipeline.default_set import default_images
from resnet_deploy.preprocess import FolderScan, Preprocess, describe_ignored, load_folder, resize_batch
from resnet_deploy.provenance import environment, tool_versions
from resnet_deploy.report import write_reports
from resnet_deploy.results import CompareResult, Row, noise_warning
from resnet_deploy.verify import reference_logits


def run_compare(pipe: Pipeline, options: CompareOptions) -> CompareResult:
    """Build (if asked and needed), then benchmark and parity-check every artifact x runtime x shape."""
    start = time.perf_counter()
    validate(options)  # once: a caller that validated already (the CLI, before the model loaded) is not re-checked
    threads = options.threads or default_threads()
    batches, sizes = plan.shapes(pipe, options)
    # what opening the model found worth saying (a preprocessing unlike the record) comes first
    warned: list[str] = list(pipe.notes)
    skipped: list[str] = []
    built, notes = plan.prepare_workspace(pipe, options, batches, sizes)
    warned += notes
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        jobs = plan.jobs(pipe, options, skipped)  # first: a --runtimes with nothing to run fails before any work
        images, images_dir = _parity_images(pipe, options, warned)
        result = _result(pipe, options, images, images_dir, threads, warned, skipped, built)
        result.expected = plan.expected_keys(pipe, options)
        with console.step(f"reference logits (PyTorch FP32 eager, CPU) on {len(images)} images"):
            refs = {size: reference_logits(pipe.model, resize_batch(images, size)) for size in sizes}
        _judge_reference(result, pipe, refs, images)

        def measured(rows: list[tuple[Row, int]]) -> None:
            result.rows += [r for r, _ in rows]
            result.error_codes += [code for _, code in rows if code]
            result.seconds = time.perf_counter() - start
            if options.partial_json is not None:
                write_reports(result, Path(options.partial_json))

        run_jobs(jobs, options, threads, sizes, batches, images, refs, measured)
        result.partial = False
        _closing_notes(result, pipe, options, jobs, batches, sizes)
    finally:
        torch.set_num_threads(previous_threads)
    result.seconds = time.perf_counter() - start
    if options.partial_json is not None:  # complete now
        write_reports(result, Path(options.partial_json))
    return result


def _parity_images(pipe: Pipeline, options: CompareOptions, warned: list[str]) -> tuple[np.ndarray, str | None]:
    folder = options.images if options.images is not None else default_images()
    if not Path(folder).is_dir():  # an install without its photos: said, and parity on noise says little
        warned.append(
            "no parity images (no ./calibration, no packaged photos and no --images): parity uses 16 random-normal inputs, "
            "which says little about INT8/FP16 accuracy; pass --images DIR of real images"
        )
        crop = pipe.preprocess.crop
        rng = np.random.default_rng(0)
        return rng.standard_normal((16, 3, crop, crop), dtype=np.float32), None
    return read_parity_images(Path(folder), pipe.preprocess, options.max_images, warned, options.images_scan), str(
        folder
    )


def read_parity_images(
    folder: Path, preprocess: Preprocess, max_images: int | None, warned: list[str], scan: FolderScan | None = None
) -> np.ndarray:
    """The parity images of `folder` as the reference and every row (or served model) get them; what was
    skipped or ignored is added to `warned`, for the report."""
    images = load_folder(folder, preprocess, max_images, "parity image", scan)
    warned += [f"skipped parity image {path.name}: {why}" for path, why in images.skipped]
    if images.ignored:
        warned.append(f"parity images: {describe_ignored(images.ignored)}")
    return images.tensors


def _result(
    pipe: Pipeline,
    options: CompareOptions,
    images: np.ndarray,
    images_dir: str | None,
    threads: int,
    warned: list[str],
    skipped: list[str],
    built: list[str],
) -> CompareResult:
    """The result the rows go into, with what the run is made of (written as partial while it goes on)."""
    crop = pipe.preprocess.crop
    return CompareResult(
        rows=[],
        reference_distinct_classes=0,
        degenerate=False,
        images=len(images),
        threads=threads,
        device=options.device,
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
        environment=environment(options.device),
        parity_images=images,
        partial=True,
        command=options.command,
    )


def _judge_reference(
    result: CompareResult, pipe: Pipeline, refs: dict[tuple[int, int], np.ndarray], images: np.ndarray
) -> None:
    """How many classes the reference predicts, at the crop size, on the images exactly as the model sees
    them: few means top-1 agreement says little (random weights), and the report says so."""
    crop = pipe.preprocess.crop
    main_ref = refs[(crop, crop)] if (crop, crop) in refs else reference_logits(pipe.model, images)
    result.reference_distinct_classes = distinct_predictions(main_ref)
    message = degenerate_warning(main_ref, pipe.source.num_classes)
    result.degenerate = message is not None
    if message:
        result.warnings.append(message)


def _closing_notes(
    result: CompareResult,
    pipe: Pipeline,
    options: CompareOptions,
    jobs: list[plan.Job],
    batches: list[int],
    sizes: list[tuple[int, int]],
) -> None:
    """What the measured rows say beside their numbers: noisy timing, engines tuned for another shape, and
    the floor when asked for (its failure is said and in the exit code, but the rows measured are kept)."""
    noisy = noise_warning(result.rows)
    if noisy:
        result.warnings.append(noisy)
    shapes = [(b, 3, h, w) for b in batches for h, w in sizes]
    result.warnings += plan.opt_shape_notes([j.artifact for j in jobs], shapes)
    if not options.floor:
        return
    try:
        result.floor = _floor(result.rows, pipe, options)
        if result.floor.get("warning"):
            result.warnings.append(result.floor["warning"])
    except Exception as exc:
        text, code = error_text(exc)
        result.warnings.append(f"--floor not computed: {text}")
        result.error_codes.append(code)


def _floor(rows: list[Row], pipe: Pipeline, options: CompareOptions) -> dict[str, Any]:
    with console.step(f"peak matrix rates and copy bandwidth of {options.device} (for the floor)"):
        ceilings = floor.measure_ceilings(options.device)
    flops, per_row = floor.floors(rows, pipe.model, ceilings, pipe.source.num_classes)
    return {
        "ceilings": ceilings.to_dict(),
        "flops_per_image": flops,
        "parameters": floor.parameter_count(pipe.model),
        "rows": [f.to_dict() for f in per_row],
        "warning": floor.beaten_warning(per_row, ceilings),
    }
