"""What each row of a comparison shows, in every report: its cells, its status, the notes under the table.

The terminal table and the Markdown report show the same cells, computed here once.
"""

from __future__ import annotations

from resnet_deploy.console import plural
from resnet_deploy.parity import ParityMetrics
from resnet_deploy.results import CompareResult, LatencyStats, Row

LATENCY_FIELDS = ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "images_per_s")
PARITY_FIELDS = ("max_abs", "mean_abs", "rel_l2", "cosine", "min_cosine", "top1_agreement", "top5_overlap", "count")
CSV_FIELDS = (
    "artifact_key",
    "artifact_path",
    "format",
    "runtime",
    "precision",
    "device",
    "batch",
    "height",
    "width",
    "copies_included",
    "concurrency",
    *LATENCY_FIELDS,
    "iterations",
    "warmup",
    "threads",
    "speedup",
    *PARITY_FIELDS,
    "passed",
    "violations",
    "error",
)


def status(row: Row) -> str:
    if row.error:
        return "ERROR"
    return "pass" if row.passed else "FAIL"


def size_text(row: Row) -> str:
    return f"{row.size[0]}x{row.size[1]}"


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def row_cells(result: CompareResult, row: Row) -> dict[str, str]:
    lat: LatencyStats | None = row.latency
    par: ParityMetrics | None = row.parity
    speed = result.speedup(row)
    return {
        "artifact": row.artifact_key,
        "runtime": row.runtime,
        "precision": row.precision,
        "device": row.device,
        "batch": str(row.batch),
        "size": size_text(row),
        "copies": "yes" if row.copies_included else "no",
        "concurrency": "-" if row.concurrency is None else str(row.concurrency),
        "p50 ms": fmt(lat.p50_ms if lat else None, ".2f"),
        "p99 ms": fmt(lat.p99_ms if lat else None, ".2f"),
        "img/s": fmt(lat.images_per_s if lat else None, ".1f"),
        "speedup": "-" if speed is None else f"{speed:.2f}x",
        "cosine": fmt(par.cosine if par else None, ".6f"),
        "rel L2": fmt(par.rel_l2 if par else None, ".1e"),
        "top-1": "-" if par is None else f"{par.top1_agreement:.1%}",
        "result": status(row),
    }


def columns(result: CompareResult) -> list[str]:
    cols = ["artifact", "runtime", "precision", "device", "batch", "size"]
    if result.on_cuda:
        cols.append("copies")
    if any(r.concurrency is not None for r in result.rows):
        cols.append("concurrency")
    return [*cols, "p50 ms", "p99 ms", "img/s", "speedup", "cosine", "rel L2", "top-1", "result"]


def notes(result: CompareResult) -> list[str]:
    """Lines under the table: what the numbers are, warnings, failures and their reasons."""
    out = [
        f"reference: PyTorch FP32 eager on the CPU, {plural(result.images, 'parity image')}"
        + (f" from {result.images_dir}" if result.images_dir else " (random inputs)")
        + f", preprocessed at {result.parity_size[0]}x{result.parity_size[1]}"
        + (
            " and resized to each row's size"
            if any(tuple(r.size) != tuple(result.parity_size) for r in result.rows)
            else ""
        )
        + f" (distinct reference classes: {result.reference_distinct_classes})",
        latency_note(result),
    ]
    for row in result.rows:
        if row.error:
            out.append(f"error: {row.label} b{row.batch} {size_text(row)}: {row.error}")
        elif row.violations:
            where = row.artifact_path or row.artifact_key
            out.append(
                f"fail: {row.label} b{row.batch} {size_text(row)} ({where}): "
                + "; ".join(str(v) for v in row.violations)
            )
    out += [f"skipped: {s}" for s in result.skipped]
    return out


def latency_note(result: CompareResult) -> str:
    """How the latency columns were measured: in-process iterations (compare), or a served model's load test."""
    served = result.served
    if served is not None:
        return (
            f"latency: {served['protocol']} requests to {served['model']} at {served['url']}, per concurrency level "
            f"at most {served['requests']} requests or {served['seconds']:g} s, after one warm-up request per "
            "worker; p50/p99 per request; img/s = images answered / wall time (throughput)"
        )
    return (
        f"latency: {result.warmup} warm-up + {result.iters} timed iterations on random inputs, "
        f"{result.threads} CPU threads; img/s = batch / p50; speedup = PyTorch eager p50 / p50"
        + ("" if any(r.runtime == "torch-eager" for r in result.rows) else " (no torch-eager row in --runtimes: -)")
    )


def floor_lines(result: CompareResult) -> list[str]:
    """Terminal summary of the floor: the ceilings and the row closest to its floor."""
    if not result.floor:
        return []
    ceil = result.floor["ceilings"]
    rates = ", ".join(f"{k} {v:.1f}" for k, v in ceil["tflops"].items())
    host = f", host to device {ceil['host_copy_gb_s']:.0f} GB/s" if ceil.get("host_copy_gb_s") else ""
    out = [f"floor: {ceil['device_name']} measured {rates} TFLOP/s, copy {ceil['copy_gb_s']:.0f} GB/s{host}"]
    ranked = sorted((f for f in result.floor["rows"] if f["x_floor"]), key=lambda f: f["x_floor"])
    if ranked:
        best = ranked[0]
        out.append(
            f"floor: closest is {best['label']} {best['precision']} b{best['batch']} at {best['x_floor']:.1f}x "
            f"its floor of {best['floor_ms']:.3f} ms ({best['bound']}-bound); all rows in the Markdown/JSON report"
        )
    return out


def warning_lines(result: CompareResult) -> list[str]:
    return [f"warning: {w}" for w in result.warnings]
