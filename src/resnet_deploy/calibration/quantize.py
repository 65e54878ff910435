"""INT8 Q/DQ ONNX from an FP32 ONNX and a folder of real images: two recipes, one calibration path.

`tensorrt` (default): what TensorRT's strongly typed builder needs. Symmetric int8 activations and
weights (zero point 0), weights per channel on axis 0, activations per tensor, float biases, Q/DQ on
the inputs of Conv and Gemm but not on their outputs, and on each residual Add's identity input but
not its conv-branch input, so TensorRT fuses conv + bias + add + relu into one INT8 kernel.

`cpu`: what ONNX Runtime's x86 kernels run fastest: uint8 activations (asymmetric), int8 weights per
channel (U8S8), every quantizable op, after `quant_pre_process` (shape inference + graph optimization).

Both calibrate the same way: ONNX Runtime's calibrator over the preprocessed images, fed in chunks
(memory stays flat for large sets) with a progress bar, ranges cached beside the model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy import console
from resnet_deploy.errors import UsageError, VerificationError
from resnet_deploy.preprocess import ImageSet

if TYPE_CHECKING:
    from resnet_deploy.pipeline import Pipeline
    from resnet_deploy.runtimes.base import Artifact

#: Percentile (99.999th percentile of |x| per tensor, 2048-bin histograms) ignores the rare outliers
#: that stretch MinMax's int8 grid over one odd image, without clipping real signal the way ONNX
#: Runtime's Entropy (KL, 128 bins) did on the classifier's input: on the trained test model Entropy
#: kept top-1 but scaled the logits (rel L2 9% vs 0.9%). Numbers in the README,
#: "Why `percentile` is the default".
DEFAULT_METHOD = "percentile"
METHODS = ("entropy", "minmax", "percentile")
TARGETS = ("tensorrt", "cpu")
#: images per calibrator pass: ONNX Runtime's calibrators keep every intermediate output of a pass.
CHUNK_IMAGES = 8
#: an INT8 model whose logits point elsewhere than FP32's (cosine below this, on the calibration
#: images themselves) is broken, not merely lossy; it is not kept.
MIN_COSINE = 0.9


@dataclass(frozen=True)
class Recipe:
    target: str
    activation_type: str  # "QInt8" | "QUInt8"
    weight_type: str
    op_types: tuple[str, ...] | None  # None: every op ONNX Runtime can quantize
    pre_process: bool
    symmetric: bool
    extra_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "activations": self.activation_type,
            "weights": self.weight_type + " per-channel",
            "op_types": list(self.op_types) if self.op_types else "all",
            "pre_process": self.pre_process,
            "symmetric": self.symmetric,
        }


def recipe(target: str) -> Recipe:
    if target == "tensorrt":
        return Recipe(
            "tensorrt",
            "QInt8",
            "QInt8",
            ("Conv", "Gemm"),
            pre_process=False,
            symmetric=True,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,  # float biases: TensorRT folds them into the fused kernel
                "OpTypesToExcludeOutputQuantization": ["Conv", "Gemm"],  # no Q/DQ between conv and add/relu
                "QDQKeepRemovableActivations": True,
                "DedicatedQDQPair": False,
            },
        )
    if target == "cpu":
        return Recipe("cpu", "QUInt8", "QInt8", None, pre_process=True, symmetric=False, extra_options={})
    raise UsageError(f"unknown --target '{target}'", "choose tensorrt or cpu")


def crop_outside_range(pipe: Pipeline) -> UsageError | None:
    """Calibration images are the preprocessing's square crops: a crop the exported range does not hold
    (a 64x64 static export, a 64..96 dynamic one, with the default crop 224) would calibrate and check the
    INT8 model at a size it was never exported or verified for. `onnx_int8` raises it before any export;
    compare's default set, where INT8 was not asked for by name, skips INT8 and says it."""
    from resnet_deploy.shapes import format_shape

    crop, rng = pipe.preprocess.crop, pipe.shape_range
    if rng.min[2] <= crop <= rng.max[2] and rng.min[3] <= crop <= rng.max[3]:
        return None
    span = format_shape(rng.opt) if not rng.dynamic else f"{format_shape(rng.min)} .. {format_shape(rng.max)}"
    return UsageError(
        f"INT8 calibrates on the preprocessing's {crop}x{crop} crops, but the model is exported for {span}",
        f"pass --crop (and --resize) inside that range, or export a range that holds {crop}x{crop}",
    )


