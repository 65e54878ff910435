"""INT8 calibration: image folders as calibration data, Q/DQ recipes, the range cache, the Q/DQ checker.

from resnet_deploy.calibration.quantize import onnx_int8
from resnet_deploy.calibration.qdq_check import check_qdq
"""
