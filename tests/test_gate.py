"""The CI parity gate (issue 6): tolerances from defaults or a TOML file, a verdict with exit codes,
JUnit naming the failing file, and tampered artifacts caught.

The tampered ONNX files are exports of modified copies of the trained model: two classes swapped in
`fc`, every weight perturbed by 1% of its spread, and a BGR channel flip baked in front of the network.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from resnet_deploy import tolerances
from resnet_deploy.errors import UsageError
from resnet_deploy.gate import junit, summary
from resnet_deploy.gate import verdict as gate
from resnet_deploy.parity import DEFAULT_TOLERANCES, ParityMetrics, check, compare
from resnet_deploy.preprocess import load_folder
from resnet_deploy.results import Row
from resnet_deploy.verify import reference_logits

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tolerances.toml"


@pytest.fixture(scope="module")
def workspace(trained, tmp_path_factory) -> Path:
    """A workspace holding the honest ONNX export of the trained model."""
    ws = tmp_path_factory.mktemp("gate-ws")
    trained.pipeline(ws).onnx()
    return ws


# -- tolerance files -------------------------------------------------------------------------------


def test_defaults_are_the_parity_defaults() -> None:
    cfg = tolerances.load_tolerances(None)
    assert cfg.precisions == DEFAULT_TOLERANCES
    assert cfg.tolerance_for("int8", "onnx-int8", "/x/resnet50.int8.onnx") == DEFAULT_TOLERANCES["int8"]


def test_compare_options_take_a_plain_tolerance_table() -> None:
    """A library caller may pass {precision: Tolerance}, as DEFAULT_TOLERANCES is: judged by it, not a traceback."""
    from resnet_deploy.bench.options import CompareOptions
    from resnet_deploy.parity import Tolerance

    strict = {**DEFAULT_TOLERANCES, "fp32": Tolerance(max_rel_l2=0.0)}
    options = CompareOptions(tolerances=strict)
    assert options.tolerances.tolerance_for("fp32", "onnx-fp32", "ws/a.onnx") == Tolerance(max_rel_l2=0.0)
    assert options.tolerances.tolerance_for("int8") == DEFAULT_TOLERANCES["int8"]


def test_tolerance_file_overrides_per_precision_metric_and_artifact(tmp_path: Path) -> None:
    f = tmp_path / "tol.toml"
    f.write_text(
        """
[fp32]
min_cosine = 0.9999            # only this metric changes

[int8]
min_top1_agreement = 0.9
min_top5_overlap = 0.8         # a metric the default does not check

[artifact."onnx-int8"]         # by manifest key
min_cosine = 0.98

[artifact."*.fp16.onnx"]       # by file name glob
max_rel_l2 = false             # switched off
"""
    )
    cfg = tolerances.load_tolerances(f)
    fp32 = cfg.tolerance_for("fp32", "onnx-fp32", "a/resnet18.onnx")
    assert fp32.min_cosine == 0.9999
    assert fp32.max_rel_l2 == DEFAULT_TOLERANCES["fp32"].max_rel_l2  # untouched metrics keep the default
    int8 = cfg.tolerance_for("int8", "onnx-int8", "a/resnet18.int8.onnx")
    assert (int8.min_cosine, int8.min_top1_agreement, int8.min_top5_overlap) == (0.98, 0.9, 0.8)
    assert (
        cfg.tolerance_for("int8", "file:other.onnx", "b/other.onnx").min_cosine == DEFAULT_TOLERANCES["int8"].min_cosine
    )
    fp16 = cfg.tolerance_for("fp16", "onnx-fp16", "a/resnet18.fp16.onnx")
    assert fp16.max_rel_l2 is None and fp16.min_cosine == DEFAULT_TOLERANCES["fp16"].min_cosine


def test_artifact_rules_apply_in_file_order_and_only_to_their_precision(tmp_path: Path) -> None:
    f = tmp_path / "tol.toml"
    f.write_text(
        """
