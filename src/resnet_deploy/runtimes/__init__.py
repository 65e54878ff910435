"""Runtimes: every backend behind one interface, `Runtime.run(np.ndarray) -> np.ndarray`.

base.py         the interface and its lifecycle (input checks, close, `with`), `run_batched`
registry.py     which backend takes which format on which device, whether it can here, `create`
torch.py        eager PyTorch (the reference), TorchScript and torch.export programs, and their loaders
onnxruntime.py  ONNX Runtime on exactly one execution provider (no silent CPU fallback)
tensorrt.py     TensorRT engines (10 and 11), torch or pycuda buffers
tensorrt_env.py is TensorRT usable here; engine build records and their compatibility with this machine

Runtimes know no stage: they run files, they do not make them.
"""

from resnet_deploy.artifact import Artifact
from resnet_deploy.runtimes.base import Runtime, run_batched
from resnet_deploy.runtimes.registry import RuntimeSpec, create, registry, runtimes_for, why_none

__all__ = ["Artifact", "Runtime", "RuntimeSpec", "create", "registry", "run_batched", "runtimes_for", "why_none"]
