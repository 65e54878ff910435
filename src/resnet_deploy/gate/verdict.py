"""The CI parity gate's verdict: each judged compare row becomes a case (a JUnit test case), and the cases a
verdict (exit 0 pass, 1 fail, 2 usage).

Rows are judged once, when compare measures them (`Row.judge`: `parity.check` against the bound
`Tolerances` chooses for the artifact); the verdict reads that judgement, so the table, the JSON and the gate
cannot disagree.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy.artifact import Artifact
from resnet_deploy.parity import ParityMetrics, Tolerance, Violation
from resnet_deploy.results import REFERENCE_RUNTIME, Row
from resnet_deploy.tolerances import Tolerances

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


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
    artifact_ref: Artifact | None = field(default=None, repr=False)  # what ran, for --explain

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
    #: artifact keys the run was to check (the workspace's after the default set was completed, --artifact files)
    expected: list[str] = field(default_factory=list)
    #: --require: manifest keys, file names or globs of which a check must have run, or the gate fails
    required: list[str] = field(default_factory=list)

    @property
    def checked(self) -> list[GateCase]:
        """Cases that judged an artifact (the reference against itself proves nothing)."""
        return [c for c in self.cases if c.status != "skipped" and not c.reference]

    @property
    def failures(self) -> list[GateCase]:
        return [c for c in self.cases if not c.passed]

    @property
    def checked_artifacts(self) -> list[str]:
        """The artifacts (manifest key, else file name) at least one check judged."""
        return sorted({c.artifact_key or c.artifact for c in self.checked})

    @property
    def not_checked(self) -> list[str]:
        """Artifacts the run was to check and no check judged (no runtime here, or not built): named, not passed."""
        done = set(self.checked_artifacts)
        return [key for key in self.expected if key not in done]

    @property
    def missing_required(self) -> list[str]:
        """--require patterns no check matched: each fails the gate."""
        return [p for p in self.required if not any(_matches(p, c) for c in self.checked)]

    @property
    def passed(self) -> bool:
        return bool(self.checked) and not self.failures and not self.missing_required

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.passed else EXIT_FAIL

    def summary(self, gating: bool = True) -> str:
        """The verdict line. A row that could not run is counted as such, not as outside tolerance; a required
        artifact that was not checked is named; without --gate (`--explain` alone) the line says the exit code
        does not follow it."""
        what = "parity gate" if gating else "parity check"
        after = "" if gating else " (without --gate the exit code does not follow it)"
        if not self.checked:
            return f"{what} FAILED: no artifact was checked (nothing in the workspace, or every run was skipped){after}"
        n, errored = len(self.checked), sum(bool(c.error) for c in self.failures)
        outside = len(self.failures) - errored
        missing = self.missing_required
        unmet = f"required {', '.join(missing)} not checked; " if missing else ""
        if not self.failures:
            counted = f"{n} of {n} checks within tolerance"
            return f"{what} {'FAILED: ' + unmet if missing else 'passed: '}{counted} ({self.config.source}){after}"
        if outside and errored:
            counted = (
                f"{len(self.failures)} of {n} checks failed ({outside} outside tolerance, {errored} could not run)"
            )
        elif errored:
            counted = f"{errored} of {n} checks could not run"
        else:
            counted = f"{outside} of {n} checks outside tolerance"
        return f"{what} FAILED: {unmet}{counted} ({self.config.source}){after}"

    def coverage(self) -> str:
        """Which artifacts were checked and which the run was to check and did not, as one line."""
        line = f"checked: {', '.join(self.checked_artifacts) or 'none'}"
        return line + (f"; not checked: {', '.join(self.not_checked)}" if self.not_checked else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "checked": self.checked_artifacts,
            "not_checked": self.not_checked,
            "required_not_checked": self.missing_required,
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


def _shape_label(row: Row) -> str:
    parts = [f"batch {row.batch}", f"{row.size[0]}x{row.size[1]}"]
    if not row.copies_included:
        parts.append("device-resident")
    if row.concurrency is not None:
        parts.append(f"concurrency {row.concurrency}")
    return ", ".join(parts)


def _seconds(row: Row) -> float:
    """The row's mean latency, as a JUnit case's time."""
    value = row.latency.mean_ms if row.latency is not None else None
    return float(value) / 1000.0 if isinstance(value, int | float) and math.isfinite(value) else 0.0


def case_for(row: Row, config: Tolerances) -> GateCase:
    """One compare row as a gate case, with the judgement compare made of it against `config`; a row judged by
    other tolerances, or by none (made by hand, read back from JSON), is judged here, by the same `Row.judge`."""
    if row.judged_by is not config:
        row.judge(config)
    assert row.tolerance is not None
    path = row.artifact_path
    return GateCase(
        artifact=Path(path).name if path else (row.artifact_key or "pytorch"),
        artifact_path=str(path) if path else None,
        artifact_key=row.artifact_key,
        runtime=row.runtime,
        precision=row.precision,
        device=str(row.device),
        shape=_shape_label(row),
        tolerance=row.tolerance,
        metrics=row.parity,
        violations=list(row.violations),
        error=row.error,
        seconds=_seconds(row),
        reference=not path and row.runtime == REFERENCE_RUNTIME and row.precision == "fp32" and row.device == "cpu",
        size=(int(row.size[0]), int(row.size[1])),
        artifact_ref=row.artifact,
    )


def evaluate(
    rows: Iterable[Row],
    config: Tolerances | None = None,
    expected: Iterable[str] = (),
    required: Iterable[str] = (),
) -> GateResult:
    """The verdict over every row of `resnet-bench compare`, with the tolerances they were judged by; `expected`
    (artifact keys the run was to check) and `required` (--require patterns) say what coverage it must name."""
    config = config or Tolerances()
    return GateResult([case_for(r, config) for r in rows], config, list(expected), list(required))


def _matches(pattern: str, case: GateCase) -> bool:
    """A --require pattern against a case's manifest key, file name and path (exactly or as a glob)."""
    names = [n for n in (case.artifact_key, case.artifact, case.artifact_path) if n]
    return any(n == pattern or fnmatch.fnmatchcase(n, pattern) for n in names)


def exit_code(gate: GateResult, run_exit_code: int = 0) -> int:
    """The gate's exit code: 2 when the run itself hit a usage error (a bad option or a shape an
    artifact does not accept), else 1 when any check fails, else the run's own code (0, or 3 when a
    requested runtime is missing)."""
    if run_exit_code == EXIT_USAGE:
        return EXIT_USAGE
    if not gate.passed:
        return EXIT_FAIL
    return run_exit_code
