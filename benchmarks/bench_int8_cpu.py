"""CPU INT8 in one run: how faithful each recipe is (trained model) and how fast each file runs (resnet50).

Part 1, accuracy: the test suite's trained resnet18 (tests/trained.py: 11 classes, 64x64 crops of the bundled
photos, 48 calibration crops, 132 held-out crops never calibrated on), quantized five ways on the same images:
- the project's `tensorrt` and `cpu` recipes (`resnet-export onnx --int8`, through the pipeline);
- ONNX Runtime's `quantize_static` with its defaults (QDQ, QInt8 per tensor, MinMax);
- NNCF's post-training quantization, performance preset (OpenVINO's own recipe; an OpenVINO model);
- NVIDIA ModelOpt's ONNX PTQ (`modelopt.onnx.quantization.quantize`, int8, its default entropy calibration,
  float parts kept fp32, calibrated on ONNX Runtime's CPU EP), TensorRT's recommended recipe, if it imports.
Each runs on ONNX Runtime and OpenVINO (NNCF's on OpenVINO only) against PyTorch FP32 on the held-out crops:
top-1 agreement, mean and min cosine, and batch-1 p50.

Part 2, speed: resnet50 at 224x224 (seeded random weights: timing does not depend on the values; calibrated on
the 11 bundled photos), batch 1, FP32 on every CPU runtime (eager, TorchScript, ONNX Runtime, OpenVINO; and
OpenVINO's bf16, its default on CPUs with bf16 units, as a row of its own), INT8
from both recipes on ONNX Runtime and OpenVINO and NNCF's on OpenVINO. Rounds alternate the order so drift
hits all rows; each row's number is the median over rounds of each round's p50. It prints the two ratios the
README quotes: the fastest INT8 row against OpenVINO + NNCF, the fastest FP32 row against ONNX Runtime FP32.

    python benchmarks/bench_int8_cpu.py [--iters 30] [--rounds 3] [--threads 2] [--skip-resnet50]

ModelOpt is not a dependency (it pulls CUDA-only packages): install it beside the venv to include it, e.g.
`pip install --no-deps --target /tmp/modelopt nvidia-modelopt onnx-graphsurgeon onnxslim lief tqdm nvidia-ml-py`
and run with `PYTHONPATH=/tmp/modelopt`. Writes benchmarks/results/int8_cpu.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.trained: the trained model the test suite checks INT8 on

from resnet_deploy.artifact import Artifact  # noqa: E402
from resnet_deploy.bench.latency import measure  # noqa: E402
from resnet_deploy.int8.dataset import CalibrationRequest  # noqa: E402
from resnet_deploy.parity import compare  # noqa: E402
from resnet_deploy.pipeline import ModelOptions, Pipeline, ShapeRequest  # noqa: E402
from resnet_deploy.pipeline.default_set import default_images  # noqa: E402
from resnet_deploy.preprocess import Preprocess, load_folder  # noqa: E402
from resnet_deploy.provenance import cpu_flags, cpu_has_bf16, cpu_name  # noqa: E402
from resnet_deploy.runtimes import Runtime, create  # noqa: E402
from resnet_deploy.verify import reference_logits  # noqa: E402


def cpu_label() -> str:
    """The CPU's model name and the int8 instructions it has, which the results are only valid for."""
    isa = sorted({"avx512_vnni", "avx_vnni", "amx_int8"} & (cpu_flags() or frozenset()))
    return f"{cpu_name()} ({', '.join(isa) or 'no VNNI/AMX'})"


# -- the quantizers compared ----------------------------------------------------------------------------------


def ort_defaults(fp32: Path, out: Path, calib: np.ndarray) -> Path:
    """ONNX Runtime's `quantize_static` as its docs call it: every default (QDQ, QInt8, per tensor, MinMax)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    quantize_static(str(fp32), str(out), Reader())
    return out


def nncf_performance(fp32: Path, out: Path, calib: np.ndarray) -> Path:
    """NNCF PTQ of the FP32 ONNX read by OpenVINO, performance preset, on the same calibration images; an IR."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
    quantized = nncf.quantize(
        model, dataset, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calib), fast_bias_correction=True
    )
    ov.save_model(quantized, str(out.with_suffix(".xml")))
    return out.with_suffix(".xml")


