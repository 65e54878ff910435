"""Stage: TensorRT engines (TensorRT 10 and 11) from FP32 / FP16 / INT8 (Q/DQ) ONNX files.

profile.py      the optimization profile (min/opt/max) an engine is built for, from flags and the ONNX's range
tensorrt_api.py the only calls into TensorRT's builder (strongly typed networks, no 11-removed flags)
build.py        the stage: ONNX path + profile -> engine file + build record

`tensorrt` is imported lazily; everything else runs, and is tested, on machines without TensorRT or a GPU.
Whether TensorRT is usable here, and engine/machine compatibility, is `runtimes/tensorrt_env.py`'s (the
runtime checks it before it loads an engine).
"""
