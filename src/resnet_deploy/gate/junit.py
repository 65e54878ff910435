"""JUnit XML for the parity gate: one test case per artifact x runtime x shape.

CI systems (GitHub test reporters, GitLab, Jenkins, Azure) show a failing case's `message`, so that
line names the artifact file, the broken metric, its value and the bound. Written atomically: a
killed job leaves the previous report or none, never a truncated XML file.
"""

from __future__ import annotations

import datetime as _dt
import platform
import xml.etree.ElementTree as ET
from pathlib import Path

from resnet_deploy.errors import UsageError
from resnet_deploy.files import atomic_write_text
from resnet_deploy.gate.verdict import GateCase, GateResult

SUITE = "resnet-deploy parity gate"


def _metrics_text(case: GateCase) -> str:
    lines = [f"artifact: {case.artifact_path or case.artifact}"]
    if case.artifact_key:
        lines.append(f"manifest key: {case.artifact_key}")
    lines.append(f"runtime: {case.runtime} ({case.precision}, {case.device}), {case.shape}")
    if case.metrics is not None:
        lines.append("metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in case.metrics.to_dict().items()))
    bounds = {k: v for k, v in case.tolerance.to_dict().items() if v is not None}
    lines.append("tolerance: " + (", ".join(f"{k}={v:g}" for k, v in bounds.items()) or "none"))
    for v in case.violations:
        lines.append(f"violation: {case.artifact}: {v}")
    if case.explanation:
        lines += ["", case.explanation]
    return "\n".join(lines)


def to_xml(result: GateResult, suite_name: str = SUITE) -> str:
    cases = result.cases
    # a gate that checked no artifact fails; with no failing case a CI report would show it green
    nothing_checked = not result.checked
    missing, uncovered = len(result.missing_required), len(result.not_checked)
    failures = sum(c.status == "failed" for c in cases) + nothing_checked + missing
    errors = sum(c.status == "error" for c in cases)
    skipped = sum(c.status == "skipped" or (c.reference and c.status == "passed") for c in cases) + uncovered
    total_time = sum(c.seconds for c in cases)
    counts = {
        "tests": str(len(cases) + nothing_checked + missing + uncovered),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": f"{total_time:.3f}",
    }
    root = ET.Element("testsuites", {"name": suite_name, **counts})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": suite_name,
            **counts,
            "timestamp": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "hostname": platform.node() or "localhost",
        },
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", {"name": "tolerances", "value": result.config.source})
    ET.SubElement(props, "property", {"name": "verdict", "value": result.summary()})
    for case in cases:
        attrs = {
            "classname": f"parity.{case.precision}.{case.runtime}",
            "name": case.name,
            "time": f"{case.seconds:.6f}",
        }
        if case.artifact_path:
            attrs["file"] = case.artifact_path
        tc = ET.SubElement(suite, "testcase", attrs)
        if case.reference and case.status == "passed":
            ET.SubElement(
                tc, "skipped", {"message": "the reference (PyTorch FP32 eager, CPU) against itself: no check"}
            )
        elif case.status == "failed":
            el = ET.SubElement(tc, "failure", {"message": case.reason(), "type": "ParityViolation"})
            el.text = _metrics_text(case)
        elif case.status == "error":
            el = ET.SubElement(tc, "error", {"message": case.reason(), "type": "RuntimeError"})
            el.text = _metrics_text(case)
        elif case.status == "skipped":
            ET.SubElement(tc, "skipped", {"message": f"{case.artifact}: no parity metrics (reference or not run)"})
        else:
            ET.SubElement(tc, "system-out").text = _metrics_text(case)
    for pattern in result.missing_required:
        tc = ET.SubElement(
            suite, "testcase", {"classname": "parity.required", "name": f"{pattern} was checked", "time": "0"}
        )
        el = ET.SubElement(tc, "failure", {"message": f"--require {pattern}: no check ran on it", "type": "NotChecked"})
        el.text = result.coverage()
    for key in result.not_checked:
        tc = ET.SubElement(
            suite, "testcase", {"classname": "parity.coverage", "name": f"{key} was checked", "time": "0"}
        )
        ET.SubElement(tc, "skipped", {"message": f"{key}: in the run, but no check ran on it here (see the report)"})
    if nothing_checked:
        tc = ET.SubElement(suite, "testcase", {"classname": "parity", "name": "an artifact was checked", "time": "0"})
        el = ET.SubElement(tc, "failure", {"message": result.summary(), "type": "NothingChecked"})
        el.text = "Export artifacts into the workspace (resnet-export), or pass --artifact FILE."
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(result: GateResult, path: str | Path, suite_name: str = SUITE) -> Path:
    """Write the report atomically (temp file + rename); the folder is created if needed."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise UsageError(f"--junit {path} is a folder", "give a file name, e.g. --junit reports/parity.xml")
    try:
        atomic_write_text(path, to_xml(result, suite_name))
    except OSError as exc:
        raise UsageError(f"cannot write JUnit report {path}: {exc.strerror or exc}", "pass a writable path") from None
    return path
