"""`resnet-bench compare` on the small trained model: parity, reports, --artifact, clear failures.

Small iteration counts and no timing assertions: these check what was run and what was reported.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from resnet_deploy.bench.compare import run_compare
from resnet_deploy.bench.options import CompareOptions
from resnet_deploy.cli.bench import app
from resnet_deploy.errors import UsageError
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.parity import degenerate_warning
from resnet_deploy.provenance import cpu_has_bf16
from resnet_deploy.runtimes import runtimes_for

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = ["--iters", "2", "--warmup", "1", "--max-images", "32", "--threads", "1"]


def invoke(args: list[str]):
    result = CliRunner().invoke(app, ["compare", *[str(a) for a in args]])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _optional_builds(pipe, calib_dir: Path) -> None:
    """FP16 and both INT8 recipes' ONNX."""
    pipe.fp16()
    pipe.int8(CalibrationRequest(calib_dir, target="tensorrt"))
    pipe.int8(CalibrationRequest(calib_dir, target="cpu"))


def _optional_precisions() -> set[str]:
    return {"fp16", "int8"}


@pytest.fixture(scope="module")
def workspace(trained, tmp_path_factory) -> Path:
    """The trained model exported to every format this install can make (dynamic 1..4 x 64..128)."""
    ws = tmp_path_factory.mktemp("bench-ws")
    pipe = trained.pipeline(ws)
    pipe.torchscript()
    pipe.onnx()
    pipe.program()
    _optional_builds(pipe, trained.calib_dir)
    return ws


@pytest.fixture(scope="module")
def reports(trained, workspace, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reports")
    files = {"json": out / "r.json", "csv": out / "r.csv", "markdown": out / "r.md", "plot": out / "r.png"}
    result = invoke(
        [
            *trained.cli_args,
            "--workspace",
            workspace,
            "--images",
            trained.heldout_dir,
            "--batch",
            "1,3",
            "--size",
            "64,96x80",
            "--no-build",
            *FAST,
            "--json",
            files["json"],
            "--csv",
            files["csv"],
            "--markdown",
            files["markdown"],
            "--plot",
            files["plot"],
        ]
    )
    assert result.exit_code == 0, result.output
    return {"files": files, "data": json.loads(files["json"].read_text()), "output": result.output}


def test_every_available_runtime_is_within_tolerance(reports: dict) -> None:
    data = reports["data"]
    assert not data["degenerate"], data["warnings"]
    formats = {row["format"] for row in data["rows"]}
    expected = {spec.name for fmt in formats for spec in runtimes_for(fmt, "cpu")}
    assert {"torch-eager", "torchscript", "torch-export", "onnxruntime-cpu"} <= expected
    bf16 = "openvino-cpu" in expected and cpu_has_bf16()  # OpenVINO's bf16 row of the FP32 file, on such CPUs
    assert {row["runtime"] for row in data["rows"]} == expected | ({"openvino-cpu-bf16"} if bf16 else set())
    for row in data["rows"]:
        assert row["error"] is None, row
        assert row["passed"], (row["artifact_key"], row["runtime"], row["batch"], row["size"], row["violations"])
        assert row["parity"]["count"] == data["images"]
    precisions = {row["precision"] for row in data["rows"]}
    assert precisions == {"fp32"} | _optional_precisions() | ({"bf16"} if bf16 else set())


def test_rows_cover_every_combination(reports: dict) -> None:
    rows = reports["data"]["rows"]
    keys = {(r["artifact_key"], r["runtime"]) for r in rows}
    combos = {(r["artifact_key"], r["runtime"], r["batch"], tuple(r["size"])) for r in rows}
    assert len(combos) == len(rows) == len(keys) * 2 * 2
    for r in rows:
        assert r["latency"]["batch"] == r["batch"]
        assert r["latency"]["threads"] == reports["data"]["threads"]
    eager = [r for r in rows if r["runtime"] == "torch-eager"]
    assert all(r["speedup"] == pytest.approx(1.0) for r in eager)


def test_reports_contain_every_row_with_percentiles_and_parity(reports: dict) -> None:
    files, rows = reports["files"], reports["data"]["rows"]
    for row in rows:
        for key in ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "images_per_s"):
            assert row["latency"][key] > 0, key
        for key in ("max_abs", "mean_abs", "rel_l2", "cosine", "min_cosine", "top1_agreement", "top5_overlap"):
            assert np.isfinite(row["parity"][key]), key

    records = list(csv.DictReader(files["csv"].open()))
    assert len(records) == len(rows)
    for rec, row in zip(records, rows, strict=True):
        assert (rec["artifact_key"], rec["runtime"], int(rec["batch"])) == (
            row["artifact_key"],
            row["runtime"],
            row["batch"],
        )
        assert float(rec["p50_ms"]) == pytest.approx(row["latency"]["p50_ms"])
        assert float(rec["p99_ms"]) == pytest.approx(row["latency"]["p99_ms"])
        assert float(rec["cosine"]) == pytest.approx(row["parity"]["cosine"])
        assert float(rec["top1_agreement"]) == pytest.approx(row["parity"]["top1_agreement"])

    md = files["markdown"].read_text()
    table = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(table) == len(rows)
    for line, row in zip(table, rows, strict=True):
        assert f"`{row['artifact_key']}`" in line and row["runtime"] in line
        assert f"{row['latency']['p50_ms']:.2f}" in line and f"{row['latency']['p99_ms']:.2f}" in line
        assert f"{row['parity']['cosine']:.6f}" in line

    # the terminal table too
    assert "p50 ms" in reports["output"] and "onnxruntime-cpu" in reports["output"]


