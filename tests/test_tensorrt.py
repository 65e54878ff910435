"""TensorRT engines: pure logic here everywhere, real engines where TensorRT and a GPU are present.

Never fakes a `tensorrt` module: the API names the code uses are checked statically instead
(parsing the modules), against names read in TensorRT's Python bindings and its 10.x / 11.x docs.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from resnet_deploy.engines import build as engine_build
from resnet_deploy.engines import profile
from resnet_deploy.errors import MissingDependencyError, UsageError
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.pipeline import engines as pipeline_engines
from resnet_deploy.runtimes import tensorrt_env
from resnet_deploy.shapes import ShapeRange

REPO = Path(__file__).resolve().parents[1]
MODULES = [
    *sorted((REPO / "src/resnet_deploy/engines").glob("*.py")),
    REPO / "src/resnet_deploy/runtimes/tensorrt.py",
    REPO / "src/resnet_deploy/runtimes/tensorrt_env.py",
]
#: the files that call TensorRT's API (the rest of engines/ reads its version at most)
API_MODULES = {"tensorrt_api.py", "tensorrt.py"}
AVAILABLE = tensorrt_env.unavailable_reason() is None
needs_no_tensorrt = pytest.mark.skipif(
    AVAILABLE, reason="TensorRT and a GPU are present: the missing-TensorRT path is not taken"
)

RECORDED = ShapeRange((1, 3, 64, 64), (1, 3, 224, 224), (8, 3, 448, 448))


# -- profiles --------------------------------------------------------------------------------------


def test_profile_defaults_to_the_recorded_range():
    assert profile.profile_shapes(recorded=RECORDED) == RECORDED


def test_profile_flags_override_each_bound():
    p = profile.profile_shapes("2x3x96x96", "2x3x224x224", "4x3x256x256", recorded=RECORDED)
    assert (p.min, p.opt, p.max) == ((2, 3, 96, 96), (2, 3, 224, 224), (4, 3, 256, 256)) and p.dynamic
    only_min = profile.profile_shapes("1x3x96x96", recorded=RECORDED)
    assert (only_min.min, only_min.opt, only_min.max) == ((1, 3, 96, 96), RECORDED.opt, RECORDED.max)


def test_profile_short_shapes_and_static_profile():
    p = profile.profile_shapes("224", "224", "224", recorded=RECORDED)
    assert p.min == p.opt == p.max == (1, 3, 224, 224) and not p.dynamic


@pytest.mark.parametrize(
    "flags",
    [{"max_shape": "16x3x448x448"}, {"min_shape": "1x3x32x32"}, {"min_shape": "1x3x64x32", "opt_shape": "1x3x64x64"}],
    ids=["above-max", "below-min", "below-min-width"],
)
def test_profile_outside_the_recorded_range_is_refused(flags):
    # the ONNX was verified only inside the recorded range: below its min is as unverified as above its max
    with pytest.raises(UsageError, match=r"outside the range 1x3x64x64 \.\. 8x3x448x448") as e:
        profile.profile_shapes(recorded=RECORDED, **flags)
    assert "resnet-export onnx" in str(e.value)


def test_profile_of_a_static_onnx_cannot_grow():
    static = ShapeRange.static((1, 3, 224, 224))
    with pytest.raises(UsageError, match="is static"):
        profile.profile_shapes(max_shape="4x3x224x224", recorded=static)
    assert profile.profile_shapes(recorded=static) == static


@pytest.mark.parametrize(
    "flags, match",
    [
        (("1x3x224x224", "1x3x128x128", None), "min <= opt <= max"),
        (("1x3x2x", None, None), "invalid shape"),
        ((None, None, "1x1x224x224"), "3 channels"),
        (("1x3x0x224", None, None), "positive"),
    ],
)
def test_profile_bad_flags(flags, match):
    with pytest.raises(UsageError, match=match):
        profile.profile_shapes(*flags, recorded=RECORDED)


def test_profile_from_onnx_dims_keeps_fixed_axes():
    p = profile.profile_shapes(onnx_dims=[1, 3, "height", "width"])
    assert p.min[0] == p.opt[0] == p.max[0] == 1
    assert p.min[2:] == (64, 64) and p.max[2:] == (448, 448)
    static = profile.profile_shapes(onnx_dims=[2, 3, 160, 160])
    assert static.min == static.max == (2, 3, 160, 160)


def test_profile_contradicting_a_fixed_onnx_axis():
    with pytest.raises(UsageError, match="fixed batch of 1"):
        profile.profile_shapes(max_shape="4x3x224x224", onnx_dims=[1, 3, "h", "w"])
    with pytest.raises(UsageError, match="3 dimensions"):
        profile.profile_shapes(onnx_dims=[1, 3, 224])


def test_profile_inputs_check_the_engine_shape():
    rng = profile.profile_shapes(recorded=RECORDED)
    with pytest.raises(UsageError, match=r"outside .* range 1x3x64x64 \.\. 8x3x448x448"):
        rng.check((16, 3, 224, 224), "resnet50-fp16.engine")
    rng.check((8, 3, 448, 448))


# -- small parsers ---------------------------------------------------------------------------------


def test_parse_version():
    assert tensorrt_env.parse_version("10.7.0.post1") == (10, 7, 0)
    assert tensorrt_env.parse_version("11.0.0.14") == (11, 0, 0, 14)
    assert tensorrt_env.parse_version(None) == ()


def test_parse_bytes():
    assert profile.parse_bytes("4G") == 4 << 30
    assert profile.parse_bytes("512MiB") == 512 << 20
    assert profile.parse_bytes("1024") == 1024
    assert profile.parse_bytes(None) is None
    with pytest.raises(UsageError, match="invalid size"):
        profile.parse_bytes("lots")


def test_precision_flags(trained):
    assert profile.precision_from_flags(False, False) is None
    assert profile.precision_from_flags(True, False) == "fp16"
    assert profile.precision_from_flags(False, True) == "int8"  # --onnx: the file carries its scales
    with pytest.raises(UsageError, match="exclude"):
        profile.precision_from_flags(True, True)
    # what INT8 needs besides the flag is the calibration request's one check
    assert CalibrationRequest.from_options(True, trained.calib_dir, None, None).folder == trained.calib_dir
    with pytest.raises(UsageError, match="--calib only applies"):
        CalibrationRequest.from_options(False, Path("c"), None, None)
    with pytest.raises(UsageError, match="--calib DIR"):
        CalibrationRequest.from_options(True, None, None, None)


# -- where an engine was built vs. where it runs ---------------------------------------------------

BUILT = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}


def test_same_machine_is_compatible():
    assert tensorrt_env.compatibility(BUILT, dict(BUILT)) == ([], [])
    tensorrt_env.check_compatible(BUILT, {**BUILT, "tensorrt_version": "10.7.0.post1"}, "x.engine")


def test_other_tensorrt_version_is_refused_plainly():
    errors, _ = tensorrt_env.compatibility(BUILT, {**BUILT, "tensorrt_version": "11.0.0"})
    assert errors and "10.7.0" in errors[0] and "11.0.0" in errors[0]
    with pytest.raises(UsageError) as e:
        tensorrt_env.check_compatible(BUILT, {**BUILT, "tensorrt_version": "10.8.0"}, "resnet50-fp16.engine")
    text = str(e.value)
    assert "resnet50-fp16.engine was built elsewhere, with TensorRT 10.7.0 (this machine has TensorRT 10.8.0)" in text
    assert "rebuild it" in text and "\n" not in text


def test_other_compute_capability_is_refused_plainly():
    here = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    with pytest.raises(UsageError) as e:
        tensorrt_env.check_compatible(BUILT, here, "m.engine")
    assert "compute capability 8.9 (NVIDIA L4; this one is 9.0, NVIDIA H100 80GB HBM3)" in str(e.value)


def test_other_gpu_same_architecture_only_warns():
    errors, warnings = tensorrt_env.compatibility(BUILT, {**BUILT, "gpu_name": "NVIDIA L40S"}, "m.engine")
    assert errors == [] and "tuned on NVIDIA L4" in warnings[0]


def test_unknown_build_record_warns_and_lets_tensorrt_decide():
    errors, warnings = tensorrt_env.compatibility({}, BUILT, "m.engine")
    assert errors == [] and "no build record" in warnings[0]


def test_sidecar_round_trip_and_manifest_entry_wins(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    assert tensorrt_env.read_sidecar(engine) is None
    path = tensorrt_env.write_sidecar(engine, {**BUILT, "profile": RECORDED.to_dict()})
    assert path == tmp_path / "model.engine.json"
    assert tensorrt_env.build_record(engine)["compute_capability"] == "8.9"
    assert tensorrt_env.build_record(engine, {"tensorrt_version": "11.0.0"})["tensorrt_version"] == "11.0.0"
    assert ShapeRange.from_dict(tensorrt_env.read_sidecar(engine)["profile"]) == RECORDED
    path.write_text("{not json")
    assert tensorrt_env.read_sidecar(engine) is None


# -- without TensorRT ------------------------------------------------------------------------------


def test_missing_message_is_one_line_with_the_fix_and_the_onnx():
    err = engine_build.missing_tensorrt_error(
        "TensorRT is not installed (no Python package 'tensorrt') and no CUDA GPU is visible",
        Path("artifacts/resnet50/resnet50-int8-tensorrt.onnx"),
        "int8",
    )
    text = str(err)
    assert err.exit_code == 3 and "\n" not in text
    assert "TensorRT is not installed" in text and "pip install" in text and "NVIDIA GPU" in text
    assert "INT8 ONNX" in text and "artifacts/resnet50/resnet50-int8-tensorrt.onnx" in text and "ONNX Runtime" in text
    assert "[" not in err.hint  # rich would swallow "[tensorrt]" as markup
    gpu_only = engine_build.missing_tensorrt_error("no CUDA GPU is visible")
    assert "pip install" not in gpu_only.hint and "NVIDIA GPU" in gpu_only.hint


@needs_no_tensorrt
def test_reason_and_runtime_refusal_here(tmp_path):
    from resnet_deploy.runtimes import Artifact, create, runtimes_for

    reason = tensorrt_env.unavailable_reason()
    assert reason and ("TensorRT" in reason or "GPU" in reason)
    assert all(spec.name != "tensorrt" for spec in runtimes_for("engine", "cuda"))
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(MissingDependencyError, match=r"cannot run m\.engine"):
        create("tensorrt", Artifact.from_file(engine), "cuda:0")


# -- the CLI ---------------------------------------------------------------------------------------

SMALL = ["resnet18", "--crop", "64", "--resize", "72"]


@pytest.fixture(scope="module")
def small_workspace(tmp_path_factory) -> Path:
    """A workspace whose recorded range is small (1x3x64x64 .. 2x3x96x96), so exports take seconds."""
    from resnet_deploy.pipeline import ModelOptions, Pipeline, ShapeRequest

    root = tmp_path_factory.mktemp("trt-ws")
    Pipeline(
        ModelOptions("resnet18", "none", crop=64, resize=72),
        root,
        shapes=ShapeRequest(True, "1x3x64x64", None, "2x3x96x96"),
    ).ws.save()  # a pipeline saves with its first artifact; this one records only the range
    return root


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "resnet_deploy.cli.export", "trt", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out
    return lines[0]


@needs_no_tensorrt
def test_cli_without_tensorrt_makes_the_onnx_then_says_what_is_missing(small_workspace):
    proc = _cli(*SMALL, "--workspace", str(small_workspace), cwd=small_workspace)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    line = _one_error_line(proc)
    onnx = small_workspace / "resnet18" / "resnet18.onnx"
    assert onnx.is_file()
    assert "cannot build a TensorRT engine here" in line and "pip install" in line
    assert f"FP32 ONNX the engine is built from is ready at {onnx}" in line and "ONNX Runtime" in line
    manifest = json.loads((small_workspace / "resnet18" / "manifest.json").read_text())
    assert "onnx-fp32" in manifest["artifacts"] and not any(k.startswith("tensorrt") for k in manifest["artifacts"])

    # --onnx FILE: no model, no workspace; same message, pointing at that file
    proc = _cli("--onnx", str(onnx), cwd=small_workspace)
    assert proc.returncode == 3
    line = _one_error_line(proc)
    assert f"ready at {onnx}" in line
    assert f"resnet-bench compare --artifact {onnx}" in line  # outside a workspace compare needs the path
    assert not onnx.with_suffix(".engine").exists()


def test_library_int8_engine_without_calibration_images_is_refused(small_workspace, monkeypatch):
    """The library, like the CLI, never picks a calibration folder for the caller (it used to take
    ./calibration when there was one): refused before anything is exported."""
    from resnet_deploy.pipeline import ModelOptions, Pipeline

    monkeypatch.chdir(REPO)  # where ./calibration exists
    pipe = Pipeline(ModelOptions("resnet18", "none", crop=64, resize=72), small_workspace)
    with pytest.raises(UsageError, match="INT8 engine needs calibration images"):
        pipe.engine("int8")
    assert not any(k.startswith("onnx-int8") for k in pipe.ws.artifacts)


@needs_no_tensorrt
def test_cli_int8_with_calib_exactly_as_written(small_workspace):
    if importlib.util.find_spec("resnet_deploy.int8.quantize") is None:
        pytest.skip("INT8 ONNX export (resnet_deploy.int8.quantize) is not in this tree yet")
    proc = _cli(*SMALL, "--int8", "--calib", str(REPO / "calibration"), "--workspace", str(small_workspace), cwd=REPO)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    line = _one_error_line(proc)
    assert "INT8 ONNX the engine is built from is ready at" in line and "pip install" in line
    manifest = json.loads((small_workspace / "resnet18" / "manifest.json").read_text())
    int8_onnx = small_workspace / "resnet18" / manifest["artifacts"]["onnx-int8-tensorrt"]["path"]
    assert int8_onnx.is_file()

    # that file again with --onnx: --int8 needs no images (its Q/DQ scales are in it), and --calib is refused
    from resnet_deploy.cli.export import app

    result = CliRunner().invoke(app, ["trt", "--onnx", str(int8_onnx), "--int8"])
    assert result.exit_code == 3 and f"INT8 ONNX the engine is built from is ready at {int8_onnx}" in " ".join(
        result.output.split()
    ), result.output
    result = CliRunner().invoke(app, ["trt", "--onnx", str(int8_onnx), "--int8", "--calib", "calibration"])
    assert result.exit_code == 2 and "--calib does not apply with --onnx" in result.output, result.output


@pytest.mark.parametrize(
    "args, match",
    [
        (["--fp16", "--int8", "--calib", "c"], "exclude each other"),
        (["--calib", "c"], "--calib only applies with --int8"),
        (["--int8"], "--calib DIR"),
        (["resnet18", "--calib-method", "minmax"], "--calib-method only applies with --int8"),  # not ignored
        (["resnet18", "--fp16", "--calib-size", "4"], "--calib-size only applies with --int8"),
        (["--workspace-size", "lots"], "invalid size"),
        (["--onnx", "missing.onnx"], "does not exist"),
        (["resnet18", "--timing-cache", str(REPO)], f"--timing-cache {REPO} is a folder"),
        (["--onnx", "m.onnx", "--output", str(REPO)], f"--output {REPO} is a folder"),
    ],
)
def test_cli_usage_errors_exit_2(args, match, tmp_path):
    """Refused before the model loads: nothing is exported into the workspace first."""
    from resnet_deploy.cli.export import app

    where = [] if "--onnx" in args else ["--workspace", str(tmp_path)]  # --onnx takes no workspace
    result = CliRunner().invoke(app, ["trt", *args, *where])
    assert result.exit_code == 2, result.output
    assert match in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args, named",
    [
        (["resnet18"], "MODEL does"),
        (["--weights", "ft.pt", "--resize", "72"], "--weights, --resize do"),
        (["--workspace", "ws", "--calib-size", "8"], "--calib-size, --workspace do"),
    ],
)
def test_cli_onnx_refuses_what_the_file_already_fixes(args, named, tmp_path):
    """With --onnx the model, preprocessing and scales come from the file: such options would be ignored."""
    from resnet_deploy.cli.export import app

    result = CliRunner().invoke(app, ["trt", "--onnx", str(tmp_path / "m.onnx"), *args])
    assert result.exit_code == 2, result.output
    assert f"{named} not apply with --onnx" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("content", [b"\x00\xffnot protobuf" * 50, b"a text file, named .onnx\n"])
def test_cli_onnx_that_is_not_onnx_exits_2_in_one_line(content, tmp_path):
    from resnet_deploy.cli.export import app

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(content)
    result = CliRunner().invoke(app, ["trt", "--onnx", str(junk)])
    assert result.exit_code == 2, result.output
    assert "junk.onnx is not a readable ONNX model" in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["trt", "--onnx", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output, result.output


@needs_no_tensorrt
def test_cli_new_workspace_exports_the_onnx_for_the_profile_asked(tmp_path):
    """No range recorded yet: the ONNX made first covers the profile asked for, rather than refusing it as
    outside the default range of an ONNX that did not exist."""
    shapes = ["--min-shape", "1x3x32x32", "--opt-shape", "1x3x64x64", "--max-shape", "2x3x64x64"]
    proc = _cli(*SMALL, *shapes, "--workspace", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "FP32 ONNX the engine is built from is ready" in _one_error_line(proc)
    manifest = json.loads((tmp_path / "resnet18" / "manifest.json").read_text())
    assert (manifest["input"]["min"], manifest["input"]["max"]) == ([1, 3, 32, 32], [2, 3, 64, 64])


def test_cli_profile_outside_the_recorded_range_exits_2_before_exporting(small_workspace):
    from resnet_deploy.cli.export import app

    result = CliRunner().invoke(app, ["trt", *SMALL, "--max-shape", "8x3x448x448", "--workspace", str(small_workspace)])
    assert result.exit_code == 2, result.output
    assert "outside the range 1x3x64x64 .. 2x3x96x96" in " ".join(result.output.split())


# -- static check of the TensorRT API the code uses ------------------------------------------------

#: Names confirmed in TensorRT's Python bindings (python/src/infer/pyCore.cpp, parsers/pyOnnx.cpp,
#: 10.x) and in the 11.x Python API reference / 10.x-to-11.x migration guide; on 2026-11-30 also
#: against the real `tensorrt` module of the tensorrt-cu12-bindings wheels 10.0.1, 10.16.1.11,
#: 11.0.0.114 and 11.4.0.106 (imported over stand-in libnvinfer stubs: every name below is there).
API = {
    "trt": {
        "Logger",
        "Builder",
        "OnnxParser",
        "Runtime",
        "MemoryPoolType",
        "NetworkDefinitionCreationFlag",
        "BuilderFlag",
        "DataType",
        "TensorIOMode",
        "__version__",
    },
    "trt.Logger": {"WARNING"},
    "trt.MemoryPoolType": {"WORKSPACE"},
    "trt.TensorIOMode": {"INPUT"},
    "trt.NetworkDefinitionCreationFlag": {"STRONGLY_TYPED"},
    "trt.BuilderFlag": {"TF32"},
    "builder": {"create_builder_config", "create_network", "create_optimization_profile", "build_serialized_network"},
    "config": {
        "set_memory_pool_limit",
        "clear_flag",
        "create_timing_cache",
        "set_timing_cache",
        "get_timing_cache",
        "add_optimization_profile",
    },
    "network": {"num_inputs", "get_input"},
    "tensor": {"name", "shape"},
    "parser": {"parse_from_file", "num_errors", "get_error"},
    "opt_profile": {"set_shape"},
    "cache": {"serialize"},
    "self._runtime": {"deserialize_cuda_engine"},
    "engine": {
        "num_io_tensors",
        "get_tensor_name",
        "get_tensor_mode",
        "get_tensor_dtype",
        "get_tensor_profile_shape",
        "get_tensor_shape",
    },
    "self.engine": {"create_execution_context", "get_tensor_dtype", "get_tensor_shape"},
    "self.context": {"set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"},
}
#: Gone from TensorRT 11, allowed only inside `_legacy_*` functions. Enum members are keyed by their enum
#: (`trt.DataType.INT8` and `BF16` still exist in 11, only the builder flags went): the members of
#: 10.0.1 and 10.16.1 that the 11.0 and 11.4 bindings lack. Under "*", names gone with no other meaning
#: (the calibrators; `get_profile_shape` and `max_workspace_size` were already gone in 10.0).
REMOVED_IN_11 = {
    "trt.BuilderFlag": {
        "FP16",
        "INT8",
        "BF16",
        "FP8",
        "INT4",
        "FP4",
        "OBEY_PRECISION_CONSTRAINTS",
        "PREFER_PRECISION_CONSTRAINTS",
        "REJECT_EMPTY_ALGORITHMS",
        "WEIGHTLESS",
    },
    "trt.NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH"},
    "*": {
        "int8_calibrator",
        "set_calibration_profile",
        "get_calibration_profile",
        "platform_has_fast_fp16",
        "platform_has_fast_int8",
        "IInt8EntropyCalibrator2",
        "IInt8EntropyCalibrator",
        "IInt8MinMaxCalibrator",
        "IInt8LegacyCalibrator",
        "IInt8Calibrator",
        "device_memory_size",
        "set_quantization_flag",
        "get_profile_shape",
        "max_workspace_size",
    },
}
LEGACY = {
    "trt.BuilderFlag": {"FP16", "INT8"},
    "trt.NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH"},
    "config": {"set_flag"},
}


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _enclosing_function(node: ast.AST, parents: dict) -> str | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef):
            return node.name
    return None


def _under_old_version_guard(node: ast.AST, parents: dict) -> bool:
    """Inside the body of `if major < 10` (or `< 11`)."""
    child = node
    while child in parents:
        parent = parents[child]
        if isinstance(parent, ast.If) and child in parent.body:
            test = parent.test
            if (
                isinstance(test, ast.Compare)
                and isinstance(test.ops[0], ast.Lt)
                and isinstance(test.comparators[0], ast.Constant)
                and test.comparators[0].value in (10, 11)
            ):
                return True
        child = parent
    return False


@pytest.mark.parametrize("module", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tensorrt_names_exist_in_10_and_11_and_removed_ones_are_guarded(module):
    tree = ast.parse(module.read_text())
    parents = _parents(tree)
    uses: list[tuple[str, str, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            uses.append((ast.unparse(node.value), node.attr, node))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2:
            if isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                uses.append((ast.unparse(node.args[0]), node.args[1].value, node))
    checked = 0
    for receiver, name, node in uses:
        in_legacy = (_enclosing_function(node, parents) or "").startswith("_legacy")
        if name in REMOVED_IN_11.get(receiver, set()) | REMOVED_IN_11["*"]:
            assert in_legacy, f"{receiver}.{name} (removed in TensorRT 11) used outside a _legacy_ function"
        if receiver in API:
            allowed = API[receiver] | (LEGACY.get(receiver, set()) if in_legacy else set())
            assert name in allowed, f"{module.name}: {receiver}.{name} is not a TensorRT 10/11 API name checked here"
            checked += 1
    if module.name in API_MODULES:
        assert checked >= 10  # the check found the calls it is meant to check
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "").startswith("_legacy"):
            assert _under_old_version_guard(node, parents), f"{node.func.id} is called without a version < 10 guard"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.LShift):
            assert not isinstance(node.right, ast.Constant), "enum values are looked up by name, never hard-coded"


def test_datatype_names_exist_in_10_and_11():
    from resnet_deploy.runtimes import tensorrt as rt

    assert set(rt._DTYPES) <= {"FLOAT", "HALF", "INT8", "INT32", "INT64", "BOOL", "UINT8", "BF16", "FP8", "INT4"}


# -- real engines (TensorRT + GPU) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def engine_setup(trained, tmp_path_factory):
    """The trained resnet18 in a workspace (1x3x64x64 .. 4x3x128x128) and held-out images."""
    import torch

    from resnet_deploy.preprocess import load_folder

    pipe = trained.pipeline(tmp_path_factory.mktemp("engines"))
    images = load_folder(trained.heldout_dir, trained.preprocess, limit=64).tensors
    with torch.inference_mode():
        reference = pipe.model(torch.from_numpy(images)).numpy()
    return trained, pipe, images, reference


def _run_batches(runtime, images: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([runtime.run(images[i : i + batch]) for i in range(0, len(images), batch)])


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_runs_and_matches_pytorch(engine_setup, precision):
    from resnet_deploy.parity import DEFAULT_TOLERANCES, check, compare
    from resnet_deploy.runtimes import create

    trained, pipe, images, reference = engine_setup
    artifact = pipe.engine(precision, CalibrationRequest(trained.calib_dir) if precision == "int8" else None)
    assert artifact.path.is_file() and tensorrt_env.sidecar_path(artifact.path).is_file()
    entry = pipe.ws.artifacts[f"tensorrt-{precision}"]
    for field in ("tensorrt_version", "gpu_name", "compute_capability", "profile", "source_onnx_sha256"):
        assert entry.get(field), field
    runtime = create("tensorrt", pipe.artifact(f"tensorrt-{precision}"), "cuda:0")
    try:
        metrics = compare(reference, _run_batches(runtime, images, 4))
        assert check(metrics, DEFAULT_TOLERANCES[precision]) == [], metrics
        # dynamic shapes: min, opt, max of the profile
        for shape in (runtime.input_range.min, runtime.input_range.opt, runtime.input_range.max):
            x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
            assert runtime.run(x).shape == (shape[0], trained.num_classes)
        with pytest.raises(UsageError, match="outside"):
            runtime.run(np.zeros((8, 3, 64, 64), np.float32))
        import torch

        out = runtime.run_device(torch.from_numpy(images[:2]).cuda())
        assert out.is_cuda and out.shape == (2, trained.num_classes)
    finally:
        runtime.close()
    # a second run reuses the engine (inputs unchanged)
    again = pipe.engine(precision, CalibrationRequest(trained.calib_dir) if precision == "int8" else None)
    assert again.entry["sha256"] == entry["sha256"]


def test_tensorrt_provider_gets_the_onnx_range_as_its_profile(engine_setup):
    """ONNX Runtime's TensorRT provider is given the range the ONNX was exported for, by the ONNX's own
    input name, so it builds one engine for it instead of one per new input shape."""
    from resnet_deploy.onnx_graph import input_name as _input_name
    from resnet_deploy.runtimes.onnxruntime import tensorrt_profile_options

    _, pipe, _, _ = engine_setup
    path = pipe.onnx().path
    name = _input_name(str(path))
    assert name == _input_name(path.read_bytes()) == pipe.ws.manifest["input"]["name"]
    assert tensorrt_profile_options(name, pipe.shape_range) == {
        "trt_profile_min_shapes": f"{name}:1x3x64x64",
        "trt_profile_opt_shapes": f"{name}:{'x'.join(map(str, pipe.shape_range.opt))}",
        "trt_profile_max_shapes": f"{name}:4x3x128x128",
    }


def _ort_tensorrt_reason() -> str | None:
    from resnet_deploy.runtimes import registry

    return registry()["onnxruntime-tensorrt"].unavailable_reason("cuda:0")


@pytest.mark.gpu
def test_onnxruntime_tensorrt_provider_runs_the_range_at_tf32_parity(engine_setup):
    from resnet_deploy.parity import DEFAULT_TOLERANCES, check, compare
    from resnet_deploy.runtimes import create

    reason = _ort_tensorrt_reason()
    if reason:
        pytest.skip(reason)
    trained, pipe, images, reference = engine_setup
    pipe.onnx()
    runtime = create("onnxruntime-tensorrt", pipe.artifact("onnx-fp32"), "cuda:0")
    try:
        assert runtime.precision == "tf32"  # TensorRT's default for FP32 layers, which ONNX Runtime cannot clear
        metrics = compare(reference, _run_batches(runtime, images, 4))
        assert check(metrics, DEFAULT_TOLERANCES["tf32"]) == [], metrics
        for shape in (runtime.input_range.min, runtime.input_range.max):
            x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
            assert runtime.run(x).shape == (shape[0], trained.num_classes)
    finally:
        runtime.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_built_elsewhere_is_refused_before_deserializing(engine_setup, tmp_path):
    from resnet_deploy.runtimes import Artifact, create

    _, pipe, _, _ = engine_setup
    artifact = pipe.engine("fp32")
    copy = tmp_path / "copy.engine"
    copy.write_bytes(artifact.path.read_bytes())
    record = tensorrt_env.read_sidecar(artifact.path)
    tensorrt_env.write_sidecar(copy, {**record, "tensorrt_version": "9.0.0"})
    with pytest.raises(UsageError, match=r"built elsewhere, with TensorRT 9\.0\.0"):
        create("tensorrt", Artifact.from_file(copy), "cuda:0")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_from_onnx_file_writes_a_sidecar(engine_setup, tmp_path):
    from resnet_deploy.runtimes import Artifact, create

    _, pipe, images, _ = engine_setup
    onnx = pipe.onnx().path
    engine = pipeline_engines.engine_from_onnx(onnx, output=tmp_path / "m.engine", timing_cache=tmp_path / "t.cache")
    record = tensorrt_env.read_sidecar(engine)
    assert record["precision"] == "fp32" and record["profile"]["max"] == [4, 3, 128, 128]
    assert (tmp_path / "t.cache").stat().st_size > 0
    runtime = create("tensorrt", Artifact.from_file(engine), "cuda:0")
    try:
        assert runtime.run(images[:4]).shape[0] == 4
    finally:
        runtime.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_a_corrupt_timing_cache_is_replaced_not_fatal(engine_setup, tmp_path, capsys):
    """The cache only saves build time: a truncated one is said, rebuilt and overwritten with a good one."""
    _, pipe, _, _ = engine_setup
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"\x00\x01 not a TensorRT timing cache" * 3)
    engine = pipeline_engines.engine_from_onnx(pipe.onnx().path, output=tmp_path / "m.engine", timing_cache=cache)
    assert engine.is_file()
    assert "cannot be used" in capsys.readouterr().err
    assert b"not a TensorRT timing cache" not in cache.read_bytes() and cache.stat().st_size > 0
