"""The CI parity gate: which tolerances apply to which artifact, and whether the run passes.

Tolerances come from `parity.DEFAULT_TOLERANCES` (one `Tolerance` per precision), optionally overridden
by a TOML file, per precision and per metric, and per artifact (manifest key, file name or glob):

    [fp16]
    min_cosine = 0.9995          # only this metric changes; the other fp16 defaults stay

    [artifact."onnx-int8-tensorrt"]  # a manifest key ...
    min_top1_agreement = 0.9

    [artifact."*.int8-*.onnx"]   # ... or a file name / glob
    max_abs = false              # false switches a check off

Metrics are computed in one place (`parity.compare`) and checked in one place (`parity.check`); this
module only decides which bounds apply and turns rows into a verdict: exit 0 pass, 1 fail, 2 usage.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy.benchmarks.parity import DEFAULT_TOLERANCES, ParityMetrics, Tolerance, Violation, check
from resnet_deploy.errors import UsageError

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

PRECISIONS = ("fp32", "tf32", "fp16", "int8")
#: Tolerance fields and the range a bound may take (cosine can be negative, fractions are 0..1).
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "max_rel_l2": (0.0, math.inf),
    "max_abs": (0.0, math.inf),
    "min_cosine": (-1.0, 1.0),
    "min_top1_agreement": (0.0, 1.0),
    "min_top5_overlap": (0.0, 1.0),
}
_HELP = "see examples/tolerances.toml and the README's 'Tolerances' section"


@dataclass(frozen=True)
class ArtifactRule:
    """Bounds for the artifacts whose manifest key, file name or path matches `pattern`."""

    pattern: str
    bounds: Mapping[str, float | None]
    precision: str | None = None  # only rows of this precision, when given

    def matches(self, key: str | None, path: str | Path | None, precision: str) -> bool:
        if self.precision and self.precision != precision:
            return False
        candidates = [c for c in (key, Path(path).name if path else None, str(path) if path else None) if c]
        return any(c == self.pattern or fnmatch.fnmatchcase(c, self.pattern) for c in candidates)


@dataclass
class GateConfig:
    """Per-precision tolerances plus per-artifact rules applied on top, in file order."""

    precisions: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    rules: list[ArtifactRule] = field(default_factory=list)
    source: str = "defaults"  # "defaults" or the file it was read from

    def tolerance_for(self, precision: str, key: str | None = None, path: str | Path | None = None) -> Tolerance:
        base = self.precisions.get(precision)
        if base is None:
            raise UsageError(
                f"no tolerance for precision '{precision}' (artifact {Path(path).name if path else key})",
                f"add a [{precision}] table to the tolerance file",
            )
        for rule in self.rules:
            if rule.matches(key, path, precision):
                base = dataclasses.replace(base, **rule.bounds)
        return base

    def unmatched(self, rows: Iterable[Any]) -> list[ArtifactRule]:
        """Artifact rules no row of a run matched: most often a typo in the pattern, which would leave
        the artifact it meant judged by the precision's defaults without a word."""
        rows = list(rows)
        return [r for r in self.rules if not any(r.matches(x.artifact_key, x.artifact_path, x.precision) for x in rows)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "precisions": {p: t.to_dict() for p, t in self.precisions.items()},
            "artifacts": [{"pattern": r.pattern, "precision": r.precision, **dict(r.bounds)} for r in self.rules],
        }


# -- reading the TOML file ---------------------------------------------------------------------------


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise UsageError(
                "reading --tolerances needs Python 3.11+ or the 'tomli' package", "pip install tomli"
            ) from None
    if not path.exists():
        raise UsageError(f"tolerance file {path} does not exist", _HELP)
    if not path.is_file():
        raise UsageError(f"tolerance file {path} is not a file", _HELP)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"tolerance file {path} is not valid TOML: {exc}", _HELP) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read tolerance file {path}: {exc}", _HELP) from None