def test_plot_is_a_valid_png(reports: dict) -> None:
    from PIL import Image

    path = reports["files"]["plot"]
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and img.width > 0 and img.height > 0


def test_artifact_from_anywhere_each_format(trained, workspace, tmp_path) -> None:
    elsewhere = tmp_path / "files"
    elsewhere.mkdir()
    wsdir = workspace / trained.architecture
    copies = []
    for name, suffix in (("resnet18.onnx", ".onnx"), ("resnet18.ts", ".ts"), ("resnet18.pt2", ".pt2")):
        dst = elsewhere / f"mine{suffix}"
        shutil.copy(wsdir / name, dst)
        copies.append(dst)
    out = tmp_path / "a.json"
    args = [*trained.cli_args, "--workspace", tmp_path / "empty-ws", "--images", trained.heldout_dir, *FAST]
    for c in copies:
        args += ["--artifact", c]
    result = invoke([*args, "--json", out])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    runtimes: dict[str, set[str]] = {}
    for r in rows:
        runtimes.setdefault(r["artifact_key"], set()).add(r["runtime"])
    assert set(runtimes) == {"pytorch", "file:mine.onnx", "file:mine.ts", "file:mine.pt2"}  # nothing was built
    onnx_runtimes = {"onnxruntime-cpu"}
    if importlib.util.find_spec("openvino"):
        onnx_runtimes |= {"openvino-cpu", "openvino-cpu-bf16"} if cpu_has_bf16() else {"openvino-cpu"}
    assert runtimes["file:mine.onnx"] == onnx_runtimes
    assert runtimes["file:mine.ts"] == {"torchscript"}
    assert runtimes["file:mine.pt2"] == {"torch-export"}
    for r in rows:
        assert r["passed"], r
        assert r["artifact_path"] is None or r["artifact_path"].startswith(str(elsewhere))


@pytest.mark.tensorrt
def test_artifact_engine(trained, workspace, tmp_path) -> None:
    engines = sorted((workspace / trained.architecture).glob("*.engine"))
    if not engines:
        pytest.skip("no engine was built in this workspace")
    out = tmp_path / "e.json"
    result = invoke(
        [
            *trained.cli_args,
            "--workspace",
            tmp_path / "ws",
            "--device",
            "cuda",
            "--artifact",
            engines[0],
            *FAST,
            "--images",
            trained.heldout_dir,
            "--json",
            out,
        ]
    )
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(out.read_text())["rows"] if r["format"] == "engine"]
    assert rows and all(r["passed"] for r in rows)


