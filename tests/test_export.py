"""Exports through the CLI, as a user runs them, checked against PyTorch outside the tool too."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from typer.testing import CliRunner

from resnet_deploy.cli.export import app
from resnet_deploy.errors import VerificationError
from resnet_deploy.export.onnx import export_onnx
from resnet_deploy.files import sha256_file
from resnet_deploy.models import ARCHITECTURES
from resnet_deploy.parity import compare
from resnet_deploy.pipeline import ModelOptions, Pipeline
from resnet_deploy.pipeline.step import Step
from resnet_deploy.preprocess import load_folder
from resnet_deploy.shapes import ShapeRange
from resnet_deploy.verify import reference_logits
from tests.privileges import run_unprivileged

runner = CliRunner()
CHECK_SHAPES = [(1, 3, 224, 224), (2, 3, 320, 256), (3, 3, 97, 131), (4, 3, 224, 224)]


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture(scope="module")
def resnet50_workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    for fmt in ("onnx", "torchscript", "program"):
        result, out = invoke(fmt, "resnet50", "--dynamic", "--workspace", ws)
        assert result.exit_code == 0, out
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    return ws / "resnet50", reference


def _reference(model, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        return x, model(x).numpy()


def test_resnet50_onnx_is_dynamic_and_matches(resnet50_workspace):
    folder, model = resnet50_workspace
    path = folder / "resnet50.onnx"
    proto = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert not (folder / "resnet50.onnx.data").exists()  # one self-contained file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in CHECK_SHAPES:
        x, ref = _reference(model, shape)
        assert rel_l2(session.run(None, {"input": x.numpy()})[0], ref) < 1e-4, shape


def test_resnet50_torchscript_and_program_match(resnet50_workspace):
    folder, model = resnet50_workspace
    scripted = torch.jit.load(str(folder / "resnet50.ts"))
    program = torch.export.load(str(folder / "resnet50.pt2")).module()
    for shape in CHECK_SHAPES:
        x, ref = _reference(model, shape)
        with torch.no_grad():
            assert rel_l2(scripted(x).numpy(), ref) < 1e-4, shape
            assert rel_l2(program(x).numpy(), ref) < 1e-4, shape


def test_the_program_and_the_torchscript_fix_no_device_in_their_graphs(resnet50_workspace):
    """The CUDA runtimes load on the CPU then move (`.to(cuda)`, `map_location`): a constant or a device
    check the export fixed to the CPU would fail only on a GPU. The program runs whole on the meta device
    (torch 2.11's traced convolution has no meta kernel, so the TorchScript graph is read instead)."""
    from resnet_deploy.runtimes.torch import load_program

    folder, _ = resnet50_workspace
    program = load_program(folder / "resnet50.pt2").to("meta")
    with torch.no_grad():
        out = program(torch.empty(2, 3, 97, 131, device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (2, 1000)
    graph = str(torch.jit.load(str(folder / "resnet50.ts")).inlined_graph)
    assert "aten::_convolution" in graph and not [line for line in graph.splitlines() if "Device" in line]


def test_torchscript_fixes_ieee_fp32_in_every_convolution(resnet50_workspace, tmp_path):
    """A trace keeps cuDNN's flags per convolution; ours must not be a TF32 model in disguise on a GPU."""
    from resnet_deploy.runtimes import Artifact
    from resnet_deploy.runtimes.torch import TorchScriptRuntime, traced_conv_flags

    folder, model = resnet50_workspace
    ours = torch.jit.load(str(folder / "resnet50.ts"))
    assert traced_conv_flags(ours) == {(True, False)}  # autotuned, IEEE FP32, all 53 convolutions
    # a plain trace under PyTorch's defaults (TF32 allowed for convolutions) is what the runtime flags
    with torch.no_grad():
        torch.jit.trace(model, torch.randn(1, 3, 64, 64), check_trace=False).save(str(tmp_path / "plain.ts"))
    runtime = TorchScriptRuntime(Artifact("torchscript", tmp_path / "plain.ts", "fp32"))
    assert any(tf32 for _, tf32 in traced_conv_flags(runtime.module))
    runtime._check_traced_tf32(runtime.module)  # what loading it on CUDA does
    assert runtime.precision == "tf32"
    entry = json.loads((folder / "manifest.json").read_text())["artifacts"]["torchscript"]
    assert entry["cudnn"] == {"fp32_precision": "ieee", "benchmark": True}


def test_manifest_records_source_inputs_and_artifacts(resnet50_workspace):
    folder, _ = resnet50_workspace
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == "resnet50"
    assert manifest["input"]["dims"] == ["batch", 3, "height", "width"]
    assert manifest["preprocess"]["crop"] == 224
    assert set(manifest["artifacts"]) == {"onnx-fp32", "torchscript", "program"}
    for entry in manifest["artifacts"].values():
        assert len(entry["sha256"]) == 64 and entry["tools"]["torch"]
        assert entry["verification"]["worst_rel_l2"] < 1e-4
    assert not list(folder.glob("*.tmp*")) and not list(folder.glob(".*.tmp*"))


def test_tool_versions_name_the_packages_that_import():
    import onnxruntime

    from resnet_deploy.provenance import tool_versions

    versions = tool_versions()
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    # onnxruntime and onnxruntime-gpu both provide `onnxruntime`: the record names the one that imports
    ort = [name for name in versions if name.startswith("onnxruntime")]
    assert len(ort) == 1 and versions[ort[0]] == onnxruntime.__version__


def test_finetuned_checkpoint_exports_without_num_classes(tmp_path):
    torch.manual_seed(5)
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Linear(512, 2)
    model.eval()
    ckpt = tmp_path / "finetuned.pt"
    torch.save({"model_state_dict": model.state_dict(), "optimizer": {}}, ckpt)
    result, out = invoke("onnx", "resnet18", "--dynamic", "--weights", ckpt, "--workspace", tmp_path / "ws")
    assert result.exit_code == 0, out
    session = ort.InferenceSession(str(tmp_path / "ws/resnet18/resnet18.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 224, 224), (2, 3, 97, 131)]:
        x, ref = _reference(model, shape)
        out_ = session.run(None, {"input": x.numpy()})[0]
        assert out_.shape == (shape[0], 2)
        assert rel_l2(out_, ref) < 1e-4


def test_old_style_resnet_exports_through_api(tmp_path):
    from resnet_deploy.models import make_pool_adaptive
    from tests.test_models import OldResNet

    torch.manual_seed(3)
    old = OldResNet().eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = old(x).numpy()
    make_pool_adaptive(old)
    path = tmp_path / "old.onnx"
    export_onnx(old, path, ShapeRange((1, 3, 64, 64), (1, 3, 224, 224), (2, 3, 320, 320)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert rel_l2(session.run(None, {"input": x.numpy()})[0], before) < 1e-4
    assert session.run(None, {"input": np.random.rand(1, 3, 320, 256).astype(np.float32)})[0].shape == (1, 10)


def test_reexport_reuses_and_changed_inputs_rebuild(tmp_path):
    ws = tmp_path / "ws"
    args = (
        "onnx",
        "resnet18",
        "--dynamic",
        "--max-shape",
        "2x3x128x128",
        "--opt-shape",
        "1x3x96x96",
        "--workspace",
        ws,
    )
    result, out = invoke(*args)
    assert result.exit_code == 0, out
    path = ws / "resnet18" / "resnet18.onnx"
    mtime = path.stat().st_mtime_ns
    result, out = invoke(*args)
    assert result.exit_code == 0 and "reusing" in out
    assert path.stat().st_mtime_ns == mtime
    result, out = invoke(*args, "--opset", "20")
    assert result.exit_code == 0 and "stale" in out
    assert onnx.load(str(path)).opset_import[0].version == 20
    manifest = (ws / "resnet18" / "manifest.json").read_text()
    result, out = invoke(*args, "--opset", "11")  # below what torch's exporter can write
    assert result.exit_code == 2 and "--opset 18 or higher" in out and "load resnet18" not in out  # before loading
    assert onnx.load(str(path)).opset_import[0].version == 20  # the good file was kept
    assert (ws / "resnet18" / "manifest.json").read_text() == manifest


def test_an_opset_above_what_can_be_verified_here_is_refused_before_loading(tmp_path):
    """Above ONNX Runtime's newest opset the file was written then failed to load under its temp name; above
    onnx's, torch's converter logged a traceback and the hint said "use --opset 18 or higher"."""
    import onnxruntime

    from resnet_deploy.export.onnx import max_opset

    highest, _ = max_opset()
    assert highest >= 18
    probe = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", highest)],
        ir_version=8,
    )
    ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])  # the limit itself loads
    for opset in (highest + 1, 99):
        result, out = invoke("onnx", "resnet18", "--opset", opset, "--workspace", tmp_path / "ws")
        assert result.exit_code == 2, out
        assert f"--opset {opset} is above {highest}" in out and f"from 18 to {highest}" in out, out
        assert "Traceback" not in out and "load resnet18" not in out  # before the model loads
    assert onnxruntime.__version__ in out or onnx.__version__ in out  # names what sets the limit
    assert not (tmp_path / "ws").exists()


def test_follow_up_commands_keep_the_workspace_range(tmp_path):
    """The README's order (--dynamic, then --fp16) must not quietly re-export the FP32 ONNX as static."""
    ws = tmp_path / "ws"
    base = ("resnet18", "--num-classes", "10", "--workspace", ws)
    result, out = invoke(
        "onnx", *base[:1], "--dynamic", "--max-shape", "2x3x128x128", "--opt-shape", "1x3x96x96", *base[1:],
        "--resize", "112", "--crop", "96",
    )  # fmt: skip
    assert result.exit_code == 0, out
    result, out = invoke("onnx", "resnet18", "--workspace", ws, "--fp16")  # no shape, class or preprocessing flags
    assert result.exit_code == 0, out
    assert "reusing" in out and "stale" not in out, out
    manifest = json.loads((ws / "resnet18" / "manifest.json").read_text())
    assert manifest["model"]["num_classes"] == 10
    assert (manifest["preprocess"]["resize"], manifest["preprocess"]["crop"]) == (112, 96)
    assert manifest["input"]["max"] == [2, 3, 128, 128]
    fp16 = onnx.load(str(ws / "resnet18" / manifest["artifacts"]["onnx-fp16"]["path"]))
    assert [d.dim_param for d in fp16.graph.input[0].type.tensor_type.shape.dim] == ["batch", "", "height", "width"]
    result, out = invoke("onnx", "resnet18", "--workspace", ws, "--static")  # asked for: rebuilt static
    assert result.exit_code == 0 and "onnx-fp32 is stale (changed: input.dynamic, input.max" in out, out


def test_recorded_preprocessing_is_kept_for_the_same_weights_only(tmp_path):
    Pipeline(ModelOptions("resnet18", resize=72, crop=64), tmp_path).ws.save()
    again = Pipeline(ModelOptions("resnet18"), tmp_path)
    assert (again.preprocess.resize, again.preprocess.crop) == (72, 64)
    one_flag = Pipeline(ModelOptions("resnet18", crop=56), tmp_path)  # a flag changes its own field only
    assert (one_flag.preprocess.resize, one_flag.preprocess.crop) == (72, 56)
    checkpoint = tmp_path / "finetuned.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), checkpoint)
    other = Pipeline(ModelOptions("resnet18", weights=str(checkpoint)), tmp_path)
    assert (other.preprocess.resize, other.preprocess.crop) == (256, 224)  # other weights: their own transforms


def test_a_crop_that_conflicts_with_a_recorded_or_default_resize_names_where_it_came_from(tmp_path):
    from resnet_deploy.errors import UsageError

    with pytest.raises(UsageError, match=r"--crop 300 is larger than the resize 256 of these weights") as info:
        Pipeline(ModelOptions("resnet18", crop=300), tmp_path)
    assert "--resize 342" in info.value.hint
    Pipeline(ModelOptions("resnet18", resize=72, crop=64), tmp_path).ws.save()
    with pytest.raises(UsageError, match=r"--crop 96 is larger than the resize 72 recorded in this workspace"):
        Pipeline(ModelOptions("resnet18", crop=96), tmp_path)
    with pytest.raises(UsageError, match=r"--resize 60 is smaller than the crop 64 recorded in this workspace"):
        Pipeline(ModelOptions("resnet18", resize=60), tmp_path)
    with pytest.raises(UsageError, match=r"--crop 96 is larger than --resize 80"):  # both typed: as before
        Pipeline(ModelOptions("resnet18", resize=80, crop=96), tmp_path)


def test_a_command_that_builds_nothing_leaves_the_manifest_alone(tmp_path):
    from resnet_deploy.pipeline import ShapeRequest

    Pipeline(ModelOptions("resnet18"), tmp_path, shapes=ShapeRequest(True, None, None, None)).onnx()
    before = (tmp_path / "resnet18" / "manifest.json").read_text()
    Pipeline(ModelOptions("resnet18"), tmp_path, shapes=ShapeRequest(False, None, "1x3x96x96", None))  # then fails
    assert (tmp_path / "resnet18" / "manifest.json").read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("onnx", "resnt50"), "unknown architecture 'resnt50' (did you mean 'resnet50'?)"),
        (("onnx", "resnet18", "--weights", "/nonexistent/w.pt"), "does not exist"),
        (("onnx", "resnet18", "--dynamic", "--min-shape", "1x3x300x300"), "min <= opt <= max"),
        (("onnx", "resnet18", "--opt-shape", "1x4x224x224"), "3 channels"),
        (("onnx", "resnet18", "--dynamic", "--max-shape", "0x3x224x224"), "positive"),
        (("onnx", "resnet18", "--crop", "0"), "--crop 0: must be a positive number"),  # not "the default crop"
        (("trt", "resnet18", "--resize", "0"), "--resize 0: must be a positive number"),
        (("onnx", "resnet18", "--resize", "-5"), "--resize -5: must be a positive number"),
        (("onnx", "resnet18", "--std", "nan,1,1"), "invalid --std 'nan,1,1': every number must be finite"),
        (("onnx", "resnet18", "--mean", "inf,0,0"), "invalid --mean 'inf,0,0': every number must be finite"),
        # an empty value (an unset shell variable) is an error, never "not given" and the default
        (("onnx", "resnet18", "--opt-shape", ""), "invalid shape ''"),
        (("torchscript", "resnet18", "--dynamic", "--max-shape", ""), "invalid shape ''"),
        (("onnx", "resnet18", "--std", ""), "invalid --std ''"),
        (("program", "resnet18", "--weights", ""), "--weights is empty"),
        # calibrating at the default 224 crop a model exported for 64x64: refused before the FP32 export
        (
            (
                "onnx",
                "resnet18",
                "--opt-shape",
                "1x3x64x64",
                "--int8",
                "--calib",
                Path(__file__).parents[1] / "calibration",
            ),
            "INT8 calibrates on the preprocessing's 224x224 crops, but the model is exported for 1x3x64x64",
        ),
        # the machine refuses the example input's memory: said as bad input, not torch's traceback
        (("onnx", "resnet18", "--opt-shape", "1x3x99999999999x64"), "out of memory"),
    ],
)
def test_bad_input_one_clear_line(tmp_path, args, message):
    result, out = invoke(*args, "--workspace", tmp_path / "ws")
    assert result.exit_code == 2, out
    assert message in out
    assert "Traceback" not in out
    assert not list((tmp_path / "ws").rglob("*.onnx"))


def test_unreadable_and_mismatched_checkpoints_via_cli(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    result, out = invoke("onnx", "resnet18", "--weights", bad, "--workspace", tmp_path / "ws")
    assert result.exit_code == 2 and "cannot read weights file" in out
    other = tmp_path / "r34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), other)
    result, out = invoke("onnx", "resnet18", "--weights", other, "--workspace", tmp_path / "ws")
    assert result.exit_code == 2 and "does not fit resnet18" in out and "unexpected keys" in out
    assert "it is a resnet34 checkpoint: use resnet34 as the model" in " ".join(out.split()), out


def test_paths_with_brackets_are_printed_as_they_are(tmp_path):
    torch.manual_seed(11)
    weights = tmp_path / "ft[red] ü.pt"  # rich markup in a file name must not be eaten
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), weights)
    workspace = tmp_path / "ws[b]"
    result, out = invoke(
        "torchscript", "resnet18", "--weights", weights, "--workspace", workspace, "--opt-shape", "1x3x64x64"
    )
    assert result.exit_code == 0, out
    flat = "".join(out.split())
    assert f"weights:{weights}".replace(" ", "") in flat
    assert f"->{workspace}/resnet18/resnet18.ts" in flat and f"manifest:{workspace}/resnet18/manifest.json" in flat


