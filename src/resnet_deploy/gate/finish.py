"""What `resnet-bench compare --gate/--junit/--explain/--tolerances` does around the run: the verdict, where
the failing artifacts diverge, the JUnit and Markdown reports, the verdict printed, and the exit code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from resnet_deploy import console
from resnet_deploy.artifact import Artifact
from resnet_deploy.errors import DeployError
from resnet_deploy.explain import MAX_IMAGES, explain
from resnet_deploy.files import atomic_write_text
from resnet_deploy.gate.junit import write_junit
from resnet_deploy.gate.summary import markdown
from resnet_deploy.gate.verdict import GateCase, GateResult, evaluate, exit_code
from resnet_deploy.preprocess import resize_batch, select
from resnet_deploy.results import CompareResult
from resnet_deploy.tolerances import Tolerances


def finish(
    run: CompareResult,
    model: Any,
    config: Tolerances,
    *,
    gate: bool = False,
    junit: Path | None = None,
    explain: bool = False,
    markdown_path: Path | None = None,
    require: list[str] | None = None,
) -> int:
    """After `run_compare`: explain failures, write JUnit, append the verdict to the Markdown report,
    print it, and return the exit code (the gate's with --gate, else the run's own). `model`: the PyTorch
    model the run compared against, which --explain reads stage by stage; `require`: --require's patterns."""
    result = evaluate(run.rows, config, run.expected, require or [])
    for rule in config.unmatched(run.rows):
        keys = ", ".join(sorted({r.artifact_key for r in run.rows}))
        console.warn(f'{config.source}: [artifact."{rule.pattern}"] matched no artifact of this run (keys: {keys})')
    if explain and result.failures:
        explain_failures(result, model, _spread(run.parity_images))
    if junit is not None:
        write_junit(result, junit)
        console.info(escape(f"report: {junit} (JUnit)"))
    if markdown_path is not None and (gate or explain) and str(markdown_path) != "-":
        md = Path(markdown_path)
        previous = md.read_text() if md.is_file() else ""
        atomic_write_text(md, previous + ("\n" if previous else "") + markdown(result, gating=gate))
    if gate or explain:
        color = "green" if result.passed else "red"
        console.info(f"[bold {color}]{result.summary(gating=gate)}[/]")
        console.info(escape(result.coverage()))
        for case in result.failures:
            problem = case.error or "; ".join(map(str, case.violations))
            console.info(f"  [red]✗[/] {escape(case.name)}: {escape(problem)}")
    return exit_code(result, run.exit_code) if gate else run.exit_code


def explain_failures(result: GateResult, model: Any, images: np.ndarray | None) -> None:
    """Explain each failing artifact once per image size, at the size its row failed at: `images` are
    at the crop size and are resized as compare resized them for that row's parity."""
    done: dict[tuple[str, tuple[int, int] | None], str | None] = {}
    for case in result.failures:
        if not case.artifact_path or case.error:
            continue
        key = (case.artifact_path, case.size)
        if key not in done:
            done[key] = _explain(case, model, images)
        case.explanation = done[key]


def _explain(case: GateCase, model: Any, images: np.ndarray | None) -> str | None:
    at = f" at {case.size[0]}x{case.size[1]}" if case.size else ""
    try:
        art = case.artifact_ref or Artifact.from_file(Path(case.artifact_path or ""))
        art = dataclasses.replace(art, precision=case.precision)  # as the row ran it (a trace may run TF32)
        batch = resize_batch(images, case.size) if case.size and images is not None else images
        with console.step(f"explain {case.artifact}{at}: stage outputs against PyTorch"):
            exp = explain(art, model, batch, runtime=case.runtime, device=case.device)
    except DeployError as exc:
        console.warn(f"--explain {case.artifact}{at}: {exc}")  # warn escapes markup itself
        return None
    except Exception as exc:  # a diagnosis must never hide the verdict
        console.warn(f"--explain {case.artifact}{at} failed: {type(exc).__name__}: {exc}")
        return None
    console.info(escape(exp.text()))
    return exp.text()


def _spread(images: np.ndarray | None) -> np.ndarray | None:
    """At most explain's MAX_IMAGES of the parity images, evenly spread over them (a folder sorted by class
    would give its first class or two from the front)."""
    return images if images is None else images[select(range(len(images)), MAX_IMAGES)]
