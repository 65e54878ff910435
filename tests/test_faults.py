"""Real faults (issue 28): a gate never passes what it did not check, and a fault is one line that leaves
nothing behind: a partial workspace, tolerances that check nothing, a full disk (a tmpfs), paths that are not
files (folders, FIFOs, links out of the workspace), signals sent to a running export, a manifest that cannot
be written, artifacts that cannot be loaded, a read-only workspace."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resnet_deploy.cli.bench import app as bench_app
from resnet_deploy.files import sha256_file
from resnet_deploy.parity import Tolerance
from resnet_deploy.results import Row
from resnet_deploy.tolerances import Tolerances
from tests.privileges import run_unprivileged

FAST = ["--warmup", "0", "--iters", "1", "--max-images", "12"]
ENV = {**os.environ, "COLUMNS": "300"}  # a one-line error stays on one line


def _cli(module: str, *args: object, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"resnet_deploy.cli.{module}", *[str(a) for a in args]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or ENV)


def _one_line(done: subprocess.CompletedProcess | object) -> str:
    """The one error line a failing command printed, and no traceback."""
    out = done.stderr if isinstance(done, subprocess.CompletedProcess) else done.output  # type: ignore[attr-defined]
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    return errors[0]


def _leftovers(folder: Path) -> list[str]:
    """Temporary files and folders anywhere below `folder` (hidden `.name.PID.x.tmp.ext`, `.tmp/`, `-inferred`)."""
    if not folder.exists():
        return []
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if ".tmp" in p.name or p.name == ".tmp" or "-inferred" in p.name or p.name.startswith(("int8-", "calib-"))
    )


def _run_temp(tmpdir: Path) -> list[str]:
    """What a run left in the system's temp folder: its work folders (the quantizer's, the calibrator's, ONNX
    Runtime's), not the caches libraries keep there on purpose (ONNX Runtime's `.ses`, torch's inductor cache)."""
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith(("int8-", "calib-", "ort.quant", "tmp")))


def _gate(trained, workspace: Path, *args: object) -> subprocess.CompletedProcess:
    return _cli(
        "bench", "compare", *trained.cli_args, "--workspace", workspace, "--images", trained.heldout_dir, *FAST,
        "--gate", *args,
    )  # fmt: skip


@pytest.fixture(scope="module")
def torchscript_only(trained, tmp_path_factory) -> Path:
    """A workspace as an interrupted default-set build leaves it: the TorchScript file, nothing else."""
    root = tmp_path_factory.mktemp("partial")
    trained.pipeline(root).torchscript()
    return root


def _copy(root: Path, tmp_path: Path) -> Path:
    shutil.copytree(root, tmp_path / "ws")
    return tmp_path / "ws"


# -- 1. a partial workspace ----------------------------------------------------------------------------


def test_compare_completes_a_partial_workspace_before_it_gates(trained, torchscript_only, tmp_path) -> None:
    ws = _copy(torchscript_only, tmp_path)
    report = tmp_path / "r.json"
    runtimes = "torch-eager,torchscript,torch-export,onnxruntime-cpu"
    done = _gate(
        trained, ws, "--runtimes", runtimes, "--calib", trained.calib_dir, "--max-images", 60, "--json", report
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "completing the default artifact set" in done.stderr
    data = json.loads(report.read_text())
    checked = {r["artifact_key"] for r in data["rows"] if r["parity"]}
    assert {"torchscript", "program", "onnx-fp32", "onnx-fp16", "onnx-int8-tensorrt", "onnx-int8-cpu"} <= checked
    assert set(data["built"]) == {"program", "onnx-fp32", "onnx-fp16", "onnx-int8-tensorrt", "onnx-int8-cpu"}
    assert "checked: onnx-fp16, onnx-fp32, onnx-int8-cpu, onnx-int8-tensorrt, program, torchscript" in done.stderr


def test_require_fails_a_gate_that_did_not_check_it(trained, torchscript_only, tmp_path) -> None:
    ws = _copy(torchscript_only, tmp_path)
    junit = tmp_path / "parity.xml"
    done = _gate(trained, ws, "--no-build", "--require", "torchscript,onnx-int8-*", "--junit", junit)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "parity gate FAILED: required onnx-int8-* not checked" in done.stderr
    failures = [tc.get("name") for tc in ET.parse(junit).getroot().iter("testcase") if tc.find("failure") is not None]
    assert failures == ["onnx-int8-* was checked"]
    # what it did check passes the same requirement
    done = _gate(trained, ws, "--no-build", "--require", "torchscript")
    assert done.returncode == 0 and "checked: torchscript" in done.stderr, done.stderr[-3000:]


def test_require_without_gate_is_a_usage_error() -> None:
    result = CliRunner().invoke(bench_app, ["compare", "resnet18", "--require", "onnx-fp32"])
    assert result.exit_code == 2 and "--require only applies with --gate" in result.output


# -- 2. tolerances that check nothing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        (
            "[fp32]\nmax_rel_l2 = false\nmin_cosine = false\nmin_top1_agreement = false\n",
            "[fp32] switches every check off",
        ),
        (
            '[artifact."*.int8-*"]\nmin_cosine = false\nmin_top1_agreement = false\n',
            '[artifact."*.int8-*"] switches every int8 check off',
        ),
    ],
)
def test_a_tolerance_file_that_checks_nothing_is_refused(tmp_path, toml: str, named: str) -> None:
    path = tmp_path / "off.toml"
    path.write_text(toml)
    result = CliRunner().invoke(bench_app, ["compare", "resnet18", "--gate", "--tolerances", str(path)])
    assert result.exit_code == 2 and named in result.output, result.output
    assert "load resnet18" not in result.output  # before the model loads


