"""ONNX Runtime CPU FP32 against PyTorch eager CPU FP32, both measured in one run.

resnet50 (seeded random weights: timing does not depend on the values), batch 1, 224x224, the same
thread count for both, through the package's runtimes and latency code (`resnet-bench compare`
measures the same way). Rounds alternate the two so drift hits both.

    python benchmarks/bench_ort_vs_torch_cpu.py [--model resnet50] [--batch 1] [--iters 60] [--rounds 3]

Writes benchmarks/results/ort_vs_torch_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=60, help="timed iterations per round and runtime")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ort_vs_torch_cpu.json")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from resnet_deploy.bench.latency import measure, summarize
    from resnet_deploy.devices import default_threads
    from resnet_deploy.export.onnx import export_onnx
    from resnet_deploy.models import load_model
    from resnet_deploy.parity import compare
    from resnet_deploy.runtimes import Artifact, create
    from resnet_deploy.shapes import ShapeRange

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    shape = (args.batch, 3, args.size, args.size)
    times: dict[str, list[float]] = {"torch-eager": [], "onnxruntime-cpu": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.model}.onnx"
        model, _ = load_model(args.model, "none")
        model.eval()
        export_onnx(model, path, ShapeRange.static(shape))
        runtimes = {
            "torch-eager": create(
                "torch-eager", Artifact("pytorch", None, "fp32", model=model), "cpu", threads=threads
            ),
            "onnxruntime-cpu": create("onnxruntime-cpu", Artifact("onnx", path, "fp32"), "cpu", threads=threads),
        }
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        parity = compare(runtimes["torch-eager"].run(x), runtimes["onnxruntime-cpu"].run(x))
        for r in range(args.rounds):
            order = list(runtimes) if r % 2 == 0 else list(reversed(runtimes))
            for name in order:
                stats = measure(runtimes[name], shape, warmup=5, iters=args.iters, seed=r, threads=threads)
                # keep per-round medians; the final numbers pool all iterations' medians below
                times[name].append(stats.p50_ms)
                print(f"  round {r + 1} {name:16s} p50 {stats.p50_ms:8.2f} ms  mean {stats.mean_ms:8.2f} ms")

    summary = {}
    for name, p50s in times.items():
        summary[name] = float(np.median(p50s))
    ratio = summary["torch-eager"] / summary["onnxruntime-cpu"]
    print(
        f"{args.model} batch {args.batch} {args.size}x{args.size}, {threads} threads, "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}"
    )
    print(f"  PyTorch eager CPU FP32     median p50 {summary['torch-eager']:8.2f} ms")
    print(f"  ONNX Runtime CPU FP32      median p50 {summary['onnxruntime-cpu']:8.2f} ms")
    print(f"  speedup ORT vs eager       {ratio:.2f}x   (parity rel L2 {parity.rel_l2:.1e})")
    _ = summarize  # same statistics code as resnet-bench compare
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": args.model,
                "shape": list(shape),
                "threads": threads,
                "iters_per_round": args.iters,
                "rounds": args.rounds,
                "torch": torch.__version__,
                "onnxruntime": ort.__version__,
                "machine": platform.processor() or platform.machine(),
                "torch_eager_p50_ms": summary["torch-eager"],
                "onnxruntime_cpu_p50_ms": summary["onnxruntime-cpu"],
                "speedup": ratio,
                "rel_l2": parity.rel_l2,
                "per_round_p50_ms": times,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
