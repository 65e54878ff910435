"""Why ONNX Runtime's CUDA FP32 rows drift at large batches: TF32, or cuDNN's choice of algorithm?

On an H200 (2026-11-30) resnet50's FP32 ONNX on the CUDA provider, `use_tf32` 0, matched PyTorch FP32 to
rel L2 under 5e-7 at batch 1..64 and 1.1e-4 at batch 256. This runs that file at the given batches under
several provider settings and prints each one's rel L2 against ONNX Runtime's CPU provider (itself within
5e-7 of PyTorch) and its median latency. Run it a second time with NVIDIA_TF32_OVERRIDE=0, which forbids TF32
in cuDNN and cuBLAS for the whole process: if the drift goes away only then, TF32 was used despite `use_tf32` 0.

What it measured there at batch 256 (benchmarks/results/nvidia-h200/run.log): exhaustive and heuristic search
1.13e-4 at 77 ms, the fixed default algorithm (implicit GEMM) 5.0e-7 at 104 ms, `use_tf32` 1 6.0e-4 at 45 ms.
So the drift is cuDNN choosing a faster FP32 algorithm, not TF32. The NVIDIA_TF32_OVERRIDE=0 run of that day
is void: its session ran on the CPU (rel L2 0, 1.75 s), which this script now refuses.

    python benchmarks/gpu/conv_algos.py /tmp/ws-resnet50/resnet50/resnet50.onnx --batch 64,256
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

#: (label, CUDA provider options): the runtime's own settings first, then one change at a time
SETTINGS = [
    ("exhaustive, use_tf32 0 (the runtime)", {"cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "0"}),
    ("heuristic, use_tf32 0", {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}),
    ("default algo, use_tf32 0", {"cudnn_conv_algo_search": "DEFAULT", "use_tf32": "0"}),
    ("exhaustive, use_tf32 1 (ORT's default)", {"cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "1"}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--batch", default="64,256")
    parser.add_argument("--images", type=Path, default=Path("calibration"))
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--only-first", action="store_true", help="only the runtime's own settings")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from resnet_deploy.parity import compare
    from resnet_deploy.preprocess import Preprocess, load_folder
    from resnet_deploy.runtimes.onnxruntime import open_session

    override = os.environ.get("NVIDIA_TF32_OVERRIDE", "unset")
    if not torch.cuda.is_available():
        print("conv_algos: no CUDA GPU here, nothing to measure")
        return 0
    images = load_folder(args.images, Preprocess()).tensors
    batches = [int(b) for b in args.batch.split(",")]
    inputs = {b: np.ascontiguousarray(np.resize(images, (b, *images.shape[1:]))) for b in batches}

    cpu = open_session(str(args.onnx), "CPUExecutionProvider", "cpu", None, args.onnx.name)
    name = cpu.get_inputs()[0].name
    reference = {b: cpu.run(None, {name: x})[0] for b, x in inputs.items()}
    del cpu

    print(
        f"conv_algos: {args.onnx.name}, {torch.cuda.get_device_name()}, onnxruntime {ort.__version__}, "
        f"NVIDIA_TF32_OVERRIDE={override}; rel L2 against ONNX Runtime CPU FP32, p50 with host copies"
    )
    for label, options in SETTINGS[:1] if args.only_first else SETTINGS:
        try:
            # open_session: CPU fallback refused (a CPU-run session voided one measurement), the rest as the runtime
            gpu = open_session(str(args.onnx), "CUDAExecutionProvider", "cuda:0", None, args.onnx.name, None, options)
        except Exception as exc:  # one setting that cannot run must not hide the others
            print(f"  {label:<40} no CUDA session: {str(exc).splitlines()[0][:200]}")
            continue
        cells = []
        for b, x in inputs.items():
            out = gpu.run(None, {name: x})[0]  # the first run at a shape searches the algorithms
            times = []
            for _ in range(args.iters):
                start = time.perf_counter()
                gpu.run(None, {name: x})
                times.append((time.perf_counter() - start) * 1e3)
            cells.append(f"b{b}: rel L2 {compare(reference[b], out).rel_l2:.2e}, p50 {statistics.median(times):.2f} ms")
        print(f"  {label:<40} " + " | ".join(cells))
        del gpu
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
