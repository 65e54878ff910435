"""PyTorch backends: eager (the reference), TorchScript and torch.export programs, and their loaders.

On CUDA, "fp32" means IEEE FP32. PyTorch lets cuDNN run FP32 convolutions in TF32 by default, which
costs about 1e-3 relative error on a ResNet and would fail FP32 parity for a reason that is not the
artifact's. TF32 is offered as its own precision ("tf32", eager only) with its own tolerance.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnet_deploy import console
from resnet_deploy.artifact import Artifact
from resnet_deploy.devices import Device
from resnet_deploy.errors import UsageError
from resnet_deploy.runtimes.base import Runtime

#: positions of `benchmark` and `allow_tf32` among a traced aten::_convolution's inputs
_BENCHMARK_ARG, _TF32_ARG = 9, 12


@contextmanager
def cuda_math(tf32: bool = False, benchmark: bool = True) -> Iterator[None]:
    """cuDNN/cuBLAS settings for one GPU call, restored afterwards (they are process-wide).

    `tf32=False` keeps FP32 convolutions and matmuls in IEEE FP32. `benchmark=True` lets cuDNN time its
    algorithms once per input shape (during warm-up), as a deployment would. Uses the `fp32_precision`
    API where torch has it (2.9+): mixing it with the older `allow_tf32` flags makes torch raise.
    """
    cudnn = torch.backends.cudnn
    saved_benchmark = cudnn.benchmark
    conv = getattr(cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        matmul = torch.backends.cuda.matmul
        saved = (conv.fp32_precision, matmul.fp32_precision)
        conv.fp32_precision = matmul.fp32_precision = "tf32" if tf32 else "ieee"
        cudnn.benchmark = benchmark
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = saved
            cudnn.benchmark = saved_benchmark
        return
    saved_legacy = (cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    cudnn.benchmark = benchmark
    try:
        yield
    finally:
        cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_legacy
        cudnn.benchmark = saved_benchmark


#: how TorchScript's interpreter starts every error it passes on; the error itself is the last line
_TORCHSCRIPT_BANNER = "The following operation failed in the TorchScript interpreter"


def error_cause(exc: BaseException, limit: int = 200) -> str:
    """The line of `exc`'s message that says what went wrong: the first, except for TorchScript.

    TorchScript's interpreter wraps any error raised inside a scripted or traced module (a shape
    mismatch, CUDA out of memory, a GPU fuser that fails to compile) as "The following operation failed
    in the TorchScript interpreter.", then a traceback of the scripted code, then the original error
    ("RuntimeError: addmm: mat1 and mat2 shapes cannot be multiplied ...") as its last line.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith(_TORCHSCRIPT_BANNER):
        return lines[-1][:limit]
    return lines[0][:limit]


def whole_sentences(text: str, limit: int) -> str:
    """`text` cut to `limit` at the end of a sentence: torch's load errors run on ("This is an internal miniz
    error. If you are seeing this error, there is a high likelihood ..."), and a cut mid-sentence reads
    as a garbled message."""
    if len(text) <= limit:
        return text
    end = text.rfind(". ", 0, limit)
    return text[: end + 1] if end > 0 else text[: limit - 3] + "..."