[artifact."*.onnx"]            # every ONNX file ...
min_cosine = 0.9

[artifact."resnet18.int8*"]    # ... and this one, written later, wins where both match
min_cosine = 0.95

[artifact."resnet18*"]         # only the int8 rows of these files
precision = "int8"
min_top1_agreement = 0.5
"""
    )
    cfg = tolerances.load_tolerances(f)
    int8 = cfg.tolerance_for("int8", "onnx-int8-tensorrt", "ws/resnet18.int8-tensorrt.onnx")
    assert (int8.min_cosine, int8.min_top1_agreement) == (0.95, 0.5)
    fp32 = cfg.tolerance_for("fp32", "onnx-fp32", "ws/resnet18.onnx")
    assert fp32.min_cosine == 0.9  # the int8-only rule left the fp32 row's top-1 bound alone
    assert fp32.min_top1_agreement == DEFAULT_TOLERANCES["fp32"].min_top1_agreement


def test_example_tolerance_file_is_valid() -> None:
    cfg = tolerances.load_tolerances(EXAMPLE)
    assert set(cfg.precisions) == {"fp32", "tf32", "bf16", "fp16", "int8"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[fp32\nmin_cosine = 1", "not valid TOML"),
        ("[fp32]\nmin_cosin = 0.99", "unknown metric 'min_cosin'"),
        ("[fp32]\nmin_cosine = 'high'", "[fp32].min_cosine must be a number"),
        ("[fp32]\nmin_top1_agreement = 1.5", "outside [0, 1]"),
        ("[fp32]\nmax_rel_l2 = -1", "outside [0, inf]"),
        ("[fp64]\nmin_cosine = 0.9", "unknown table [fp64]"),
        ("fp32 = 0.9", "[fp32] must be a table"),
        ("min_cosine = 0.99", "min_cosine = 0.99 is outside any table"),
        ('[artifact."x.onnx"]\nprecision = "fp8"', "is not one of fp32, tf32, bf16, fp16, int8"),
        ("[artifact]\nmin_cosine = 0.9", "[artifact] holds min_cosine = 0.9; per-artifact bounds go in tables"),
    ],
)
def test_malformed_tolerance_file_is_a_usage_error(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(UsageError) as err:
        tolerances.load_tolerances(f)
    assert err.value.exit_code == 2
    assert str(f) in str(err.value) and expected in str(err.value), str(err.value)


def test_missing_tolerance_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        tolerances.load_tolerances(tmp_path / "nope.toml")


# -- evaluation and JUnit on synthetic rows --------------------------------------------------------


def _Row(
    artifact_key: str,
    artifact_path: str | None,
    runtime: str,
    precision: str,
    parity: ParityMetrics | None,
    error: str | None = None,
    device: str = "cpu",
    size: tuple[int, int] = (64, 64),
) -> Row:
    fmt = "pytorch" if artifact_path is None else "onnx"
    return Row(artifact_key, artifact_path, fmt, runtime, precision, device, 1, size, True, parity=parity, error=error)


def _metrics(cosine: float, rel_l2: float, top1: float = 1.0) -> ParityMetrics:
    return ParityMetrics(1e-3, 1e-4, rel_l2, cosine, cosine, top1, 1.0, 32)


def test_evaluate_exit_codes_and_junit(tmp_path: Path) -> None:
    good = _Row("onnx-fp32", "ws/resnet18.onnx", "onnxruntime-cpu", "fp32", _metrics(1.0, 1e-7))
    bad = _Row("onnx-int8", "ws/resnet18.int8.onnx", "onnxruntime-cpu", "int8", _metrics(0.9, 0.3, 0.5))
    broken = _Row("onnx-fp16", "ws/resnet18.fp16.onnx", "onnxruntime-cpu", "fp16", None, error="cannot load")
    ok = gate.evaluate([good])
    assert ok.passed and ok.exit_code == 0 and gate.exit_code(ok, 0) == 0
    assert gate.exit_code(ok, 2) == 2 and gate.exit_code(ok, 3) == 3
    res = gate.evaluate([good, bad, broken])
    assert not res.passed and res.exit_code == 1 and gate.exit_code(res, 0) == 1
    assert gate.exit_code(res, 3) == 1  # a failed check outranks a missing runtime ...
    assert gate.exit_code(res, 2) == 2  # ... and a usage error (a bad option, a shape refused) outranks both
    assert [c.status for c in res.cases] == ["passed", "failed", "error"]
    assert not gate.evaluate([]).passed  # an empty gate never passes silently
    reference = _Row("pytorch", None, "torch-eager", "fp32", _metrics(1.0, 0.0))
    assert not gate.evaluate([reference]).passed  # nor one that compared PyTorch with itself
    assert gate.evaluate([reference, good]).passed

    out = junit.write_junit(res, tmp_path / "reports" / "parity.xml")
    root = ET.parse(out).getroot()
    assert root.get("tests") == "3" and root.get("failures") == "1" and root.get("errors") == "1"
    failure = root.find(".//testcase/failure")
    assert failure is not None
    msg = failure.get("message", "")
    assert "resnet18.int8.onnx" in msg and "cosine 0.9 (must be >= 0.99)" in msg
    assert "top1_agreement 0.5 (must be >= 0.95)" in msg
    assert not list(out.parent.glob(".*.tmp*"))  # atomic write leaves no temp file

    md = summary.markdown(res)
    assert "FAILED" in md and "`resnet18.int8.onnx`" in md and "\x1b" not in md
    # a row that could not run is counted as such, not as outside tolerance
    assert "2 of 3 checks failed (1 outside tolerance, 1 could not run)" in res.summary()
    assert "1 of 2 checks could not run" in gate.evaluate([good, broken]).summary()
    assert "1 of 2 checks outside tolerance" in gate.evaluate([good, bad]).summary()
    # --explain without --gate: not worded as a gate whose verdict the exit code follows
    assert res.summary(gating=False).startswith("parity check FAILED") and "without --gate" in res.summary(False)
    # looser per-artifact rule turns the failure into a pass
    f = tmp_path / "loose.toml"
    f.write_text('[artifact."*.int8.onnx"]\nmin_cosine = 0.8\nmin_top1_agreement = 0.4\n')
    assert gate.evaluate([good, bad], tolerances.load_tolerances(f)).passed


def test_nan_or_zero_logits_fail_the_cosine_bound_and_the_gate(trained, tmp_path) -> None:
    """One image whose logits overflowed to NaN (FP16) or came out all zero must fail cosine, the bound the
    INT8 gate relies on (it has no rel L2 bound), not count as a perfect match."""
    art = trained.pipeline(tmp_path, dynamic=False).onnx()
    images = load_folder(trained.heldout_dir, trained.preprocess, limit=8).tensors
    session = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"input": x[None]})[0] for x in images])
    reference = reference_logits(trained.model, images)
    honest = compare(reference, logits)
    assert honest.min_cosine > 0.9999 and honest.top1_agreement == 1.0 and honest.top5_overlap == 1.0
    # relative L2 is measured against the reference's norm: logits blown up 10x are 900% off, not 90%
    # (which would pass a rel L2 bound of 1), and a candidate that outputs zeros is 100% off, not infinitely
    blown = compare(reference, logits * 10)
    assert blown.rel_l2 == pytest.approx(9.0, rel=1e-4) and blown.cosine > 0.9999
    assert compare(reference, np.zeros_like(logits)).rel_l2 == pytest.approx(1.0)

    overflowed = logits.copy()
    overflowed[3] = np.nan
    metrics = compare(reference, overflowed)
    assert np.isnan(metrics.cosine) and np.isnan(metrics.min_cosine) and np.isnan(metrics.rel_l2)
    for precision in ("fp16", "int8"):
        assert "cosine" in {v.metric for v in check(metrics, DEFAULT_TOLERANCES[precision])}
    result = gate.evaluate([_Row("onnx-int8", str(art.path), "onnxruntime-cpu", "int8", metrics)])
    assert not result.passed and result.exit_code == 1 and result.cases[0].status == "failed"

    silent = logits.copy()
    silent[5] = 0.0
    zero = compare(reference, silent)
    assert zero.min_cosine == 0.0 and zero.cosine < 0.9
    # max abs is the worst single logit (the silent image's largest), mean abs the average over all of them
    assert zero.max_abs == pytest.approx(np.abs(reference[5]).max(), rel=1e-5)
    assert zero.mean_abs == pytest.approx(np.abs(silent - reference).mean(), rel=1e-6)
    assert zero.mean_abs < zero.max_abs / 5
    assert compare(np.zeros((2, 11)), np.zeros((2, 11))).cosine == 1.0  # two zero vectors do agree


# -- the CLI on the trained model ------------------------------------------------------------------

runner = CliRunner()


def _compare(trained, workspace: Path, *extra: str):
    from resnet_deploy.cli.bench import app

    args = [
        "compare",
        *trained.cli_args,
        "--workspace",
        str(workspace),
        "--no-build",
        "--runtimes",
        "onnxruntime-cpu",
        "--images",
        str(trained.heldout_dir),
        "--max-images",
        "48",
        "--warmup",
        "1",
        "--iters",
        "2",
        *extra,
    ]
    return runner.invoke(app, args)


def _junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {tc.get("name", ""): tc for tc in root.iter("testcase")}


def test_gate_passes_honest_export(trained, workspace: Path, tmp_path: Path) -> None:
    report = tmp_path / "parity.xml"
    md = tmp_path / "summary.md"
    res = _compare(trained, workspace, "--gate", "--junit", str(report), "--markdown", str(md))
    assert res.exit_code == 0, res.output
    cases = _junit_cases(report)
    assert any("resnet18.onnx" in name for name in cases)
    assert all(tc.find("failure") is None and tc.find("error") is None for tc in cases.values())
    assert "passed" in md.read_text()


def test_gate_fails_tampered_artifacts_naming_each_file(trained, workspace: Path, tampered, tmp_path: Path) -> None:
    report = tmp_path / "parity.xml"
    md = tmp_path / "summary.md"
    args = [a for p in tampered.values() for a in ("--artifact", str(p))]
    res = _compare(trained, workspace, "--gate", "--junit", str(report), "--markdown", str(md), "--explain", *args)
    assert res.exit_code == 1, res.output
    failures = {name: tc.find("failure") for name, tc in _junit_cases(report).items() if tc.find("failure") is not None}
    for path in tampered.values():
        hits = [f for name, f in failures.items() if name.startswith(path.name)]
        assert hits, f"{path.name} did not fail the gate: {list(failures)}"
        msg = hits[0].get("message", "")
        assert msg.startswith(path.name) and "must be" in msg, msg
    honest = [tc for name, tc in _junit_cases(report).items() if name.startswith("resnet18.onnx")]
    assert honest and all(tc.find("failure") is None for tc in honest)  # the honest file still passes
    swapped_text = failures[next(n for n in failures if n.startswith("swapped.onnx"))].text or ""
    assert "diverges first at head" in swapped_text
    summary = md.read_text()
    assert "FAILED" in summary and "swapped.onnx" in summary and "diverges first at head" in summary


def test_tolerance_file_changes_the_verdict(trained, workspace: Path, tampered, tmp_path: Path) -> None:
    strict = tmp_path / "strict.toml"
    strict.write_text("[fp32]\nmax_rel_l2 = 0.0\n")  # no export reproduces PyTorch bit for bit
    report = tmp_path / "strict.xml"
    res = _compare(trained, workspace, "--gate", "--tolerances", str(strict), "--junit", str(report))
    assert res.exit_code == 1, res.output
    (fail,) = [tc.find("failure") for tc in _junit_cases(report).values() if tc.find("failure") is not None]
    assert "resnet18.onnx: rel_l2" in fail.get("message", "") and "(must be <= 0)" in fail.get("message", "")

    loose = tmp_path / "loose.toml"
    loose.write_text(
        '[artifact."perturbed.onnx"]\nmax_rel_l2 = 0.5\nmin_cosine = 0.9\nmin_top1_agreement = 0.8\n'
        '[artifact."perturbd.onnx"]\nmin_cosine = 0.1\n'  # a typo: said, not silently ignored
    )
    out = tmp_path / "loose.json"
    res = _compare(
        trained,
        workspace,
        "--gate",
        "--tolerances",
        str(loose),
        "--artifact",
        str(tampered["perturbed"]),
        "--json",
        str(out),
    )
    assert res.exit_code == 0, res.output
    # the artifact rule outranks the [fp32] defaults in compare's own rows too, so its table and JSON agree
    # with the gate instead of marking the row failed while the gate passes it
    (row,) = [r for r in json.loads(out.read_text())["rows"] if r["artifact_key"] == "file:perturbed.onnx"]
    assert row["passed"] and row["violations"] == [], row["violations"]
    text = " ".join(res.output.split())
    # said once, as written in the file (console.warn escapes the markup; escaped twice it showed "\\[artifact")
    assert 'loose.toml: [artifact."perturbd.onnx"] matched no artifact of this run' in text, res.output
    assert '[artifact."perturbed.onnx"] matched no' not in text


def test_malformed_tolerance_file_exits_2(trained, workspace: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[fp32]\nmin_cosine = 'very close'\n")
    res = _compare(trained, workspace, "--gate", "--tolerances", str(bad))
    assert res.exit_code == 2, res.output
    assert "bad.toml" in res.output and "min_cosine must be a number" in res.output


def test_a_gate_that_checked_nothing_fails_in_junit_too(trained, tmp_path: Path) -> None:
    """An empty workspace with --no-build leaves only PyTorch against itself: the gate fails (exit 1), and
    the JUnit report must say so as a failing case, or a CI test view shows the job green."""
    from resnet_deploy.cli.bench import app

    report = tmp_path / "parity.xml"
    args = [*trained.cli_args, "--workspace", str(tmp_path / "empty"), "--no-build", "--images"]
    args += [str(trained.heldout_dir), "--max-images", "4", "--warmup", "0", "--iters", "1", "--gate"]
    res = runner.invoke(app, ["compare", *args, "--junit", str(report)])
    assert res.exit_code == 1, res.output
    root = ET.parse(report).getroot()
    assert root.get("failures") == "1" and root.get("tests") == "2", ET.tostring(root, encoding="unicode")
    # the reference against itself is listed, as skipped: counted as the verdict counts it, not as a pass
    assert root.get("skipped") == "1" and "against itself" in next(root.iter("skipped")).get("message", "")
    (failure,) = root.iter("failure")
    assert "no artifact was checked" in failure.get("message", "")


# -- a workspace that no longer matches the model it is gated for ---------------------------------


def _gate_cli(weights: Path, workspace: Path, images: Path, report: Path, *extra: str):
    from resnet_deploy.cli.bench import app

    args = ["compare", "resnet18", "--weights", str(weights), "--resize", "72", "--crop", "64"]
    args += ["--workspace", str(workspace), "--no-build", "--runtimes", "onnxruntime-cpu", "--images", str(images)]
    args += ["--max-images", "24", "--warmup", "0", "--iters", "1", "--gate", "--junit", str(report), *extra]
    return runner.invoke(app, args)


def _junit_problems(path: Path) -> dict[str, str]:
    """Test case name -> the message of its failure or error (passing cases left out)."""
    out = {}
    for name, tc in _junit_cases(path).items():
        bad = tc.find("failure") if tc.find("failure") is not None else tc.find("error")
        if bad is not None:
            out[name] = bad.get("message", "")
    return out


def test_the_same_weights_in_another_container_are_the_same_model(trained, tmp_path: Path) -> None:
    """Exported from the training checkpoint, then gated with the same tensors saved as a plain state_dict (what
    a deployment keeps): one model, so the exports are reused and usable, not "made from other weights"."""
    import torch

    from resnet_deploy.pipeline import ModelOptions, Pipeline

    ws = tmp_path / "ws"
    first = trained.pipeline(ws, dynamic=False)
    made = first.onnx()
    plain = tmp_path / "deploy.pt"
    torch.save(trained.model.state_dict(), plain)  # no classes, no wrapper dict: other bytes, same tensors
    opts = ModelOptions(trained.architecture, str(plain), resize=trained.resize, crop=trained.crop)
    again = Pipeline(opts, ws)
    assert again.source.weights_sha256 == first.source.weights_sha256
    assert again.why_unusable("onnx-fp32") is None
    assert again.onnx().entry["created"] == made.entry["created"]  # reused, not rebuilt
    changed = {k: v.clone() for k, v in trained.model.state_dict().items()}
    changed["fc.bias"][0] += 1e-3  # one value: another model
    torch.save(changed, plain)
    assert Pipeline(opts, ws).source.weights_sha256 != first.source.weights_sha256


def test_a_workspace_that_named_the_checkpoint_by_its_file_hash_is_kept(trained, tmp_path: Path) -> None:
    """Manifests written before checkpoints were known by their tensors name them by the file's sha256. Opened
    with that same file and no options, such a workspace keeps its preprocessing and its artifacts (they used
    to read as "made from other weights", and the recorded --crop was dropped for the weights' own)."""
    import json

    from resnet_deploy.files import sha256_file, sha256_json
    from resnet_deploy.pipeline import ModelOptions, Pipeline

    ws = tmp_path / "ws"
    made = trained.pipeline(ws, dynamic=False).onnx()
    manifest_path = ws / trained.architecture / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    file_hash = sha256_file(trained.checkpoint)  # what an older resnet-deploy recorded
    manifest["model"]["weights_sha256"] = file_hash
    for entry in manifest["artifacts"].values():
        entry["inputs"]["model"]["weights_sha256"] = file_hash
        entry["model_sha256"] = sha256_json(entry["inputs"]["model"])
    manifest_path.write_text(json.dumps(manifest))

    again = Pipeline(ModelOptions(trained.architecture, None), ws)  # weights and preprocessing as recorded
    assert (again.preprocess.resize, again.preprocess.crop) == (trained.resize, trained.crop)
    assert again.why_unusable("onnx-fp32") is None and not again.notes
    assert again.onnx().entry["created"] == made.entry["created"]  # reused, not rebuilt
    saved = json.loads(manifest_path.read_text())
    assert saved["model"]["weights_sha256"] == again.source.weights_sha256 != file_hash


def test_an_artifact_left_from_other_weights_fails_the_gate(trained, tmp_path: Path) -> None:
    """Re-trained, re-exported to FP32 only: the FP16 ONNX beside it is still the old model's. Gating the
    new weights must fail on it (it used to be skipped with a warning while the gate passed), naming why."""
    import torch

    from resnet_deploy.pipeline import ModelOptions, Pipeline
    from tests.tampering import perturbed

    ws = tmp_path / "ws"
    trained.pipeline(ws, dynamic=False).fp16()  # model A: FP32 and FP16 ONNX
    retrained = tmp_path / "retrained.pt"
    torch.save({"model_state_dict": perturbed(trained.model, 0.05).state_dict(), "classes": trained.classes}, retrained)
    opts = ModelOptions(trained.architecture, str(retrained), resize=trained.resize, crop=trained.crop)
    Pipeline(opts, ws).onnx()  # model B: FP32 only

    report = tmp_path / "parity.xml"
    md = tmp_path / "parity.md"
    res = _gate_cli(retrained, ws, trained.heldout_dir, report, "--markdown", str(md))
    assert res.exit_code == 1, res.output
    problems = _junit_problems(report)
    assert list(problems) == ["resnet18.fp16.onnx [onnxruntime-cpu, fp16, cpu, batch 1, 64x64]"], problems
    assert f"made from other weights than {retrained}" in problems[next(iter(problems))]
    assert "made from other weights" in md.read_text() and "FAILED" in md.read_text()
    # gated for the weights it was made from, the FP16 file passes and B's FP32 file is the one refused
    res = _gate_cli(trained.checkpoint, ws, trained.heldout_dir, report)
    assert res.exit_code == 1, res.output
    assert [name.split(" ")[0] for name in _junit_problems(report)] == ["resnet18.onnx"]


def test_an_artifact_file_replaced_after_export_fails_the_gate_saying_so(trained, tmp_path: Path) -> None:
    """The FP32 ONNX overwritten by the FP16 one: the manifest's record (weights, precision) no longer
    describes the file, whatever its numbers (FP16 is within 1.2e-4 of FP32 here, a hair from the bound)."""
    import shutil

    ws = tmp_path / "ws"
    fp16 = trained.pipeline(ws, dynamic=False).fp16()
    shutil.copyfile(fp16.path, fp16.path.with_name("resnet18.onnx"))
    report = tmp_path / "parity.xml"
    res = _gate_cli(trained.checkpoint, ws, trained.heldout_dir, report, "--explain")
    assert res.exit_code == 1, res.output
    problems = _junit_problems(report)
    assert [name.split(" ")[0] for name in problems] == ["resnet18.onnx"], problems
    msg = next(iter(problems.values()))
    assert msg.startswith("resnet18.onnx: the file was modified since it was built"), msg


def test_a_preprocessing_unlike_the_workspaces_record_is_said_in_the_gate_report(trained, tmp_path: Path) -> None:
    """Preprocessing is not inside a dynamic or static ONNX: the gate compares the artifact with PyTorch on the
    same tensors, so a --mean/--crop unlike what the workspace records (what its INT8 was calibrated with and what
    a deployment reading manifest.json feeds) passes on numbers. It must be said, in the Markdown report too, and
    not be called "as recorded here" (it used to be, for flag values the workspace never recorded)."""
    import torch

    from resnet_deploy.pipeline import ModelOptions, Pipeline
    from tests.tampering import perturbed

    ws = tmp_path / "ws"
    trained.pipeline(ws, dynamic=False).onnx()  # resize 72, crop 64, ImageNet mean/std
    report, md = tmp_path / "parity.xml", tmp_path / "parity.md"
    half = "0.5,0.5,0.5"
    res = _gate_cli(
        trained.checkpoint, ws, trained.heldout_dir, report, "--mean", half, "--std", half, "--markdown", md
    )
    assert res.exit_code == 0, res.output  # the artifact does match the model on these tensors
    text = " ".join(res.output.split())
    assert "as recorded here" not in text, text
    expected = "std 0.5,0.5,0.5 (from --resize/--crop/--mean/--std) differs from what"
    assert expected in text and "records: resize 72, crop 64, mean 0.485,0.456,0.406" in text, text
    assert expected in " ".join(md.read_text().split())

    # re-trained (other bytes), no flags: the new weights' own transforms (256/224) replace the record, said
    retrained = tmp_path / "retrained.pt"
    torch.save({"model_state_dict": perturbed(trained.model, 0.05).state_dict(), "classes": trained.classes}, retrained)
    pipe = Pipeline(ModelOptions(trained.architecture, str(retrained)), ws)
    assert (pipe.preprocess.resize, pipe.preprocess.crop) == (256, 224)  # behaviour kept: their own transforms
    (note,) = pipe.notes
    assert "resize 256, crop 224" in note and "(from these weights' own transforms)" in note, note
    assert "(for the weights its artifacts were made from, not these): resize 72, crop 64" in note, note
