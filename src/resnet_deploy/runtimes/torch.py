"""PyTorch backends: eager (the reference), TorchScript and torch.export programs."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from resnet_deploy.errors import UsageError
from resnet_deploy.runtimes.base import Artifact, Runtime


class _TorchRuntime(Runtime):
    """Shared run/run_device for modules that take and return torch tensors."""

    module: Any
    dtype: Any
    channels_last: bool = False

    def _setup(self, device: str, threads: int | None) -> None:
        import torch

        self.device = "cpu" if device == "cpu" else (device if ":" in device else "cuda:0")
        self._torch_device = torch.device(self.device)
        if threads:
            torch.set_num_threads(threads)

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        self.check_input(batch)
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self._torch_device)
        return self.run_device(x).float().cpu().numpy()

    def run_device(self, batch: Any) -> Any:
        import torch

        self.check_input(batch)
        x = batch.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            try:
                out = self.module(x)
            except Exception as exc:
                raise UsageError(
                    f"{self.describe()} rejected input {tuple(batch.shape)}: {str(exc).splitlines()[0][:200]}",
                    "re-export with --dynamic to accept other shapes",
                ) from None
        return out.float()

    def synchronize(self) -> None:
        import torch

        if self.device != "cpu":
            torch.cuda.synchronize(self._torch_device)


class TorchEagerRuntime(_TorchRuntime):
    """The reference. FP16 and channels-last are GPU options (CPU FP16 convs are slow and not the point)."""

    name = "torch-eager"

    def __init__(
        self,
        artifact: Artifact,
        device: str = "cpu",
        precision: str = "fp32",
        channels_last: bool = False,
        threads: int | None = None,
        **_: Any,
    ) -> None:
        import copy

        import torch

        if artifact.model is None:
            raise UsageError("torch-eager needs the model itself, not a file")
        if precision not in ("fp32", "fp16"):
            raise UsageError(f"torch-eager runs fp32 or fp16, not {precision}")
        if (precision == "fp16" or channels_last) and device == "cpu":
            raise UsageError("torch-eager fp16/channels-last is offered on CUDA only", "pass --device cuda")
        self._setup(device, threads)
        self.artifact = artifact
        self.precision = precision
        self.channels_last = channels_last
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        module = artifact.model
        if precision == "fp16" or channels_last or device != "cpu":
            module = copy.deepcopy(module)
        module = module.to(self._torch_device, dtype=self.dtype).eval()
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
            self.name = "torch-eager-channels-last"
        elif precision == "fp16":
            self.name = "torch-eager-fp16"
        self.module = module


class _TorchFileRuntime(_TorchRuntime):
    """A module loaded from a file; subclasses say how to load it."""

    what = "file"

    def __init__(self, artifact: Artifact, device: str = "cpu", threads: int | None = None, **_: Any) -> None:
        import torch

        self._setup(device, threads)
        self.artifact = artifact
        self.precision = artifact.precision
        self.dtype = torch.float32
        try:
            self.module = self._load(str(artifact.path))
        except Exception as exc:
            raise UsageError(
                f"cannot load {self.what} file {artifact.label}: {str(exc).splitlines()[0][:160]}"
            ) from None

    def _load(self, path: str) -> Any:
        raise NotImplementedError


class TorchScriptRuntime(_TorchFileRuntime):
    name = "torchscript"
    what = "TorchScript"

    def _load(self, path: str) -> Any:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            return torch.jit.load(path, map_location=self._torch_device).eval()


class TorchExportRuntime(_TorchFileRuntime):
    name = "torch-export"
    what = "torch.export"

    def _load(self, path: str) -> Any:
        import torch

        module = torch.export.load(path).module()
        return module.to(self._torch_device) if self.device != "cpu" else module