def modelopt_int8(fp32: Path, out: Path, calib: np.ndarray) -> Path | None:
    """ModelOpt's ONNX INT8 PTQ for TensorRT, calibrated on the CPU; None when ModelOpt is not installed. In a
    child process: importing ModelOpt patches ONNX Runtime's calibrator, which the project's recipes then trip on."""
    if importlib.util.find_spec("modelopt") is None:
        return None
    np.save(out.with_suffix(".calib.npy"), calib)
    code = (
        "import sys, numpy as np; from modelopt.onnx.quantization import quantize; "
        "quantize(sys.argv[1], 'int8', calibration_data={'input': np.load(sys.argv[2])}, calibration_eps=['cpu'], "
        "high_precision_dtype='fp32', output_path=sys.argv[3], log_level='ERROR')"
    )
    subprocess.run([sys.executable, "-c", code, str(fp32), str(out.with_suffix(".calib.npy")), str(out)], check=True)
    return out


# -- running and judging --------------------------------------------------------------------------------------


def open_runtime(path: Path, runtime: str, threads: int, precision: str) -> Runtime:
    """A project runtime on the file: ONNX Runtime or OpenVINO (which also reads NNCF's .xml)."""
    return create(runtime, Artifact("onnx", path, precision), "cpu", threads=threads)


def run_all(runtime: Runtime, images: np.ndarray) -> np.ndarray:
    return np.concatenate([runtime.run(images[i : i + 1]) for i in range(len(images))])


def p50(runtime: Runtime, shape: tuple[int, int, int, int], iters: int, threads: int, seed: int) -> float:
    return measure(runtime, shape, warmup=5, iters=iters, seed=seed, threads=threads).p50_ms


