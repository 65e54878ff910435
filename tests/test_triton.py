"""Serving at scale (issue 26), for real: a Triton model repository of the trained test model, served by a real
tritonserver (the nvidia-pytriton wheel's, with its Python backend) on loopback, checked over HTTP and gRPC and
load-tested by `resnet-bench triton`, its faults one line each, and the server stopped with nothing left.

The server binary comes from the project itself: `ensure_tritonserver` pip-installs the wheel (no dependencies)
into the test cache once (`<test cache>/tritonserver`, or $RESNET_DEPLOY_TRITONSERVER). Where it cannot run here (no
wheel installable, glibc older than 2.35) the server tests skip with the reason, unless
RESNET_DEPLOY_REQUIRE_TRITON=1 (CI sets it), where they fail instead. The configs of the standard backends,
which that server cannot load, are checked against Triton's own ModelConfig schema (tritonclient's protobuf).
"""

from __future__ import annotations

import asyncio
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from resnet_deploy.cli.bench import app as bench_app
from resnet_deploy.cli.export import app as export_app
from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.files import sha256_file
from resnet_deploy.preprocess import load_folder
from resnet_deploy.runtimes import create
from resnet_deploy.serve import repository
from resnet_deploy.serve.client import Connection
from resnet_deploy.serve.server import SHM_PREFIX, TritonServer, ensure_tritonserver, free_ports, main, why_cannot_run
from resnet_deploy.shapes import ShapeRange
from resnet_deploy.workspace import Workspace
from tests.trained import CACHE

REQUIRED = os.environ.get("RESNET_DEPLOY_REQUIRE_TRITON") == "1"
try:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
except ImportError as exc:  # the dev extra installs tritonclient[http,grpc]
    if REQUIRED:
        raise
    pytest.skip(f"tritonclient[grpc] is not installed: {exc}", allow_module_level=True)

SERVER_DIR = Path(os.environ.get("RESNET_DEPLOY_TRITONSERVER", CACHE.parent / "tritonserver"))
ENV = {"COLUMNS": "300"}  # a one-line error stays on one line
SERVED = "resnet18-onnx-fp32"


def _one_line(output: str) -> str:
    """The one error line a failing command printed, and no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def _export(*args: object) -> object:
    return CliRunner().invoke(export_app, ["triton", "resnet18", *map(str, args)], env=ENV)


def _parse(config: Path) -> object:
    """Triton's ModelConfig from config.pbtxt: an unknown field, enum or type is a ParseError, as in the server."""
    return text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def workspace(trained, tmp_path_factory) -> Path:
    """The trained resnet18, dynamic 1..4 x 64..128: ONNX, TorchScript and a .pt2 (which no standard backend runs)."""
    root = tmp_path_factory.mktemp("triton-ws")
    pipe = trained.pipeline(root)
    pipe.onnx()
    pipe.torchscript()
    pipe.program()
    return root


@pytest.fixture(scope="module")
def server_root() -> Path:
    """The tritonserver binary, installed from the project's own pinned wheel into the test cache once."""
    reason = why_cannot_run()
    try:
        if reason is None:
            return ensure_tritonserver(SERVER_DIR)
    except MissingDependencyError as exc:
        reason = str(exc)
    if REQUIRED:
        pytest.fail(f"tritonserver is required here (RESNET_DEPLOY_REQUIRE_TRITON=1): {reason}")
    pytest.skip(f"tritonserver cannot run here: {reason}")


@pytest.fixture(scope="module")
def server(workspace, server_root, tmp_path_factory):
    """A Python-backend repository of the ONNX, served on free loopback ports for the whole module."""
    repo = tmp_path_factory.mktemp("served") / "repo"
    done = _export("--workspace", workspace, "--output", repo, "--backend", "python", "--artifacts", "onnx-fp32")
    assert done.exit_code == 0, done.output
    with TritonServer(repo, server_root) as started:
        yield started


# -- the repository ---------------------------------------------------------------------------------------