def test_a_program_that_refuses_part_of_its_own_range_says_how_to_fix_the_range(tmp_path):
    """torch.export fixes from the example whether ResNet's last map is 1x1: a .pt2 exported at 64x64 refuses
    32x32. The hint was "re-export with --dynamic", which the command already had."""
    args = ("program", "resnet18", "--dynamic", "--min-shape", "1x3x32x32", "--opt-shape", "1x3x64x64")
    result, out = invoke(*args, "--max-shape", "2x3x64x64", "--workspace", tmp_path / "ws")
    if result.exit_code == 0:
        pytest.skip("this torch exports a .pt2 that runs across the 1x1 boundary")
    flat = " ".join(out.split())
    assert result.exit_code == 2 and "rejected input (1, 3, 32, 32)" in flat, out
    assert "re-export with --dynamic" not in flat and "above 32 from --min-shape up" in flat, out
    assert "resnet18.pt2 on torch-export rejected" in flat and ".tmp" not in flat, out  # not the temp file's name
    assert not (tmp_path / "ws").exists()


def test_unwritable_workspace(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result, out = invoke("onnx", "resnet18", "--workspace", blocker / "ws")
    assert result.exit_code == 2 and "not a folder" in out and "Traceback" not in out


def _unprivileged_export(*args) -> subprocess.CompletedProcess:
    """`resnet-export ARGS` in a process that file permissions apply to."""
    return run_unprivileged(["-m", "resnet_deploy.cli.export", *[str(a) for a in args]])


def test_a_workspace_that_cannot_be_written_is_one_line(tmp_path):
    """The error names the folder, not the temp file the write was refused for, and is no traceback."""
    result, out = invoke("onnx", "resnet18", "--workspace", tmp_path, "--opt-shape", "1x3x64x64")
    assert result.exit_code == 0, out
    folder = tmp_path / "resnet18"
    folder.chmod(0o555)
    try:
        done = _unprivileged_export("onnx", "resnet18", "--workspace", tmp_path, "--fp16")
    finally:
        folder.chmod(0o755)
    out = done.stdout + done.stderr
    assert done.returncode == 2 and f"permission denied: cannot write in {folder}" in out, out
    assert "Traceback" not in out and not list(folder.glob(".*tmp*"))


def test_a_checkpoint_in_a_folder_that_cannot_be_entered_is_one_line(tmp_path):
    """Probing such a path raises PermissionError itself (Path.is_file passes only 'not found' errors on):
    the handler that turns it into one line must not raise again while wording it."""
    locked = tmp_path / "locked"
    locked.mkdir()
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), locked / "ft.pt")
    locked.chmod(0)
    try:
        done = _unprivileged_export("onnx", "resnet18", "--weights", locked / "ft.pt", "--workspace", tmp_path / "ws")
    finally:
        locked.chmod(0o755)
    out = done.stdout + done.stderr
    assert done.returncode == 2 and f"permission denied: {locked / 'ft.pt'}" in out, out
    assert "Traceback" not in out


