"""AOTInductor packages (`torch._inductor.aoti_load_package`): compiled code and weights, no tracing, no Python
per operator.

A package's shared library is machine code for one torch build (it links that libtorch) and, on CUDA, kernels
compiled and tuned for one GPU architecture. Loaded under another torch it may crash inside the library, and
on another GPU it fails or runs kernels tuned elsewhere; so before it is loaded, the record it was compiled
with (its manifest entry, else the record compiled into the package) is compared with this process, and a
mismatch is one line naming the fix: compile it again here.

A package also takes only the sizes it was compiled for and does not check (a static package given another
batch runs, on memory it does not own), so the recorded range is enforced on every input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnet_deploy import console
from resnet_deploy.artifact import Artifact, aoti_record
from resnet_deploy.devices import Device
from resnet_deploy.errors import UsageError
from resnet_deploy.provenance import VECTOR_ISA_FLAGS, compiled_for, cpu_flags
from resnet_deploy.runtimes.torch import _TorchFileRuntime
from resnet_deploy.shapes import ShapeRange

#: said by every refusal: a package cannot be adapted, only compiled again where it is to run
REEXPORT = "re-export it here with resnet-export aoti, same options"


def mismatches(record: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """How the machine in `record` differs from `here` (torch version, the CPU's instruction sets, the GPU): what
    refuses it. The device kind is
    the registry's to check (`registry._aoti_device`): a CPU package in a CUDA run is skipped, not failed."""
    out = []
    if record.get("torch_version") and record["torch_version"] != here["torch_version"]:
        out.append(f"torch {record['torch_version']} (this is torch {here['torch_version']})")
    missing = missing_isa(record.get("cpu_isa")) if here["device"] == "cpu" else []
    if missing:
        out.append(f"a CPU with {', '.join(missing)} (this CPU does not have {'it' if len(missing) == 1 else 'them'})")
    if here["device"] == "cuda" and record.get("device") == "cuda":
        for field, what in (("compute_capability", "compute capability"), ("gpu_name", "GPU")):
            if record.get(field) and record[field] != here[field]:
                out.append(f"{what} {record[field]} (this is {here[field]})")
    return out


def missing_isa(isa: str | None) -> list[str]:
    """The instruction sets a CPU package was compiled for ('avx512 avx512_vnni amx_tile') that this CPU does not
    report: running it would end the process with an illegal instruction. [] where the CPU's flags are unknown."""
    flags = cpu_flags()
    if not isa or flags is None:
        return []
    return [name for name in isa.lower().split() if VECTOR_ISA_FLAGS.get(name, name) not in flags]


def why_refused(artifact: Artifact, device: str | Device) -> str | None:
    """Why this package cannot run on `device` here, or None: compiled by another torch, for instructions this CPU
    lacks, or for another GPU."""
    record = aoti_record(artifact)
    problems = mismatches(record, compiled_for(device))
    if problems:
        return f"{artifact.label} was compiled for {' and '.join(problems)}, and a compiled package runs only there"
    return None


def load_package(path: Path | str, device: str | Device, single_threaded: bool = False) -> Any:
    """The package's compiled model on `device`, callable on tensors. `single_threaded`: without the runner's
    own thread synchronisation, which torch documents as what conflicts with capturing it in a CUDA graph."""
    import torch._inductor  # seconds to import: only when a package is loaded

    device = Device.parse(device)
    index = device.index if device.is_cuda else -1
    return torch._inductor.aoti_load_package(str(path), run_single_threaded=single_threaded, device_index=index)


class AotiRuntime(_TorchFileRuntime):
    """An AOTInductor package, refused before loading where it was not compiled for."""

    name = "torch-aoti"
    what = "AOTInductor package"
    fix = REEXPORT

    def __init__(
        self, artifact: Artifact, device: str = "cpu", threads: int | None = None, cuda_graphs: bool = False, **_: Any
    ) -> None:
        refused = why_refused(artifact, device)
        if refused:
            raise UsageError(refused, REEXPORT)
        record = aoti_record(artifact)
        if not record:
            console.warn(f"{artifact.label} has no build record: cannot check which torch and GPU it was made for")
        super().__init__(artifact, device, threads, cuda_graphs)
        self.precision = str(record.get("precision") or artifact.precision)
        recorded = record.get("input")
        self.input_range = artifact.input_range or (ShapeRange.from_dict(recorded) if recorded else None)

    def _load(self, path: str) -> Any:
        return load_package(path, self.device, single_threaded=self.cuda_graphs)