def test_an_artifact_named_that_cannot_run_here_fails(trained, workspace, tmp_path) -> None:
    """--artifact is a request: one no runtime here can run fails the command instead of being skipped
    (a CI gate would otherwise pass without having checked it)."""
    onnx = next((workspace / trained.architecture).glob("*.onnx"))
    base = [*trained.cli_args, "--workspace", tmp_path / "ws", *FAST]
    result = invoke([*base, "--artifact", onnx, "--runtimes", "torch-eager"])
    assert result.exit_code == 2, result.output
    assert f"--artifact {onnx.name} is onnx" in result.output and "onnxruntime-cpu" in result.output
    assert not (tmp_path / "ws").exists()  # refused before anything was built

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not checked: refused before it is read")
    result = invoke([*base, "--artifact", engine])  # CPU: no runtime runs an engine
    assert result.exit_code in (2, 3) and "Traceback" not in result.output, result.output
    assert "--artifact model.engine: runtime tensorrt" in " ".join(result.output.split())


def test_an_artifact_that_is_not_what_its_name_says_fails_in_one_line(trained, tmp_path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot protobuf" * 50)
    result = invoke([*trained.cli_args, "--workspace", tmp_path / "ws", "--artifact", junk, *FAST])
    assert result.exit_code == 1, result.output  # it could not run: a failed check, as a corrupt workspace file is
    assert "ONNX Runtime cannot load junk.onnx" in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not (tmp_path / "ws").exists()


def test_a_runtime_named_with_nothing_to_run_fails(trained, tmp_path) -> None:
    result = invoke([*trained.cli_args, "--workspace", tmp_path, "--no-build", "--runtimes", "onnxruntime-cpu", *FAST])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "--runtimes onnxruntime-cpu: the workspace" in text and "no onnx artifact" in text, text


def test_unavailable_provider_fails_clearly(trained, tmp_path) -> None:
    import torch

    from resnet_deploy.runtimes import registry

    # where onnxruntime-gpu is installed (a GPU machine) the provider exists: then it is --device that is wrong
    provider_missing = registry()["onnxruntime-cuda"].unavailable_reason("cuda") is not None
    base = [*trained.cli_args, "--workspace", tmp_path, *FAST]
    result = invoke([*base, "--runtimes", "onnxruntime-cuda"])
    assert "Traceback" not in result.output
    if provider_missing:
        assert result.exit_code == 3
        assert "onnxruntime-cuda" in result.output and "not available" in result.output
    else:
        assert result.exit_code == 2 and "add --device cuda" in result.output
    if provider_missing or not torch.cuda.is_available():
        result = invoke([*base, "--runtimes", "onnxruntime-cuda", "--device", "cuda"])
        assert result.exit_code == 3 and "Traceback" not in result.output
    result = invoke([*base, "--runtimes", "no-such-runtime"])
    assert result.exit_code == 2 and "unknown runtime" in result.output


def test_a_static_workspace_is_benchmarked_at_its_shape_by_default(trained, tmp_path) -> None:
    """Exported static at 2x3x80x80 (--opt-shape only): without --batch/--size, compare runs that shape, where
    batch 1 at the crop size would make every row an error saying to re-export."""
    from resnet_deploy.pipeline import ModelOptions, Pipeline, ShapeRequest

    ws = tmp_path / "static-ws"
    opts = ModelOptions(trained.architecture, str(trained.checkpoint), resize=trained.resize, crop=trained.crop)
    Pipeline(opts, ws, shapes=ShapeRequest(None, None, "2x3x80x80", None)).onnx()
    out = tmp_path / "r.json"
    args = [*trained.cli_args, "--workspace", ws, "--images", trained.heldout_dir, "--no-build", *FAST]
    result = invoke([*args, "--runtimes", "onnxruntime-cpu", "--json", out])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["batch"], row["size"], row["passed"]) == (2, [80, 80], True), row
    result = invoke([*args, "--runtimes", "onnxruntime-cpu", "--batch", "1"])  # asked for: as asked, refused
    assert result.exit_code == 2 and "only accepts 2x3x80x80" in " ".join(result.output.split()), result.output


