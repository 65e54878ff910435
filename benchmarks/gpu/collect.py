"""Copy what a GPU run brought back into benchmarks/results/<gpu>/ and print the headline for the README.

    python benchmarks/gpu/collect.py FOLDER [FOLDER ...]   # the files_at folder of each device call

The folder is named from the GPU in compare-resnet50.json (e.g. nvidia-h100-80gb-hbm3). The headline is
the device-resident (copies excluded) p50 and images/s of each runtime at the smallest and largest batch,
with the speedup over eager IEEE FP32 (TF32 off) and the distance from the floor, read from the JSON, never typed in,
then where the best rows stand against the issue's anchors (MLPerf H100 offline, A100 single-stream,
Torch-TensorRT FP16 speedup).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def timed_rows(report: dict, passed_only: bool = False) -> tuple[list[dict], bool]:
    """The rows with a latency, device-resident ones where the run has any; and whether they are those."""
    rows = [r for r in report["rows"] if r["latency"] and (r["passed"] or not passed_only)]
    resident = [r for r in rows if not r["copies_included"]]
    return (resident, True) if resident else (rows, False)


def headline(report: dict) -> list[str]:
    rows, resident = timed_rows(report)
    mode = " (copies excluded)" if resident else ""
    floors = {(f["label"], f["batch"], f["copies_included"]): f for f in (report.get("floor") or {}).get("rows", [])}
    batches = sorted({r["batch"] for r in rows})
    out = [f"{report['environment'].get('device_name', report['device'])}, {report['model']['architecture']}:"]
    for batch in (batches[0], batches[-1]) if len(batches) > 1 else batches:
        out.append(f"  batch {batch}{mode}:")
        for r in sorted((r for r in rows if r["batch"] == batch), key=lambda r: r["latency"]["p50_ms"]):
            label = f"{r['artifact_key']} · {r['runtime']}"
            f = floors.get((label, batch, r["copies_included"]))
            x = f" {f['x_floor']:.1f}x floor" if f and f["x_floor"] else ""
            speed = f"{r['speedup']:.2f}x fp32" if r.get("speedup") else "-"
            ok = "pass" if r["passed"] else "FAIL"
            out.append(
                f"    {label:44s} {r['precision']:5s} p50 {r['latency']['p50_ms']:8.3f} ms "
                f"{r['latency']['images_per_s']:10.0f} img/s  {speed:>11s}{x}  {ok}"
            )
    return out


#: the issue's anchors: MLPerf Inference's best ResNet-50 on one H100 (offline, TensorRT INT8), A100
#: single-stream latency, and Torch-TensorRT's FP16 speedup over eager FP32 at batch 128
MLPERF_H100_OFFLINE_IMG_S = 92_000
MLPERF_A100_SINGLE_STREAM_MS = 0.46
TORCH_TENSORRT_FP16_SPEEDUP = 5.0


def anchors(report: dict) -> list[str]:
    """Where the best rows stand against the published figures (device-resident rows where there are any)."""
    if report["model"]["architecture"] != "resnet50":
        return []  # the published figures are ResNet-50's
    resident, _ = timed_rows(report, passed_only=True)
    if not resident:
        return []
    top = max(r["batch"] for r in resident)
    at_top = [r for r in resident if r["batch"] == top]
    best = max(at_top, key=lambda r: r["latency"]["images_per_s"])
    out = [
        f"anchors: best at batch {top}: {best['latency']['images_per_s']:.0f} img/s ({best['runtime']} "
        f"{best['precision']}) = {best['latency']['images_per_s'] / MLPERF_H100_OFFLINE_IMG_S:.0%} of MLPerf's "
        f"H100 offline {MLPERF_H100_OFFLINE_IMG_S} img/s (TensorRT INT8)"
    ]
    ones = [r for r in resident if r["batch"] == 1]
    if ones:
        fastest = min(ones, key=lambda r: r["latency"]["p50_ms"])
        out.append(
            f"  batch 1: {fastest['latency']['p50_ms']:.3f} ms p50 ({fastest['runtime']} {fastest['precision']}) "
            f"vs A100 single-stream {MLPERF_A100_SINGLE_STREAM_MS} ms"
        )
    fp16 = [r for r in at_top if r["precision"] == "fp16" and r.get("speedup")]
    if fp16:
        f = max(fp16, key=lambda r: r["speedup"])
        # Torch-TensorRT's baseline is PyTorch as it comes, which runs FP32 convolutions in TF32 on
        # Ampere and later; our speedup column divides IEEE FP32 eager. Quote both, so the anchor compares alike.
        stock = [r for r in at_top if r["precision"] == "tf32" and r["runtime"].startswith("torch-eager")]
        over_stock = (
            f"{stock[0]['latency']['p50_ms'] / f['latency']['p50_ms']:.1f}x over eager TF32 (PyTorch's default), "
            if stock
            else ""
        )
        out.append(
            f"  FP16 at batch {top} ({f['runtime']}): {over_stock}{f['speedup']:.1f}x over eager IEEE FP32; "
            f"Torch-TensorRT reports ~{TORCH_TENSORRT_FP16_SPEEDUP:.0f}x over PyTorch's default FP32 at batch 128"
        )
    return out


def device_name(sources: list[Path]) -> str | None:
    """The GPU's name: from a compare report (compare, then gate), else from env.txt's nvidia-smi line, so
    a call cut short before its reports were written still files its logs under the right folder."""
    for name in ("compare-resnet50.json", "gate-resnet18.json"):
        for src in sources:
            if (src / name).is_file():
                try:
                    report = json.loads((src / name).read_text())
                except ValueError:
                    continue
                return report.get("environment", {}).get("device_name") or report.get("device")
    for src in sources:
        lines = (src / "env.txt").read_text().splitlines() if (src / "env.txt").is_file() else []
        for header, values in itertools.pairwise(lines):
            if header.startswith("name, driver_version"):
                return values.split(",")[0].strip()
    return None


def main(folders: list[str]) -> None:
    """Each device call brings its own folder back; its reports (or else env.txt) name the GPU."""
    sources = [Path(f) for f in folders]
    missing = [str(src) for src in sources if not src.is_dir()]
    if missing:  # checked before anything is copied, so a typo leaves no half-filled results folder
        sys.exit(f"not a folder: {', '.join(missing)} (pass the files_at folder of each GPU call)")
    name = device_name(sources)
    if not name:
        sys.exit("no report and no env.txt names the GPU in these folders (pass the files_at folder of each GPU call)")
    dest = RESULTS / slug(name)
    dest.mkdir(parents=True, exist_ok=True)
    for src in sources:
        for path in sorted(src.iterdir()):
            if path.is_file():
                shutil.copy2(path, dest / path.name)
                print(f"copied {path.name} -> {dest.relative_to(RESULTS.parents[1])}/")
    found = [src / "compare-resnet50.json" for src in sources if (src / "compare-resnet50.json").is_file()]
    if not found:
        print("no compare-resnet50.json: the logs are filed, there is no headline to quote")
        return
    report = json.loads(found[-1].read_text())
    if report.get("partial"):
        print(f"PARTIAL: the call ended inside compare, after {len(report['rows'])} rows; say so where it is quoted")
    print("\n".join(headline(report) + anchors(report)))


if __name__ == "__main__":
    USAGE = "usage: python benchmarks/gpu/collect.py FOLDER [FOLDER ...]  (what each GPU call brought back)"
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(USAGE)
    elif len(sys.argv) < 2:
        sys.exit(USAGE)
    else:
        main(sys.argv[1:])
