"""Stage: INT8 Q/DQ ONNX from an FP32 ONNX and a folder of real images.

recipe.py     the two recipes (tensorrt, cpu) and the calibration methods, as data
dataset.py    the calibration request (checked and scanned once) and the images it reads
calibrate.py  ONNX Runtime's calibrators over those images; the ranges, summarized
cache.py      the ranges, cached beside the model under everything they depend on
place_qdq.py  TensorRT's residual Q/DQ placement
qdq_check.py  TensorRT's explicit-quantization rules, checked node by node
quantize.py   the stage: FP32 ONNX + images -> INT8 ONNX + what calibration saw
"""
