"""Where things run: a `Device` parsed once from what the user typed, and whether it is there.

A device is its canonical spelling (`cpu`, `cuda`, `cuda:N`) with its parts already read: every layer asks
`device.is_cuda` or `device.index` instead of re-parsing the string. It is a `str`, so it prints, compares and
serializes as the spelling the user typed (normalized), and a plain string is accepted wherever one is taken.
"""

from __future__ import annotations

import os

from resnet_deploy.errors import UsageError


class Device(str):
    """`cpu`, `cuda` or `cuda:N`, whatever its case and spacing, parsed once (`Device.parse`)."""

    kind: str  # "cpu" | "cuda"
    index: int  # N of cuda:N; 0 for plain cuda and for the CPU

    @classmethod
    def parse(cls, text: str) -> Device:
        """Anything else ('gpu', 'mps', 'cuda:x') is refused as a spelling here, rather than reaching a backend as a
        device it "does not run on" with a hint to install a package. Whether a GPU is there is `unavailable`'s
        question. A Device passes through unchanged."""
        if isinstance(text, Device):
            return text
        spelled = str(text).strip().lower()
        kind, colon, index = spelled.partition(":")
        if not (spelled == "cpu" or (kind == "cuda" and (not colon or index.isdigit()))):
            hint = "use cuda or cuda:N" if kind == "cuda" else "use cpu, cuda or cuda:N"
            raise UsageError(f"unknown device '{spelled}'", hint)
        device = super().__new__(cls, spelled)
        device.kind = kind
        device.index = int(index) if index else 0
        return device

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def name(self) -> str:
        """'cpu' or 'cuda:N', the one spelling runtimes, reports and --explain use ('cuda' is 'cuda:0')."""
        return "cpu" if not self.is_cuda else f"cuda:{self.index}"

    @property
    def indexed(self) -> Device:
        """This device spelled with its index ('cuda' is 'cuda:0'): how runtimes say where they run."""
        return Device.parse(self.name)

    def unavailable(self) -> str | None:
        """Why torch cannot run on this device here (no CUDA GPU, or not that many), or None: the one check the
        runtime registry and --device both make."""
        if not self.is_cuda:
            return None
        try:
            import torch  # lazily: a torch-free deployment (TensorRT with pycuda buffers) asks here too
        except ImportError:
            return "CUDA timing needs torch"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to torch"
        return self.missing_gpu()

    def missing_gpu(self) -> str | None:
        """`cuda:N` past the GPUs torch counts (ONNX Runtime sees the same ones), or None; else torch's "invalid
        device ordinal" deep inside the first copy, or ONNX Runtime's own words when a session is made."""
        if not self.is_cuda:
            return None
        import torch

        count = torch.cuda.device_count()
        if count and self.index >= count:
            return f"{self} is not here: torch sees {count} CUDA GPU(s), numbered from 0"
        return None


CPU = Device.parse("cpu")


def default_threads() -> int:
    """The CPU cores this process may use (affinity-aware, unlike os.cpu_count in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