def test_failed_verification_leaves_nothing(tmp_path):
    pipe = Pipeline(ModelOptions("resnet18"), tmp_path)

    def reject(_artifact):
        raise VerificationError("does not match")

    with pytest.raises(VerificationError):
        pipe.build(
            Step(
                "onnx-fp32",
                "resnet18.onnx",
                "onnx",
                "fp32",
                pipe.fingerprint(x=1),
                lambda p: p.write_bytes(b"x"),
                reject,
            )
        )
    assert not (tmp_path / "resnet18").exists()  # no file, no manifest, no empty folder: nothing half-done
    assert "onnx-fp32" not in pipe.ws.artifacts


def test_an_artifact_edited_on_disk_is_rebuilt_not_reused(trained, tmp_path):
    """Same inputs but a file that is no longer what was built and verified (a hand edit, a bad copy):
    the workspace must rebuild it, never hand it on as verified."""
    art = trained.pipeline(tmp_path).onnx()
    model = onnx.load(str(art.path))
    bias = next(t for t in model.graph.initializer if t.name == "fc.bias")
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] += 100.0  # class 0 now wins every image
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(art.path))
    edited = sha256_file(art.path)

    again = trained.pipeline(tmp_path)
    assert again.ws.why_stale("onnx-fp32", again.ws.artifacts["onnx-fp32"]["inputs"]) == (
        f"{art.path.name} was modified since it was built"
    )
    rebuilt = again.onnx()
    assert sha256_file(rebuilt.path) != edited
    assert sha256_file(rebuilt.path) == again.ws.artifacts["onnx-fp32"]["sha256"]
    images = load_folder(trained.heldout_dir, trained.preprocess, limit=16).tensors
    session = ort.InferenceSession(str(rebuilt.path), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"input": images[i : i + 4]})[0] for i in range(0, 16, 4)])
    metrics = compare(reference_logits(again.model, images), logits)
    assert metrics.top1_agreement == 1.0 and metrics.rel_l2 < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_exports_all_formats(tmp_path, arch):
    ws = tmp_path / "ws"
    for fmt in ("onnx", "torchscript", "program"):
        result, out = invoke(fmt, arch, "--dynamic", "--max-shape", "4x3x320x320", "--workspace", ws)
        assert result.exit_code == 0, out
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch).eval()
    session = ort.InferenceSession(str(ws / arch / f"{arch}.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(ws / arch / f"{arch}.ts"))
    program = torch.export.load(str(ws / arch / f"{arch}.pt2")).module()
    for shape in CHECK_SHAPES:
        x, ref = _reference(model, shape)
        with torch.no_grad():
            assert rel_l2(session.run(None, {"input": x.numpy()})[0], ref) < 1e-4
            assert rel_l2(scripted(x).numpy(), ref) < 1e-4
            assert rel_l2(program(x).numpy(), ref) < 1e-4


def test_unstrided_maxpool_is_exact_and_exports_for_any_size():
    """The stem max-pool rewrite used where torch's export fixes the input's parity (torch 2.11)."""
    from torch.export import Dim

    from resnet_deploy.export.program import StridedMaxPool, strided_maxpool_specializes, unstride_maxpools

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    rewritten = unstride_maxpools(model)
    assert isinstance(rewritten.maxpool, StridedMaxPool) and isinstance(model.maxpool, torch.nn.MaxPool2d)
    dims = {"x": {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}}
    program = torch.export.export(rewritten, (torch.randn(2, 3, 64, 64),), dynamic_shapes=dims).module()
    for shape in [(1, 3, 64, 64), (2, 3, 97, 131), (3, 3, 65, 66), (1, 3, 224, 224)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x)
            assert torch.equal(rewritten(x), expected), shape  # a max rounds nothing: bit-identical
            assert rel_l2(program(x).numpy(), expected.numpy()) < 1e-5, shape
    assert isinstance(strided_maxpool_specializes(), bool)


def test_verification_computes_each_reference_once_per_model():
    import gc

    from resnet_deploy import verify

    model = torchvision.models.resnet18(num_classes=10).eval()
    batch, first = verify._reference_for(model, (2, 3, 64, 64), 0)
    again, second = verify._reference_for(model, (2, 3, 64, 64), 0)
    assert second is first and np.array_equal(batch, again)
    _, other = verify._reference_for(model, (2, 3, 64, 64), 1)  # another seed, another batch
    assert not np.array_equal(other, first)
    assert rel_l2(first, verify.reference_logits(model, batch)) == 0.0
    gc.collect()  # models other tests left in reference cycles go now, not in the count below
    entries = len(verify._REFERENCES)
    del model
    gc.collect()
    assert len(verify._REFERENCES) == entries - 1  # a model that is gone takes its references with it


def test_help_paragraphs_are_not_cut_mid_sentence():
    """typer keeps a docstring's line breaks: `trt --help` broke 'it still makes / the ONNX' at any width."""
    result = runner.invoke(app, ["trt", "--help"], env={"COLUMNS": "240", "TERMINAL_WIDTH": "240"})
    assert result.exit_code == 0
    assert "Without TensorRT or a GPU it still makes the ONNX it would build from" in result.output, result.output


def test_torchscript_and_program_take_the_preprocessing_options(tmp_path):
    """The crop sets the default shape, and the README lists --resize/--crop/--mean/--std as common options."""
    result, out = invoke("torchscript", "resnet18", "--crop", "64", "--resize", "72", "--workspace", tmp_path)
    assert result.exit_code == 0, out
    manifest = json.loads((tmp_path / "resnet18" / "manifest.json").read_text())
    assert (manifest["preprocess"]["resize"], manifest["preprocess"]["crop"]) == (72, 64)
    assert manifest["artifacts"]["torchscript"]["input"]["opt"] == [1, 3, 64, 64]
    result, out = invoke("program", "resnet18", "--std", "0.2,0.2,0.2", "--workspace", tmp_path)
    assert result.exit_code == 0, out
    manifest = json.loads((tmp_path / "resnet18" / "manifest.json").read_text())
    assert manifest["preprocess"]["std"] == [0.2, 0.2, 0.2] and manifest["preprocess"]["crop"] == 64  # kept


@pytest.fixture(scope="module")
def small_workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("small")
    result, out = invoke("onnx", "resnet18", "--workspace", ws, "--opt-shape", "1x3x64x64")
    assert result.exit_code == 0, out
    return ws


def _broken(manifest: dict, how: str) -> object:
    art = manifest["artifacts"]["onnx-fp32"]
    if how == "list":
        return []
    if how == "short-shape":
        manifest["input"]["min"] = [1, 3]
    elif how == "entry-string":
        manifest["artifacts"]["onnx-fp32"] = "oops"
    elif how == "classes-string":
        manifest["model"]["num_classes"] = "ten"
    elif how == "resize-string":
        manifest["preprocess"]["resize"] = "x"
    elif how == "artifacts-list":
        manifest["artifacts"] = []
    elif how == "newer-schema":
        manifest["schema"] = 99
    elif how == "no-sha256":
        del art["sha256"]
    elif how == "outside":
        art["path"] = "../../../../etc/passwd"
    return manifest


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("list", "it holds a JSON list"),
        ("short-shape", "'input' is malformed"),
        ("entry-string", "artifact 'onnx-fp32' is not an object"),
        ("classes-string", "'model' is malformed"),
        ("resize-string", "'preprocess' is malformed"),
        ("artifacts-list", "'artifacts' is not an object"),
        ("newer-schema", "schema 99"),
        ("no-sha256", "artifact 'onnx-fp32' has no sha256"),
        ("outside", "artifact 'onnx-fp32' lies outside the workspace"),
    ],
)
def test_a_malformed_manifest_is_one_line_for_export_and_compare(small_workspace, tmp_path, how, message):
    """Valid JSON of the wrong shape (hand-edited, or from elsewhere) is named like unreadable JSON, not met
    later as a traceback deep in whatever reads the field first; the file is left as it was."""
    from resnet_deploy.cli.bench import app as bench

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    manifest = ws / "resnet18" / "manifest.json"
    manifest.write_text(json.dumps(_broken(json.loads(manifest.read_text()), how)))
    before = manifest.read_bytes()
    result, out = invoke("onnx", "resnet18", "--workspace", ws, "--fp16")
    flat = " ".join(out.split())
    assert result.exit_code == 2 and f"cannot read {manifest}: {message}" in flat, out
    assert "delete it; the next export rebuilds it" in flat and "Traceback" not in out
    run = runner.invoke(bench, ["compare", "resnet18", "--workspace", str(ws), "--no-build", "--size", "64"])
    assert run.exit_code == 2 and message in " ".join(run.output.split()), run.output
    assert manifest.read_bytes() == before and not (ws / "resnet18" / "resnet18.fp16.onnx").exists()


