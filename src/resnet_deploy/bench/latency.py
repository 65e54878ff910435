"""Latency of one runtime at one input shape: warm-up, then timed iterations, then statistics.

How it is measured:
- Inputs are random normal batches (like normalized images, never zeros: some kernels shortcut zeros)
  and several buffers are rotated so no cache holds "the" input between iterations.
- Warm-up iterations run first and are not timed (lazy init, allocator growth, cuDNN autotuning).
- Host path (`Runtime.run`, numpy in and out): timed with `time.perf_counter`. The call returns host
  memory, so it is synchronous and, on a GPU, includes the host<->device copies.
- Device path (`Runtime.run_device`, CUDA tensors in and out): timed with CUDA events around the call,
  with a device-wide synchronize before the end event so work on any stream (ONNX Runtime's,
  TensorRT's) is included; copies are excluded. That synchronize's wake-up (some microseconds) is in
  every device-resident row alike, as it is in a server that waits for each batch.
- The CPU thread count is fixed by the caller (`threads`) and recorded with the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from resnet_deploy.devices import Device
from resnet_deploy.results import LatencyStats
from resnet_deploy.runtimes import Runtime

DEFAULT_BUFFERS = 4


def summarize(
    times_s: Sequence[float],
    batch: int,
    warmup: int = 0,
    copies_included: bool = True,
    timer: str = "perf_counter",
    threads: int | None = None,
) -> LatencyStats:
    """Statistics over per-iteration times in seconds (percentiles by linear interpolation)."""
    if len(times_s) == 0:
        raise ValueError("no timed iterations")
    ms = np.asarray(times_s, np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return LatencyStats(
        mean_ms=mean,
        std_ms=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        min_ms=float(ms.min()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(ms.max()),
        images_per_s=batch * 1e3 / float(p50) if p50 > 0 else math.inf,
        iterations=len(ms),
        warmup=warmup,
        batch=batch,
        copies_included=copies_included,
        timer=timer,
        threads=threads,
    )


def random_inputs(shape: tuple[int, ...], buffers: int = DEFAULT_BUFFERS, seed: int = 0) -> list[np.ndarray]:
    """`buffers` distinct standard-normal float32 batches (the scale of normalized images, no zeros)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(max(1, buffers)):
        x = rng.standard_normal(shape, dtype=np.float32)
        x[x == 0] = 1e-3  # "never zeros", even by chance
        out.append(x)
    return out


def measure(
    runtime: Runtime,
    shape: tuple[int, int, int, int],
    warmup: int = 10,
    iters: int = 50,
    device_resident: bool = False,
    buffers: int = DEFAULT_BUFFERS,
    seed: int = 0,
    threads: int | None = None,
    on_iteration: Callable[[], None] | None = None,
) -> LatencyStats:
    """Time `runtime` at `shape`. `device_resident=True` times `run_device` on CUDA tensors (no copies).

    `on_iteration` is called after every warm-up and timed iteration (progress bars).
    Shape errors surface from the first warm-up call, before anything is timed.
    """
    if iters < 1:
        raise ValueError("iters must be >= 1")
    host = random_inputs(shape, buffers, seed)
    cuda = Device.parse(runtime.device).is_cuda
    if device_resident and not cuda:
        raise ValueError("device-resident timing needs a CUDA runtime")
    if device_resident and type(runtime).run_device is Runtime.run_device:
        # the default goes through host memory: timing it as "copies excluded" would be a false label
        raise ValueError(f"{runtime.describe()} has no device-resident path (its run_device copies via the host)")
    tick = on_iteration or (lambda: None)

    if device_resident:
        dev = torch.device(runtime.device)
        inputs = [torch.from_numpy(x).to(dev) for x in host]
        # events record on the current device's stream: on cuda:1 they must be cuda:1's, not cuda:0's
        with torch.cuda.device(dev):
            for i in range(warmup):
                runtime.run_device(inputs[i % len(inputs)])
                tick()
            torch.cuda.synchronize(dev)
            times = []
            for i in range(iters):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                runtime.run_device(inputs[i % len(inputs)])
                runtime.synchronize()
                torch.cuda.synchronize(dev)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
                tick()
        return summarize(times, shape[0], warmup, False, "cuda-events", threads)

    for i in range(warmup):
        runtime.run(host[i % len(host)])
        tick()
    runtime.synchronize()
    times = []
    clock = time.perf_counter
    for i in range(iters):
        x = host[i % len(host)]
        t0 = clock()
        runtime.run(x)
        times.append(clock() - t0)
        tick()
    return summarize(times, shape[0], warmup, True, "perf_counter", threads)
