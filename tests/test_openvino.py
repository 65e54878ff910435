"""OpenVINO on the CPU (issue 24): the project's ONNX files run as they are, in compare rows, the gate and
--explain; without the package the runtime is unavailable with the install hint, and asking for it exits 3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from resnet_deploy import explain
from resnet_deploy.cli.bench import app
from resnet_deploy.errors import UsageError
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.parity import DEFAULT_TOLERANCES, check, compare
from resnet_deploy.preprocess import load_folder
from resnet_deploy.provenance import cpu_has_bf16
from resnet_deploy.runtimes import create, registry, runtimes_for
from resnet_deploy.verify import reference_logits

pytest.importorskip("openvino", reason="the openvino extra is not installed")

KEYS = {"onnx-fp32": "fp32", "onnx-fp16": "fp16", "onnx-int8-tensorrt": "int8", "onnx-int8-cpu": "int8"}


@pytest.fixture(scope="module")
def workspace(trained, tmp_path_factory) -> Path:
    """The trained model's FP32, FP16 and both INT8 ONNX files."""
    root = tmp_path_factory.mktemp("openvino")
    pipe = trained.pipeline(root)
    pipe.onnx()
    pipe.fp16()
    for target in ("tensorrt", "cpu"):
        pipe.int8(CalibrationRequest(trained.calib_dir, target=target))
    return root


def test_openvino_is_offered_for_onnx_on_the_cpu_only() -> None:
    assert "openvino-cpu" in {s.name for s in runtimes_for("onnx", "cpu")}
    assert "openvino-cpu" not in {s.name for s in runtimes_for("onnx", "cuda")}


def test_every_onnx_artifact_passes_parity_on_openvino(trained, workspace) -> None:
    """FP32 and FP16 to their precision's bounds on the held-out crops; INT8 kept as lossy as on ONNX Runtime
    (the same file's logits on both runtimes agree closely, so OpenVINO adds no error of its own)."""
    pipe = trained.pipeline(workspace)
    images = load_folder(trained.heldout_dir, trained.preprocess).tensors
    reference = reference_logits(pipe.model, images)
    for key in ("onnx-fp32", "onnx-fp16", "onnx-int8-tensorrt", "onnx-int8-cpu"):
        artifact = pipe.artifact(key)
        with (
            create("openvino-cpu", artifact, "cpu", threads=2) as ov,
            create("onnxruntime-cpu", artifact, "cpu") as ort,
        ):
            assert ov.precision == artifact.precision
            ours, theirs = ov.run(images), ort.run(images)
        metrics = compare(reference, ours)
        if artifact.precision != "int8":
            assert not check(metrics, DEFAULT_TOLERANCES[artifact.precision]), (key, metrics)
        else:
            assert compare(theirs, ours).cosine > 0.995, key  # the same quantized model on both runtimes
            assert metrics.cosine >= DEFAULT_TOLERANCES["int8"].min_cosine, (key, metrics)


def test_compare_rows_and_the_gate_on_openvino(trained, workspace, tmp_path) -> None:
    out = tmp_path / "r.json"
    args = ["compare", *trained.cli_args, "--workspace", str(workspace), "--images", str(trained.heldout_dir)]
    args += ["--no-build", "--runtimes", "openvino-cpu", "--warmup", "0", "--iters", "2", "--threads", "2"]
    args += ["--gate", "--tolerances", str(tmp_path / "int8.toml"), "--json", str(out)]
    (tmp_path / "int8.toml").write_text("[int8]\nmin_top1_agreement = 0.5\n")  # INT8 accuracy: test_int8_recipes.py
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    pairs = {(r["artifact_key"], r["runtime"], r["precision"]) for r in rows}
    expected = {(k, "openvino-cpu", p) for k, p in KEYS.items()}
    expected |= {("onnx-fp32", "openvino-cpu-bf16", "bf16")} if cpu_has_bf16() else set()
    assert pairs == expected
    assert all(r["passed"] and r["latency"]["threads"] == 2 for r in rows)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 units (AMX or AVX512_BF16)")
def test_bf16_is_an_fp32_file_computed_in_bf16_and_judged_as_bf16(trained, workspace) -> None:
    """OpenVINO's own default on such CPUs, offered as what it is: the row says bf16 and is held to bf16's
    bounds, which it passes on the held-out crops, while it misses FP32's (it is not an FP32 result)."""
    pipe = trained.pipeline(workspace)
    images = load_folder(trained.heldout_dir, trained.preprocess).tensors
    reference = reference_logits(pipe.model, images)
    with create("openvino-cpu", pipe.artifact("onnx-fp32"), "cpu", threads=2, precision="bf16") as runtime:
        assert (runtime.name, runtime.precision) == ("openvino-cpu-bf16", "bf16")
        metrics = compare(reference, runtime.run(images))
    assert check(metrics, DEFAULT_TOLERANCES["bf16"]) == [], metrics
    assert check(metrics, DEFAULT_TOLERANCES["fp32"]), metrics  # f32's bound would catch it: it is another precision


def test_bf16_of_a_file_that_is_not_fp32_is_refused(trained, workspace) -> None:
    pipe = trained.pipeline(workspace)
    with pytest.raises(UsageError, match=r"runs FP32 files in bf16; .* is int8"):
        create("openvino-cpu", pipe.artifact("onnx-int8-cpu"), "cpu", precision="bf16")


def test_a_static_file_at_another_shape_is_one_line(trained, tmp_path) -> None:
    art = trained.pipeline(tmp_path, dynamic=False).onnx()
    with create("openvino-cpu", art, "cpu") as runtime, pytest.raises(Exception) as err:
        runtime.run(np.zeros((2, 3, 64, 64), np.float32))
    assert "does not fit" in str(err.value) and "re-export with --dynamic" in str(err.value)


def test_explain_reads_the_stages_on_openvino(trained, workspace) -> None:
    pipe = trained.pipeline(workspace)
    images = load_folder(trained.heldout_dir, trained.preprocess, limit=8).tensors
    result = explain.explain(pipe.artifact("onnx-fp32"), pipe.model, images, runtime="openvino-cpu")
    assert [s.stage for s in result.stages] == list(explain.STAGES) and result.first is None, result.text()


def test_without_the_package_it_is_unavailable_and_asking_for_it_exits_3(tmp_path) -> None:
    """`sys.modules['openvino'] = None` is how Python blocks an import: the machine without the extra."""
    spec = registry()["openvino-cpu"]
    assert spec.install_hint and "pip install openvino" in spec.install_hint
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "from resnet_deploy.runtimes import registry, runtimes_for\n"
        "assert 'openvino-cpu' not in {s.name for s in runtimes_for('onnx', 'cpu')}\n"
        "print(registry()['openvino-cpu'].unavailable_reason('cpu'))\n"
        "from resnet_deploy.cli.bench import main\n"
        "sys.argv = ['resnet-bench', 'compare', 'resnet18', '--runtimes', 'openvino-cpu', '--workspace', sys.argv[1]]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "openvino-cpu needs the Python package 'openvino'" in done.stdout
    assert "pip install openvino" in done.stderr and "Traceback" not in done.stderr
