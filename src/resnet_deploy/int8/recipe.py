"""The two INT8 recipes and the calibration methods, as plain data: what each target quantizes, and how.

`tensorrt` (default): what TensorRT's strongly typed builder needs. Symmetric int8 activations and
weights (zero point 0), weights per channel on axis 0, activations per tensor, float biases, Q/DQ on
the inputs of Conv but not on their outputs, and on each residual Add's identity input but not its
conv-branch input, so TensorRT fuses conv + bias + add + relu into one INT8 kernel.

`cpu`: what ONNX Runtime's x86 kernels run fastest: uint8 activations (asymmetric), int8 symmetric weights per
channel (U8S8), on Conv, Add, Relu, pooling and reshapes, after `quant_pre_process` (shape inference + graph
optimization), so ONNX Runtime fuses them into QLinearConv/QLinearAdd; the first conv's weights in 7 bits.

Both keep the classifier (fc) in float and correct every quantized layer's bias for its mean error
(`correct.py`). Measured on three trained resnet18s against ONNX Runtime's defaults and NNCF (README, "INT8
on the CPU"): these two choices took the `cpu` recipe from 0.97-0.99 top-1 agreement (min cosine down to 0.99)
to 0.99-1.00 (min cosine 0.9996), and the `tensorrt` recipe to 1.00, without costing speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resnet_deploy.errors import UsageError

#: Percentile (99.999th percentile of |x| per tensor, 2048-bin histograms) ignores the rare outliers
#: that stretch MinMax's int8 grid over one odd image, without clipping real signal the way ONNX
#: Runtime's Entropy (KL, 128 bins) did on the classifier's input: on the trained test model Entropy
#: kept top-1 but scaled the logits (rel L2 9% vs 0.9%). Numbers in the README,
#: "Why `percentile` is the default".
DEFAULT_METHOD = "percentile"
METHODS = ("entropy", "minmax", "percentile")
TARGETS = ("tensorrt", "cpu")
DEFAULT_TARGET = "tensorrt"


@dataclass(frozen=True)
class Recipe:
    target: str
    activation_type: str  # "QInt8" | "QUInt8"
    weight_type: str
    op_types: tuple[str, ...] | None  # None: every op ONNX Runtime can quantize
    pre_process: bool
    symmetric: bool
    extra_options: dict[str, Any] = field(default_factory=dict)
    float_classifier: bool = True  # the fc Gemm kept in float
    bias_correction: bool = True  # every quantized layer's bias shifted by its mean error (`correct.py`)
    narrow_first_conv: bool = False  # the image-input conv's weights in 7 bits (x86 without VNNI saturates)
    residual_placement: bool = False  # TensorRT's Q/DQ on each residual Add's identity input only

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "activations": self.activation_type,
            "weights": self.weight_type + " per-channel",
            "op_types": list(self.op_types) if self.op_types else "all",
            "pre_process": self.pre_process,
            "symmetric": self.symmetric,
            "float_classifier": self.float_classifier,
            "bias_correction": "isolated" if self.bias_correction else None,
            "narrow_first_conv": self.narrow_first_conv,
            "residual_placement": self.residual_placement,
        }

    def calibrated_ops(self) -> list[str]:
        """The op types whose tensors the calibrator collects ranges for."""
        if self.op_types:
            return list(self.op_types)
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry  # onnxruntime is an extra

        return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static uses by default


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
            residual_placement=True,
        )
    if target == "cpu":
        return Recipe(
            "cpu",
            "QUInt8",
            "QInt8",
            # Relu included: without it ONNX Runtime keeps a Q/DQ pair on both sides of every Relu (49 unfused
            # pairs on resnet50, 15% slower and less accurate); Gemm is the classifier, kept float by name
            ("Conv", "Gemm", "MaxPool", "GlobalAveragePool", "Add", "Relu", "Reshape", "Flatten"),
            pre_process=True,
            symmetric=False,
            extra_options={
                "WeightSymmetric": True,
                "ActivationSymmetric": False,
                "OpTypesToExcludeOutputQuantization": ["Gemm"],  # float logits
            },
            narrow_first_conv=True,
        )
    raise UsageError(f"unknown --target '{target}'", "choose tensorrt or cpu")


def check_method(method: str) -> str:
    method = method.lower()
    if method not in METHODS:
        raise UsageError(f"unknown --calib-method '{method}'", "choose entropy, minmax or percentile")
    return method


def ort_method(method: str) -> Any:
    """ONNX Runtime's CalibrationMethod for one of METHODS."""
    from onnxruntime.quantization import CalibrationMethod  # onnxruntime is an extra

    return {
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }[method]
