"""A TensorRT engine behind the common runtime interface (TensorRT 10 and 11, name-based I/O).

Before deserializing, the engine's build record (manifest entry, else `<engine>.json`) is compared
with this machine: an engine built for another TensorRT version or GPU architecture is refused with
a plain sentence instead of TensorRT's own error. Inputs are checked against the engine's profile.

Device memory: torch CUDA tensors by default (`data_ptr()` bound with `set_tensor_address`), so
`run_device` times no copies. Where torch has no CUDA (a torch-free deployment), pycuda buffers sized
for the profile's largest shape are used.

Streams: TensorRT enqueued on the legacy default stream adds a synchronization to every call (it warns
so), which would be timed. So the engine runs on a stream of its own, ordered after the caller's
current stream and before whatever the caller does next (`wait_stream` both ways, `record_stream` so
the allocator keeps the tensors alive until the engine is done with them).
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any

import numpy as np

from resnet_deploy.artifact import Artifact
from resnet_deploy.devices import Device
from resnet_deploy.errors import MissingDependencyError, UsageError, VerificationError, first_line
from resnet_deploy.runtimes.base import Runtime
from resnet_deploy.runtimes.tensorrt_env import (
    build_environment,
    build_record,
    check_compatible,
    import_tensorrt,
    trt_logger,
)
from resnet_deploy.shapes import ShapeRange, format_shape

#: TensorRT DataType member name -> numpy dtype name (looked up by name: enum values moved in 11)
_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "INT8": "int8", "BOOL": "bool"}


def _numpy_dtype(trt: Any, dtype: Any) -> np.dtype:
    for member, np_name in _DTYPES.items():
        if getattr(trt.DataType, member, None) == dtype:
            return np.dtype(np_name)
    raise UsageError(f"the engine uses tensor type {dtype}, which this runtime does not bind")


def _torch_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


class TensorRTRuntime(Runtime):
    def __init__(
        self,
        artifact: Artifact,
        device: str = "cuda:0",
        name: str = "tensorrt",
        buffers: str = "auto",
        threads: int | None = None,  # CPU threads, which every runtime takes: an engine has none to set
        **_: Any,
    ) -> None:
        if artifact.path is None:
            raise UsageError("the TensorRT runtime needs an engine file")
        self.name = name
        self.artifact = artifact
        self.device = Device.parse(device).indexed
        if not self.device.is_cuda:
            raise UsageError(f"TensorRT engines run on a CUDA GPU, not on {device}", "use --device cuda")
        self.index = self.device.index
        self.buffers = ("torch" if _torch_cuda() else "pycuda") if buffers == "auto" else buffers
        trt = import_tensorrt()
        self._trt = trt

        record = build_record(artifact.path, artifact.entry)
        check_compatible(record, build_environment(self.index), artifact.label)
        self.precision = record.get("precision") or artifact.precision
        if record.get("profile") and artifact.input_range is None:
            artifact.input_range = ShapeRange.from_dict(record["profile"])
        self.input_range = artifact.input_range

        if self.buffers not in ("torch", "pycuda"):
            raise UsageError(f"unknown buffer kind '{buffers}'", "use torch or pycuda")
        self._pctx: Any = None
        self._stream: Any = None  # pycuda's
        self._torch_stream: Any = None
        self._runtime = self.engine = self.context = None
        try:
            if self.buffers == "pycuda":
                self._start_pycuda()
            self._load(trt)
        except BaseException:
            self.close()  # a pushed pycuda context must not outlive a failed start
            raise

    def _load(self, trt: Any) -> None:
        with self._on_device():
            self._runtime = trt.Runtime(trt_logger(trt))
            self.engine = self._runtime.deserialize_cuda_engine(self.artifact.path.read_bytes())
            if self.engine is None:
                raise UsageError(
                    f"TensorRT {trt.__version__} cannot load {self.artifact.label} (see its messages above)",
                    "it was probably built with another TensorRT version or for another GPU: rebuild it here "
                    "with resnet-export trt",
                )
            self._read_io(trt)
            self.context = self.engine.create_execution_context()
            if self.context is None:  # TensorRT gives None where it cannot allocate the context's memory
                raise UsageError(
                    f"TensorRT could not create an execution context for {self.artifact.label} (see its messages above)",
                    "free GPU memory (other processes: nvidia-smi), or rebuild with a smaller --max-shape",
                )
            if self.buffers == "torch":
                import torch

                self._torch_stream = torch.cuda.Stream(self.device)
        if self.buffers == "pycuda":
            self._allocate_pycuda()

    # -- set-up ---------------------------------------------------------------------------------

    def _read_io(self, trt: Any) -> None:
        engine = self.engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            tensor = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT else outputs).append(tensor)
        if len(inputs) != 1 or len(outputs) != 1:
            raise UsageError(
                f"{self.artifact.label} has {len(inputs)} inputs and {len(outputs)} outputs; a ResNet engine has one each"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = _numpy_dtype(trt, engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _numpy_dtype(trt, engine.get_tensor_dtype(self.output_name))
        lo, opt, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(self.input_name, 0))
        if len(lo) != 4:
            raise UsageError(f"{self.artifact.label} takes a {len(lo)}-D input, not an NCHW batch")
        self.input_range = ShapeRange(lo, opt, hi, dynamic=lo != hi)  # type: ignore[arg-type]
        self.artifact.input_range = self.input_range
        out_dims = tuple(int(d) for d in engine.get_tensor_shape(self.output_name))
        self.num_classes = out_dims[-1] if out_dims else 0

    def _on_device(self) -> Any:
        if self.buffers == "torch":
            import torch

            return torch.cuda.device(self.index)
        return contextlib.nullcontext()

    def _start_pycuda(self) -> None:
        if importlib.util.find_spec("pycuda") is None:
            raise MissingDependencyError(
                "torch has no CUDA here, and pycuda (the other way to hold GPU buffers) is not installed",
                "pip install pycuda (the resnet-deploy pycuda extra), or install a CUDA build of torch",
            )
        import pycuda.driver as cuda

        try:
            cuda.init()
            context = cuda.Device(self.index).retain_primary_context()  # the context TensorRT's cudart uses
            context.push()
            self._pctx = context  # pushed: close() pops and releases it
            self._stream = cuda.Stream()
        except cuda.Error as exc:  # no driver, a device index past the count, ...
            raise MissingDependencyError(
                f"pycuda cannot start CUDA on {self.device}: {first_line(exc)}",
                "check the driver (nvidia-smi) and name a GPU it lists",
            ) from None

    def _allocate_pycuda(self) -> None:
        import pycuda.driver as cuda

        biggest = self.input_range.max
        self._d_in = cuda.mem_alloc(int(np.prod(biggest)) * self.input_dtype.itemsize)
        self._d_out = cuda.mem_alloc(biggest[0] * max(self.num_classes, 1) * self.output_dtype.itemsize)

    # -- running --------------------------------------------------------------------------------

    def _set_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        self.check_input(_Shape(shape))
        if not self.context.set_input_shape(self.input_name, shape):
            raise UsageError(
                f"TensorRT refused input {format_shape(shape)} for {self.artifact.label}",
                f"the profile is {format_shape(self.input_range.min)} .. {format_shape(self.input_range.max)}",
            )
        return tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))

    def run_device(self, batch: Any) -> Any:
        """Torch tensor in (any device), torch float32 logits out on this GPU; no host copies."""
        import torch

        if self.buffers != "torch":
            return super().run_device(batch)
        self.check_input(batch)  # before the cast below, which would take uint8 pixels as values
        with torch.cuda.device(self.index):
            x = batch.to(device=self.device, dtype=getattr(torch, self.input_dtype.name)).contiguous()
            out_shape = self._set_shape(tuple(x.shape))
            out = torch.empty(out_shape, dtype=getattr(torch, self.output_dtype.name), device=self.device)
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            caller, stream = torch.cuda.current_stream(self.device), self._torch_stream
            stream.wait_stream(caller)  # x and out were made on the caller's stream
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise VerificationError(f"TensorRT failed to run {self.artifact.label} (its messages are above)")
            x.record_stream(stream)
            out.record_stream(stream)
            caller.wait_stream(stream)  # what the caller does next with `out` waits for the engine
            return out.float()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Host in, host out (copies included)."""
        self.check_input(batch)  # before the cast below, which would take uint8 pixels as values
        batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        if self.buffers == "torch":
            import torch

            return self.run_device(torch.from_numpy(batch)).cpu().numpy()
        import pycuda.driver as cuda

        out_shape = self._set_shape(tuple(batch.shape))
        out = np.empty(out_shape, dtype=self.output_dtype)
        cuda.memcpy_htod(self._d_in, batch)
        self.context.set_tensor_address(self.input_name, int(self._d_in))
        self.context.set_tensor_address(self.output_name, int(self._d_out))
        if not self.context.execute_async_v3(self._stream.handle):
            raise VerificationError(f"TensorRT failed to run {self.artifact.label} (its messages are above)")
        self._stream.synchronize()
        cuda.memcpy_dtoh(out, self._d_out)
        return out.astype(np.float32, copy=False)

    def synchronize(self) -> None:
        if self.buffers == "torch":
            import torch

            torch.cuda.synchronize(self.device)
        elif self._stream is not None:
            self._stream.synchronize()

    def close(self) -> None:
        self._torch_stream = None
        self.context = None
        self.engine = None
        self._runtime = None
        if self._pctx is not None:
            self._d_in = self._d_out = self._stream = None  # freed while their context is still current
            self._pctx.pop()
            self._pctx.detach()  # releases the retained primary context (cuDevicePrimaryCtxRelease)
            self._pctx = None
        super().close()


class _Shape:
    """Just enough of an array for Runtime.check_input (which reads .shape)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
