"""The comparison as files: JSON and CSV (every latency percentile and parity metric), Markdown for a CI job
summary, and the one writer of them all (atomic, each path checked before the run).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from resnet_deploy.console import plural
from resnet_deploy.errors import UsageError
from resnet_deploy.files import atomic_write_text, check_output_file
from resnet_deploy.report.plot import plot
from resnet_deploy.report.rows import CSV_FIELDS, LATENCY_FIELDS, PARITY_FIELDS, columns, fmt, notes, row_cells
from resnet_deploy.results import CompareResult


def to_json(result: CompareResult) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str) + "\n"


def csv_records(result: CompareResult) -> list[dict[str, Any]]:
    out = []
    for row in result.rows:
        rec: dict[str, Any] = {
            "artifact_key": row.artifact_key,
            "artifact_path": row.artifact_path or "",
            "format": row.format,
            "runtime": row.runtime,
            "precision": row.precision,
            "device": row.device,
            "batch": row.batch,
            "height": row.size[0],
            "width": row.size[1],
            "copies_included": row.copies_included,
            "concurrency": row.concurrency,
            "speedup": result.speedup(row),
            "passed": row.passed,
            "violations": "; ".join(str(v) for v in row.violations),
            "error": row.error or "",
        }
        lat = row.latency.to_dict() if row.latency else {}
        for key in (*LATENCY_FIELDS, "iterations", "warmup", "threads"):
            rec[key] = lat.get(key)
        par = row.parity.to_dict() if row.parity else {}
        for key in PARITY_FIELDS:
            rec[key] = par.get(key)
        out.append({k: ("" if v is None else v) for k, v in rec.items()})
    return out


def to_csv(result: CompareResult) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_records(result))
    return buf.getvalue()


_MD_SPECIAL = re.compile(r"([|\\`*_<>\[\]])")


def markdown_text(text: object) -> str:
    """Plain text (a warning, a path, an error) as Markdown that shows it as written, on one line."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def _md_cell(text: str) -> str:
    """A table cell that holds our own Markdown (`code`, **bold**): only what would break the row is escaped."""
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(result: CompareResult) -> str:
    """GitHub-flavoured Markdown, fit for a CI job summary ($GITHUB_STEP_SUMMARY)."""
    failed = [r for r in result.rows if not r.passed]
    verdict = "all rows pass" if not failed else f"{len(failed)} of {len(result.rows)} rows fail"
    arch = result.model.get("architecture", "model")
    weights = result.model.get("weights", "")
    env = result.environment
    heading = f"## resnet-bench compare: {arch} ({weights})"
    if result.served is not None:
        heading = f"## resnet-bench triton: {result.served['model']} at {result.served['url']} ({arch}, {weights})"
    lines = [
        heading,
        "",
        f"**{verdict}** · device `{result.device}`"
        + (f" ({env['device_name']})" if env.get("device_name") else "")
        + f" · {result.threads} CPU threads · {plural(result.images, 'parity image')}"
        + f" · {result.seconds:.0f} s",
        "",
    ]
    if result.command:
        lines += ["```", result.command, "```", ""]
    versions = ", ".join(f"{k} {v}" for k, v in result.tools.items())
    extra = ", ".join(f"{k} {env[k]}" for k in ("cuda", "cudnn", "python") if env.get(k))
    if versions or extra:
        lines += [f"Versions: {', '.join(x for x in (versions, extra) if x)}.", ""]
    if result.on_cuda:
        lines += [
            "Copies: each runtime has two rows. `copies` yes = host arrays in and out, the host-device copies "
            "timed (wall clock); no = CUDA tensors in and out, timed with CUDA events, copies excluded.",
            "",
        ]
    for warning in result.warnings:
        lines += [f"> **Warning:** {markdown_text(warning)}", ""]
    cols = [c for c in columns(result)]
    cols.insert(cols.index("p50 ms") + 1, "p90 ms")
    cols.insert(cols.index("top-1") + 1, "top-5")
    lines.append("| " + " | ".join(cols) + " |")
    right = {
        "batch",
        "concurrency",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "img/s",
        "speedup",
        "rel L2",
        "cosine",
        "top-1",
        "top-5",
    }
    lines.append("|" + "|".join("---:" if c in right else "---" for c in cols) + "|")
    for row in result.rows:
        cells = row_cells(result, row)
        cells["p90 ms"] = fmt(row.latency.p90_ms if row.latency else None, ".2f")
        cells["rel L2"] = fmt(row.parity.rel_l2 if row.parity else None, ".2e")
        cells["top-5"] = "-" if row.parity is None else f"{row.parity.top5_overlap:.1%}"
        cells["artifact"] = f"`{row.artifact_key}`"
        if cells["result"] != "pass":
            cells["result"] = f"**{cells['result']}**"
        lines.append("| " + " | ".join(_md_cell(cells[c]) for c in cols) + " |")
    lines.append("")
    for line in notes(result):
        lines.append(f"- {markdown_text(line)}")
    if result.floor:
        lines += ["", *floor_markdown(result.floor)]
    return "\n".join(lines) + "\n"