def _bounds(table: Any, where: str, path: Path) -> dict[str, float | None]:
    """Validate one table of metric bounds; `false` switches a bound off."""
    if not isinstance(table, dict):
        raise UsageError(f"{path}: {where} must be a table of metric bounds, got {type(table).__name__}", _HELP)
    out: dict[str, float | None] = {}
    for name, value in table.items():
        if name not in METRIC_RANGES:
            raise UsageError(
                f"{path}: unknown metric '{name}' in {where}",
                "use one of: " + ", ".join(METRIC_RANGES),
            )
        if value is False:
            out[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(
                f"{path}: {where}.{name} must be a number (or false to switch it off), got {value!r}", _HELP
            )
        lo, hi = METRIC_RANGES[name]
        if not (lo <= value <= hi):  # also rejects nan
            raise UsageError(f"{path}: {where}.{name} = {value} is outside [{lo:g}, {hi:g}]", _HELP)
        out[name] = float(value)
    return out


def load_tolerances(path: str | Path | None, defaults: Mapping[str, Tolerance] | None = None) -> GateConfig:
    """The gate's tolerances: `defaults` (parity.DEFAULT_TOLERANCES) overridden by the TOML file, if any.

    Raises UsageError (exit 2) naming the file, table and key for anything it does not understand, so
    a typo cannot silently loosen the gate.
    """
    precisions = dict(defaults if defaults is not None else DEFAULT_TOLERANCES)
    if path is None:
        return GateConfig(precisions)
    path = Path(path)
    data = _load_toml(path)
    rules: list[ArtifactRule] = []
    for section, table in data.items():
        if section in ("artifact", "artifacts"):
            if not isinstance(table, dict) or not table:
                raise UsageError(
                    f'{path}: [{section}] must hold tables like [{section}."resnet50.int8-tensorrt.onnx"]', _HELP
                )
            for pattern, sub in table.items():
                where = f'{section}."{pattern}"'
                if not isinstance(sub, dict):
                    raise UsageError(
                        f"{path}: [{section}] holds {pattern} = {sub!r}; per-artifact bounds go in tables "
                        f'like [{section}."resnet50.int8-tensorrt.onnx"]',
                        _HELP,
                    )
                sub = dict(sub)
                precision = sub.pop("precision", None)
                if precision is not None and precision not in PRECISIONS:
                    raise UsageError(
                        f"{path}: {where}.precision = {precision!r} is not one of {', '.join(PRECISIONS)}", _HELP
                    )
                rules.append(ArtifactRule(pattern, _bounds(sub, where, path), precision))
        elif section in PRECISIONS:
            base = precisions.get(section, Tolerance())
            precisions[section] = dataclasses.replace(base, **_bounds(table, f"[{section}]", path))
        elif not isinstance(table, dict):  # `min_cosine = 0.99` above every table: a bound with no precision
            raise UsageError(
                f"{path}: {section} = {table!r} is outside any table",
                f"put it under the precision it bounds, e.g. [fp32] then {section} = {table!r}",
            )
        else:
            close = [p for p in (*PRECISIONS, "artifact") if p.startswith(section[:2].lower())]
            hint = f"did you mean [{close[0]}]?" if close else _HELP
            raise UsageError(
                f'{path}: unknown table [{section}]; expected {", ".join(PRECISIONS)} or artifact."NAME"', hint
            )
    return GateConfig(precisions, rules, str(path))


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
    config: GateConfig

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
    lat = getattr(row, "latency", None)
    for attr in ("mean_ms", "mean"):
        value = getattr(lat, attr, None)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value) / 1000.0 if attr.endswith("_ms") else float(value)
    return 0.0


def _size(row: Any) -> tuple[int, int] | None:
    size = getattr(row, "size", None)
    return (int(size[0]), int(size[1])) if isinstance(size, list | tuple) and len(size) == 2 else None


