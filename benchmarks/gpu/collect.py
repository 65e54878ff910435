"""Copy what a GPU run brought back into benchmarks/results/<gpu>/ and print the headline for the README.

    python benchmarks/gpu/collect.py FOLDER [FOLDER ...]   # the files_at folder of each device call

The folder is named from the GPU in compare-resnet50.json (e.g. nvidia-h100-80gb-hbm3). The headline is
the device-resident (copies excluded) p50 and images/s of each runtime at the smallest and largest batch,
with the speedup over eager FP32 and the distance from the floor, read from the JSON, never typed in.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def headline(report: dict) -> list[str]:
    resident = [r for r in report["rows"] if r["latency"] and not r["copies_included"]]
    rows = resident or [r for r in report["rows"] if r["latency"]]
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
            speed = f"{r['speedup']:.2f}x eager" if r.get("speedup") else "-"
            ok = "pass" if r["passed"] else "FAIL"
            out.append(
                f"    {label:44s} {r['precision']:5s} p50 {r['latency']['p50_ms']:8.3f} ms "
                f"{r['latency']['images_per_s']:10.0f} img/s  {speed:>11s}{x}  {ok}"
            )
    return out


def main(folders: list[str]) -> None:
    """Each device call brings its own folder back; the one with compare-resnet50.json names the GPU."""
    sources = [Path(f) for f in folders]
    found = [src / "compare-resnet50.json" for src in sources if (src / "compare-resnet50.json").is_file()]
    if not found:
        sys.exit("none of these folders holds compare-resnet50.json (the `compare` call's output)")
    report = json.loads(found[-1].read_text())
    dest = RESULTS / slug(report["environment"].get("device_name") or report["device"])
    dest.mkdir(parents=True, exist_ok=True)
    for src in sources:
        for path in sorted(src.iterdir()):
            if path.is_file():
                shutil.copy2(path, dest / path.name)
                print(f"copied {path.name} -> {dest.relative_to(RESULTS.parents[1])}/")
    print("\n".join(headline(report)))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/gpu/collect.py FOLDER [FOLDER ...]  (what each GPU call brought back)")
    main(sys.argv[1:])