class _TorchRuntime(Runtime):
    """Shared run/run_device for modules that take and return torch tensors."""

    module: Any
    dtype: Any
    channels_last: bool = False
    tf32: bool = False
    #: replay one captured CUDA graph per input shape instead of launching every kernel (`--cuda-graphs`)
    cuda_graphs: bool = False

    def _setup(self, device: str, threads: int | None, cuda_graphs: bool = False) -> None:
        self.device = Device.parse(device).indexed
        self._torch_device = torch.device(self.device)
        if threads:
            torch.set_num_threads(threads)
        if cuda_graphs and not self.device.is_cuda:
            raise UsageError(
                f"{self.name} with CUDA graphs runs on CUDA only: a graph replays GPU kernel launches",
                "pass --device cuda, or drop --cuda-graphs",
            )
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        if cuda_graphs:
            self.name += "-graph"

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.check_input(batch)
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self._torch_device)
        return self.run_device(x).float().cpu().numpy()

    def run_device(self, batch: Any) -> Any:
        self.check_input(batch)
        x = batch.to(self._torch_device, self.dtype)  # a CPU tensor, or one on another GPU, comes to ours
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            try:
                if not self.device.is_cuda:
                    out = self.module(x)
                else:
                    with cuda_math(self.tf32):
                        out = self._replay(x) if self.cuda_graphs else self.module(x)
            except Exception as exc:
                cause = error_cause(exc)
                raise UsageError(
                    f"{self.describe()} rejected input {tuple(batch.shape)}: {cause}",
                    self._rejected_hint(cause, tuple(batch.shape)),
                ) from None
        return out.float()

    def _replay(self, x: Any) -> Any:
        """The module's output for `x` from the CUDA graph captured for its shape (captured on first use, after
        warm-up runs on a side stream so cuDNN's autotuning and lazy initialisation stay out of the graph):
        `x` is copied into the graph's static input, the graph replayed, its static output copied out (the
        next replay overwrites it)."""
        shape = tuple(x.shape)
        if shape not in self._graphs:
            static_in = x.clone()
            side = torch.cuda.Stream(self._torch_device)
            side.wait_stream(torch.cuda.current_stream(self._torch_device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.module(static_in)
            torch.cuda.current_stream(self._torch_device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(static_in)
            self._graphs[shape] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[shape]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def _rejected_hint(self, cause: str, shape: tuple[int, ...]) -> str:
        """The fix for an input the module refused. Inside the dynamic range the artifact was exported for, it
        refuses part of its own range, and "re-export with --dynamic" would be no fix. torch.export does that
        when the range crosses a size where a ResNet stage's map turns 1x1 (a side of 32 or less), since it
        fixes that from the example at the opt shape."""
        if "out of memory" in cause.lower():
            return "the batch does not fit in the GPU's memory: use a smaller --batch"
        exported = self.artifact.input_range if self.artifact else None
        if exported is not None and exported.dynamic and exported.contains(shape):
            return (
                "it does not run every shape of the range it was exported for (torch.export fixes from the "
                "opt shape whether the last feature map is 1x1, i.e. height or width 32 or less): re-export with "
                "height and width above 32 from --min-shape up (e.g. --min-shape 1x3x64x64), or use the ONNX"
            )
        return "re-export with --dynamic to accept other shapes"

    def synchronize(self) -> None:
        if self.device.is_cuda:
            torch.cuda.synchronize(self._torch_device)

    def close(self) -> None:
        self.module = None
        self._graphs = {}
        super().close()


class TorchEagerRuntime(_TorchRuntime):
    """The reference. FP16, TF32 and channels-last are GPU options (CPU FP16 convs are slow and not the point)."""

    name = "torch-eager"

    def __init__(
        self,
        artifact: Artifact,
        device: str = "cpu",
        precision: str = "fp32",
        channels_last: bool = False,
        threads: int | None = None,
        cuda_graphs: bool = False,
        **_: Any,
    ) -> None:
        if artifact.model is None:
            raise UsageError("torch-eager needs the model itself, not a file")
        if precision not in ("fp32", "tf32", "fp16"):
            raise UsageError(f"torch-eager runs fp32, tf32 or fp16, not {precision}")
        variant = [precision] if precision != "fp32" else []
        variant += ["channels-last"] if channels_last else []
        self.name = "-".join(["torch-eager", *variant])
        self._setup(device, threads, cuda_graphs)
        if variant and not self.device.is_cuda:
            raise UsageError(f"{self.name} is offered on CUDA only", "pass --device cuda")
        self.artifact = artifact
        self.precision = precision
        self.channels_last = channels_last
        self.tf32 = precision == "tf32"
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        module = artifact.model
        if self.device.is_cuda:
            module = copy.deepcopy(module)  # the CPU reference stays where it is
        module = module.to(self._torch_device, dtype=self.dtype).eval()
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module


class _TorchFileRuntime(_TorchRuntime):
    """A module loaded from a file; subclasses say how to load it."""

    what = "file"
    fix = ""

    def __init__(
        self, artifact: Artifact, device: str = "cpu", threads: int | None = None, cuda_graphs: bool = False, **_: Any
    ) -> None:
        self._setup(device, threads, cuda_graphs)
        self.artifact = artifact
        self.precision = artifact.precision
        self.dtype = torch.float32
        try:
            self.module = self._load(str(artifact.path))
        except Exception as exc:
            raise UsageError(
                f"cannot load {self.what} file {artifact.label}: {whole_sentences(error_cause(exc, 400), 160)}",
                self.fix,
            ) from None

    def _load(self, path: str) -> Any:
        raise NotImplementedError


class TorchScriptRuntime(_TorchFileRuntime):
    name = "torchscript"
    what = "TorchScript"
    fix = "a .pt that holds weights (a state_dict) is a checkpoint, not TorchScript: pass it with --weights"

    def _load(self, path: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            module = torch.jit.load(path, map_location=self._torch_device).eval()
        if self.device.is_cuda and self.precision == "fp32":
            self._check_traced_tf32(module)
        return module

    def _check_traced_tf32(self, module: Any) -> None:
        """A file traced with TF32 allowed runs TF32 on a GPU whatever we set: call its rows what they are."""
        if any(tf32 for _, tf32 in traced_conv_flags(module)):
            self.precision = "tf32"
            console.warn(
                f"{self.artifact.label} was traced with TF32 allowed, which a trace fixes in every convolution: "
                "it runs TF32 on this GPU and is checked as tf32 (re-export it with resnet-export torchscript "
                "for IEEE FP32)"
            )


class TorchExportRuntime(_TorchFileRuntime):
    name = "torch-export"
    what = "torch.export"

    def _load(self, path: str) -> Any:
        module = load_program(path)
        return module.to(self._torch_device) if self.device.is_cuda else module


def traced_conv_flags(module: Any) -> set[tuple[bool, bool]]:
    """(benchmark, allow_tf32) of every traced convolution in `module`: what it will run with on a GPU.

    A trace records each convolution as `aten::_convolution` with cuDNN's flags as constants, so the file keeps
    the settings of the process that traced it. Empty for a scripted module (its convolutions read the
    process's settings like eager PyTorch).
    """
    flags = set()
    for node in module.inlined_graph.nodes():
        if node.kind() == "aten::_convolution":
            args = list(node.inputs())
            flags.add((bool(args[_BENCHMARK_ARG].toIValue()), bool(args[_TF32_ARG].toIValue())))
    return flags


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def load_program(path: Path | str) -> Any:
    """The `.pt2`'s module, ready to call (the one loader: runtime and --explain read it alike).

    torch.export logs the reader's error with its whole traceback, then raises "check the warnings above": the
    log is kept from the console, and its error is what is raised, so a file that is no program is one line."""
    logger, records = logging.getLogger("torch.export"), _Records()
    handlers, logger.handlers = logger.handlers, [records]  # torch gives this logger a stderr handler of its own
    propagate, logger.propagate = logger.propagate, False
    try:
        with warnings.catch_warnings():
            # torch 2.11 reads the archive's weights through a read-only buffer and warns; nothing writes to them
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            return torch.export.load(str(path)).module()
    except Exception as exc:
        logged = [r.exc_info[1] for r in records.records if r.exc_info and r.exc_info[1] is not None]
        if logged:
            raise RuntimeError(error_cause(logged[-1])) from exc
        raise
    finally:
        logger.handlers, logger.propagate = handlers, propagate