def test_a_relative_weights_path_is_recorded_absolute(tmp_path, monkeypatch):
    """The workspace remembers its weights for follow-up commands: recorded as typed, `ft.pt` would name
    another file (here: one with other classes) when the next command runs from another folder."""
    for folder, classes in (("a", 10), ("b", 7)):
        (tmp_path / folder).mkdir()
        torch.manual_seed(classes)
        torch.save(torchvision.models.resnet18(num_classes=classes).state_dict(), tmp_path / folder / "ft.pt")
    ws = tmp_path / "ws"
    monkeypatch.chdir(tmp_path / "a")
    result, out = invoke("onnx", "resnet18", "--weights", "ft.pt", "--workspace", ws, "--opt-shape", "1x3x64x64")
    assert result.exit_code == 0, out
    manifest = json.loads((ws / "resnet18" / "manifest.json").read_text())
    assert manifest["model"]["weights"] == str(tmp_path / "a" / "ft.pt")
    monkeypatch.chdir(tmp_path / "b")
    result, out = invoke("onnx", "resnet18", "--workspace", ws)
    assert result.exit_code == 0, out
    assert "reusing" in out and "stale" not in out, out
    assert json.loads((ws / "resnet18" / "manifest.json").read_text())["model"]["num_classes"] == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--opt-shape", "axbxc"), "invalid shape 'axbxc'"),
        (("--dynamic", "--max-shape", "1x3x224"), "invalid shape '1x3x224'"),
        (("--std", "0,0,0"), "invalid --std '0,0,0': every number must be positive"),
    ],
)
def test_malformed_options_are_refused_before_the_model_loads(tmp_path, args, message):
    result, out = invoke("onnx", "resnet18", *args, "--workspace", tmp_path / "ws")
    assert result.exit_code == 2 and message in out, out
    assert "load resnet18" not in out and not (tmp_path / "ws").exists()


def test_int8_reads_its_images_before_the_fp32_export(tmp_path):
    bad = tmp_path / "calib"
    bad.mkdir()
    (bad / "photo.jpg").write_bytes(b"\xff\xd8 not really a jpeg" * 10)
    result, out = invoke("onnx", "resnet18", "--int8", "--calib", bad, "--workspace", tmp_path / "ws")
    assert result.exit_code == 2 and "no usable calibration image" in " ".join(out.split()), out
    assert not list((tmp_path / "ws").rglob("*.onnx"))