def check_method(method: str) -> str:
    method = method.lower()
    if method not in METHODS:
        raise UsageError(f"unknown --calib-method '{method}'", "choose entropy, minmax or percentile")
    return method


def _ort_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }[method]


def _op_types(rec: Recipe) -> list[str]:
    if rec.op_types:
        return list(rec.op_types)
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static uses by default


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice through `logging` (root logger); keep the console ours."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(old)


def input_batch_size(model_path: Path, crop: int) -> tuple[str, int]:
    """The ONNX input's name and the batch size to calibrate with (its static batch, else 8)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inp = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) == 4:
        for axis in (2, 3):
            if dims[axis] is not None and dims[axis] != crop:
                raise UsageError(
                    f"{model_path.name} takes {dims[2]}x{dims[3]} images but preprocessing crops {crop}x{crop}",
                    f"pass --crop {dims[axis]} or re-export with --dynamic",
                )
    return inp.name, dims[0] if dims and dims[0] else 8


def calibrate(model_path: Path, images: ImageSet, method: str, rec: Recipe, crop: int) -> tuple[Any, float]:
    """Run ONNX Runtime's calibrator for `method` over `images`; returns (TensorsData, seconds)."""
    from onnxruntime.quantization.calibrate import create_calibrator

    from resnet_deploy.calibration.dataset import ImageReader

    input_name, batch = input_batch_size(model_path, crop)
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="calib-") as tmp,
        _quiet_ort(),
        contextlib.redirect_stdout(io.StringIO()),  # the histogram calibrators print() their progress
        console.progress() as bar,
    ):
        task = bar.add_task(f"calibrating ({method}, {len(images)} images)", total=len(images))
        calibrator = create_calibrator(
            Path(model_path),
            _op_types(rec),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_ort_method(method),
            providers=["CPUExecutionProvider"],
            extra_options={"symmetric": rec.symmetric},
        )
        reader = ImageReader(images.tensors, input_name, batch, lambda n: bar.advance(task, n))
        # one shape per pass: the histogram calibrators stack a pass's outputs into one array
        chunk_batches = CHUNK_IMAGES if batch == 1 else 1
        while reader.chunk(chunk_batches):
            calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
    return ranges, time.perf_counter() - start


def range_summary(ranges: Any) -> dict[str, Any]:
    """A few numbers that tell whether the ranges look sane (counts, typical and widest |range|)."""
    widths = {}
    for name, data in ranges.items():
        lo, hi = data.range_value
        widths[name] = (float(np.min(lo)), float(np.max(hi)))
    absmax = {k: max(abs(lo), abs(hi)) for k, (lo, hi) in widths.items()}
    widest = max(absmax, key=absmax.__getitem__) if absmax else None
    vals = np.array(list(absmax.values())) if absmax else np.zeros(1)
    return {
        "tensors": len(widths),
        "median_absmax": float(np.median(vals)),
        "max_absmax": float(vals.max()),
        "widest_tensor": widest,
        "zero_range_tensors": int((vals == 0).sum()),
    }


def _print_summary(images: ImageSet, method: str, seconds: float, summary: dict[str, Any], reused: bool) -> None:
    how = "reused cached ranges" if reused else f"calibrated in {seconds:.1f}s"
    console.info(
        f"  calibration: {len(images)} images, method {method}, {how}; {summary['tensors']} tensor ranges, "
        f"|max| median {summary['median_absmax']:.3g}, widest {summary['max_absmax']:.3g} ({summary['widest_tensor']})"
    )
    if summary["zero_range_tensors"]:
        console.warn(f"{summary['zero_range_tensors']} tensors never left 0 on the calibration images")


# -- TensorRT residual placement ---------------------------------------------------------------------


