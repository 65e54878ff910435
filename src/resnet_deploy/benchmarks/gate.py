"""The CI parity gate: turns compare's rows into a verdict (exit 0 pass, 1 fail, 2 usage), JUnit cases
and a Markdown summary, and explains the failures when asked.

Metrics are computed in one place (`parity.compare`), checked in one place (`parity.check`), and the bounds
that apply to an artifact are chosen in one place (`tolerances.Tolerances`), which compare uses too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy.benchmarks.parity import ParityMetrics, Tolerance, Violation, check
from resnet_deploy.benchmarks.report import markdown_text
from resnet_deploy.benchmarks.tolerances import METRIC_RANGES, Tolerances

if TYPE_CHECKING:
    from resnet_deploy.pipeline import Pipeline

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

# -- evaluating rows ---------------------------------------------------------------------------------


@dataclass
class GateCase:
    """One artifact x runtime x shape: a JUnit test case."""

    artifact: str  # file name (or "pytorch" for the eager model)
    artifact_path: str | None
    artifact_key: str | None
    runtime: str
    precision: str
    device: str
    shape: str  # e.g. "batch 1, 224x224"
    tolerance: Tolerance
    metrics: ParityMetrics | None
    violations: list[Violation]
    error: str | None = None
    seconds: float = 0.0
    explanation: str | None = None  # from --explain, when asked
    size: tuple[int, int] | None = None  # the row's (H, W), which --explain runs at
    reference: bool = False  # PyTorch FP32 eager on the CPU: the reference compared with itself

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.metrics is None:
            return "skipped"
        return "failed" if self.violations else "passed"

    @property
    def passed(self) -> bool:
        return self.status in ("passed", "skipped")

    @property
    def name(self) -> str:
        return f"{self.artifact} [{self.runtime}, {self.precision}, {self.device}, {self.shape}]"

    def reason(self) -> str:
        """One line: the file, then each broken metric with its value and bound."""
        if self.error:
            return f"{self.artifact}: {self.error}"
        if self.violations:
            return f"{self.artifact}: " + "; ".join(str(v) for v in self.violations)
        return f"{self.artifact}: within tolerance"


@dataclass
class GateResult:
    cases: list[GateCase]
    config: Tolerances

    @property
    def checked(self) -> list[GateCase]:
        """Cases that judged an artifact (the reference against itself proves nothing)."""
        return [c for c in self.cases if c.status != "skipped" and not c.reference]

    @property
    def failures(self) -> list[GateCase]:
        return [c for c in self.cases if not c.passed]

    @property
    def passed(self) -> bool:
        return bool(self.checked) and not self.failures

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.passed else EXIT_FAIL

    def summary(self, gating: bool = True) -> str:
        """The verdict line. A row that could not run is counted as such, not as outside tolerance; without
        --gate (`--explain` alone) the line says the exit code does not follow it."""
        what = "parity gate" if gating else "parity check"
        after = "" if gating else " (without --gate the exit code does not follow it)"
        if not self.checked:
            return f"{what} FAILED: no artifact was checked (nothing in the workspace, or every run was skipped){after}"
        n, errored = len(self.checked), sum(bool(c.error) for c in self.failures)
        outside = len(self.failures) - errored
        if not self.failures:
            return f"{what} passed: {n} of {n} checks within tolerance ({self.config.source})"
        if outside and errored:
            counted = (
                f"{len(self.failures)} of {n} checks failed ({outside} outside tolerance, {errored} could not run)"
            )
        elif errored:
            counted = f"{errored} of {n} checks could not run"
        else:
            counted = f"{outside} of {n} checks outside tolerance"
        return f"{what} FAILED: {counted} ({self.config.source}){after}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "tolerances": self.config.to_dict(),
            "cases": [
                {
                    "name": c.name,
                    "artifact": c.artifact,
                    "artifact_path": c.artifact_path,
                    "artifact_key": c.artifact_key,
                    "runtime": c.runtime,
                    "precision": c.precision,
                    "device": c.device,
                    "shape": c.shape,
                    "status": c.status,
                    "violations": [dataclasses.asdict(v) for v in c.violations],
                    "error": c.error,
                    "tolerance": c.tolerance.to_dict(),
                    "explanation": c.explanation,
                }
                for c in self.cases
            ],
        }


def _shape_label(row: Any) -> str:
    size = _size(row)
    batch = getattr(row, "batch", None)
    parts = [f"batch {batch}" if batch is not None else None, f"{size[0]}x{size[1]}" if size else None]
    if getattr(row, "copies_included", True) is False:
        parts.append("device-resident")
    return ", ".join(p for p in parts if p) or "default shape"


def _seconds(row: Any) -> float:
    """The row's mean latency, as a JUnit case's time."""
    value = getattr(getattr(row, "latency", None), "mean_ms", None)
    return float(value) / 1000.0 if isinstance(value, int | float) and math.isfinite(value) else 0.0


def _size(row: Any) -> tuple[int, int] | None:
    size = getattr(row, "size", None)
    return (int(size[0]), int(size[1])) if isinstance(size, list | tuple) and len(size) == 2 else None


def case_for(row: Any, config: Tolerances) -> GateCase:
    """Judge one compare row against the tolerance that applies to its artifact."""
    path = getattr(row, "artifact_path", None)
    key = getattr(row, "artifact_key", None)
    precision = getattr(row, "precision", "fp32") or "fp32"
    label = Path(path).name if path else (key or "pytorch")
    tolerance = config.tolerance_for(precision, key, path)
    metrics = getattr(row, "parity", None)
    error = getattr(row, "error", None)
    return GateCase(
        artifact=label,
        artifact_path=str(path) if path else None,
        artifact_key=key,
        runtime=getattr(row, "runtime", "?"),
        precision=precision,
        device=getattr(row, "device", "cpu"),
        shape=_shape_label(row),
        tolerance=tolerance,
        metrics=metrics,
        violations=check(metrics, tolerance) if metrics is not None and not error else [],
        error=error,
        seconds=_seconds(row),
        reference=not path
        and getattr(row, "runtime", "") == "torch-eager"
        and precision == "fp32"
        and str(getattr(row, "device", "cpu")) == "cpu",
        size=_size(row),
    )


def evaluate(rows: Iterable[Any], config: Tolerances | None = None) -> GateResult:
    """Judge every row of `resnet-bench compare`. Rows are duck-typed (artifact_key, artifact_path,
    runtime, precision, device, batch, size, latency, parity, error) so this stays independent of the
    report code."""
    config = config or Tolerances()
    return GateResult([case_for(r, config) for r in rows], config)


def exit_code(gate: GateResult, run_exit_code: int = 0) -> int:
    """The gate's exit code: 2 when the run itself hit a usage error (a bad option or a shape an
    artifact does not accept), else 1 when any check fails, else the run's own code (0, or 3 when a
    requested runtime is missing)."""
    if run_exit_code == EXIT_USAGE:
        return EXIT_USAGE
    if not gate.passed:
        return EXIT_FAIL
    return run_exit_code


# -- Markdown for a CI job summary ---------------------------------------------------------------

#: GitHub caps a step summary at 1 MiB; stay far below and say what was left out.
MAX_MARKDOWN_ROWS = 200


def markdown(result: GateResult, title: str = "Parity gate", gating: bool = True) -> str:
    """A compact GitHub-flavoured summary: verdict first, then one line per failing check, then the
    tolerances used. Plain Markdown (no HTML, no ANSI), small enough for $GITHUB_STEP_SUMMARY."""
    icon = "✅" if result.passed else "❌"
    title = title if gating else "Parity check"
    verdict = markdown_text(result.summary(gating))
    lines = [f"### {icon} {markdown_text(title)}: {'passed' if result.passed else 'FAILED'}", "", verdict, ""]
    failures = result.failures
    if failures:
        lines += ["| artifact | runtime | precision | shape | problem |", "| --- | --- | --- | --- | --- |"]
        for c in failures[:MAX_MARKDOWN_ROWS]:
            problem = c.error or "; ".join(str(v) for v in c.violations)
            lines.append(
                f"| `{c.artifact}` | {markdown_text(c.runtime)} | {c.precision} | {markdown_text(c.shape)} | {markdown_text(problem)} |"
            )
        if len(failures) > MAX_MARKDOWN_ROWS:
            lines.append(f"\n… and {len(failures) - MAX_MARKDOWN_ROWS} more failing checks (see the JUnit report)")
        explained = [c for c in failures if c.explanation]
        for c in explained[:10]:
            head = f"**Where `{c.artifact}` diverges** ({markdown_text(c.runtime)}, {markdown_text(c.shape)}):"
            lines += ["", head, "", "```", c.explanation, "```"]
        lines.append("")
    lines += ["Tolerances (" + markdown_text(result.config.source) + "):", ""]
    lines += ["| precision | " + " | ".join(METRIC_RANGES) + " |", "| --- |" + " --- |" * len(METRIC_RANGES)]
    for precision, tol in result.config.precisions.items():
        cells = [("-" if getattr(tol, m) is None else f"{getattr(tol, m):g}") for m in METRIC_RANGES]
        lines.append(f"| {precision} | " + " | ".join(cells) + " |")
    for rule in result.config.rules:
        cells = [
            ("(default)" if m not in rule.bounds else "-" if rule.bounds[m] is None else f"{rule.bounds[m]:g}")
            for m in METRIC_RANGES
        ]
        lines.append(f"| `{rule.pattern}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- what `resnet-bench compare --gate/--junit/--explain/--tolerances` does around the run ---------


def _explain_failures(result: GateResult, pipe: Pipeline, images: Any) -> None:
    """Explain each failing artifact once per image size, at the size its row failed at: `images` are
    at the crop size and are resized as compare resized them for that row's parity."""
    from rich.markup import escape

    from resnet_deploy import console
    from resnet_deploy.benchmarks.explain import explain
    from resnet_deploy.errors import DeployError
    from resnet_deploy.preprocess import resize_batch
    from resnet_deploy.runtimes.base import Artifact

    done: dict[tuple[str, tuple[int, int] | None], str | None] = {}
    for case in result.failures:
        if not case.artifact_path or case.error:
            continue
        key = (case.artifact_path, case.size)
        if key not in done:
            at = f" at {case.size[0]}x{case.size[1]}" if case.size else ""
            try:
                art = Artifact.from_file(Path(case.artifact_path))
                art.precision = case.precision
                batch = resize_batch(images, case.size) if case.size else images
                with console.step(f"explain {case.artifact}{at}: stage outputs against PyTorch"):
                    exp = explain(art, pipe.model, batch, runtime=case.runtime, device=case.device)
                done[key] = exp.text()
                console.info(escape(exp.text()))
            except DeployError as exc:
                done[key] = None
                console.warn(f"--explain {case.artifact}{at}: {exc}")  # warn escapes markup itself
            except Exception as exc:  # a diagnosis must never hide the verdict
                done[key] = None
                console.warn(f"--explain {case.artifact}{at} failed: {type(exc).__name__}: {exc}")
        case.explanation = done[key]


