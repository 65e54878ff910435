"""The floor: FLOPs counted on real models, ceilings measured on this machine, per-row arithmetic."""

from __future__ import annotations

import pytest

from resnet_deploy.bench.floor import Ceilings, floors, measure_ceilings, model_flops, row_floor
from resnet_deploy.bench.latency import summarize
from resnet_deploy.models import load_model


@pytest.fixture(scope="module")
def resnet18():
    return load_model("resnet18")[0]


def test_resnet18_flops_match_the_published_count(resnet18) -> None:
    # torchvision's model card: resnet18 1.81 GFLOPS, counted as multiply-adds; we count 2 per multiply-add
    flops = model_flops(resnet18, (224, 224))
    assert flops == pytest.approx(2 * 1.814e9, rel=0.01)
    # convolutions scale with the image area (a little more than 1/4 at half the side: at 112 the last
    # stage's feature map rounds up from 3.5 to 4 pixels)
    quarter = model_flops(resnet18, (112, 112))
    assert 0.25 < quarter / flops < 0.28


def test_resnet50_flops_match_the_published_count() -> None:
    model = load_model("resnet50")[0]
    assert model_flops(model, (224, 224)) == pytest.approx(2 * 4.09e9, rel=0.01)


def test_cpu_ceilings_are_measured_and_say_what_they_left_out() -> None:
    ceil = measure_ceilings("cpu", n=512, repeats=3)
    assert ceil.tflops["fp32"] > 0 and ceil.copy_gb_s > 0
    assert set(ceil.tflops) == {"fp32"}
    assert set(ceil.not_measured) == {"tf32", "bf16", "fp16", "int8"}
    assert ceil.device_name and "512x512x512" in ceil.method


class _Row:
    def __init__(self, precision: str, batch: int, p50_s: float, size=(224, 224), runtime="x", copies=False) -> None:
        self.precision, self.batch, self.size, self.copies_included = precision, batch, size, copies
        self.runtime = runtime
        self.label = f"x · {precision}"
        self.latency = summarize([p50_s] * 3, batch)


CEIL = Ceilings("cuda:0", "test GPU", {"fp32": 50.0, "fp16": 500.0}, copy_gb_s=4000.0, method="given")


def test_row_floor_math_bound_at_large_batch() -> None:
    flops, params = 8e9, 25_000_000
    f = row_floor(_Row("fp16", 256, 0.010), int(flops), params, 1000, CEIL)
    assert f.math_floor_ms == pytest.approx(256 * 8e9 / 500e12 * 1e3)  # 4.096 ms
    assert f.bound == "math" and f.floor_ms == f.math_floor_ms
    assert f.x_floor == pytest.approx(10.0 / 4.096)


def test_row_floor_memory_bound_at_batch_one() -> None:
    # batch 1 on a fast unit: reading 100 MB of FP32 weights takes longer than the arithmetic
    f = row_floor(_Row("fp32", 1, 0.001), int(8e9), 25_000_000, 1000, CEIL)
    moved = 25_000_000 * 4 + (3 * 224 * 224 + 1000) * 4
    assert f.memory_floor_ms == pytest.approx(moved / 4000e9 * 1e3)
    assert f.math_floor_ms == pytest.approx(8e9 / 50e12 * 1e3)
    assert f.floor_ms == max(f.memory_floor_ms, f.math_floor_ms)


def test_row_floor_without_a_rate_says_why() -> None:
    f = row_floor(_Row("int8", 8, 0.002), int(8e9), 25_000_000, 1000, CEIL)
    assert f.floor_ms is None and f.x_floor is None and "int8" in f.note


def test_int8_on_onnxruntime_cuda_is_held_to_the_fp32_rate_it_computes_at() -> None:
    ceil = Ceilings("cuda:0", "GPU", {"fp32": 50.0, "int8": 2000.0}, copy_gb_s=4000.0, method="given")
    ort = row_floor(_Row("int8", 256, 0.1, runtime="onnxruntime-cuda"), int(8e9), 25_000_000, 1000, ceil)
    engine = row_floor(_Row("int8", 256, 0.1, runtime="tensorrt"), int(8e9), 25_000_000, 1000, ceil)
    assert ort.math_floor_ms == pytest.approx(256 * 8e9 / 50e12 * 1e3) and "FP32" in ort.note
    assert engine.math_floor_ms == pytest.approx(256 * 8e9 / 2000e12 * 1e3) and engine.note == ""


def test_rows_with_copies_add_the_host_transfer_to_their_floor() -> None:
    ceil = Ceilings("cuda:0", "GPU", {"fp16": 500.0}, 4000.0, "given", host_copy_gb_s=20.0)
    resident = row_floor(_Row("fp16", 64, 0.01), int(8e9), 25_000_000, 1000, ceil)
    copied = row_floor(_Row("fp16", 64, 0.01, copies=True), int(8e9), 25_000_000, 1000, ceil)
    transfer_ms = 64 * (3 * 224 * 224 + 1000) * 4 / 20e9 * 1e3  # about 2 ms over 20 GB/s
    assert resident.host_copy_ms == 0 and copied.host_copy_ms == pytest.approx(transfer_ms)
    assert copied.floor_ms == pytest.approx(resident.floor_ms + transfer_ms)


def test_floors_counts_every_size_once(resnet18) -> None:
    rows = [_Row("fp32", 1, 0.05, (64, 64)), _Row("fp32", 4, 0.2, (64, 64)), _Row("fp32", 1, 0.05, (96, 80))]
    flops, per_row = floors(rows, resnet18, CEIL, 1000)
    assert set(flops) == {"64x64", "96x80"}
    assert [f.batch for f in per_row] == [1, 4, 1]
    assert per_row[1].math_floor_ms == pytest.approx(4 * per_row[0].math_floor_ms)


def test_memory_floor_reads_the_weights_at_the_rows_precision() -> None:
    # an INT8 engine reads 1 byte per weight, FP16 2, FP32 4: at batch 1 the weights dominate what moves
    io = (3 * 224 * 224 + 1000) * 4  # float32 input and logits at every precision
    ceil = Ceilings("cuda:0", "GPU", {"fp32": 50.0, "fp16": 500.0, "int8": 1000.0}, 4000.0, "given")
    for precision, width in (("fp32", 4), ("fp16", 2), ("int8", 1)):
        f = row_floor(_Row(precision, 1, 0.001, runtime="tensorrt"), int(8e9), 25_000_000, 1000, ceil)
        assert f.memory_floor_ms == pytest.approx((25_000_000 * width + io) / 4000e9 * 1e3), precision


def test_rows_under_their_floor_say_the_peak_was_understated() -> None:
    """A CPU peak measured while another process ran came out at half what the ONNX rows then reached: 'x floor'
    0.5 read as a bound would be nonsense, so it is said; a few percent under (Winograd) is not."""
    from resnet_deploy.bench.floor import beaten_warning

    flops, params = 8e9, 25_000_000
    at_floor = 256 * 8e9 / 500e12  # seconds: the fp16 math floor at batch 256
    near = row_floor(_Row("fp16", 256, at_floor * 0.95), int(flops), params, 1000, CEIL)
    assert beaten_warning([near], CEIL) is None
    under = row_floor(_Row("fp16", 256, at_floor * 0.5), int(flops), params, 1000, CEIL)
    said = beaten_warning([near, under], CEIL)
    assert said is not None and "1 row ran under its floor (x · fp16 fp16 b256 at 0.50x)" in said
    assert "test GPU" in said and "not as a bound" in said
