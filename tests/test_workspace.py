"""The workspace manifest when more than one command works on it."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from resnet_deploy.files import atomic_path, atomic_write_text
from resnet_deploy.pipeline.step import Step
from resnet_deploy.workspace import Workspace


def _record(root: Path, key: str, payload: bytes) -> None:
    ws = Workspace(root, "resnet18")
    file = ws.path(f"{key}.bin")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(payload)
    ws.record(key, file, {"key": key}, format="test")


def test_two_commands_started_together_keep_both_artifacts(tmp_path: Path) -> None:
    # both read the manifest before either recorded (as `resnet-export torchscript` and `program` at once)
    first, second = Workspace(tmp_path, "resnet18"), Workspace(tmp_path, "resnet18")
    for ws, key in ((first, "torchscript"), (second, "program")):
        file = ws.path(f"{key}.bin")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(key.encode())
        ws.record(key, file, {"key": key}, format="test")
    on_disk = json.loads((tmp_path / "resnet18" / "manifest.json").read_text())
    assert set(on_disk["artifacts"]) == {"torchscript", "program"}
    assert Workspace(tmp_path, "resnet18").why_stale("torchscript", {"key": "torchscript"}) is None
    # a rebuild by one command is not undone by another that still holds the old entry
    _record(tmp_path, "program", b"rebuilt")
    first.save()
    assert Workspace(tmp_path, "resnet18").why_stale("program", {"key": "program"}) is None


def _many(root: Path, name: str) -> None:
    for i in range(15):
        _record(root, f"{name}-{i}", f"{name}{i}".encode())


def test_concurrent_processes_lose_no_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_many, args=(tmp_path, name)) for name in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    artifacts = json.loads((tmp_path / "resnet18" / "manifest.json").read_text())["artifacts"]
    assert len(artifacts) == 45
    assert not [p.name for p in (tmp_path / "resnet18").iterdir() if p.name.startswith(".")]  # no lock or temp files


def test_a_failing_writer_leaves_the_old_file_whole_and_no_temp_file(tmp_path: Path) -> None:
    """An export or report that fails halfway (or is interrupted) keeps the previous file as it was: the
    manifest's hash of it stays valid, and no half-written artifact is ever picked up."""
    ws = Workspace(tmp_path, "resnet18")
    _record(tmp_path, "resnet18", b"the old artifact")
    target = ws.path("resnet18.bin")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of a new one")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"the old artifact"
    assert Workspace(tmp_path, "resnet18").why_stale("resnet18", {"key": "resnet18"}) is None
    assert sorted(p.name for p in ws.dir.iterdir()) == ["manifest.json", "resnet18.bin"]

    # while a writer is busy the old file is still whole; it is replaced at once, with normal permissions
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        assert tmp != target and tmp.suffix == ".bin" and target.read_bytes() == b"the old artifact"
    assert target.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    atomic_write_text(target, "text")
    assert target.read_text() == "text"
    assert sorted(p.name for p in ws.dir.iterdir()) == ["manifest.json", "resnet18.bin"]


def test_a_command_that_makes_nothing_leaves_no_folder(tmp_path: Path) -> None:
    """A Ctrl-C or a failure before the first artifact leaves no empty `artifacts/<model>/` (nor the
    workspace folder, when the command made it); a folder that holds something is kept."""
    from resnet_deploy.pipeline import ModelOptions, Pipeline

    root = tmp_path / "new" / "ws"
    pipe = Pipeline(ModelOptions("resnet18"), root)
    assert not (tmp_path / "new").exists()  # checking the workspace is writable created nothing

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe.build(Step("onnx-fp32", "resnet18.onnx", "onnx", "fp32", pipe.fingerprint(), interrupted, lambda a: {}))
    assert not (tmp_path / "new").exists()

    # the same failure in a folder with other things in it removes only what it made
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "keep.txt").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        pipe.build(Step("onnx-fp32", "resnet18.onnx", "onnx", "fp32", pipe.fingerprint(), interrupted, lambda a: {}))
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["keep.txt"]


def test_the_recorded_hash_is_of_the_file_this_command_wrote(tmp_path: Path) -> None:
    """Two commands building the same artifact at once: each records the hash of its own file, so if the
    other's file replaced it in between, the entry reads as modified and is rebuilt, never trusted."""
    from resnet_deploy.files import sha256_file

    ws = Workspace(tmp_path, "resnet18")
    target = ws.path("model.bin")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"ours")
        ours = sha256_file(tmp)
    target.write_bytes(b"theirs, moved in after ours")
    ws.record("model", target, {"key": "model"}, ours, format="test")
    assert ws.artifacts["model"]["sha256"] == ours
    assert (
        Workspace(tmp_path, "resnet18").why_stale("model", {"key": "model"})
        == "model.bin was modified since it was built"
    )
