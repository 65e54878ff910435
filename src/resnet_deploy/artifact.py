"""What a runtime runs: an `Artifact` (a file of a known format and precision, or the PyTorch module itself).

Every layer passes artifacts around: the workspace records them, stages make them, runtimes run them, reports
name them. So the type lives here, below all of them, with the one way a file from anywhere becomes one.
"""

from __future__ import annotations

import functools
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy import onnx_graph
from resnet_deploy.errors import UsageError
from resnet_deploy.shapes import ShapeRange

SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".jit": "torchscript",
    ".pt": "torchscript",
    ".pt2": "program",
    ".engine": "engine",
    ".plan": "engine",
    ".trt": "engine",
}
SUFFIXES_TEXT = ".onnx, .ts/.pt (TorchScript), .pt2 (torch.export or AOTInductor) or .engine/.plan (TensorRT)"
#: the key under which an AOTInductor package carries the record of what it was compiled for (its metadata)
AOTI_METADATA_KEY = "resnet_deploy"


@dataclass
class Artifact:
    """Something a runtime can run: a file (or, for eager PyTorch, the module itself)."""

    format: str
    path: Path | None = None
    precision: str = "fp32"
    input_range: ShapeRange | None = None
    key: str | None = None
    entry: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the nn.Module for format "pytorch"
    #: the name to report while `path` is the temp file an export is verified under, not yet renamed
    name: str | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = Path(self.path)  # a str from a caller's config: .name, .suffix and .exists() must work

    @property
    def label(self) -> str:
        return self.name or (self.path.name if self.path else (self.key or self.format))

    @classmethod
    def from_file(cls, path: Path | str) -> Artifact:
        """An artifact given on the command line: format from the suffix, precision from the file."""
        path = Path(path)
        require_file(path)
        fmt = SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt == "program" and is_aoti_package(path):  # both are .pt2 (torch insists on the suffix)
            fmt = "aoti"
        if fmt is None:
            raise UsageError(f"cannot tell the format of {path.name}", f"use {SUFFIXES_TEXT}")
        stat = path.stat()
        if stat.st_size == 0:  # an interrupted copy or a failed download: say so before any row runs
            raise UsageError(f"artifact {path} is empty (0 bytes)", "copy or export the file again")
        precision = _file_precision(fmt, str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        return cls(fmt, path, precision, key=f"file:{path.name}")

    @classmethod
    def reference(cls, model: Any) -> Artifact:
        """The PyTorch FP32 eager model: the reference every artifact is compared against."""
        return cls("pytorch", None, "fp32", None, "pytorch", model=model)


def require_file(path: Path) -> None:
    """An artifact's file is there, or the error that says so (before a backend's own, longer one)."""
    if path.is_dir():  # "does not exist" would send the user looking for a path that is right there
        raise UsageError(f"artifact {path} is a folder", "pass one .onnx, .pt/.ts, .pt2 or .engine file in it")
    if path.exists() and not path.is_file():  # a FIFO or a device: reading one would wait forever or never end
        raise UsageError(f"artifact {path} is not a regular file", "pass an .onnx, .pt/.ts, .pt2 or .engine file")
    if not path.is_file():
        raise UsageError(f"artifact {path} does not exist", "pass an .onnx, .pt/.ts, .pt2 or .engine file")


@functools.lru_cache(maxsize=64)
def _file_precision(fmt: str, path: str, mtime_ns: int, size: int) -> str:
    """Cached on the file's identity: parsing a ResNet-50 ONNX graph to find its precision takes a while, and
    a file given twice (or checked, then run) is read once. A changed file misses."""
    if fmt == "aoti":
        return str((aoti_package_record(Path(path)) or {}).get("precision", "fp32"))
    if fmt != "onnx":
        return "fp32"
    try:
        return onnx_graph.precision(Path(path))
    except UsageError:  # not readable as ONNX: its rows fail to load it, saying why (a failed check, not a skip)
        return "fp32"


def is_aoti_package(path: Path) -> bool:
    """Whether a `.pt2` is an AOTInductor package (compiled code under `<name>/data/aotinductor/`) rather than a
    torch.export program: the suffix is the same, what runs it is not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/data/aotinductor/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False  # not readable as an archive: the torch.export runtime says why in its rows


def aoti_package_record(path: Path) -> dict[str, Any] | None:
    """The record an AOTInductor package was compiled with (`export/aoti.py` puts it in the package's metadata),
    read from the archive without loading its compiled code (which may not load here), or None. What a
    package passed as a file is checked by, where no manifest entry describes it."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("wrapper_metadata.json")]
            metadata = json.loads(archive.read(names[0])) if names else {}
        record = json.loads(metadata.get(AOTI_METADATA_KEY) or "null")
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def aoti_record(artifact: Artifact) -> dict[str, Any]:
    """What an AOTInductor package was compiled for (torch version, device kind, GPU, precision, input range): its
    manifest entry's record, else the one inside the package, else {} (a package from elsewhere)."""
    recorded = (artifact.entry or {}).get("aoti")
    if isinstance(recorded, dict):
        return recorded
    return (aoti_package_record(artifact.path) if artifact.path is not None else None) or {}
