"""`--cuda-graphs` and ONNX Runtime's NHWC rows, on what runs without a GPU: the refusals on the CPU (one line,
before anything loads) and the jobs a CUDA run plans. Their parity on a GPU is tests/test_gpu.py's."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from resnet_deploy.artifact import Artifact
from resnet_deploy.bench.options import CompareOptions
from resnet_deploy.bench.plan import Job, _variants
from resnet_deploy.cli.bench import app
from resnet_deploy.errors import UsageError
from resnet_deploy.runtimes import create, registry


def test_cuda_graphs_on_the_cpu_are_refused_in_one_line_before_the_model_loads(tmp_path) -> None:
    result = CliRunner().invoke(app, ["compare", "resnet18", "--workspace", str(tmp_path), "--cuda-graphs"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "--cuda-graphs needs a GPU" in text and "add --device cuda, or drop --cuda-graphs" in text
    assert "load resnet18" not in text and not any(tmp_path.iterdir())


def test_a_runtime_asked_for_graphs_on_the_cpu_refuses(trained, tmp_path) -> None:
    with pytest.raises(UsageError, match="CUDA graphs runs on CUDA only"):
        create("torch-eager", trained.pipeline(tmp_path).reference(), "cpu", cuda_graphs=True)


def test_nhwc_is_an_option_of_the_cuda_provider_only(tmp_path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not read: refused first")
    with pytest.raises(UsageError, match="prefer_nhwc is an option of onnxruntime-cuda, not onnxruntime-cpu"):
        create("onnxruntime-cpu", Artifact("onnx", onnx), "cpu", prefer_nhwc=True)


def _planned(name: str, device: str, cuda_graphs: bool) -> list[dict]:
    job = Job(Artifact("aoti", None), registry()[name], {})
    return [j.options for j in _variants(job, CompareOptions(device=device, cuda_graphs=cuda_graphs))]


def test_a_cuda_run_plans_graph_and_nhwc_rows_beside_the_plain_ones() -> None:
    assert _planned("torch-aoti", "cuda", True) == [{}, {"cuda_graphs": True}]
    assert _planned("torch-aoti", "cuda", False) == [{}]
    assert _planned("onnxruntime-cuda", "cuda", True) == [{}, {"prefer_nhwc": True}]  # no ORT graphs (yet)
    eager = _planned("torch-eager", "cuda", True)
    assert len(eager) == 8 and eager[4:] == [{**o, "cuda_graphs": True} for o in eager[:4]]
    assert _planned("torch-eager", "cpu", False) == [{}]
