"""AOTInductor packages of the trained test model on the CPU: `resnet-export aoti`, the record, the torch-aoti
runtime (parity on held-out real images, refusals), and its rows in `resnet-bench compare`.

One compile per session (static 1x3x64x64, the model's crop: about half a minute on two cores), made by the
CLI itself in `package`; every other test reads that workspace or a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from resnet_deploy.artifact import Artifact, aoti_package_record
from resnet_deploy.cli import bench, export
from resnet_deploy.errors import UsageError
from resnet_deploy.explain import explain
from resnet_deploy.parity import compare
from resnet_deploy.preprocess import load_folder
from resnet_deploy.provenance import cpu_vector_flags
from resnet_deploy.runtimes import create, registry, run_batched
from resnet_deploy.verify import reference_logits
from resnet_deploy.workspace import Workspace

FAST = ["--iters", "2", "--warmup", "1", "--max-images", "32", "--threads", "1"]
KEY = "aoti-cpu"


@dataclass
class Package:
    workspace: Path
    output: str
    exit_code: int

    @property
    def ws(self) -> Workspace:
        return Workspace(self.workspace, "resnet18")

    @property
    def entry(self) -> dict[str, Any]:
        return self.ws.artifacts[KEY]

    @property
    def file(self) -> Path:
        return self.ws.dir / self.entry["path"]


def _export(args: list[Any]):
    return CliRunner().invoke(export.app, ["aoti", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory) -> Package:
    """`resnet-export aoti` of the trained model, static at its crop: the session's one compile."""
    ws = tmp_path_factory.mktemp("aoti-ws")
    result = _export([*trained.cli_args, "--workspace", ws, "--static"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Package(ws, result.output, result.exit_code)


@pytest.fixture(scope="module")
def heldout(trained) -> np.ndarray:
    return load_folder(trained.heldout_dir, trained.preprocess).tensors


def test_the_cli_writes_the_package_and_says_its_compile_time(package) -> None:
    assert package.exit_code == 0, package.output
    assert package.file.is_file() and package.file.name == "resnet18.aoti-cpu.pt2"
    assert "compile time of resnet18.aoti-cpu.pt2:" in package.output
    assert (package.ws.dir / ".inductor-cache").is_dir()  # Inductor's cache in the workspace, for rebuilds
    assert not list(package.ws.dir.glob(".*.tmp*"))  # the temp file was moved, not left beside


def test_a_second_export_with_the_same_inputs_reuses_the_package(trained, package) -> None:
    before = package.entry
    result = _export([*trained.cli_args, "--workspace", package.workspace])  # the workspace's range: static
    assert result.exit_code == 0, result.output
    assert "reusing" in result.output and "reused now" in result.output and package.entry == before


def test_a_workspace_moved_to_another_cpu_rebuilds_its_package(trained, package, tmp_path) -> None:
    """The CPU's vector instructions are part of what a CPU package is made from; the rebuild reuses the
    Inductor cache that came with the workspace."""
    shutil.copytree(package.ws.dir, tmp_path / "resnet18")
    ws = Workspace(tmp_path, "resnet18")
    manifest = json.loads(ws.manifest_path.read_text())
    assert manifest["artifacts"][KEY]["inputs"]["cpu_flags"] == cpu_vector_flags()
    manifest["artifacts"][KEY]["inputs"]["cpu_flags"] = ["avx2"]
    ws.manifest_path.write_text(json.dumps(manifest))
    result = _export([*trained.cli_args, "--workspace", tmp_path])
    assert result.exit_code == 0, result.output
    assert "aoti-cpu is stale (changed: cpu_flags): rebuilding" in " ".join(result.output.split())
    assert "compile time of resnet18.aoti-cpu.pt2" in result.output and "reused now" not in result.output
    assert Workspace(tmp_path, "resnet18").artifacts[KEY]["inputs"]["cpu_flags"] == cpu_vector_flags()


def test_the_record_says_what_it_was_compiled_for(package) -> None:
    entry = package.entry
    record = entry["aoti"]
    assert entry["format"] == "aoti" and entry["precision"] == "fp32"
    assert record["torch_version"] == torch.__version__ and record["device"] == "cpu"
    assert record["gpu_name"] is None and record["compute_capability"] is None
    assert record["inductor"] == {"freezing": True, "aot_inductor.precompile_headers": False}
    assert record["compile_seconds"] > 0
    assert record["input"] == {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64], "dynamic": False}
    assert entry["inputs"]["torch_version"] == torch.__version__  # another torch makes it stale
    assert entry["verification"]["worst_rel_l2"] < 1e-4
    # the same record inside the package, for a file passed without its workspace
    inside = aoti_package_record(package.file)
    assert inside is not None and {k: inside[k] for k in ("torch_version", "device", "input")} == {
        k: record[k] for k in ("torch_version", "device", "input")
    }
    opened = Artifact.from_file(package.file)
    assert opened.format == "aoti" and opened.precision == "fp32"


def test_parity_with_pytorch_on_held_out_images(trained, package, heldout) -> None:
    reference = reference_logits(trained.model, heldout)
    with create("torch-aoti", package.ws.artifact(KEY), "cpu", threads=2) as runtime:
        logits = run_batched(runtime, heldout, 1)
    metrics = compare(reference, logits)
    assert metrics.count == len(heldout) >= 100
    assert metrics.top1_agreement == 1.0 and metrics.cosine > 0.99999 and metrics.rel_l2 < 1e-4


def test_a_shape_the_package_was_not_compiled_for_is_refused(package) -> None:
    """A static package given another batch would run on memory it does not own: the range is enforced."""
    with create("torch-aoti", Artifact.from_file(package.file)) as runtime:  # the range from inside the package
        with pytest.raises(UsageError, match=r"input 2x3x64x64 does not fit .*only accepts 1x3x64x64"):
            runtime.run(np.zeros((2, 3, 64, 64), np.float32))


def _copy_workspace(package: Package, target: Path) -> Workspace:
    shutil.copytree(package.ws.dir, target / "resnet18", ignore=shutil.ignore_patterns(".inductor-cache"))
    return Workspace(target, "resnet18")


def _tampered(package: Package, tmp_path: Path, **record: Any) -> Artifact:
    """The package in a copy of its workspace whose manifest says `record` of it."""
    ws = _copy_workspace(package, tmp_path)
    manifest = json.loads(ws.manifest_path.read_text())
    manifest["artifacts"][KEY]["aoti"].update(record)
    ws.manifest_path.write_text(json.dumps(manifest))
    return Workspace(tmp_path, "resnet18").artifact(KEY)


def test_a_package_recorded_for_another_torch_is_refused_in_one_line(package, tmp_path) -> None:
    with pytest.raises(UsageError) as err:
        create("torch-aoti", _tampered(package, tmp_path, torch_version="2.0.0"))
    text = str(err.value)
    assert "\n" not in text and "compiled for torch 2.0.0" in text and torch.__version__ in text
    assert "resnet-export aoti" in text


def test_a_package_compiled_for_instructions_this_cpu_lacks_is_refused(package, tmp_path) -> None:
    """It would die of an illegal instruction inside the library: refused first, naming what is missing."""
    assert package.entry["aoti"]["cpu_isa"]  # recorded, e.g. 'avx512 avx512_vnni amx_tile'
    with pytest.raises(UsageError, match=r"compiled for a CPU with sve256 \(this CPU does not have it\)"):
        create("torch-aoti", _tampered(package, tmp_path, cpu_isa=f"{package.entry['aoti']['cpu_isa']} sve256"))


def test_a_package_for_another_device_is_skipped_not_run(package, tmp_path) -> None:
    """A CUDA package in a CPU run (and the reverse) is skipped by compare, saying which device it is for."""
    why = registry()["torch-aoti"].refuses(_tampered(package, tmp_path, device="cuda"), "cpu")
    assert why is not None and "compiled for cuda" in why and "--device cuda" in why


def test_fp16_on_the_cpu_is_refused_before_the_model_loads(trained, tmp_path) -> None:
    result = _export([*trained.cli_args, "--workspace", tmp_path / "ws", "--fp16"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "--fp16 AOTInductor packages are built for CUDA only" in text and "--device cuda" in text
    assert "load resnet18" not in text and not (tmp_path / "ws").exists()  # nothing loaded, nothing written


def test_no_cpp_compiler_is_one_line_and_leaves_nothing_behind(trained, tmp_path) -> None:
    """A fresh process (Inductor reads CXX when it is imported) whose C++ compiler does not exist."""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++")}
    args = [sys.executable, "-m", "resnet_deploy.cli.export", "aoti", *trained.cli_args]
    done = subprocess.run([*args, "--workspace", str(tmp_path / "ws")], env=env, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "error: AOTInductor compiles C++ and finds no working C++ compiler here" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "ws").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is visible")
def test_cuda_without_a_gpu_fails_with_one_line_and_no_fallback(trained, tmp_path) -> None:
    result = _export([*trained.cli_args, "--workspace", tmp_path / "ws", "--device", "cuda"])
    assert result.exit_code == 3, result.output
    assert "--device cuda: no CUDA GPU is visible to torch" in " ".join(result.output.split())
    assert not (tmp_path / "ws").exists()


def _compare(args: list[Any]) -> Any:
    result = CliRunner().invoke(bench.app, ["compare", *[str(a) for a in args]])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_compare_and_the_gate_run_the_workspace_package_and_one_passed_as_a_file(trained, package, tmp_path) -> None:
    loose = tmp_path / "model.pt2"
    shutil.copy(package.file, loose)  # outside any workspace: its record is read from the package
    out = tmp_path / "r.json"
    args = [*trained.cli_args, "--workspace", package.workspace, "--images", trained.heldout_dir, "--no-build"]
    result = _compare([*args, "--runtimes", "torch-aoti", "--artifact", loose, "--gate", "--json", out, *FAST])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["artifact_key"], r["runtime"], r["format"], r["passed"]) for r in rows] == [
        (KEY, "torch-aoti", "aoti", True),
        ("file:model.pt2", "torch-aoti", "aoti", True),
    ]
    for row in rows:
        assert row["parity"]["top1_agreement"] == 1.0 and row["latency"]["p50_ms"] > 0


def test_explain_compares_the_head_only_and_says_why(trained, package, heldout) -> None:
    result = explain(package.ws.artifact(KEY), trained.model, heldout)
    assert [s.stage for s in result.stages] == ["head"] and result.first is None
    assert "AOTInductor package output only" in result.method and "only the output could be compared" in result.note


@pytest.mark.gpu
def test_a_cuda_fp16_package_matches_pytorch_on_the_gpu(trained, tmp_path, heldout) -> None:
    pipe = trained.pipeline(tmp_path, dynamic=False)
    artifact = pipe.aoti("cuda", fp16=True)
    assert artifact.key == "aoti-cuda-fp16" and pipe.ws.artifacts[artifact.key]["aoti"]["compute_capability"]
    reference = reference_logits(pipe.model, heldout)
    for graphs in (False, True):  # and replayed as a CUDA graph (--cuda-graphs)
        with create("torch-aoti", artifact, "cuda", cuda_graphs=graphs) as runtime:
            metrics = compare(reference, run_batched(runtime, heldout, 1))
        assert metrics.top1_agreement >= 0.98 and metrics.cosine > 0.999, (graphs, metrics)


def test_a_cuda_compile_runs_under_ieee_fp32_flags_that_torch_export_can_read() -> None:
    """Inductor bakes TF32 in or out of its Triton templates at compile time, from flags it reads the legacy way:
    set so, IEEE FP32, restored after (checked on flags only: it needs no GPU)."""
    from resnet_deploy.devices import Device
    from resnet_deploy.export.aoti import ieee_fp32

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with ieee_fp32(Device.parse("cuda")):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.fp32_precision != "tf32"
        torch.export.export(torch.nn.Conv2d(3, 4, 3).eval(), (torch.randn(1, 3, 8, 8),))  # reads them too
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