def floor_markdown(floor: dict[str, Any]) -> list[str]:
    """The floor section: measured ceilings, FLOPs per image, and each row's p50 against its floor."""
    ceil = floor["ceilings"]
    rates = ", ".join(f"{k.upper()} {v:.1f} {'TOPS' if k == 'int8' else 'TFLOP/s'}" for k, v in ceil["tflops"].items())
    host = f", host to device {ceil['host_copy_gb_s']:.0f} GB/s" if ceil.get("host_copy_gb_s") else ""
    flops = ", ".join(f"{size}: {v / 1e9:.2f} GFLOP" for size, v in floor["flops_per_image"].items())
    lines = [
        f"### Floor on {ceil['device_name']}",
        "",
        f"Measured ceilings: {rates}; copy {ceil['copy_gb_s']:.0f} GB/s{host} ({ceil['method']}).",
        f"FLOPs per image: {flops}; {floor['parameters'] / 1e6:.1f} M parameters.",
        "Floor = max(batch x FLOPs / rate at the row's precision, bytes moved / copy bandwidth), plus input "
        "and logits over the host-to-device bandwidth on rows with copies; x floor = p50 / floor "
        "(1.0 would be perfect). cuDNN may pick Winograd or FFT convolutions, which do fewer multiplies "
        "than counted, so a row can come a little under its FP32 floor.",
        "",
        "| row | precision | batch | size | copies | p50 ms | floor ms | bound | x floor | % of peak |",
        "|---|---|---:|---|---|---:|---:|---|---:|---:|",
    ]
    for f in floor["rows"]:
        x = f["x_floor"]
        lines.append(
            f"| {markdown_text(f['label'])} | {f['precision']} | {f['batch']} | {f['size'][0]}x{f['size'][1]} | "
            f"{'yes' if f['copies_included'] else 'no'} | {f['p50_ms']:.3f} | {fmt(f['floor_ms'], '.3f')} | "
            f"{f['bound']} | {fmt(x, '.1f')} | {'-' if not x else f'{100 / x:.1f}%'} |"
        )
    notes_ = sorted({f["note"] for f in floor["rows"] if f["note"]})
    lines += ["", *[f"- {n}" for n in notes_]] if notes_ else []
    return lines


#: a file name to suggest when a report option names a folder
_EXAMPLE_NAMES = {
    "--json": "report.json",
    "--markdown": "report.md",
    "--csv": "report.csv",
    "--plot": "latency.png",
    "--junit": "parity.xml",
}


def check_report_paths(paths: dict[str, Path | None]) -> None:
    """Before the run: every report can be written where asked (`{'--json': path, ...}`), so a typo does not
    cost the minutes of benchmarking before it. Only --json writes to stdout ('-'); two reports never share a
    file; the plot is a PNG and is named so."""

    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        path = Path(path)
        if str(path) == "-":
            if option != "--json":
                raise UsageError(f"{option} -: only --json writes to stdout", f"give {option} a file name")
            continue
        if option == "--plot" and path.suffix.lower() != ".png":
            raise UsageError(f"--plot {path}: the plot is written as a PNG", f"name it {path.with_suffix('.png').name}")
        if path.resolve() in seen:
            raise UsageError(f"{seen[path.resolve()]} and {option} both write {path}", "give each report its own file")
        seen[path.resolve()] = option
        check_output_file(option, path, _EXAMPLE_NAMES.get(option, "report"))


def write_reports(
    result: CompareResult,
    json_path: Path | None = None,
    markdown_path: Path | None = None,
    csv_path: Path | None = None,
    plot_path: Path | None = None,
) -> list[Path]:
    """Write the requested files (atomically); returns what was written."""
    written = []
    for option, path, render in (
        ("--json", json_path, to_json),
        ("--markdown", markdown_path, to_markdown),
        ("--csv", csv_path, to_csv),
        ("--plot", plot_path, None),
    ):
        if path is None:
            continue
        try:
            if render is None:
                plot(result, Path(path))
            else:
                atomic_write_text(Path(path), render(result))
        except OSError as exc:
            raise UsageError(f"cannot write {option} {path}: {exc.strerror or exc}", "pass a writable path") from None
        written.append(Path(path))
    return written
