"""How fast could it possibly run here? The arithmetic and memory floors of each benchmark row.

A latency means little without the limit it is chasing. For a batch of N images:

- math floor   = N x FLOPs per image / the matrix-multiply rate measured on this device at the
                 precision the row computes in (IEEE FP32, TF32, FP16, INT8; see `EMULATED`), and
- memory floor = the fewest bytes the run must move (weights once, inputs and logits once) / the
                 measured device-to-device copy bandwidth.

The floor is the larger of the two, plus, for rows that include host-device copies, the input and
logits over the measured host-to-device bandwidth (the host path copies, runs and copies back in
turn). p50 / floor says how far a runtime is from it. Peak rates are measured, not taken from
datasheets (a large matrix product on random data, median of timed repeats), so the floor is one this
machine can actually reach. FLOPs are counted by torch's FlopCounterMode (2 per multiply-add of
convolutions and the classifier; BatchNorm, ReLU and adds are not counted, as in the usual "4.1 GMACs
for ResNet-50"). cuDNN may run 3x3 convolutions as Winograd, which multiplies less than counted, so a
row can come slightly under its floor.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from resnet_deploy.console import plural
from resnet_deploy.devices import Device
from resnet_deploy.errors import first_line
from resnet_deploy.provenance import cpu_name
from resnet_deploy.runtimes.torch import cuda_math

#: The matrix rate that bounds each precision's arithmetic.
RATE_FOR_PRECISION = {"fp32": "fp32", "tf32": "tf32", "bf16": "bf16", "fp16": "fp16", "int8": "int8"}
#: Bytes per weight the deployed model must read at each precision.
WEIGHT_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "int8": 1}  # bf16: converted when compiled
#: (runtime, precision) pairs whose arithmetic is another precision's, and why
EMULATED = {
    ("onnxruntime-cuda", "int8"): (
        "fp32",
        "ONNX Runtime's CUDA provider has no integer convolutions: it dequantizes and runs Q/DQ INT8 in FP32, "
        "so its floor is FP32's",
    ),
}
EMULATED[("onnxruntime-cuda-nhwc", "int8")] = EMULATED[("onnxruntime-cuda", "int8")]  # its NHWC rows: the same


@dataclass(frozen=True)
class Ceilings:
    """Measured peak rates of one device: TFLOP/s (TOPS for int8) per precision, and copy GB/s."""

    device: str
    device_name: str
    tflops: dict[str, float]
    copy_gb_s: float
    method: str
    not_measured: dict[str, str] = field(default_factory=dict)  # precision -> why
    host_copy_gb_s: float | None = None  # host (pageable) to device, as the copies-included rows copy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RowFloor:
    label: str
    precision: str
    batch: int
    size: tuple[int, int]
    copies_included: bool
    p50_ms: float
    math_floor_ms: float | None
    memory_floor_ms: float
    host_copy_ms: float  # input and logits over host-device bandwidth (rows with copies; else 0)
    floor_ms: float | None
    bound: str  # "math" | "memory" | "-"
    x_floor: float | None  # p50 / floor: 1.0 would be perfect
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_flops(model: Any, size: tuple[int, int]) -> int:
    """FLOPs of one image at `size` (H, W), counted on the CPU with torch's FlopCounterMode."""
    param = next(model.parameters())
    x = torch.randn(1, 3, size[0], size[1], dtype=param.dtype, device=param.device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.inference_mode():
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def parameter_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _median_seconds(fn: Callable[[], Any], repeats: int, cuda: Any | None, warmup: int = 3) -> float:
    """Median wall time of `fn`; on a GPU (`cuda` = its torch.device), CUDA events around each call,
    recorded on that device's stream (the current device's would time nothing on cuda:1)."""
    with torch.cuda.device(cuda) if cuda is not None else contextlib.nullcontext():
        for _ in range(warmup):
            fn()
        if cuda is not None:
            torch.cuda.synchronize(cuda)
        times = []
        for _ in range(repeats):
            if cuda is not None:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure_ceilings(device: str | Device = "cpu", n: int | None = None, repeats: int = 10) -> Ceilings:
    """Peak matrix rates and copy bandwidth of `device`, measured now (a few seconds on a GPU).

    On a GPU: n x n x n products (n = 8192) in IEEE FP32, TF32, FP16 and INT8 (torch._int_mm), and a
    2 GiB device-to-device copy counted as bytes read plus written. On the CPU: FP32 only (the rate
    of INT8 kernels depends on instructions a matmul here cannot speak for), with n = 2048.
    """
    device = Device.parse(device)
    cuda = device.is_cuda
    dev = torch.device(device.name)
    n = n or (8192 if cuda else 2048)
    gen = torch.Generator(device=dev).manual_seed(0)
    tflops: dict[str, float] = {}
    missing: dict[str, str] = {}

    def rate(dtype: Any, tf32: bool = False) -> float:
        a = torch.randn(n, n, device=dev, dtype=torch.float32, generator=gen).to(dtype)
        b = torch.randn(n, n, device=dev, dtype=torch.float32, generator=gen).to(dtype)
        if cuda:
            with cuda_math(tf32=tf32):
                seconds = _median_seconds(lambda: torch.mm(a, b), repeats, dev)
        else:
            seconds = _median_seconds(lambda: torch.mm(a, b), max(3, repeats // 2), None, warmup=1)
        return 2 * n**3 / seconds / 1e12

    tflops["fp32"] = rate(torch.float32)
    if cuda:
        tflops["tf32"] = rate(torch.float32, tf32=True)
        tflops["fp16"] = rate(torch.float16)
        try:
            a = torch.randint(-128, 128, (n, n), device=dev, dtype=torch.int8, generator=gen)
            b = torch.randint(-128, 128, (n, n), device=dev, dtype=torch.int8, generator=gen)
            tflops["int8"] = 2 * n**3 / _median_seconds(lambda: torch._int_mm(a, b), repeats, dev) / 1e12
        except (AttributeError, RuntimeError) as exc:
            missing["int8"] = f"torch._int_mm failed: {first_line(exc, 120)}"
        elements = (2 << 30) // 4
    else:
        missing.update({p: "not measured on the CPU" for p in ("tf32", "bf16", "fp16", "int8")})
        elements = (256 << 20) // 4
    src = torch.randn(elements, device=dev, generator=gen)
    dst = torch.empty_like(src)
    seconds = _median_seconds(lambda: dst.copy_(src), repeats, dev if cuda else None)
    copy_gb_s = 2 * src.numel() * src.element_size() / seconds / 1e9
    host_copy_gb_s = None
    if cuda:  # pageable host memory, as the runtimes' host path (numpy arrays) copies from
        host = torch.randn(elements // 8, generator=torch.Generator().manual_seed(0))
        seconds = _median_seconds(lambda: host.to(dev), repeats, dev)
        host_copy_gb_s = host.numel() * host.element_size() / seconds / 1e9
    name = torch.cuda.get_device_name(dev) if cuda else cpu_name()
    method = (
        f"median of {repeats} timed {n}x{n}x{n} matrix products per precision on random data "
        f"({'CUDA events' if cuda else 'perf_counter'}), copy of {src.numel() * 4 >> 20} MiB counted read + write"
        + (f", {src.numel() // 2 >> 20} MiB from pageable host memory to the device" if cuda else "")
    )
    return Ceilings(str(dev), name, tflops, copy_gb_s, method, missing, host_copy_gb_s)


def row_floor(
    row: Any,
    flops_per_image: int,
    params: int,
    num_classes: int,
    ceilings: Ceilings,
) -> RowFloor | None:
    """The floor of one benchmark row (a `results.Row` with latency), or None when it has no latency."""
    if row.latency is None:
        return None
    batch, (h, w) = row.batch, row.size
    key, note = EMULATED.get((row.runtime, row.precision), (RATE_FOR_PRECISION.get(row.precision, "fp32"), ""))
    tflops = ceilings.tflops.get(key)
    math_ms = batch * flops_per_image / (tflops * 1e12) * 1e3 if tflops else None
    io_bytes = batch * (3 * h * w + num_classes) * 4
    moved = params * WEIGHT_BYTES.get(row.precision, 4) + io_bytes
    memory_ms = moved / (ceilings.copy_gb_s * 1e9) * 1e3
    # the host path copies in, runs, copies out, one after another: the copies add to the floor
    host_ms = 0.0
    if row.copies_included and ceilings.host_copy_gb_s:
        host_ms = io_bytes / (ceilings.host_copy_gb_s * 1e9) * 1e3
    if not tflops:
        note = f"{key} rate {ceilings.not_measured.get(key, 'not measured')}"
    floor = max(math_ms, memory_ms) + host_ms if math_ms is not None else None
    bound = "-" if floor is None else ("math" if math_ms is not None and math_ms >= memory_ms else "memory")
    p50 = row.latency.p50_ms
    return RowFloor(
        label=row.label,
        precision=row.precision,
        batch=batch,
        size=(h, w),
        copies_included=row.copies_included,
        p50_ms=p50,
        math_floor_ms=math_ms,
        memory_floor_ms=memory_ms,
        host_copy_ms=host_ms,
        floor_ms=floor,
        bound=bound,
        x_floor=p50 / floor if floor else None,
        note=note,
    )


def floors(
    rows: Iterable[Any], model: Any, ceilings: Ceilings, num_classes: int
) -> tuple[dict[str, int], list[RowFloor]]:
    """FLOPs per image at every size the rows use, and each row's floor."""
    rows = list(rows)
    flops = {size: model_flops(model, size) for size in sorted({tuple(r.size) for r in rows})}
    params = parameter_count(model)
    out = []
    for row in rows:
        f = row_floor(row, flops[tuple(row.size)], params, num_classes, ceilings)
        if f is not None:
            out.append(f)
    return {f"{h}x{w}": v for (h, w), v in flops.items()}, out


#: x floor under this: not Winograd's few percent, the peak rate itself was understated
BEATEN = 0.9


def beaten_warning(per_row: Iterable[RowFloor], ceilings: Ceilings) -> str | None:
    """Rows well under their floor mean the measured peak is not this machine's: measured while something else
    ran, or a runtime's kernels outrun torch's matrix multiply on this CPU. Said, so that "x floor" is read as
    a comparison between rows and not as a bound."""
    beaten = sorted((f for f in per_row if f.x_floor is not None and f.x_floor < BEATEN), key=lambda f: f.x_floor or 0)
    if not beaten:
        return None
    best = beaten[0]
    return (
        f"--floor: {plural(len(beaten), 'row')} ran under {'its' if len(beaten) == 1 else 'their'} floor ({best.label} {best.precision} b{best.batch} at "
        f"{best.x_floor:.2f}x): the peak measured on {ceilings.device_name} understates it (another process was "
        "using the machine while it was measured, or a runtime's kernels are faster than the probe's matrix "
        "multiply), so read 'x floor' to compare rows, not as a bound"
    )
