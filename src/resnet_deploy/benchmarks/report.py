"""Reports of a `CompareResult`: terminal table, JSON, CSV, Markdown and a PNG plot.

Every format carries every row; JSON and CSV carry every latency percentile and parity metric,
the table and Markdown the ones a reader scans for (p50, p99, images/s, speedup, cosine, top-1).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from resnet_deploy.benchmarks.latency import LatencyStats
from resnet_deploy.benchmarks.parity import ParityMetrics
from resnet_deploy.benchmarks.results import CompareResult, Row
from resnet_deploy.console import plural
from resnet_deploy.errors import UsageError
from resnet_deploy.files import atomic_path, atomic_write_text, check_output_file

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


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _cells(result: CompareResult, row: Row) -> dict[str, str]:
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
        "p50 ms": _f(lat.p50_ms if lat else None, ".2f"),
        "p99 ms": _f(lat.p99_ms if lat else None, ".2f"),
        "img/s": _f(lat.images_per_s if lat else None, ".1f"),
        "speedup": "-" if speed is None else f"{speed:.2f}x",
        "cosine": _f(par.cosine if par else None, ".6f"),
        "rel L2": _f(par.rel_l2 if par else None, ".1e"),
        "top-1": "-" if par is None else f"{par.top1_agreement:.1%}",
        "result": status(row),
    }


def _columns(result: CompareResult) -> list[str]:
    cols = ["artifact", "runtime", "precision", "device", "batch", "size"]
    if result.device.startswith("cuda"):
        cols.append("copies")
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
        f"latency: {result.warmup} warm-up + {result.iters} timed iterations on random inputs, "
        f"{result.threads} CPU threads; img/s = batch / p50; speedup = PyTorch eager p50 / p50"
        + ("" if any(r.runtime == "torch-eager" for r in result.rows) else " (no torch-eager row in --runtimes: -)"),
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


def _warning_lines(result: CompareResult) -> list[str]:
    return [f"warning: {w}" for w in result.warnings]


# -- terminal -------------------------------------------------------------------------------------


def print_table(result: CompareResult, console: Any = None) -> None:
    from rich.table import Table

    if console is None:
        from resnet_deploy.console import console as default_console

        console = default_console
    title = f"{result.model.get('architecture', 'model')} · {result.device} · {result.threads} threads"
    table = Table(title=title, title_justify="left", show_edge=False)
    cols = _columns(result)
    for col in cols:
        numeric = col in ("batch", "p50 ms", "p99 ms", "img/s", "speedup", "cosine", "rel L2", "top-1")
        table.add_column(col, justify="right" if numeric else "left", no_wrap=True)
    for row in result.rows:
        cells = _cells(result, row)
        style = {"pass": "green", "FAIL": "bold red", "ERROR": "red"}[cells["result"]]
        cells["result"] = f"[{style}]{cells['result']}[/]"
        table.add_row(*(cells[c] for c in cols))
    if not console.is_terminal and console.width < 200:
        # A CI log or a pipe: rich would squeeze the table into 80 columns; print it at full width.
        from rich.console import Console

        console = Console(file=console.file, width=200, highlight=False, color_system=None)
    console.print(table)
    for line in [*notes(result), *floor_lines(result), *_warning_lines(result)]:
        color = "yellow" if line.startswith("warning") else "red" if line.startswith(("error", "fail")) else "dim"
        console.print(f"[{color}]{line}[/]", soft_wrap=True)


# -- files ----------------------------------------------------------------------------------------


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
    lines = [
        f"## resnet-bench compare: {arch} ({weights})",
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
    if result.device.startswith("cuda"):
        lines += [
            "Copies: each runtime has two rows. `copies` yes = host arrays in and out, the host-device copies "
            "timed (wall clock); no = CUDA tensors in and out, timed with CUDA events, copies excluded.",
            "",
        ]
    for warning in result.warnings:
        lines += [f"> **Warning:** {markdown_text(warning)}", ""]
    cols = [c for c in _columns(result)]
    cols.insert(cols.index("p50 ms") + 1, "p90 ms")
    cols.insert(cols.index("top-1") + 1, "top-5")
    lines.append("| " + " | ".join(cols) + " |")
    right = {"batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "speedup", "rel L2", "cosine", "top-1", "top-5"}
    lines.append("|" + "|".join("---:" if c in right else "---" for c in cols) + "|")
    for row in result.rows:
        cells = _cells(result, row)
        cells["p90 ms"] = _f(row.latency.p90_ms if row.latency else None, ".2f")
        cells["rel L2"] = _f(row.parity.rel_l2 if row.parity else None, ".2e")
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
            f"{'yes' if f['copies_included'] else 'no'} | {f['p50_ms']:.3f} | {_f(f['floor_ms'], '.3f')} | "
            f"{f['bound']} | {_f(x, '.1f')} | {'-' if not x else f'{100 / x:.1f}%'} |"
        )
    notes_ = sorted({f["note"] for f in floor["rows"] if f["note"]})
    lines += ["", *[f"- {n}" for n in notes_]] if notes_ else []
    return lines


# -- plot -----------------------------------------------------------------------------------------


def plot(result: CompareResult, path: Path) -> None:
    """Two panels sharing the row labels: p50 latency (bar) with p90-p99 whiskers, and speedup vs eager.

    Green = parity passes, red = fails; rows that could not run are listed but have no bar.
    With several batch sizes, a bar per row would be unreadable: see `_plot_by_batch`.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = result.rows
    if len({r.batch for r in rows}) > 1:
        _plot_by_batch(result, Path(path), plt)
        return
    labels = []
    for r in rows:
        extra = "" if r.copies_included or not r.device.startswith("cuda") else ", no copies"
        labels.append(f"{r.artifact_key} · {r.runtime}\n{r.precision}, b{r.batch}, {size_text(r)}{extra}")
    n = max(1, len(rows))
    fig, (ax_lat, ax_speed) = plt.subplots(
        1, 2, figsize=(13, 1.2 + 0.62 * n), sharey=True, gridspec_kw={"width_ratios": [3, 2]}
    )
    ys = list(range(len(rows)))
    colors = ["#2e7d32" if r.passed else "#c62828" for r in rows]
    p50 = [r.latency.p50_ms if r.latency else 0.0 for r in rows]
    lo = [0.0 for _ in rows]
    hi = [(r.latency.p99_ms - r.latency.p50_ms) if r.latency else 0.0 for r in rows]
    ax_lat.barh(ys, p50, color=colors, alpha=0.85, xerr=[lo, hi], ecolor="#555", capsize=3)
    for y, r in zip(ys, rows, strict=True):
        text = "could not run" if r.latency is None else f"{r.latency.p50_ms:.2f} ms"
        ax_lat.text(p50[y] + hi[y], y, f"  {text}", va="center", fontsize=8)
    ax_lat.set_yticks(ys, labels, fontsize=8)
    ax_lat.invert_yaxis()
    ax_lat.set_xlabel("latency per batch, ms (bar: p50, whisker: p99)")
    ax_lat.set_title("Latency (lower is better)")
    ax_lat.margins(x=0.25)

    speeds = [result.speedup(r) or 0.0 for r in rows]
    ax_speed.barh(ys, speeds, color=colors, alpha=0.85)
    ax_speed.axvline(1.0, color="#333", lw=1, ls="--")
    for y, s in enumerate(speeds):
        ax_speed.text(s, y, f"  {s:.2f}x" if s else "  -", va="center", fontsize=8)
    ax_speed.set_xlabel("speedup vs PyTorch FP32 eager (same device, batch, size)")
    ax_speed.set_title("Speedup (higher is better)")
    ax_speed.margins(x=0.25)

    arch = result.model.get("architecture", "model")
    fig.suptitle(
        f"{arch} on {result.device}, {result.threads} threads · green: parity passes, red: fails",
        fontsize=11,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_by_batch(result: CompareResult, path: Path, plt: Any) -> None:
    """One line per artifact x runtime: p50 latency and images/s against batch size (log axes).

    On CUDA the device-resident rows are drawn (copies excluded: what the runtime itself does); a hollow
    marker means parity failed at that batch.
    """
    rows = [r for r in result.rows if r.latency is not None]
    if result.device.startswith("cuda") and any(not r.copies_included for r in rows):
        rows = [r for r in rows if not r.copies_included]
    sizes = sorted({r.size for r in rows})
    fig, axes = plt.subplots(len(sizes) or 1, 2, figsize=(16, 4.8 * max(1, len(sizes))), squeeze=False)
    for (ax_lat, ax_tput), size in zip(axes, sizes, strict=False):
        lines: dict[str, list[Row]] = {}
        for r in rows:
            if r.size == size:
                lines.setdefault(f"{r.artifact_key} · {r.runtime} ({r.precision})", []).append(r)
        if len(lines) > 10:
            for ax in (ax_lat, ax_tput):
                ax.set_prop_cycle(color=plt.cm.tab20.colors)
        for label, group in lines.items():
            group.sort(key=lambda r: r.batch)
            xs = [r.batch for r in group]
            for ax, ys in (
                (ax_lat, [r.latency.p50_ms for r in group]),  # type: ignore[union-attr]
                (ax_tput, [r.latency.images_per_s for r in group]),  # type: ignore[union-attr]
            ):
                ax.plot(xs, ys, marker="o", label=label)
                failed = [(x, y) for x, y, r in zip(xs, ys, group, strict=True) if not r.passed]
                if failed:
                    ax.scatter(*zip(*failed, strict=True), s=90, facecolors="none", edgecolors="#c62828", zorder=3)
        for ax, ylabel in ((ax_lat, "p50 latency per batch, ms"), (ax_tput, "images/s (batch / p50 latency)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sorted({r.batch for r in rows}))
            ax.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_locator(plt.matplotlib.ticker.NullLocator())
            # plain numbers on the log y axis ("40", not "4 x 10^1"), minor ticks labelled only when few
            ax.yaxis.set_major_formatter(plt.matplotlib.ticker.LogFormatter())
            ax.yaxis.set_minor_formatter(plt.matplotlib.ticker.LogFormatter(minor_thresholds=(2, 0.5)))
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        ax_lat.set_title(f"Latency at {size[0]}x{size[1]} (lower is better)")
        ax_tput.set_title(f"Throughput at {size[0]}x{size[1]} (higher is better)")
        ax_tput.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)  # off the data
    arch = result.model.get("architecture", "model")
    name = result.environment.get("device_name", result.device)
    copies = ", copies excluded" if result.device.startswith("cuda") else ""
    fig.suptitle(f"{arch} on {name}{copies} · red ring: parity failed", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


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
