"""`--explain` (issue 6): the stage where a tampered artifact starts to diverge from the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from resnet_deploy import explain as ex
from resnet_deploy.preprocess import load_folder
from resnet_deploy.runtimes import Artifact
from tests.tampering import bgr, perturbed, swapped_classes


@pytest.fixture(scope="module")
def images(trained):
    return load_folder(trained.heldout_dir, trained.preprocess, limit=8).tensors


@pytest.fixture(scope="module")
def model(trained):
    return trained.model


@pytest.fixture(scope="module")
def honest_onnx(trained, tmp_path_factory) -> Path:
    from resnet_deploy.export.onnx import export_onnx
    from resnet_deploy.shapes import make_range

    path = tmp_path_factory.mktemp("explain") / "honest.onnx"
    export_onnx(trained.model, path, make_range(True, trained.crop))
    return path


def _errors(result: ex.Explanation) -> dict[str, float]:
    return {s.stage: s.rel_l2 for s in result.stages}


def test_swapped_classes_point_at_the_head(model, images, tampered) -> None:
    result = ex.explain(Artifact("onnx", tampered["swapped"]), model, images)
    assert [s.stage for s in result.stages] == list(ex.STAGES)
    assert "metadata" in result.method
    errors = _errors(result)
    assert all(errors[s] < 1e-5 for s in ex.STAGES[:-1]), errors
    assert result.first == "head", result.text()
    assert "diverges first at head" in result.text()


def test_bgr_and_perturbed_weights_point_at_the_stem(model, images, tampered) -> None:
    flipped = ex.explain(Artifact("onnx", tampered["bgr"]), model, images)
    assert flipped.first == "stem", flipped.text()
    assert "channel order" in flipped.verdict()
    pert = ex.explain(Artifact("onnx", tampered["perturbed"]), model, images)
    assert pert.first == "stem", pert.text()


def test_honest_export_has_no_divergence(model, images, honest_onnx: Path) -> None:
    result = ex.explain(Artifact("onnx", honest_onnx), model, images)
    assert result.first is None, result.text()
    assert max(_errors(result).values()) < 1e-4


def test_structural_fallback_without_metadata(model, images, tampered, tmp_path: Path) -> None:
    """Graphs from other exporters carry no module names: stage ends come from residual Add -> Relu."""
    import onnx

    m = onnx.load(str(tampered["swapped"]))
    for node in m.graph.node:
        del node.metadata_props[:]
    path = tmp_path / "swapped-nometa.onnx"
    onnx.save(m, str(path))
    result = ex.explain(Artifact("onnx", path), model, images)
    assert "structure" in result.method
    assert [s.stage for s in result.stages] == list(ex.STAGES)
    assert result.first == "head", result.text()


def test_fp16_and_int8_graphs_keep_their_stages(model, images, honest_onnx: Path, tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp16 = tmp_path / "m.fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(honest_onnx)), keep_io_types=True), str(fp16))
    r16 = ex.explain(Artifact("onnx", fp16, "fp16"), model, images)
    assert len(r16.stages) == 6 and r16.first is None, r16.text()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"input": images[i : i + 1]} for i in range(len(images)))

        def get_next(self):
            return next(self.it, None)

    int8 = tmp_path / "m.int8.onnx"
    quantize_static(
        str(honest_onnx), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    r8 = ex.explain(Artifact("onnx", int8, "int8"), model, images)
    assert len(r8.stages) == 6, r8.text()
    assert all(np.isfinite(s.rel_l2) for s in r8.stages)


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_int8_recipes_are_read_where_the_next_stage_reads(
    trained, model, images, target: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The `--target cpu` recipe (uint8 activations) has ONNX Runtime drop the Relu at each block's end
    (the uint8 Q/DQ after it clamps at 0), so the tensor named after the Relu is the pre-ReLU sum:
    explain must read the DequantizeLinear output the next stage consumes, not report layer1."""
    import onnx

    from tests.test_precision import shared

    path = shared(trained, tmp_path_factory).int8(target).path
    graph = onnx.load(str(path))
    if target == "cpu":  # the case this is about: the quantizer removed Relus
        fp32 = onnx.load(str(shared(trained, tmp_path_factory).pipe.onnx().path))
        relus = [sum(n.op_type == "Relu" for n in m.graph.node) for m in (graph, fp32)]
        assert relus[0] < relus[1], relus
    for node in graph.graph.node:
        del node.metadata_props[:]
    nometa = tmp_path / f"{path.stem}-nometa.onnx"
    onnx.save(graph, str(nometa))
    for p, how in ((path, "metadata"), (nometa, "structure")):
        result = ex.explain(Artifact("onnx", p, "int8"), model, images)
        assert how in result.method, result.method
        assert [s.stage for s in result.stages] == list(ex.STAGES), result.text()
        assert result.first is None, result.text()
        assert all(s.cosine > 0.99 for s in result.stages), result.text()