def accuracy_part(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Part 1: each recipe's file on each runtime against PyTorch FP32 on the held-out crops."""
    from tests.trained import build

    trained = build()
    pipe = trained.pipeline(work / "trained")
    heldout = load_folder(trained.heldout_dir, trained.preprocess).tensors
    calib = load_folder(trained.calib_dir, trained.preprocess).tensors
    reference = reference_logits(pipe.model, heldout)
    fp32 = pipe.onnx().path
    files: dict[str, Path | None] = {
        "project tensorrt": pipe.int8(CalibrationRequest(trained.calib_dir, target="tensorrt")).path,
        "project cpu": pipe.int8(CalibrationRequest(trained.calib_dir, target="cpu")).path,
        "onnxruntime defaults": ort_defaults(fp32, work / "ort-defaults.onnx", calib),
        "nncf performance": nncf_performance(fp32, work / "nncf.onnx", calib),
        "modelopt int8": modelopt_int8(fp32, work / "modelopt.onnx", calib),
    }
    rows = []
    shape = (1, 3, trained.crop, trained.crop)
    for name, path in files.items():
        if path is None:
            print(f"  {name}: not installed, skipped", file=sys.stderr)
            continue
        for rt in ("openvino-cpu",) if path.suffix == ".xml" else ("onnxruntime-cpu", "openvino-cpu"):
            runtime = open_runtime(path, rt, args.threads, "int8")
            try:
                m = compare(reference, run_all(runtime, heldout))
                speed = float(np.median([p50(runtime, shape, args.iters, args.threads, s) for s in range(3)]))
            finally:
                runtime.close()
            rows.append({"recipe": name, "runtime": rt, "images": m.count, "top1_agreement": m.top1_agreement,
                         "cosine_mean": m.cosine, "cosine_min": m.min_cosine, "p50_ms_batch1": speed})  # fmt: skip
            print(f"  {name:22s} {rt:16s} top-1 {m.top1_agreement:.4f} cosine {m.cosine:.5f} "
                  f"(min {m.min_cosine:.4f}) p50 {speed:.2f} ms", file=sys.stderr)  # fmt: skip
    return rows


def resnet50_runtimes(args: argparse.Namespace, work: Path) -> dict[str, Callable[[], Runtime]]:
    """Part 2's rows: each a way to open a runtime (opened one at a time, so each has the cores to itself)."""
    pipe = Pipeline(
        ModelOptions("resnet50", "none"), work / "resnet50", shapes=ShapeRequest(True, *["1x3x224x224"] * 3)
    )
    images = default_images()
    fp32 = pipe.onnx()
    cpu = pipe.int8(CalibrationRequest(images, target="cpu"))
    trt = pipe.int8(CalibrationRequest(images, target="tensorrt"))
    photos = load_folder(images, Preprocess()).tensors
    nncf_xml = nncf_performance(fp32.path, work / "resnet50-nncf.onnx", photos)
    t = args.threads
    return {
        "FP32 torch-eager": lambda: create("torch-eager", Artifact.reference(pipe.model), "cpu", threads=t),
        "FP32 torchscript": lambda: create("torchscript", pipe.torchscript(), "cpu", threads=t),
        "FP32 onnxruntime": lambda: create("onnxruntime-cpu", fp32, "cpu", threads=t),
        "FP32 openvino": lambda: create("openvino-cpu", fp32, "cpu", threads=t),
        **(
            {"BF16 openvino (the FP32 file)": lambda: create("openvino-cpu", fp32, "cpu", threads=t, precision="bf16")}
            if cpu_has_bf16()
            else {}
        ),
        "INT8 cpu recipe, onnxruntime": lambda: create("onnxruntime-cpu", cpu, "cpu", threads=t),
        "INT8 cpu recipe, openvino": lambda: create("openvino-cpu", cpu, "cpu", threads=t),
        "INT8 tensorrt recipe, onnxruntime": lambda: create("onnxruntime-cpu", trt, "cpu", threads=t),
        "INT8 tensorrt recipe, openvino": lambda: create("openvino-cpu", trt, "cpu", threads=t),
        "INT8 nncf, openvino": lambda: open_runtime(nncf_xml, "openvino-cpu", t, "int8"),
    }


def speed_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Part 2: resnet50 batch-1 p50 of every row, rounds interleaved, and the two ratios."""
    rows = resnet50_runtimes(args, work)
    per_round: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(args.rounds):
        for name in list(rows) if r % 2 == 0 else list(reversed(rows)):
            runtime = rows[name]()
            try:
                per_round[name].append(p50(runtime, (1, 3, 224, 224), args.iters, args.threads, r))
            finally:
                runtime.close()
            print(f"  round {r + 1} {name:34s} p50 {per_round[name][-1]:8.2f} ms", file=sys.stderr)
    median = {name: float(np.median(v)) for name, v in per_round.items()}
    fp32_rows = {k: v for k, v in median.items() if k.startswith("FP32")}
    int8_rows = {k: v for k, v in median.items() if k.startswith("INT8") and "nncf" not in k}
    fastest_fp32, fastest_int8 = min(fp32_rows, key=fp32_rows.get), min(int8_rows, key=int8_rows.get)
    return {
        "p50_ms": median,
        "per_round_p50_ms": per_round,
        "speedup_vs_onnxruntime_fp32": {k: median["FP32 onnxruntime"] / v for k, v in median.items()},
        "fastest_fp32": {"row": fastest_fp32, "x_onnxruntime_fp32": median["FP32 onnxruntime"] / fp32_rows[fastest_fp32]},
        "fastest_int8": {"row": fastest_int8, "x_openvino_nncf": median["INT8 nncf, openvino"] / int8_rows[fastest_int8]},
    }  # fmt: skip


def print_tables(accuracy: list[dict[str, Any]], speed: dict[str, Any] | None) -> None:
    print("INT8 on the trained resnet18, 132 held-out crops, vs PyTorch FP32:")
    print(f"  {'recipe':22s} {'runtime':16s} {'top-1':>7s} {'cosine':>8s} {'min cos':>8s} {'p50 b1':>9s}")
    for r in accuracy:
        print(f"  {r['recipe']:22s} {r['runtime']:16s} {r['top1_agreement']:7.4f} {r['cosine_mean']:8.5f} "
              f"{r['cosine_min']:8.4f} {r['p50_ms_batch1']:7.2f}ms")  # fmt: skip
    if speed is None:
        return
    print("resnet50 224x224 batch 1 (median of rounds' p50):")
    for name, ms in speed["p50_ms"].items():
        print(f"  {name:34s} {ms:8.2f} ms  {speed['speedup_vs_onnxruntime_fp32'][name]:5.2f}x ONNX Runtime FP32")
    f32, i8 = speed["fastest_fp32"], speed["fastest_int8"]
    print(f"fastest FP32 row: {f32['row']}, {f32['x_onnxruntime_fp32']:.2f}x ONNX Runtime FP32")
    for name in (n for n in speed["p50_ms"] if n.startswith("BF16")):
        print(f"{name}: {speed['speedup_vs_onnxruntime_fp32'][name]:.2f}x ONNX Runtime FP32 (bf16, not FP32)")
    print(f"fastest INT8 row: {i8['row']}, {i8['x_openvino_nncf']:.2f}x OpenVINO + NNCF INT8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30, help="timed iterations per round and row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-resnet50", action="store_true", help="part 1 only")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8_cpu.json")
    args = parser.parse_args()

    import nncf
    import onnxruntime as ort
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        accuracy = accuracy_part(args, Path(tmp))
        speed = None if args.skip_resnet50 else speed_part(args, Path(tmp))
    print_tables(accuracy, speed)
    versions = {"onnxruntime": ort.__version__, "openvino": ov.__version__, "nncf": nncf.__version__}
    result = {"cpu": cpu_label(), "threads": args.threads, "iters_per_round": args.iters, "rounds": args.rounds,
              "versions": versions, "accuracy": accuracy, "resnet50_batch1": speed}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
