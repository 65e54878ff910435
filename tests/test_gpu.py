"""GPU paths on a real GPU: every CUDA runtime against the CPU reference, copies vs device-resident,
CUDA-event timing, the measured ceilings, and `resnet-bench compare --device cuda`.

Marked `gpu` (skipped without a CUDA GPU visible to torch), except the first two tests, which check on
any machine what the CUDA runtimes promise before they touch a GPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnet_deploy.errors import UsageError
from resnet_deploy.parity import DEFAULT_TOLERANCES, check, compare
from resnet_deploy.runtimes import create, registry


def test_cuda_math_sets_ieee_or_tf32_and_restores() -> None:
    import torch

    from resnet_deploy.runtimes.torch import cuda_math

    conv = torch.backends.cudnn.conv if hasattr(torch.backends.cudnn, "conv") else None
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip(f"torch {torch.__version__} has no fp32_precision API")
    before = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.benchmark)
    with cuda_math(tf32=False):
        assert conv.fp32_precision == "ieee" and torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.benchmark
    with cuda_math(tf32=True, benchmark=False):
        assert conv.fp32_precision == "tf32" and not torch.backends.cudnn.benchmark
    after = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.benchmark)
    assert after == before


@pytest.mark.parametrize("options", [{"precision": "tf32"}, {"precision": "fp16"}, {"channels_last": True}])
def test_gpu_only_eager_variants_are_refused_on_the_cpu(trained, options, tmp_path) -> None:
    with pytest.raises(UsageError, match="CUDA only"):
        create("torch-eager", trained.pipeline(tmp_path).reference(), "cpu", **options)


# -- on a GPU -------------------------------------------------------------------------------------

CUDA_CASES = [
    ("pytorch", "torch-eager", {}),
    ("pytorch", "torch-eager", {"precision": "tf32"}),
    ("pytorch", "torch-eager", {"precision": "fp16"}),
    ("pytorch", "torch-eager", {"precision": "fp16", "channels_last": True}),
    ("torchscript", "torchscript", {}),
    ("program", "torch-export", {}),
    ("onnx-fp32", "onnxruntime-cuda", {}),
    ("onnx-fp16", "onnxruntime-cuda", {}),
    ("onnx-int8-tensorrt", "onnxruntime-cuda", {}),  # Q/DQ on the CUDA provider, every node on the GPU
    # --cuda-graphs: parity on the replayed graph; ONNX Runtime's NHWC kernels
    ("pytorch", "torch-eager", {"cuda_graphs": True}),
    ("pytorch", "torch-eager", {"precision": "fp16", "channels_last": True, "cuda_graphs": True}),
    ("torchscript", "torchscript", {"cuda_graphs": True}),
    ("program", "torch-export", {"cuda_graphs": True}),
    ("onnx-fp32", "onnxruntime-cuda", {"prefer_nhwc": True}),
    ("onnx-fp16", "onnxruntime-cuda", {"prefer_nhwc": True}),
]


@pytest.fixture(scope="module")
def gpu_setup(trained, tmp_path_factory):
    """The trained model exported to every torch/ONNX format, the held-out crops, the CPU reference."""
    from resnet_deploy.int8.dataset import CalibrationRequest
    from resnet_deploy.preprocess import load_folder
    from resnet_deploy.verify import reference_logits

    ws = tmp_path_factory.mktemp("gpu-ws")
    pipe = trained.pipeline(ws)
    pipe.torchscript()
    pipe.onnx()
    pipe.program()
    pipe.fp16()
    pipe.int8(CalibrationRequest(trained.calib_dir, target="tensorrt"))
    images = load_folder(trained.heldout_dir, trained.preprocess).tensors
    return pipe, ws, images, reference_logits(pipe.model, images)


def _artifact(pipe, key: str):
    return pipe.reference() if key == "pytorch" else pipe.artifact(key)


def _runtime(pipe, key: str, name: str, options: dict):
    reason = registry()[name].unavailable_reason("cuda")
    if reason:
        pytest.skip(reason)
    return create(name, _artifact(pipe, key), "cuda", **options)


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.gpu
@pytest.mark.parametrize(("key", "name", "options"), CUDA_CASES, ids=lambda v: str(v) if v else "-")
def test_cuda_runtime_matches_the_cpu_reference(gpu_setup, key, name, options) -> None:
    import torch

    pipe, _, images, reference = gpu_setup
    runtime = _runtime(pipe, key, name, options)
    try:
        assert runtime.device.startswith("cuda")
        out = np.concatenate([runtime.run(images[i : i + 4]) for i in range(0, len(images) - 3, 4)])
        metrics = compare(reference[: len(out)], out)
        # the gate's bounds for the precision (top-1 >= 99% for FP32/FP16, 95% for INT8, whose CUDA kernels
        # round differently from the CPU's: one more flipped image of ~130 must not fail a passing model)
        assert check(metrics, DEFAULT_TOLERANCES[runtime.precision]) == [], (runtime.name, metrics)
        # device-resident (torch CUDA tensors in and out, IO binding for ONNX Runtime) gives the same logits
        x = torch.from_numpy(images[:4]).cuda()
        on_device = runtime.run_device(x)
        assert on_device.is_cuda and on_device.dtype == torch.float32
        assert _rel_l2(on_device.cpu().numpy(), runtime.run(images[:4])) < 1e-3
        # any float CUDA tensor in any memory order is converted, never bound by pointer as something else
        # (garbage would be rel L2 ~1; half-rounded inputs move INT8 logits by a quantization step at most)
        other = x.half().contiguous(memory_format=torch.channels_last)
        assert _rel_l2(runtime.run_device(other).cpu().numpy(), on_device.cpu().numpy()) < 0.1
        # a host tensor is brought to the runtime's GPU, and the logits are there too (torch runtimes raised
        # "rejected input ... re-export with --dynamic"; ONNX Runtime answered on the host)
        from_host = runtime.run_device(torch.from_numpy(images[:4]))
        assert from_host.device == on_device.device and _rel_l2(from_host.cpu().numpy(), on_device.cpu().numpy()) < 1e-3
    finally:
        runtime.close()


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("key", "name"), [("pytorch", "torch-eager"), ("torchscript", "torchscript"), ("onnx-fp32", "onnxruntime-cuda")]
)
def test_a_gpu_index_that_is_not_there_is_named_before_anything_loads(gpu_setup, key, name) -> None:
    import torch

    from resnet_deploy.errors import MissingDependencyError

    pipe = gpu_setup[0]
    reason = registry()[name].unavailable_reason("cuda")  # onnxruntime-cuda: needs onnxruntime-gpu
    if reason:
        pytest.skip(reason)
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(MissingDependencyError, match=f"{missing} is not here: torch sees"):
        create(name, _artifact(pipe, key), missing)


@pytest.mark.gpu
def test_fp32_on_cuda_is_ieee_and_tf32_is_really_tf32(gpu_setup) -> None:
    """An FP32 row must not silently run TF32 (cuDNN's default), and a TF32 row must really use it."""
    pipe, _, images, reference = gpu_setup
    errors = {}
    for precision in ("fp32", "tf32"):
        runtime = create("torch-eager", pipe.reference(), "cuda", precision=precision)
        try:
            errors[precision] = _rel_l2(runtime.run(images[:32]), reference[:32])
        finally:
            runtime.close()
    assert errors["fp32"] < DEFAULT_TOLERANCES["fp32"].max_rel_l2, errors  # cuDNN's FP32 algorithms round too
    assert errors["tf32"] > 3 * errors["fp32"], errors  # 10-bit mantissa operands: ~1e-3


@pytest.mark.gpu
def test_torchscript_traced_under_tf32_is_run_as_tf32_and_ours_is_ieee(gpu_setup, tmp_path) -> None:
    """A trace fixes cuDNN's TF32 flag in each convolution: ours must be IEEE on the GPU, a plain trace is not."""
    import torch

    from resnet_deploy.runtimes import Artifact

    pipe, _, images, reference = gpu_setup
    with torch.no_grad():  # PyTorch's defaults: TF32 allowed for convolutions
        torch.jit.trace(pipe.model, torch.from_numpy(images[:1]), check_trace=False).save(str(tmp_path / "p.ts"))
    errors = {}
    for label, artifact in (
        ("ours", pipe.artifact("torchscript")),
        ("plain", Artifact("torchscript", tmp_path / "p.ts", "fp32")),
    ):
        runtime = create("torchscript", artifact, "cuda")
        try:
            errors[label] = (runtime.precision, _rel_l2(runtime.run(images[:32]), reference[:32]))
        finally:
            runtime.close()
    assert errors["ours"][0] == "fp32" and errors["ours"][1] < DEFAULT_TOLERANCES["fp32"].max_rel_l2, errors
    assert errors["plain"][0] == "tf32" and errors["plain"][1] > 3 * errors["ours"][1], errors


@pytest.mark.gpu
def test_device_resident_timing_uses_cuda_events_and_excludes_copies(gpu_setup) -> None:
    from resnet_deploy.bench.latency import measure

    pipe, _, _, _ = gpu_setup
    runtime = create("torch-eager", pipe.reference(), "cuda")
    try:
        device = measure(runtime, (4, 3, 64, 64), warmup=3, iters=10, device_resident=True)
        host = measure(runtime, (4, 3, 64, 64), warmup=3, iters=10)
    finally:
        runtime.close()
    assert (device.timer, device.copies_included) == ("cuda-events", False)
    assert (host.timer, host.copies_included) == ("perf_counter", True)
    assert 0 < device.min_ms <= device.p50_ms <= device.max_ms
    assert device.iterations == host.iterations == 10


@pytest.mark.gpu
def test_cuda_ceilings_rank_as_the_hardware_does() -> None:
    from resnet_deploy.bench.floor import measure_ceilings

    ceil = measure_ceilings("cuda", n=4096, repeats=5)
    rates = ceil.tflops
    assert rates["tf32"] > 1.5 * rates["fp32"], rates  # tensor cores vs plain FP32 units
    assert rates["fp16"] > rates["tf32"], rates
    assert ceil.copy_gb_s > 200, ceil.copy_gb_s
    assert 1 < ceil.host_copy_gb_s < ceil.copy_gb_s, ceil.host_copy_gb_s  # PCIe/C2C, pageable
    assert ceil.device_name


@pytest.mark.gpu
def test_compare_on_cuda_runs_every_gpu_runtime_with_both_copy_modes(trained, gpu_setup, tmp_path) -> None:
    from typer.testing import CliRunner

    from resnet_deploy.cli.bench import app

    _, ws, _, _ = gpu_setup
    out = tmp_path / "r.json"
    args = [*trained.cli_args, "--workspace", ws, "--images", trained.heldout_dir, "--device", "cuda"]
    args += ["--batch", "1,4", "--iters", "5", "--warmup", "2", "--no-build", "--floor", "--json", out]
    result = CliRunner().invoke(app, ["compare", *[str(a) for a in args]])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert all(r["passed"] for r in rows), [
        (r["runtime"], r["violations"], r["error"]) for r in rows if not r["passed"]
    ]
    runtimes = {r["runtime"] for r in rows}
    assert {"torch-eager", "torch-eager-tf32", "torch-eager-fp16", "torch-eager-fp16-channels-last"} <= runtimes
    assert {"torchscript", "torch-export"} <= runtimes
    for name in runtimes:
        modes = {r["copies_included"] for r in rows if r["runtime"] == name}
        assert modes == {True, False}, name
    assert data["environment"]["device_name"] and data["environment"]["cuda"]
    floors = data["floor"]["rows"]
    assert len(floors) == len(rows)
    assert all(f["x_floor"] is None or f["x_floor"] > 0.8 for f in floors), floors
    for f in floors:  # Q/DQ on ONNX Runtime's CUDA provider computes in FP32 and is held to that rate
        if f["label"].endswith("onnxruntime-cuda") and f["precision"] == "int8":
            assert "FP32" in f["note"], f
        assert (f["host_copy_ms"] > 0) == f["copies_included"], f


@pytest.mark.gpu
@pytest.mark.parametrize("key", ["onnx-fp32", "program", "torchscript"])
def test_explain_reads_stages_on_the_gpu_in_ieee_fp32(gpu_setup, key) -> None:
    """--explain on a CUDA row: every stage read on the GPU, within FP32 rounding (TF32 would not be)."""
    from resnet_deploy.explain import STAGES, explain

    pipe, _, images, _ = gpu_setup
    name = "onnxruntime-cuda" if key.startswith("onnx") else "torch-export"
    if key.startswith("onnx") and registry()[name].unavailable_reason("cuda"):
        pytest.skip(registry()[name].unavailable_reason("cuda"))
    result = explain(pipe.artifact(key), pipe.model, images, runtime=name, device="cuda")
    assert "on cuda:0" in result.method, result.method
    assert [s.stage for s in result.stages] == list(STAGES), result.text()
    assert result.first is None, result.text()
    assert max(s.rel_l2 for s in result.stages) < DEFAULT_TOLERANCES["fp32"].max_rel_l2, result.text()