def test_standard_backend_configs_follow_tritons_schema(trained, workspace, tmp_path) -> None:
    repo = tmp_path / "repo"
    done = _export("--workspace", workspace, "--output", repo, "--artifacts", "onnx-fp32,torchscript")
    assert done.exit_code == 0, done.output
    ws = Workspace(workspace, "resnet18")
    onnx, ts = (
        _parse(repo / "resnet18-onnx-fp32" / "config.pbtxt"),
        _parse(repo / "resnet18-torchscript" / "config.pbtxt"),
    )
    assert (onnx.platform, ts.platform) == ("onnxruntime_onnx", "pytorch_libtorch")
    for config in (onnx, ts):
        assert config.max_batch_size == 4 and list(config.input[0].dims) == [3, -1, -1]
        assert list(config.output[0].dims) == [trained.num_classes] and config.output[0].label_filename == "labels.txt"
        assert list(config.dynamic_batching.preferred_batch_size) == [4]
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert config.parameters["resnet_deploy_precision"].string_value == "fp32"
    assert (onnx.input[0].name, onnx.output[0].name) == ("input", "logits")
    assert (ts.input[0].name, ts.output[0].name) == ("INPUT__0", "OUTPUT__0")
    assert sha256_file(repo / "resnet18-onnx-fp32" / "1" / "model.onnx") == ws.artifacts["onnx-fp32"]["sha256"]
    assert (repo / "resnet18-torchscript" / "labels.txt").read_text().split() == trained.classes
    readme = (repo / "README.md").read_text()
    assert "tritonserver --model-repository" in readme and "resize the shorter side to 72" in readme
    gpu = tmp_path / "gpu"
    done = _export("--workspace", workspace, "--output", gpu, "--artifacts", "onnx-fp32", "--device", "cuda",
                   "--instances", "2", "--max-batch", "2")  # fmt: skip
    assert done.exit_code == 0, done.output
    config = _parse(gpu / "resnet18-onnx-fp32" / "config.pbtxt")
    assert (config.instance_group[0].kind, config.instance_group[0].count) == (config.instance_group[0].KIND_GPU, 2)
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert (accelerator.name, accelerator.parameters["precision_mode"]) == ("tensorrt", "FP32")
    assert config.max_batch_size == 2 and list(config.dynamic_batching.preferred_batch_size) == [2]


def test_python_backend_serves_any_artifact_and_a_plan_config_is_valid(workspace, tmp_path) -> None:
    repo = tmp_path / "repo"
    done = _export("--workspace", workspace, "--output", repo, "--backend", "python")
    assert done.exit_code == 0, done.output
    for key, runtime in (("onnx-fp32", "onnxruntime-cpu"), ("torchscript", "torchscript"), ("program", "torch-export")):
        folder = repo / f"resnet18-{key}"
        assert _parse(folder / "config.pbtxt").backend == "python"
        assert json.loads((folder / "resnet_deploy.json").read_text())["runtime"] == runtime
        assert (folder / "1" / "model.py").is_file()
    # a TensorRT plan (no GPU needed to write its config): the platform, a GPU instance group, its profile's dims
    entry = {"sha256": "0" * 64, "tensorrt_version": "10.13", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"}
    plan = repository.ModelPlan(
        name="resnet18-tensorrt-fp16", key="tensorrt-fp16", source=Path("resnet18-fp16.engine"), entry=entry,
        format="engine", precision="fp16", backend="tensorrt_plan", filename="model.plan", input_name="input",
        output_name="logits", shape_range=ShapeRange((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224)),
        max_batch=32, dims=[3, 224, 224], preferred=[8, 32], gpu=True, instances=1, num_classes=1000,
    )  # fmt: skip
    config = text_format.Parse(repository.config_text(plan), model_config_pb2.ModelConfig())
    assert (config.platform, list(config.input[0].dims)) == ("tensorrt_plan", [3, 224, 224])
    assert "TensorRT 10.13 plan built on NVIDIA H200" in "".join(repository._engine_notes([plan]))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            (),
            "cannot serve program (resnet18.pt2): no standard Triton backend runs a program artifact (pass --backend python",
        ),
        (("--artifacts", "onnx-fp32", "--max-batch", "8"), "--max-batch 8 is over the batch 4 it was verified up to"),
        (("--artifacts", "onnx-fp32,nope"), "--artifacts nope: not in"),
        (("--backend", "tensorrt"), "unknown --backend 'tensorrt'"),
        (("--instances", "0"), "--instances 0: must be at least 1"),
    ],
)
def test_what_cannot_be_served_is_refused_in_one_line(workspace, tmp_path, args, said) -> None:
    done = _export("--workspace", workspace, "--output", tmp_path / "repo", *args)
    assert done.exit_code == 2 and said in _one_line(done.output), done.output
    assert not (tmp_path / "repo").exists() and not list(tmp_path.iterdir())


