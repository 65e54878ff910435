"""Which parity bounds judge which artifact: per precision, overridden per artifact, optionally from a TOML file.

The defaults are `parity.DEFAULT_TOLERANCES` (one `Tolerance` per precision). A file overrides them per
precision and per metric, and per artifact (manifest key, file name or glob):

    [fp16]
    min_cosine = 0.9995          # only this metric changes; the other fp16 defaults stay

    [artifact."onnx-int8-tensorrt"]  # a manifest key ...
    min_top1_agreement = 0.9

    [artifact."*.int8-*.onnx"]   # ... or a file name / glob
    max_abs = false              # false switches a check off

`resnet-bench compare` judges each row with `Tolerances.tolerance_for` and the gate reads the same object,
so the table, the JSON and the gate's verdict cannot disagree.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy.errors import UsageError
from resnet_deploy.parity import DEFAULT_TOLERANCES, Tolerance

PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "int8")
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
class Tolerances:
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


def load_tolerances(path: str | Path | None, defaults: Mapping[str, Tolerance] | None = None) -> Tolerances:
    """The tolerances of a run: `defaults` (parity.DEFAULT_TOLERANCES) overridden by the TOML file, if any.

    Raises UsageError (exit 2) naming the file, table and key for anything it does not understand, so
    a typo cannot silently loosen the gate.
    """
    precisions = dict(defaults if defaults is not None else DEFAULT_TOLERANCES)
    if path is None:
        return Tolerances(precisions)
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
    result = Tolerances(precisions, rules, str(path))
    _require_checks(result, path)
    return result


def _require_checks(tolerances: Tolerances, path: Path) -> None:
    """A precision, or an artifact rule, that switches every bound off would pass whatever it judged (another
    model's ONNX with cosine 0.01 included): a usage error naming it, never a gate that checks nothing."""
    for precision, tolerance in tolerances.precisions.items():
        if not tolerance.checks:
            raise UsageError(
                f"{path}: [{precision}] switches every check off, so any {precision} artifact would pass",
                f"keep at least one bound (e.g. min_cosine) in [{precision}]",
            )
    for rule in tolerances.rules:
        for precision in [rule.precision] if rule.precision else list(tolerances.precisions):
            base = tolerances.precisions[precision]
            if not dataclasses.replace(base, **rule.bounds).checks:
                raise UsageError(
                    f'{path}: [artifact."{rule.pattern}"] switches every {precision} check off, so those artifacts '
                    "would pass whatever they output",
                    "keep at least one bound for them (e.g. min_cosine)",
                )
