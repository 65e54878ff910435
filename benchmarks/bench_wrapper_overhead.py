"""Overhead of the runtime wrapper: `OnnxRuntime.run` vs `InferenceSession.run` on the same input.

resnet18 (seeded random weights: timing does not depend on the values), batch 1, 224x224, the same
ONNX file, two sessions with identical options (all graph optimizations, N intra-op threads, 1
inter-op). Calls alternate wrapper/direct so drift (thermal, other processes) hits both equally.
The wrapper must cost under 2%.

    python benchmarks/bench_wrapper_overhead.py [--iters 300] [--threads 2]

Writes benchmarks/results/wrapper_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LIMIT = 0.02


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "wrapper_overhead.json")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from resnet_deploy.bench.latency import random_inputs
    from resnet_deploy.devices import default_threads
    from resnet_deploy.export.onnx import export_onnx
    from resnet_deploy.models import load_model
    from resnet_deploy.runtimes import Artifact, create
    from resnet_deploy.shapes import ShapeRange

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    shape = (1, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18.onnx"
        model, _ = load_model("resnet18", "none")
        export_onnx(model.eval(), path, ShapeRange.static(shape))
        wrapper = create("onnxruntime-cpu", Artifact("onnx", path, "fp32"), "cpu", threads=threads)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name

        inputs = random_inputs(shape, buffers=4, seed=0)
        assert np.array_equal(wrapper.run(inputs[0]), session.run([out_name], {in_name: inputs[0]})[0])
        for i in range(args.warmup):
            wrapper.run(inputs[i % 4])
            session.run([out_name], {in_name: inputs[i % 4]})
        t_wrap, t_direct = [], []
        clock = time.perf_counter
        for i in range(args.iters):
            x = inputs[i % 4]
            first_wrapper = i % 2 == 0  # alternate the order too
            for use_wrapper in (first_wrapper, not first_wrapper):
                t0 = clock()
                if use_wrapper:
                    wrapper.run(x)
                else:
                    session.run([out_name], {in_name: x})
                (t_wrap if use_wrapper else t_direct).append(clock() - t0)

    med_w = float(np.median(t_wrap)) * 1e3
    med_d = float(np.median(t_direct)) * 1e3
    ratio = med_w / med_d
    # the wrapper's own work, timed alone: input checks + contiguity, no inference
    x = inputs[0]
    t0 = clock()
    n = 10000
    for _ in range(n):
        wrapper.check_input(x)
        np.ascontiguousarray(x, np.float32)
    own_us = (clock() - t0) / n * 1e6
    ok = ratio - 1 < LIMIT
    print(
        f"resnet18 batch 1 224x224, ONNX Runtime {ort.__version__} CPU, {threads} threads, {args.iters} iterations each"
    )
    print(f"  direct InferenceSession.run  median {med_d:8.3f} ms")
    print(f"  OnnxRuntime wrapper .run     median {med_w:8.3f} ms")
    print(
        f"  ratio wrapper/direct         {ratio:.4f}  (overhead {100 * (ratio - 1):+.2f}%, limit +{100 * LIMIT:.0f}%)"
    )
    print(f"  wrapper's own work per call  {own_us:.1f} us ({own_us / 1e3 / med_d:.3%} of a call)")
    print("PASS" if ok else "FAIL")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": "resnet18",
                "shape": list(shape),
                "threads": threads,
                "iters": args.iters,
                "onnxruntime": ort.__version__,
                "machine": platform.processor() or platform.machine(),
                "direct_median_ms": med_d,
                "wrapper_median_ms": med_w,
                "ratio": ratio,
                "wrapper_own_us": own_us,
                "limit": LIMIT,
                "passed": ok,
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