def test_a_row_with_no_active_check_is_not_a_pass() -> None:
    import numpy as np

    from resnet_deploy.parity import compare

    metrics = compare(np.eye(4), np.eye(4)[::-1])  # another model's answers
    row = Row("onnx-fp32", "ws/other.onnx", "onnx", "onnxruntime-cpu", "fp32", "cpu", 1, (64, 64), True, parity=metrics)
    row.judge(Tolerances({"fp32": Tolerance()}))
    assert not row.passed and "no parity check is active" in (row.error or "")


# -- 3. a full disk ------------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path):
    """A 24 MB tmpfs: the resnet18 exports (45 MB) cannot fit."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("command", ["onnx", "torchscript", "program"])
def test_a_full_disk_is_one_line_and_leaves_nothing(small_disk, command: str) -> None:
    done = _cli("export", command, "resnet18", "--workspace", small_disk / "ws", "--opt-shape", "1x3x64x64")
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_line(done)
    assert "no space left on the device writing" in line and str(small_disk / "ws" / "resnet18") in line, line
    assert not (small_disk / "ws").exists(), list((small_disk / "ws").rglob("*"))  # not even an empty folder


# -- 4. artifact paths that are not regular files --------------------------------------------------------


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    """The trained model's FP32 ONNX alone, static at 64x64."""
    root = tmp_path_factory.mktemp("exported")
    trained.pipeline(root, dynamic=False).onnx()
    return root


def _edit_entry(ws: Path, **fields: object) -> None:
    manifest = ws / "resnet18" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["artifacts"]["onnx-fp32"].update(fields)
    manifest.write_text(json.dumps(data))


@pytest.mark.parametrize("path", ["", "."])
def test_a_manifest_path_that_names_no_file_is_one_line(trained, exported, tmp_path, path: str) -> None:
    ws = _copy(exported, tmp_path)
    _edit_entry(ws, path=path)
    done = _gate(trained, ws, "--no-build")
    assert done.returncode == 2 and "names no file" in _one_line(done), done.stderr[-2000:]


def _replace_file(ws: Path, make) -> Path:
    target = ws / "resnet18" / "resnet18.onnx"
    target.unlink()
    make(target)
    return target


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.mkdir(), "is a folder, not a regular file"),
        (lambda p: os.mkfifo(p), "is a FIFO, not a regular file"),
        (lambda p: p.symlink_to("/dev/zero"), "is a character device, not a regular file"),
    ],
    ids=["folder", "fifo", "device"],
)
def test_an_artifact_path_that_is_no_regular_file_fails_the_gate_without_hanging(
    trained, exported, tmp_path, make, said: str
) -> None:
    ws = _copy(exported, tmp_path)
    target = _replace_file(ws, make)
    done = _gate(trained, ws, "--no-build", "--runtimes", "onnxruntime-cpu")  # a FIFO read would hang: timeout
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"{target} {said}" in done.stderr and "Traceback" not in done.stderr
    export = _cli("export", "onnx", *trained.cli_args, "--workspace", ws, "--static", "--opt-shape", "1x3x64x64")
    if target.is_dir():  # replacing a folder would lose what is in it: refused, before the export
        assert export.returncode == 2 and f"{target} is a folder" in _one_line(export), export.stderr[-2000:]
        return
    assert export.returncode == 0, export.stderr[-2000:]  # resnet-export rebuilds it, and waits on nothing
    assert target.is_file() and not target.is_symlink()