def test_size_outside_a_static_artifact_fails_clearly(trained, tmp_path) -> None:
    ws = tmp_path / "static-ws"
    pipe = trained.pipeline(ws, dynamic=False)
    onnx = pipe.onnx()
    base = [*trained.cli_args, "--workspace", ws, "--images", trained.heldout_dir, "--no-build", *FAST]

    result = invoke([*base, "--size", "96", "--runtimes", "onnxruntime-cpu"])
    assert result.exit_code == 2, result.output
    assert "1x3x96x96" in result.output and "only accepts 1x3x64x64" in result.output

    # the same file from outside the workspace (no manifest range): ONNX Runtime's own check speaks
    out = tmp_path / "x.json"
    result = invoke(
        [
            *trained.cli_args,
            "--workspace",
            tmp_path / "other",
            "--images",
            trained.heldout_dir,
            *FAST,
            "--artifact",
            onnx.path,
            "--batch",
            "2",
            "--json",
            out,
        ]
    )
    assert result.exit_code == 2, result.output
    assert "does not fit" in result.output and "--dynamic" in result.output
    rows = json.loads(out.read_text())["rows"]
    bad = [r for r in rows if r["artifact_key"].startswith("file:")]
    assert bad and all(r["error"] and not r["passed"] for r in bad)
    assert all(r["passed"] for r in rows if r["artifact_key"] == "pytorch")  # the rest still ran


def test_size_beyond_a_dynamic_range_fails_clearly(trained, workspace) -> None:
    result = invoke(
        [
            *trained.cli_args,
            "--workspace",
            workspace,
            "--images",
            trained.heldout_dir,
            "--no-build",
            *FAST,
            "--size",
            "160",
            "--runtimes",
            "onnxruntime-cpu",
        ]
    )
    assert result.exit_code == 2
    assert "outside" in result.output and "1x3x160x160" in result.output


def test_run_compare_in_process_and_degenerate_reference(trained, workspace) -> None:
    pipe = trained.pipeline(workspace)
    opts = CompareOptions(
        runtimes=["torch-eager", "onnxruntime-cpu"],
        images=trained.calib_dir,
        iters=2,
        warmup=0,
        build=False,
        progress=False,
        threads=1,
    )
    result = run_compare(pipe, opts)
    assert result.threads == 1 and result.device == "cpu" and result.images > 0
    assert {r.runtime for r in result.rows} == {"torch-eager", "onnxruntime-cpu"}
    assert result.exit_code == 0 and result.passed
    assert not result.degenerate and result.reference_distinct_classes >= 4
    d = result.to_dict()
    assert d["rows"][0]["latency"]["threads"] == 1

    # random weights: one class for (nearly) everything -> flagged
    ref = np.zeros((20, 1000), np.float32)
    ref[:, 7] = 1.0
    assert "1 distinct class" in degenerate_warning(ref)
    healthy = np.eye(20, 1000, dtype=np.float32)
    assert degenerate_warning(healthy) is None


def test_a_floor_that_cannot_be_measured_keeps_the_rows_and_says_why(trained, workspace, monkeypatch) -> None:
    """--floor runs after every row: a failure there (a GPU's peak-rate probe) must not lose the rows measured
    in the minutes before it. It is said, and it is in the exit code, since the floor was asked for."""
    from resnet_deploy.bench import floor

    def no_peak(device: str, **_: object) -> None:
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED when calling cublasGemmEx\n(more lines)")

    monkeypatch.setattr(floor, "measure_ceilings", no_peak)
    opts = CompareOptions(runtimes=["onnxruntime-cpu"], iters=1, warmup=0, build=False, progress=False, floor=True)
    result = run_compare(trained.pipeline(workspace), opts)
    assert result.rows and all(r.latency is not None and r.passed for r in result.rows)
    assert result.floor is None and result.exit_code == 1
    (said,) = [w for w in result.warnings if w.startswith("--floor not computed")]
    assert "RuntimeError: CUBLAS_STATUS_NOT_SUPPORTED when calling cublasGemmEx" in said and "more lines" not in said


