"""The pipeline: the one orchestrator of the stages (export/, int8/, engines/) and their verification.

options.py      what identifies the model and the shapes asked for (the options every command shares)
opening.py      the model opened into its workspace: remembered weights, the preprocessing chosen
step.py         one artifact to build, as data
core.py         `Pipeline`: fingerprints, freshness, build once (temp file, verify, move, record), reading back
int8.py         the INT8 artifact: calibration cache, recipe, Q/DQ and parity checks
engines.py      TensorRT engines, from the workspace's ONNX or from any ONNX file
default_set.py  what `resnet-bench compare` builds for a device
"""

from resnet_deploy.pipeline.core import Pipeline
from resnet_deploy.pipeline.options import DEFAULT_MODEL, DEFAULT_WORKSPACE, ModelOptions, ShapeRequest

__all__ = ["DEFAULT_MODEL", "DEFAULT_WORKSPACE", "ModelOptions", "Pipeline", "ShapeRequest"]