def test_a_manifest_path_through_a_linked_folder_is_not_read_outside(trained, exported, tmp_path) -> None:
    ws = _copy(exported, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    onnx = ws / "resnet18" / "resnet18.onnx"
    shutil.move(onnx, outside / "resnet18.onnx")
    (ws / "resnet18" / "sub").symlink_to(outside)
    _edit_entry(ws, path="sub/resnet18.onnx")  # its recorded hash still matches the file out there
    done = _gate(trained, ws, "--no-build", "--runtimes", "onnxruntime-cpu")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "lies outside the workspace" in done.stderr


def test_an_artifact_option_naming_a_fifo_is_one_line(tmp_path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    result = CliRunner().invoke(bench_app, ["compare", "resnet18", "--artifact", str(fifo)])
    assert result.exit_code == 2 and "is not a regular file" in result.output, result.output


# -- 5. signals ----------------------------------------------------------------------------------------


def _start_int8_export(trained, ws: Path, tmpdir: Path) -> subprocess.Popen:
    env = {**ENV, "TMPDIR": str(tmpdir)}
    args = ["onnx", *trained.cli_args, "--workspace", ws, "--static", "--int8", "--calib", trained.calib_dir]
    cmd = [sys.executable, "-m", "resnet_deploy.cli.export", *[str(a) for a in args]]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_int8(proc: subprocess.Popen, ws: Path, timeout: float = 300) -> None:
    """Until the quantizer is at work: its folder in this run's scratch folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((ws / "resnet18" / ".tmp").glob("run-*/int8-*/*")):
            return
        if proc.poll() is not None:
            pytest.fail(f"the export ended before its INT8 step: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the INT8 step did not start")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_int8_step_leaves_nothing_behind(trained, tmp_path, sig: int, code: int) -> None:
    ws, tmpdir = tmp_path / "ws", tmp_path / "system-tmp"
    tmpdir.mkdir()
    proc = _start_int8_export(trained, ws, tmpdir)
    _wait_for_int8(proc, ws)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert not _leftovers(ws) and not _run_temp(tmpdir), (_leftovers(ws), _run_temp(tmpdir))
    assert not (ws / "resnet18" / "resnet18.int8-tensorrt.onnx").exists()


def test_a_killed_runs_leftovers_are_swept_by_the_next_command(trained, tmp_path) -> None:
    ws, tmpdir = tmp_path / "ws", tmp_path / "system-tmp"
    tmpdir.mkdir()
    proc = _start_int8_export(trained, ws, tmpdir)
    _wait_for_int8(proc, ws)
    proc.kill()
    proc.communicate(timeout=60)
    assert _leftovers(ws)  # SIGKILL: nothing could clean up
    assert not _run_temp(tmpdir)  # but the quantizer's temp files were in the workspace's scratch folder
    done = _gate(trained, ws, "--no-build", "--runtimes", "onnxruntime-cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not _leftovers(ws), _leftovers(ws)


# -- 6. a manifest that cannot be written ------------------------------------------------------------------


def _freeze(path: Path) -> list[str]:
    """Make `path` unreplaceable (chattr +i; root is not stopped by chmod); the command that undoes it."""
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr to make a file immutable")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this file system takes no immutable flag: {done.stderr.strip()}")
    return ["chattr", "-i", str(path)]


def test_a_manifest_that_cannot_be_written_leaves_no_unrecorded_artifact(trained, exported, tmp_path) -> None:
    ws = _copy(exported, tmp_path)
    manifest = ws / "resnet18" / "manifest.json"
    undo = _freeze(manifest)
    try:
        done = _cli("export", "onnx", *trained.cli_args, "--workspace", ws, "--static", "--fp16")
    finally:
        subprocess.run(undo, check=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cannot write {manifest}" in _one_line(done)
    assert sorted(p.name for p in (ws / "resnet18").iterdir()) == ["manifest.json", "resnet18.onnx"]


# -- 7 and 8. artifacts that cannot be loaded ------------------------------------------------------------


def test_a_corrupt_artifact_whose_hash_matches_fails_the_gate_with_exit_1(trained, exported, tmp_path) -> None:
    ws = _copy(exported, tmp_path)
    onnx = ws / "resnet18" / "resnet18.onnx"
    onnx.write_bytes(b"\x08\x07garbage that is no ONNX model")
    _edit_entry(ws, sha256=sha256_file(onnx))
    done = _gate(trained, ws, "--no-build", "--runtimes", "onnxruntime-cpu")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "could not run" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["bad.pt2", "bad.ts", "bad.onnx"])
def test_a_file_that_is_not_its_format_fails_the_gate_in_one_line(trained, tmp_path, name: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(b"PK\x03\x04 not what the suffix says")
    done = _gate(trained, tmp_path / "ws", "--artifact", bad)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "cannot load" in done.stderr or "cannot load" in done.stderr.lower()
    assert "Traceback" not in done.stderr and "Ran into the following error" not in done.stderr


# -- 9. a read-only workspace ------------------------------------------------------------------------------


def test_a_read_only_workspace_is_gated_with_no_build(trained, exported, tmp_path) -> None:
    ws = _copy(exported, tmp_path)
    for path in [ws, *ws.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        done = run_unprivileged(
            ["-m", "resnet_deploy.cli.bench", "compare", *trained.cli_args, "--workspace", str(ws), "--images",
             str(trained.heldout_dir), *FAST, "--no-build", "--gate", "--runtimes", "onnxruntime-cpu"]
        )  # fmt: skip
    finally:
        for path in [ws, *ws.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "parity gate passed" in done.stderr