def test_a_run_cut_short_leaves_the_rows_it_measured(trained, workspace, tmp_path, monkeypatch) -> None:
    """--json is rewritten after each artifact x runtime: interrupted (Ctrl-C, a CI or device timeout) in the
    second runtime, the file holds the first's rows, marked partial; a run that ends overwrites it, complete."""
    from resnet_deploy.bench import measure as compare_module  # where each row's latency is measured

    out = tmp_path / "r.json"
    real, calls = compare_module.measure, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(compare_module, "measure", interrupted)
    opts = CompareOptions(
        runtimes=["torch-eager", "onnxruntime-cpu"], iters=1, warmup=0, build=False, progress=False, partial_json=out
    )
    opts.command = "resnet-bench compare (test)"
    with pytest.raises(KeyboardInterrupt):
        run_compare(trained.pipeline(workspace), opts)
    saved = json.loads(out.read_text())
    assert saved["partial"] is True and [r["runtime"] for r in saved["rows"]] == ["torch-eager"]
    assert saved["command"] == "resnet-bench compare (test)"  # a partial report still says how it was made
    assert saved["rows"][0]["latency"]["p50_ms"] > 0 and saved["rows"][0]["passed"]

    monkeypatch.setattr(compare_module, "measure", real)
    result = run_compare(trained.pipeline(workspace), opts)
    saved = json.loads(out.read_text())
    assert saved["partial"] is False and not result.partial
    assert {r["runtime"] for r in saved["rows"]} == {"torch-eager", "onnxruntime-cpu"}


