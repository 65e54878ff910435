"""AOTInductor on the CPU against eager PyTorch, TorchScript and ONNX Runtime, all measured in one run.

resnet50 (seeded random weights: timing does not depend on the values) at 224x224, each batch asked for, the
same thread count for every runtime, through the package's runtimes and latency code (`resnet-bench compare`
measures the same way). Each artifact is exported static at the batch it is timed at (AOTInductor and ONNX
Runtime plan for exactly that shape). Rounds alternate the order of the runtimes so drift hits all of them;
the reported number is the median of the per-round p50s, and every ratio is eager's p50 over the runtime's
(above 1: faster than eager).

    python benchmarks/bench_aoti_cpu.py [--model resnet50] [--batch 1,8] [--iters 40] [--rounds 3]

Writes benchmarks/results/aoti_cpu.json (with the CPU's model name). The AOTInductor compiles
(about a minute each on two cores) are timed and reported too; Inductor's cache lives in a temp folder, so
they are cold compiles.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("torch-eager", "torchscript", "torch-aoti", "onnxruntime-cpu")


def build(model: Any, shape: tuple[int, int, int, int], folder: Path, threads: int) -> tuple[dict[str, Any], float]:
    """Every runtime at `shape` (static exports into `folder`); returns them and the AOTInductor compile seconds."""
    from resnet_deploy.export.aoti import export_aoti
    from resnet_deploy.export.onnx import export_onnx
    from resnet_deploy.export.torchscript import export_torchscript
    from resnet_deploy.runtimes import Artifact, create
    from resnet_deploy.shapes import ShapeRange

    rng = ShapeRange.static(shape)
    stem = folder / f"b{shape[0]}"
    export_torchscript(model, stem.with_suffix(".ts"), rng)
    export_onnx(model, stem.with_suffix(".onnx"), rng)
    record = export_aoti(model, stem.with_suffix(".pt2"), rng, "cpu", cache_dir=folder / "inductor-cache")
    artifacts = {
        "torch-eager": Artifact("pytorch", None, "fp32", model=model),
        "torchscript": Artifact("torchscript", stem.with_suffix(".ts")),
        "torch-aoti": Artifact("aoti", stem.with_suffix(".pt2"), input_range=rng),
        "onnxruntime-cpu": Artifact("onnx", stem.with_suffix(".onnx")),
    }
    runtimes = {name: create(name, artifacts[name], "cpu", threads=threads) for name in RUNTIMES}
    return runtimes, record["aoti"]["compile_seconds"]


def time_rounds(runtimes: dict[str, Any], shape: tuple[int, ...], iters: int, rounds: int, threads: int) -> dict:
    """Per-round p50 (ms) of each runtime, the order reversed every other round."""
    from resnet_deploy.bench.latency import measure

    p50s: dict[str, list[float]] = {name: [] for name in runtimes}
    for r in range(rounds):
        order = list(runtimes) if r % 2 == 0 else list(reversed(runtimes))
        for name in order:
            stats = measure(runtimes[name], shape, warmup=5, iters=iters, seed=r, threads=threads)
            p50s[name].append(stats.p50_ms)
            print(f"  batch {shape[0]} round {r + 1} {name:16s} p50 {stats.p50_ms:8.2f} ms", flush=True)
    return p50s


def run_batch(model: Any, batch: int, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """One batch size: build, check parity against eager, time; the summary for the JSON."""
    from resnet_deploy.parity import compare

    shape = (batch, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        runtimes, compile_s = build(model, shape, Path(tmp), threads)
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        eager = runtimes["torch-eager"].run(x)
        rel_l2 = {name: compare(eager, rt.run(x)).rel_l2 for name, rt in runtimes.items() if name != "torch-eager"}
        p50s = time_rounds(runtimes, shape, args.iters, args.rounds, threads)
        for runtime in runtimes.values():
            runtime.close()
    median = {name: float(np.median(v)) for name, v in p50s.items()}
    ratios = {name: median["torch-eager"] / median[name] for name in median}
    for name in RUNTIMES:
        print(f"  batch {batch}: {name:16s} median p50 {median[name]:8.2f} ms  {ratios[name]:.2f}x eager")
    return {
        "batch": batch,
        "median_p50_ms": median,
        "ratio_vs_eager": ratios,
        "rel_l2_vs_eager": rel_l2,
        "aoti_compile_seconds": compile_s,
        "per_round_p50_ms": p50s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=40, help="timed iterations per round and runtime")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "aoti_cpu.json")
    args = parser.parse_args()

    import torch

    from resnet_deploy.devices import default_threads
    from resnet_deploy.models import load_model
    from resnet_deploy.provenance import cpu_name, tool_versions

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    model = load_model(args.model, "none")[0].eval()
    batches = [run_batch(model, int(b), args, threads) for b in args.batch.split(",")]
    report = {
        "model": args.model,
        "size": [args.size, args.size],
        "threads": threads,
        "iters_per_round": args.iters,
        "rounds": args.rounds,
        "cpu": cpu_name(),
        "tools": tool_versions(),
        "statistic": "median over rounds of each round's p50; ratio = eager p50 / runtime p50 (above 1: faster)",
        "batches": batches,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
