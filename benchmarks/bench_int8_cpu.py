"""ONNX Runtime CPU latency of FP32, INT8 `cpu` (U8S8) and INT8 `tensorrt` (S8S8 symmetric), one run.

resnet50 (seeded random weights: timing does not depend on the values; calibrated on the bundled
./calibration photos, never on random data), 224x224, batch 1 and 8, a fixed thread count, through
the package's pipeline (the same files `resnet-export onnx --int8` writes), runtimes and latency
code. Rounds alternate the order of the three models so drift hits all of them; the reported
number per model and batch is the median over rounds of each round's median (p50).

    python benchmarks/bench_int8_cpu.py [--model resnet50] [--iters 30] [--rounds 3] [--threads 2]

Writes benchmarks/results/int8_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--iters", type=int, default=30, help="timed iterations per round, model and batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=Path, default=REPO / "calibration")
    parser.add_argument("--workspace", type=Path, default=None, help="keep the models here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8_cpu.json")
    args = parser.parse_args()

    import onnxruntime as ort

    from resnet_deploy.bench.latency import measure
    from resnet_deploy.int8.dataset import CalibrationRequest
    from resnet_deploy.int8.recipe import DEFAULT_METHOD
    from resnet_deploy.pipeline import ModelOptions, Pipeline, ShapeRequest
    from resnet_deploy.runtimes import create

    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        workspace = args.workspace or Path(tmp)
        pipe = Pipeline(
            ModelOptions(args.model, "none"),
            workspace,
            shapes=ShapeRequest(True, "1x3x224x224", "1x3x224x224", f"{max(batches)}x3x224x224"),
        )
        artifacts = {
            "FP32": pipe.onnx(),
            "INT8 cpu": pipe.int8(CalibrationRequest(args.calib, target="cpu")),
            "INT8 tensorrt": pipe.int8(CalibrationRequest(args.calib, target="tensorrt")),
        }
        runtimes = {k: create("onnxruntime-cpu", a, "cpu", threads=args.threads) for k, a in artifacts.items()}
        p50s: dict[str, dict[int, list[float]]] = {k: {b: [] for b in batches} for k in runtimes}
        for r in range(args.rounds):
            order = list(runtimes) if r % 2 == 0 else list(reversed(runtimes))
            for b in batches:
                for name in order:
                    stats = measure(
                        runtimes[name], (b, 3, 224, 224), warmup=5, iters=args.iters, seed=r, threads=args.threads
                    )
                    p50s[name][b].append(stats.p50_ms)
                    print(f"  round {r + 1} batch {b} {name:14s} p50 {stats.p50_ms:8.2f} ms", file=sys.stderr)

    median = {k: {b: float(np.median(v)) for b, v in per.items()} for k, per in p50s.items()}
    print(
        f"{args.model} 224x224 on ONNX Runtime {ort.__version__} CPU, {args.threads} threads, "
        f"calibration: {args.calib.name}/ ({DEFAULT_METHOD}), median of {args.rounds} rounds x {args.iters} iterations"
    )
    print(f"  {'model':14s} " + "  ".join(f"{'batch ' + str(b):>22s}" for b in batches))
    for name, per in median.items():
        cells = [f"{per[b]:8.2f} ms ({median['FP32'][b] / per[b]:4.2f}x FP32)" for b in batches]
        print(f"  {name:14s} " + "  ".join(f"{c:>22s}" for c in cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": args.model,
                "size": 224,
                "batches": batches,
                "threads": args.threads,
                "iters_per_round": args.iters,
                "rounds": args.rounds,
                "onnxruntime": ort.__version__,
                "calibration_method": DEFAULT_METHOD,
                "machine": platform.processor() or platform.machine(),
                "p50_ms": {k: {str(b): v for b, v in per.items()} for k, per in median.items()},
                "speedup_vs_fp32": {
                    k: {str(b): median["FP32"][b] / v for b, v in per.items()} for k, per in median.items()
                },
                "per_round_p50_ms": {k: {str(b): v for b, v in per.items()} for k, per in p50s.items()},
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