def test_a_static_or_missing_workspace_and_a_foreign_folder_are_refused(trained, workspace, tmp_path) -> None:
    static = tmp_path / "static"
    trained.pipeline(static, dynamic=False).torchscript()
    done = _export("--workspace", static, "--output", tmp_path / "a")
    assert done.exit_code == 2 and "it is static (only 1x3x64x64)" in _one_line(done.output)
    done = _export("--workspace", tmp_path / "nothing", "--output", tmp_path / "b")
    assert done.exit_code == 2 and "no workspace at" in _one_line(done.output)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    done = _export("--workspace", workspace, "--output", foreign, "--artifacts", "onnx-fp32")
    assert done.exit_code == 2 and "holds files resnet-export triton did not write" in _one_line(done.output)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "static"]  # nothing half-written beside them


def test_a_rerun_replaces_the_repository_whole_and_a_refused_one_keeps_it(workspace, tmp_path) -> None:
    repo = tmp_path / "repo"
    assert _export("--workspace", workspace, "--output", repo, "--artifacts", "onnx-fp32,torchscript").exit_code == 0
    assert _export("--workspace", workspace, "--output", repo, "--artifacts", "torchscript").exit_code == 0
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == ["resnet18-torchscript"]
    assert _export("--workspace", workspace, "--output", repo).exit_code == 2  # the .pt2: refused
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == ["resnet18-torchscript"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


# -- the server ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_logits_equal_the_onnxruntime_sessions(server, workspace, trained, protocol) -> None:
    ws = Workspace(workspace, "resnet18")
    images = load_folder(trained.heldout_dir, ws.preprocess(), 8).tensors
    with create("onnxruntime-cpu", ws.artifact("onnx-fp32")) as session:
        local = session.run(images[:4])
        singles = [session.run(images[i : i + 1]) for i in range(len(images))]

    async def served() -> tuple[np.ndarray, list[np.ndarray]]:
        async with Connection(server.http_url if protocol == "http" else server.grpc_url, protocol) as conn:
            model = await conn.describe(SERVED)
            assert (model.max_batch, model.precision, model.input_shape) == (4, "fp32", [-1, 3, -1, -1])
            batch = await conn.infer(model, images[:4])
            # eight requests at once: the server's dynamic batcher groups them, each answer must still be its own
            return batch, await asyncio.gather(*[conn.infer(model, images[i : i + 1]) for i in range(len(images))])

    batch, answers = asyncio.run(served())
    np.testing.assert_allclose(batch, local, rtol=1e-5, atol=1e-5)
    for answer, single in zip(answers, singles, strict=True):
        np.testing.assert_allclose(answer, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bench_triton_gates_the_served_model_at_two_concurrency_levels(server, workspace, trained, tmp_path, protocol):
    junit, report = tmp_path / "parity.xml", tmp_path / "r.json"
    url = server.http_url if protocol == "http" else server.grpc_url
    done = CliRunner().invoke(bench_app, [
        "triton", *trained.cli_args, "--workspace", str(workspace), "--url", url, "--protocol", protocol,
        "--model", SERVED, "--concurrency", "1,4", "--requests", "12", "--seconds", "20",
        "--images", str(trained.heldout_dir), "--max-images", "16", "--gate", "--junit", str(junit), "--json", str(report),
    ], env=ENV)  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "parity gate passed: 2 of 2 checks within tolerance" in done.output
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert [c.get("name") for c in cases] == [
        f"{SERVED} [triton-{protocol}, fp32, cpu, batch 1, 64x64, concurrency {level}]" for level in (1, 4)
    ]
    assert not any(c.find("failure") is not None or c.find("error") is not None for c in cases)
    data = json.loads(report.read_text())
    assert data["served"]["url"] == url and data["served"]["protocol"] == protocol
    for row, level in zip(data["rows"], (1, 4), strict=True):
        assert row["concurrency"] == level and row["runtime"] == f"triton-{protocol}" and row["passed"]
        assert row["latency"]["iterations"] == 12 and row["latency"]["images_per_s"] > 0
        assert row["latency"]["p50_ms"] <= row["latency"]["p90_ms"] <= row["latency"]["p99_ms"]
        assert row["parity"]["count"] == 16 and row["parity"]["rel_l2"] < 1e-5


def _bench(trained, workspace: Path, *args: object) -> object:
    base = ["triton", *trained.cli_args, "--workspace", str(workspace), "--images", str(trained.heldout_dir)]
    return CliRunner().invoke(bench_app, [*base, "--max-images", "4", "--requests", "2", "--concurrency", "1",
                                          *map(str, args)], env=ENV)  # fmt: skip


def test_faults_are_one_line(server, workspace, trained) -> None:
    http, grpc = server.http_url, server.grpc_url
    down = f"127.0.0.1:{free_ports(1)[0]}"
    cases = [
        (("--url", http, "--model", SERVED, "--size", "200"), 2, "refused the request: input 1x3x200x200 is outside"),
        (("--url", grpc, "--protocol", "grpc", "--model", SERVED, "--batch", "8"), 2, "batch-size must be <= 4"),
        (("--url", http, "--model", "nope"), 2, f"the server at {http} has no model 'nope' (pass --model one of: {SERVED})"),
        (("--url", down, "--model", SERVED), 3, f"no Triton server answers over http at {down}"),
        (("--url", down, "--protocol", "grpc", "--model", SERVED), 3, f"no Triton server answers over grpc at {down}"),
        (("--url", "localhost", "--model", SERVED), 2, "--url 'localhost' is not HOST:PORT"),
        (("--url", f"http://{http}", "--model", SERVED), 2, "give HOST:PORT without a scheme"),
        (("--url", "nosuchhost.invalid:8000", "--model", SERVED), 2, "cannot resolve the host of --url"),
        (("--url", http, "--protocol", "grpc", "--model", SERVED), 3, "no Triton server answers over grpc"),
    ]  # fmt: skip
    for args, code, said in cases:
        done = _bench(trained, workspace, *args)
        assert done.exit_code == code and said in _one_line(done.output), (args, done.output)


def test_a_wrong_dtype_is_the_servers_one_line_refusal(server) -> None:
    async def send() -> None:
        async with Connection(server.grpc_url, "grpc") as conn:
            model = await conn.describe(SERVED)
            await conn.infer(model, np.zeros((1, 3, 64, 64), np.float64))

    with pytest.raises(UsageError, match="data-type is 'FP64', but model 'resnet18-onnx-fp32' expects 'FP32'"):
        asyncio.run(send())


def test_a_model_the_server_cannot_load_fails_its_start_in_one_line(workspace, server_root, tmp_path) -> None:
    """This server has the Python backend only: an ONNX Runtime model stops its start, said with the server's words."""
    repo = tmp_path / "repo"
    assert _export("--workspace", workspace, "--output", repo, "--artifacts", "onnx-fp32").exit_code == 0
    shm = {n for n in os.listdir("/dev/shm") if n.startswith(SHM_PREFIX)}
    with pytest.raises(DeployError, match=r"tritonserver exited with .* unable to find backend library") as caught:
        TritonServer(repo, server_root, ready_timeout=60).start()
    assert "\n" not in str(caught.value)
    assert {n for n in os.listdir("/dev/shm") if n.startswith(SHM_PREFIX)} == shm


def test_the_server_helper_says_what_is_missing(tmp_path, capsys) -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps --no-compile --target .* nvidia-pytriton"):
        ensure_tritonserver(tmp_path / "none", install=False)
    assert main(["--model-repository", str(tmp_path / "no-repo")]) == 2
    assert capsys.readouterr().err.startswith("error: no model repository at")


def test_stopping_the_server_leaves_no_process_and_nothing_behind(server) -> None:
    """Last in the module: the server (and its Python-backend stub, in its process group) gone, its files too."""
    group, folder = server.proc.pid, server.tmp
    assert server.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)
    assert not folder.exists() and server.removed == []  # a clean exit leaves nothing to sweep
