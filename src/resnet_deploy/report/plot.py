"""The comparison as a PNG: latency and speedup per row, or latency and throughput against batch size.

matplotlib is imported when a plot is asked for (it is slow to import and only --plot needs it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnet_deploy.files import atomic_path
from resnet_deploy.report.rows import size_text
from resnet_deploy.results import CompareResult, Row


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
        extra = "" if r.copies_included or not result.on_cuda else ", no copies"
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
    if result.on_cuda and any(not r.copies_included for r in rows):
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
    copies = ", copies excluded" if result.on_cuda else ""
    fig.suptitle(f"{arch} on {name}{copies} · red ring: parity failed", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