def _spread(images: Any) -> Any:
    """At most explain's MAX_IMAGES of the parity images, evenly spread over them (a folder sorted by class
    would give its first class or two from the front)."""
    from resnet_deploy.benchmarks.explain import MAX_IMAGES
    from resnet_deploy.preprocess import select

    return images if images is None else images[select(range(len(images)), MAX_IMAGES)]


def finish(
    run: Any,
    pipe: Pipeline,
    config: Tolerances,
    *,
    gate: bool = False,
    junit: Path | None = None,
    explain: bool = False,
    markdown_path: Path | None = None,
) -> int:
    """After `run_compare`: explain failures, write JUnit, append the verdict to the Markdown report,
    print it, and return the exit code (the gate's with --gate, else the run's own)."""
    from rich.markup import escape

    from resnet_deploy import console
    from resnet_deploy.files import atomic_write_text

    result = evaluate(run.rows, config)
    for rule in config.unmatched(run.rows):
        keys = ", ".join(sorted({r.artifact_key for r in run.rows}))
        console.warn(f'{config.source}: [artifact."{rule.pattern}"] matched no artifact of this run (keys: {keys})')
    if explain and result.failures:
        _explain_failures(result, pipe, _spread(run.parity_images))
    if junit is not None:
        from resnet_deploy.benchmarks.junit import write_junit

        write_junit(result, junit)
        console.info(escape(f"report: {junit} (JUnit)"))
    if markdown_path is not None and (gate or explain) and str(markdown_path) != "-":
        md = Path(markdown_path)
        previous = md.read_text() if md.is_file() else ""
        atomic_write_text(md, previous + ("\n" if previous else "") + markdown(result, gating=gate))
    if gate or explain:
        color = "green" if result.passed else "red"
        console.info(f"[bold {color}]{result.summary(gating=gate)}[/]")
        for case in result.failures:
            problem = case.error or "; ".join(map(str, case.violations))
            console.info(f"  [red]✗[/] {escape(case.name)}: {escape(problem)}")
    return exit_code(result, run.exit_code) if gate else run.exit_code