def case_for(row: Any, config: GateConfig) -> GateCase:
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


def evaluate(rows: Iterable[Any], config: GateConfig | None = None) -> GateResult:
    """Judge every row of `resnet-bench compare`. Rows are duck-typed (artifact_key, artifact_path,
    runtime, precision, device, batch, size, latency, parity, error) so this stays independent of the
    report code."""
    config = config or GateConfig()
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

_MD_ESCAPE = re.compile(r"([|\\`*_<>\[\]])")
#: GitHub caps a step summary at 1 MiB; stay far below and say what was left out.
MAX_MARKDOWN_ROWS = 200


def _md(text: object) -> str:
    return _MD_ESCAPE.sub(r"\\\1", str(text)).replace("\n", " ")


def markdown(result: GateResult, title: str = "Parity gate", gating: bool = True) -> str:
    """A compact GitHub-flavoured summary: verdict first, then one line per failing check, then the
    tolerances used. Plain Markdown (no HTML, no ANSI), small enough for $GITHUB_STEP_SUMMARY."""
    icon = "✅" if result.passed else "❌"
    title = title if gating else "Parity check"
    verdict = _md(result.summary(gating))
    lines = [f"### {icon} {_md(title)}: {'passed' if result.passed else 'FAILED'}", "", verdict, ""]
    failures = result.failures
    if failures:
        lines += ["| artifact | runtime | precision | shape | problem |", "| --- | --- | --- | --- | --- |"]
        for c in failures[:MAX_MARKDOWN_ROWS]:
            problem = c.error or "; ".join(str(v) for v in c.violations)
            lines.append(f"| `{c.artifact}` | {_md(c.runtime)} | {c.precision} | {_md(c.shape)} | {_md(problem)} |")
        if len(failures) > MAX_MARKDOWN_ROWS:
            lines.append(f"\n… and {len(failures) - MAX_MARKDOWN_ROWS} more failing checks (see the JUnit report)")
        explained = [c for c in failures if c.explanation]
        for c in explained[:10]:
            head = f"**Where `{c.artifact}` diverges** ({_md(c.runtime)}, {_md(c.shape)}):"
            lines += ["", head, "", "```", c.explanation, "```"]
        lines.append("")
    lines += ["Tolerances (" + _md(result.config.source) + "):", ""]
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


def configure(options: Any, tolerances: str | Path | None) -> GateConfig:
    """Load the tolerances (UsageError on a bad file, before anything slow) and make the compare run
    judge every row by them, so its table, JSON and the gate agree."""
    config = load_tolerances(tolerances)
    options.tolerances = config.precisions
    options.tolerance_for = lambda key, path, precision: config.tolerance_for(precision, key, path)
    return config


def _explain_failures(result: GateResult, pipe: Any, images: Any) -> None:
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


def _explain_images(pipe: Any, run: Any, limit: int = 8) -> Any:
    import numpy as np

    from resnet_deploy.preprocess import load_folder

    folder = getattr(run, "images_dir", None)
    if folder:
        return load_folder(Path(folder), pipe.preprocess, limit, "parity image").tensors
    crop = pipe.preprocess.crop
    return np.random.default_rng(0).standard_normal((limit, 3, crop, crop), dtype=np.float32)


def finish(
    run: Any,
    pipe: Any,
    config: GateConfig,
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
    from resnet_deploy.workspace import atomic_write_text

    result = evaluate(run.rows, config)
    for rule in config.unmatched(run.rows):
        keys = ", ".join(sorted({r.artifact_key for r in run.rows}))
        console.warn(f'{config.source}: [artifact."{rule.pattern}"] matched no artifact of this run (keys: {keys})')
    if explain and result.failures:
        _explain_failures(result, pipe, _explain_images(pipe, run))
    if junit is not None:
        from resnet_deploy.benchmarks.junit import write_junit

        write_junit(result, junit)
        console.info(f"JUnit report: {junit}")
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
