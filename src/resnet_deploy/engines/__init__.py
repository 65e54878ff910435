"""TensorRT engines (TensorRT 10 and 11) from the FP32 / FP16 / INT8 (Q/DQ) ONNX models.

environment.py  is TensorRT usable here; the build record; engine/machine compatibility; sidecars
profile.py      the optimization profile (min/opt/max) an engine is built for
tensorrt_api.py the only calls into TensorRT's builder (strongly typed networks, no 11-removed flags)
build.py        engine_for_pipeline (a workspace's ONNX) and engine_from_onnx (any ONNX file)

`tensorrt` is imported lazily (environment.py reads its version, tensorrt_api.py and the runtime use it);
everything else runs, and is tested, on machines without TensorRT or a GPU.
"""

from resnet_deploy.engines.build import engine_for_pipeline, engine_from_onnx, source_onnx
from resnet_deploy.engines.environment import (
    INSTALL,
    MIN_VERSION,
    build_environment,
    build_record,
    check_compatible,
    compatibility,
    gpu_info,
    install_hint,
    missing_tensorrt_error,
    parse_version,
    read_sidecar,
    sidecar_path,
    tensorrt_unavailable_reason,
    write_sidecar,
)
from resnet_deploy.engines.profile import (
    AXES,
    PRECISIONS,
    check_fixed_axes,
    parse_bytes,
    precision_from_flags,
    profile_shapes,
)
from resnet_deploy.engines.tensorrt_api import build_engine, create_network, import_tensorrt, trt_logger, trt_major
from resnet_deploy.runtimes.base import device_index

__all__ = [
    "AXES",
    "INSTALL",
    "MIN_VERSION",
    "PRECISIONS",
    "build_engine",
    "build_environment",
    "build_record",
    "check_compatible",
    "check_fixed_axes",
    "compatibility",
    "create_network",
    "device_index",
    "engine_for_pipeline",
    "engine_from_onnx",
    "gpu_info",
    "import_tensorrt",
    "install_hint",
    "missing_tensorrt_error",
    "parse_bytes",
    "parse_version",
    "precision_from_flags",
    "profile_shapes",
    "read_sidecar",
    "sidecar_path",
    "source_onnx",
    "tensorrt_unavailable_reason",
    "trt_logger",
    "trt_major",
    "write_sidecar",
]
