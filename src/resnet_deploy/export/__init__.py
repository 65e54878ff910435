"""Stage 1: PyTorch -> TorchScript, torch.export (.pt2), ONNX (FP32/FP16/INT8), TensorRT engines."""