def place_residual_qdq(model: Any, ranges: Any) -> int:
    """Q/DQ on every residual Add's identity input, none on its conv-branch input. Returns edits made.

    ONNX Runtime's QDQ quantizer does not quantize Add, so the identity input arrives as float: it
    is pointed at the existing DQ of the same tensor (shared with the next convs), or given a new
    symmetric int8 Q/DQ pair from its calibrated range (a downsample conv's output).
    """
    from onnx import TensorProto, helper, numpy_helper

    from resnet_deploy.calibration.qdq_check import Graph, residual_adds

    graph = Graph(model)
    new_nodes: dict[str, list[Any]] = {}  # Add node name -> nodes to insert before it
    edits = 0
    for add, identity, branch in residual_adds(graph):
        name = add.name or add.output[0]
        x = add.input[identity]
        if graph.produced_by(x, "DequantizeLinear") is None:
            dq_out = None
            for q in graph.consumers.get(x, []):
                if q.op_type == "QuantizeLinear":
                    dqs = [c for c in graph.consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]
                    if dqs:
                        dq_out = dqs[0].output[0]
                        break
            if dq_out is None:
                if x not in ranges:
                    raise VerificationError(f"no calibrated range for residual input '{x}' of {name}")
                lo, hi = ranges[x].range_value
                absmax = float(max(abs(np.min(lo)), abs(np.max(hi))))
                scale = absmax / 127.0 if absmax > 0 else 1.0
                s_name, z_name = f"{x}_residual_scale", f"{x}_residual_zero_point"
                model.graph.initializer.extend(
                    [
                        numpy_helper.from_array(np.array(scale, np.float32), s_name),
                        helper.make_tensor(z_name, TensorProto.INT8, [], [0]),
                    ]
                )
                q_out, dq_out = f"{x}_residual_QuantizeLinear", f"{x}_residual_DequantizeLinear"
                new_nodes.setdefault(name, []).extend(
                    [
                        helper.make_node("QuantizeLinear", [x, s_name, z_name], [q_out], q_out),
                        helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], dq_out),
                    ]
                )
            add.input[identity] = dq_out
            edits += 1
        if graph.produced_by(add.input[branch], "DequantizeLinear") is not None:
            add.input[branch] = graph.through_qdq(add.input[branch])
            edits += 1
    if new_nodes:
        ordered = []
        for node in model.graph.node:
            ordered.extend(new_nodes.get(node.name, []))
            ordered.append(node)
        del model.graph.node[:]
        model.graph.node.extend(ordered)
    _drop_dead_qdq(model)
    return edits


def _drop_dead_qdq(model: Any) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads any more (after rewiring)."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [
            n
            for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in used
        ]
        if not dead:
            return
        for n in dead:
            model.graph.node.remove(n)


# -- the artifact ------------------------------------------------------------------------------------