def test_degenerate_reference_means_fewer_classes_than_a_third_of_what_the_images_could_show(trained) -> None:
    """Random weights often answer two or three classes for a handful of photos, not one: that is still
    flagged. The threshold is checked on the trained model's real logits, subsets of the held-out crops
    picked so that they predict exactly k classes."""
    from resnet_deploy.preprocess import load_folder
    from resnet_deploy.verify import reference_logits

    images = load_folder(trained.heldout_dir, trained.preprocess).tensors
    logits = reference_logits(trained.model, images)
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(logits.argmax(1)):
        by_class.setdefault(int(c), []).append(i)
    common = sorted(by_class, key=lambda c: -len(by_class[c]))[:4]
    assert len(by_class) >= 4 and len(by_class[common[-1]]) >= 6, {c: len(v) for c, v in by_class.items()}

    def predicting(k: int, n: int) -> np.ndarray:
        """n images whose reference predictions cover exactly k classes, round robin"""
        classes = common[:k]
        picked = [by_class[classes[j % k]][j // k] for j in range(n)]
        return logits[picked]

    # 11 images of an 11-class model could show 11 classes: 3 is under a third, 4 is not
    three = degenerate_warning(predicting(3, 11), trained.num_classes)
    assert three is not None and "3 distinct classes over 11 images" in three
    assert degenerate_warning(predicting(4, 11), trained.num_classes) is None
    # 6 images could show 6: exactly a third (2) passes, one class does not
    assert degenerate_warning(predicting(2, 6), trained.num_classes) is None
    assert "1 distinct class over 6 images" in degenerate_warning(predicting(1, 6), trained.num_classes)
    assert degenerate_warning(logits, trained.num_classes) is None


def test_a_fixed_batch_export_is_checked_at_its_own_batch(trained, tmp_path) -> None:
    """An ONNX exported for a fixed batch of 2 (a common deployment export) is refused at batch 1 in one
    line and, at batch 2, gets parity over every image, run two at a time as it is deployed (an odd image
    count: the last pair padded), not a row that errors because parity ran it at batch 1."""
    from resnet_deploy.pipeline import ModelOptions, Pipeline, ShapeRequest

    ws = tmp_path / "batch2-ws"
    opts = ModelOptions(trained.architecture, str(trained.checkpoint), resize=trained.resize, crop=trained.crop)
    Pipeline(opts, ws, shapes=ShapeRequest(False, opt_shape="2x3x64x64")).onnx()
    out = tmp_path / "b2.json"
    args = [*trained.cli_args, "--workspace", ws, "--images", trained.heldout_dir, "--no-build", "--threads", "1"]
    args += ["--iters", "2", "--warmup", "1", "--max-images", "31", "--runtimes", "onnxruntime-cpu"]
    result = invoke([*args, "--batch", "1,2", "--json", out])
    assert result.exit_code == 2, result.output  # the batch-1 row: a shape the file does not accept
    rows = {r["batch"]: r for r in json.loads(out.read_text())["rows"]}
    assert "only accepts 2x3x64x64" in rows[1]["error"] and "Traceback" not in result.output
    at2 = rows[2]
    assert at2["error"] is None and at2["passed"], at2
    assert at2["parity"]["count"] == 31 and at2["parity"]["top1_agreement"] == 1.0
    assert at2["parity"]["rel_l2"] < 1e-4 and at2["latency"]["batch"] == 2


def test_warmup_and_iters_out_of_range_are_refused_before_anything_runs(trained, tmp_path) -> None:
    """--iters 0 would time nothing and --warmup -1 would quietly mean no warm-up: both are usage errors,
    said before the model loads or anything is built."""
    ws = tmp_path / "ws"
    base = [*trained.cli_args, "--workspace", ws, "--images", trained.heldout_dir, "--max-images", "4", "--no-build"]
    for bad in (["--iters", "0"], ["--iters", "-3"], ["--warmup", "-1"]):
        result = invoke([*base, "--threads", "1", *bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "--iters must be >= 1 and --warmup >= 0" in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output and not ws.exists()
    with pytest.raises(UsageError, match="--warmup >= 0"):
        run_compare(trained.pipeline(ws), CompareOptions(warmup=-1, build=False, progress=False))


def test_fit_range_covers_the_benchmark_shapes_only_when_needed(trained, tmp_path) -> None:
    from resnet_deploy.pipeline.default_set import fit_range

    pipe = trained.pipeline(tmp_path / "ws")  # 1x3x64x64 .. 4x3x128x128, opt 1x3x64x64
    assert not fit_range(pipe, [1, 4], [(64, 64), (96, 80)])
    assert pipe.shape_range.max == (4, 3, 128, 128)
    assert fit_range(pipe, [1, 16], [(64, 64)])
    rng = pipe.shape_range
    assert (rng.min, rng.opt, rng.max) == ((1, 3, 64, 64), (1, 3, 64, 64), (16, 3, 64, 64))
    assert pipe.ws.manifest["input"]["max"] == [16, 3, 64, 64]  # saved with the next artifact built


def test_engine_rows_away_from_the_opt_shape_are_flagged() -> None:
    """TensorRT tunes for one shape; a report at other batches says so (engines tuned for batch 1 by default)."""
    from resnet_deploy.bench.plan import opt_shape_notes
    from resnet_deploy.runtimes import Artifact
    from resnet_deploy.shapes import ShapeRange

    engine = Artifact(
        "engine", Path("m-fp16.engine"), "fp16", ShapeRange((1, 3, 224, 224), (1, 3, 224, 224), (256, 3, 224, 224))
    )
    onnx = Artifact("onnx", Path("m.onnx"), "fp32", engine.input_range)
    shapes = [(1, 3, 224, 224), (64, 3, 224, 224), (256, 3, 224, 224), (512, 3, 224, 224)]
    (note,) = opt_shape_notes([onnx, engine], shapes)
    assert note.startswith("m-fp16.engine was tuned for 1x3x224x224"), note
    assert "64x3x224x224" in note and "256x3x224x224" in note and "512x" not in note  # 512: out of profile
    assert "--opt-shape" in note
    assert opt_shape_notes([engine], [(1, 3, 224, 224)]) == []


def _pooled_classifier_onnx(path: Path, classes: int) -> Path:
    """A real image classifier of another model: global average pool, then `classes` logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((classes, 3), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1),
        ],
        "other",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def test_an_artifact_of_a_model_with_other_classes_is_a_named_mismatch(trained, tmp_path) -> None:
    other = _pooled_classifier_onnx(tmp_path / "other.onnx", trained.num_classes - 4)
    out = tmp_path / "r.json"
    args = [*trained.cli_args, "--workspace", tmp_path / "ws", "--images", trained.heldout_dir, *FAST]
    result = invoke([*args, "--runtimes", "onnxruntime-cpu", "--artifact", other, "--json", out])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"other.onnx outputs {trained.num_classes - 4} values per image, but the model has 11 classes" in text
    assert "ValueError" not in text and "Traceback" not in text
    (row,) = json.loads(out.read_text())["rows"]
    assert "but the model has 11 classes" in row["error"] and not row["passed"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--batch", "1,4,1", "1 is listed twice"), ("--size", "64,96x80,64x64", "64x64 is listed twice")],
)
def test_a_batch_or_size_listed_twice_is_refused(trained, tmp_path, option, value, message) -> None:
    """Listed twice, a shape would be benchmarked, reported and gated twice under one name."""
    ws = tmp_path / "ws"
    result = invoke([*trained.cli_args, "--workspace", ws, option, value, *FAST])
    assert result.exit_code == 2, result.output
    assert f"invalid {option} '{value}': {message}" in " ".join(result.output.split()), result.output
    assert not ws.exists()


def test_an_artifact_that_is_a_folder_is_named_a_folder(trained, tmp_path) -> None:
    folder = tmp_path / "exports.onnx"  # a folder, whatever its name says
    folder.mkdir()
    result = invoke([*trained.cli_args, "--workspace", tmp_path / "ws", "--artifact", folder, *FAST])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"artifact {folder} is a folder" in text and "does not exist" not in text, text


def test_the_same_checkpoint_named_by_another_path_keeps_the_workspace(trained, tmp_path, monkeypatch) -> None:
    """Exported with a relative --weights path, compared with the absolute one (or from another folder):
    the same bytes are the same model, so --no-build must find the artifacts, not skip them as "made from
    other weights" and check nothing, and must keep the preprocessing recorded for them."""
    import os

    from resnet_deploy.pipeline import ModelOptions, Pipeline, ShapeRequest

    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(trained.checkpoint, tmp_path)
    opts = ModelOptions(trained.architecture, relative, resize=trained.resize, crop=trained.crop)
    Pipeline(opts, tmp_path / "ws", shapes=ShapeRequest(True, "1x3x64x64", None, "2x3x64x64")).onnx()

    out = tmp_path / "r.json"
    args = [trained.architecture, "--weights", trained.checkpoint.resolve(), "--workspace", tmp_path / "ws"]
    args += ["--images", trained.heldout_dir, *FAST, "--no-build", "--runtimes", "onnxruntime-cpu", "--json", out]
    result = invoke(args)  # no --resize/--crop: what the workspace recorded for these weights
    assert result.exit_code == 0, result.output
    assert "other weights" not in result.output
    report = json.loads(out.read_text())
    assert [r["artifact_key"] for r in report["rows"]] == ["onnx-fp32"]
    assert (report["preprocess"]["resize"], report["preprocess"]["crop"]) == (trained.resize, trained.crop)
    # the results are stdout's (`> results.txt` keeps them), progress is stderr's
    assert "onnxruntime-cpu" in result.stdout and "rel L2" in result.stdout and "reference:" in result.stdout
    assert "reference logits" in result.stderr and "reference logits" not in result.stdout


def test_an_empty_artifact_file_is_refused_before_any_row(trained, tmp_path) -> None:
    empty = tmp_path / "model.onnx"
    empty.touch()
    ws = tmp_path / "ws"
    result = invoke([*trained.cli_args, "--workspace", ws, "--artifact", empty, *FAST])
    assert result.exit_code == 2, result.output
    assert f"artifact {empty} is empty (0 bytes)" in " ".join(result.output.split()), result.output
    assert not ws.exists()  # refused before the model loaded


@pytest.mark.parametrize("case", ["no-build", "empty"])
def test_calib_is_checked_before_the_model_loads(trained, tmp_path, case) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    ws = tmp_path / "ws"
    args = ["--calib", trained.calib_dir, "--no-build"] if case == "no-build" else ["--calib", empty]
    result = invoke([*trained.cli_args, "--workspace", ws, *args, *FAST])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    expected = "--calib only applies when compare builds the default set" if case == "no-build" else f"{empty} holds no"
    assert expected in text, result.output
    assert not ws.exists()


def test_an_empty_shape_is_a_bad_shape_not_the_default(trained, tmp_path) -> None:
    """`--max-shape "$UNSET"` must not quietly benchmark the default range."""
    ws = tmp_path / "ws"
    result = invoke([*trained.cli_args, "--workspace", ws, "--max-shape", "", *FAST])
    assert result.exit_code == 2, result.output
    assert "invalid shape ''" in " ".join(result.output.split()), result.output


def test_unusable_calibration_images_fail_before_any_export(trained, tmp_path) -> None:
    """INT8 is built first and reads its images before exporting: a folder of undecodable files costs
    seconds, not the other exports first (minutes for resnet50), and leaves no artifact behind."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "photo.jpg").write_bytes(b"\xff\xd8 not really a jpeg" * 10)
    ws = tmp_path / "ws"
    result = invoke([*trained.cli_args, "--workspace", ws, "--calib", bad, "--images", trained.heldout_dir, *FAST])
    assert result.exit_code == 2, result.output
    assert "no usable calibration image" in " ".join(result.output.split()), result.output
    assert not [p for p in ws.rglob("*") if p.suffix in (".onnx", ".ts", ".pt2")]


def test_no_build_on_a_workspace_without_artifacts_says_so(trained, tmp_path) -> None:
    """The model's own folder passed as --workspace (or a typo) finds nothing: a warning, not a quiet pass."""
    ws = tmp_path / "ws"
    args = [*trained.cli_args, "--workspace", ws, "--no-build", "--images", trained.heldout_dir, *FAST]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"{ws / trained.architecture} holds no artifacts of {trained.architecture}: only PyTorch runs" in text


def test_a_benchmark_shape_outside_the_given_range_is_refused_before_building(trained, tmp_path) -> None:
    ws = tmp_path / "ws"
    shapes = ["--min-shape", "1x3x64x64", "--opt-shape", "1x3x64x64", "--max-shape", "2x3x96x96"]
    result = invoke([*trained.cli_args, "--workspace", ws, "--size", "128", *shapes, *FAST])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "the benchmark shape 1x3x128x128 is outside the range 1x3x64x64 .. 2x3x96x96" in text, text
    assert not [p for p in ws.rglob("*") if p.suffix in (".onnx", ".ts", ".pt2")]


def test_a_default_set_range_without_the_crop_skips_int8_and_runs_the_rest(trained, tmp_path) -> None:
    """INT8 is part of the default set, not what was asked for: a range that does not hold the crop it
    calibrates on skips it, said, instead of failing the whole benchmark."""
    ws = tmp_path / "ws"
    shapes = ["--min-shape", "1x3x64x64", "--opt-shape", "1x3x96x96", "--max-shape", "1x3x96x96", "--size", "96"]
    args = ["resnet18", "--workspace", ws, "--calib", trained.calib_dir, *shapes, "--runtimes", "onnxruntime-cpu"]
    result = invoke([*args, "--images", trained.heldout_dir, *FAST])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "INT8 ONNX skipped: INT8 calibrates on the preprocessing's 224x224 crops" in text, text
    assert (ws / "resnet18" / "resnet18.onnx").is_file() and not list(ws.rglob("*int8*"))


def test_tensorrt_refuses_the_cpu_int8_recipe_by_its_record(trained, workspace) -> None:
    """The rule lives with the runtime registry, so `create` (the library) and compare (which skips the pair)
    say the same; judged from the manifest, before any GPU or TensorRT is looked for."""
    from resnet_deploy.runtimes import registry
    from resnet_deploy.workspace import Workspace

    if "int8" not in _optional_precisions():
        pytest.skip("this install makes no INT8 ONNX")
    ws = Workspace(workspace, trained.architecture)
    spec = registry()["onnxruntime-tensorrt"]
    assert spec.refuses(ws.artifact("onnx-int8-tensorrt")) is None
    why = spec.refuses(ws.artifact("onnx-int8-cpu"))
    assert why and "uint8 activations" in why
    with pytest.raises(
        UsageError, match=r"onnxruntime-tensorrt cannot run .*int8-cpu\.onnx: it is the CPU INT8 recipe"
    ):
        spec.create(ws.artifact("onnx-int8-cpu"), "cuda:0")


def test_rows_come_in_reading_order_not_build_order(reports: dict) -> None:
    """The workspace fixture exports ONNX before the .pt2, and compare's default set builds INT8 first: the
    report reads FP32 (PyTorch formats, then ONNX), FP16, INT8 all the same."""
    reading = ["torchscript", "program", "onnx-fp32", "onnx-fp16", "onnx-int8-tensorrt", "onnx-int8-cpu"]
    keys = list(dict.fromkeys(r["artifact_key"] for r in reports["data"]["rows"]))
    assert [k for k in keys if k in reading] == [k for k in reading if k in keys]