def test_program_and_torchscript(trained, model, images, tmp_path: Path) -> None:
    import torch

    from resnet_deploy.export.program import export_program
    from resnet_deploy.export.torchscript import export_torchscript
    from resnet_deploy.shapes import make_range

    swapped = swapped_classes(model)
    rng = make_range(True, trained.crop)
    pt2 = tmp_path / "swapped.pt2"
    export_program(swapped, pt2, rng)
    r = ex.explain(Artifact("program", pt2), model, images)
    assert [s.stage for s in r.stages] == list(ex.STAGES) and r.first == "head", r.text()

    ts = tmp_path / "perturbed.ts"
    export_torchscript(perturbed(model), ts, rng)
    r = ex.explain(Artifact("torchscript", ts), model, images)
    assert [s.stage for s in r.stages] == list(ex.STAGES) and r.first == "stem", r.text()

    wrapped = tmp_path / "bgr.ts"
    torch.jit.trace(bgr(model), torch.from_numpy(images[:2])).save(str(wrapped))
    r = ex.explain(Artifact("torchscript", wrapped), model, images)
    assert [s.stage for s in r.stages] == ["head"] and r.first == "head"
    assert "outside the network" in r.method


def test_gate_explains_each_failure_at_the_size_its_row_ran(model, images, tampered) -> None:
    """--size 96: the failing row is explained on the parity images resized to 96x96 as compare resized
    them, not at the crop size (64x64 here); each size gets its own explanation."""
    import numpy as np

    from resnet_deploy.gate import verdict as gate
    from resnet_deploy.gate.finish import explain_failures
    from resnet_deploy.gate.summary import markdown
    from resnet_deploy.parity import compare
    from resnet_deploy.results import Row

    broken = compare(np.eye(4), np.eye(4)[::-1])  # fails any fp32 tolerance
    path = str(tampered["swapped"])
    rows = [
        Row("file", path, "onnx", "onnxruntime-cpu", "fp32", "cpu", 1, size, True, parity=broken)
        for size in ((96, 96), (64, 64))
    ]
    result = gate.evaluate(rows)
    explain_failures(result, model, images)
    at96, at64 = result.failures
    assert at96.size == (96, 96) and "64x24x24" in at96.explanation, at96.explanation
    assert "diverges first at head" in at96.explanation
    assert at64.size == (64, 64) and "64x16x16" in at64.explanation, at64.explanation
    assert "96x96" in markdown(result)


def test_gradual_growth_is_not_blamed_on_one_stage() -> None:
    """INT8 drifting past its noise level in layer3 without any jump is accumulation, not a broken layer3."""
    rel = {"stem": 0.05, "layer1": 0.09, "layer2": 0.14, "layer3": 0.27, "layer4": 0.3, "head": 0.31}
    stages = [ex.StageError(k, v, 1.0, 0.99, (1,)) for k, v in rel.items()]
    floor = ex.NOISE_FLOOR["int8"]
    drift = ex.Explanation("q.onnx", "test", stages, ex.first_jump(list(rel.items()), floor), floor=floor)
    assert drift.first == "layer3" and "grows gradually" in drift.verdict() and "look at" not in drift.verdict()
    rel["layer3"] = 2.0  # 14x layer2: that stage
    stages = [ex.StageError(k, v, 1.0, 0.99, (1,)) for k, v in rel.items()]
    broken = ex.Explanation("q.onnx", "test", stages, ex.first_jump(list(rel.items()), floor), floor=floor)
    assert broken.first == "layer3" and "diverges first at layer3" in broken.verdict()


def test_first_jump_rules() -> None:
    assert ex.first_jump([("stem", 1e-7), ("layer1", 2e-7), ("head", 0.5)], 1e-3) == "head"
    assert ex.first_jump([("stem", 0.3), ("layer1", 0.4), ("head", 0.5)], 1e-3) == "stem"
    # gradual growth with no single jump: the first stage above the floor
    assert ex.first_jump([("stem", 0.01), ("layer1", 0.02), ("layer2", 0.04)], 0.015) == "layer1"
    assert ex.first_jump([("stem", 1e-7), ("head", 2e-7)], 1e-3) is None
    assert ex.first_jump([("stem", 1e-7), ("head", float("nan"))], 1e-3) == "head"


def test_the_artifact_is_read_where_the_failing_row_ran() -> None:
    assert ex._where(None, "cpu") == ("onnxruntime-cpu", "cpu")
    assert ex._where(None, "cuda") == ("onnxruntime-cuda", "cuda:0")
    assert ex._where("torch-export", "cuda:1") == ("onnxruntime-cuda", "cuda:1")
    assert ex._where("onnxruntime-cuda", "cpu") == ("onnxruntime-cuda", "cuda:0")
    assert ex._where("onnxruntime-tensorrt", "cuda:1") == ("onnxruntime-tensorrt", "cuda:1")
    assert ex._where("onnxruntime-cpu", "cuda:0") == ("onnxruntime-cpu", "cpu")


def test_a_cuda_row_is_explained_on_cuda_or_refused(model, images, honest_onnx: Path) -> None:
    """No quiet CPU stand-in: a row that failed on the GPU is diagnosed there or not at all."""
    import torch

    from resnet_deploy.errors import DeployError

    artifact = Artifact("onnx", honest_onnx)
    if not torch.cuda.is_available():
        with pytest.raises(DeployError, match="needs a CUDA GPU"):
            ex.explain(artifact, model, images, runtime="onnxruntime-cuda", device="cuda")
        return
    try:
        result = ex.explain(artifact, model, images, runtime="onnxruntime-cuda", device="cuda")
    except DeployError as exc:  # a GPU, but the CPU-only onnxruntime: said, not run on the CPU
        assert "CUDAExecutionProvider" in str(exc), exc
        return
    assert result.method.endswith("on cuda:0"), result.method
    assert result.first is None, result.text()
