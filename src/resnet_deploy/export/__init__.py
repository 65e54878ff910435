"""Stage: PyTorch -> TorchScript, torch.export (.pt2), ONNX, and FP32 ONNX -> FP16 ONNX.

Pure writers: a model (or an ONNX file) and a path in, the file written there and its record out. They know
no workspace and no pipeline; the pipeline decides what to build, verifies it and records it.

onnx.py         the dynamo exporter, one self-contained file with dynamic batch/height/width
torchscript.py  a trace under fixed cuDNN settings (IEEE FP32)
program.py      torch.export with symbolic sizes
fp16.py         FP16 weights and activations, float32 input and output kept
"""