def _run_batched(runtime: Any, tensors: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([runtime.run(tensors[i : i + batch]) for i in range(0, len(tensors), batch)])


def onnx_int8(
    pipe: Pipeline,
    calib_dir: Path,
    method: str = DEFAULT_METHOD,
    size: int | None = None,
    target: str = "tensorrt",
    opset: int | None = None,
    images: ImageSet | None = None,
) -> Artifact:
    """Calibrate on the images in `calib_dir` and write an INT8 Q/DQ ONNX (manifest key onnx-int8-TARGET).
    `images`: that folder already loaded by `load_calibration_set` (the default set calibrates two recipes on it).

    Reused while the FP32 ONNX, the calibration set (pixels after preprocessing), method and target
    are unchanged; a `tensorrt` model is checked against TensorRT's Q/DQ rules before it is kept.
    """
    import onnxruntime as ort

    from resnet_deploy.calibration.cache import CalibrationCache
    from resnet_deploy.calibration.dataset import load_calibration_set
    from resnet_deploy.export.verify import reference_logits
    from resnet_deploy.runtimes.base import create

    method = check_method(method)
    rec = recipe(target)
    outside = crop_outside_range(pipe)
    if outside:
        raise outside
    if images is None:  # first: bad images fail before any export
        images = load_calibration_set(Path(calib_dir), pipe.preprocess, size)
    fp32 = pipe.onnx(opset)
    fp32_sha = pipe.ws.sha256(fp32.path)
    calib_hash = images.fingerprint()
    key = f"onnx-int8-{target}"
    name = pipe.ws.name
    fingerprint = pipe.fingerprint(
        format="onnx",
        precision="int8",
        target=target,
        method=method,
        source_sha256=fp32_sha,
        calibration_sha256=calib_hash,
        onnxruntime=ort.__version__,
    )
    cache = CalibrationCache(
        pipe.ws.path(f"{name}.int8-{target}.calib.json"),
        {
            "onnx_sha256": fp32_sha,
            "calibration_sha256": calib_hash,
            "images": len(images),
            "preprocess": pipe.preprocess.to_dict(),
            "method": method,
            "target": target,
            "onnxruntime": ort.__version__,
        },
    )

    def write(tmp: Path) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with tempfile.TemporaryDirectory(prefix="int8-") as work:
            source = fp32.path
            if rec.pre_process:
                source = Path(work) / "pre.onnx"
                with _quiet_ort():
                    quant_pre_process(str(fp32.path), str(source))
            cached = cache.load()
            if cached is not None:
                ranges, seconds, reused = cached.ranges, float(cached.info.get("seconds", 0.0)), True
            else:
                ranges, seconds = calibrate(source, images, method, rec, pipe.preprocess.crop)
                reused = False
            summary = range_summary(ranges)
            if not reused:
                cache.save(ranges, {"seconds": round(seconds, 2), "summary": summary})
            _print_summary(images, method, seconds, summary, reused)
            ort_cache = Path(work) / "ranges.json"
            cache.write_ort_cache(ranges, ort_cache)
            with _quiet_ort():
                quantize_static(
                    str(source),
                    str(tmp),
                    None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(rec.op_types) if rec.op_types else None,
                    per_channel=True,
                    reduce_range=False,
                    activation_type=getattr(QuantType, rec.activation_type),
                    weight_type=getattr(QuantType, rec.weight_type),
                    calibrate_method=_ort_method(method),
                    extra_options=dict(rec.extra_options),
                    calibration_cache_path=str(ort_cache),
                )
        if rec.target == "tensorrt":
            model = onnx.load(str(tmp))
            place_residual_qdq(model, ranges)
            onnx.save(model, str(tmp))
        return {  # what calibration saw, in the record
            "calibration": {
                "folder": str(Path(calib_dir)),
                "sha256": calib_hash,
                "size": len(images),
                "skipped": [[p.as_posix(), reason] for p, reason in images.skipped],
                "method": method,
                "target": target,
                "recipe": rec.to_dict(),
                "seconds": round(seconds, 2),
                "cache": str(cache.path.name),
                "cache_reused": reused,
                "ranges": summary,
            }
        }

    def check(artifact: Any) -> dict[str, Any]:
        from resnet_deploy.benchmarks.parity import DEFAULT_TOLERANCES, check, compare
        from resnet_deploy.export.onnx import check_onnx

        check_onnx(artifact.path)
        details: dict[str, Any] = {}
        if rec.target == "tensorrt":
            from resnet_deploy.calibration.qdq_check import require_valid

            with console.step("check Q/DQ placement against TensorRT's rules"):
                require_valid(artifact.path, f"the {key} model")
            details["qdq_check"] = "passed"
        sample = images.tensors[: min(len(images), 64)]
        with console.step(f"compare {key} with PyTorch on {len(sample)} calibration images"):
            _, batch = input_batch_size(artifact.path, pipe.preprocess.crop)
            with create("onnxruntime-cpu", artifact, "cpu") as runtime:
                metrics = compare(reference_logits(pipe.model, sample), _run_batched(runtime, sample, batch))
        agree = round(metrics.top1_agreement * metrics.count)
        console.info(
            f"  INT8 vs FP32 on calibration images: top-1 agreement {metrics.top1_agreement:.1%} "
            f"({agree} of {metrics.count}), cosine {metrics.cosine:.4f} (min {metrics.min_cosine:.4f}), "
            f"rel L2 {metrics.rel_l2:.2e}"
        )
        # the ranges were fitted to these very images, so this catches a broken model, not bad calibration
        console.info(
            "  [dim](images the ranges were fitted to: judge held-out ones with "
            "resnet-bench compare --images DIR --gate)[/]"
        )
        misses = check(metrics, DEFAULT_TOLERANCES["int8"])
        if misses and metrics.cosine >= MIN_COSINE:  # kept (lossy, not broken), but the gate would fail it now
            console.warn(
                f"{key} misses the default INT8 parity bounds on its own calibration images "
                f"({'; '.join(map(str, misses))}): resnet-bench compare --gate will fail it on these images. "
                "More calibration images (--calib-size), another --calib-method, or INT8 bounds that fit the "
                "model (--tolerances) decide that"
            )
        if not metrics.cosine >= MIN_COSINE:
            raise VerificationError(
                f"{key} is broken, not just lossy: mean cosine {metrics.cosine:.3f} against PyTorch on the "
                f"calibration images (needs >= {MIN_COSINE})",
                "try --calib-method minmax, more calibration images, or report it",
            )
        details["verification"] = {
            "on": "calibration images",
            "count": metrics.count,
            "worst_rel_l2": metrics.rel_l2,
            "cosine": metrics.cosine,
            "min_cosine": metrics.min_cosine,
            "top1_agreement": metrics.top1_agreement,
        }
        return details

    return pipe.build(key, f"{name}.int8-{target}.onnx", "onnx", "int8", fingerprint, write, check)
