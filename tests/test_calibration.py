"""Calibration data (real images only, bad files listed and skipped) and the calibration cache."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resnet_deploy.errors import UsageError
from resnet_deploy.int8.cache import CalibrationCache
from resnet_deploy.int8.calibrate import calibrate
from resnet_deploy.int8.dataset import CalibrationRequest, ImageReader, load_calibration_set
from resnet_deploy.int8.qdq_check import check_qdq
from resnet_deploy.int8.recipe import recipe
from resnet_deploy.preprocess import Preprocess
from tests.test_precision import Shared, shared


@pytest.fixture(scope="module")
def models(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Shared:
    return shared(trained, tmp_path_factory)


def _corrupt(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        bad = folder / f"bad_{i}.jpg"
        bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * (i + 1))
        out.append(bad)
    (folder / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    out.append(folder / "truncated.png")
    return out


def _copy_workspace(models: Shared, dest: Path) -> Any:
    """A private copy of the shared workspace (FP32 ONNX reused), so edits here leave it alone."""
    shutil.copytree(models.workspace, dest)
    return models.trained.pipeline(dest)


# -- the calibration folder ------------------------------------------------------------------------


def test_empty_folder_is_an_error_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UsageError) as err:
        load_calibration_set(tmp_path, Preprocess(72, 64))
    assert "holds no .jpg" in str(err.value)
    assert "500 or more" in str(err.value)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_calibration_set(tmp_path / "nope", Preprocess(72, 64))


def test_all_corrupt_folder_is_an_error_naming_a_file(tmp_path: Path) -> None:
    _corrupt(tmp_path, 3)
    with pytest.raises(UsageError) as err:
        load_calibration_set(tmp_path, Preprocess(72, 64))
    msg = str(err.value)
    assert "no usable calibration image" in msg and "all 4 files tried are unusable" in msg
    assert "bad_0.jpg" in msg


def test_one_good_image_among_corrupt_ones_is_used_and_the_rest_listed(
    trained: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _corrupt(tmp_path / "nested" / "deeper", 3)
    good = sorted(trained.calib_dir.glob("*.jpg"))[0]
    shutil.copy(good, tmp_path / "nested" / good.name)
    images = load_calibration_set(tmp_path, Preprocess(72, 64))
    assert len(images) == 1 and images.paths == [tmp_path / "nested" / good.name]
    assert sorted(p for p, _ in images.skipped) == sorted(bad)
    err = capsys.readouterr().err.replace("\n", "")  # rich wraps long lines
    assert "skipped" in err and "bad_0.jpg" in err and "only 1 calibration image:" in err
    assert "calibration set: 1 image from 1 file in" in err  # not "1 images from 1 files"


def test_calib_size_is_a_deterministic_spread(trained: Any, capsys: pytest.CaptureFixture[str]) -> None:
    a = load_calibration_set(trained.calib_dir, trained.preprocess, size=10)
    b = load_calibration_set(trained.calib_dir, trained.preprocess, size=10)
    assert len(a) == 10 and a.paths == b.paths and a.fingerprint() == b.fingerprint()
    total = len(list(trained.calib_dir.glob("*.jpg")))
    said = " ".join(capsys.readouterr().err.split())
    assert f"10 images from 10 of {total} files (--calib-size 10, spread evenly)" in said, said
    labels = {p.name.split("_")[0] for p in a.paths}
    assert len(labels) >= 8  # spread over the classes, not the first 10 files of one class
    with pytest.raises(UsageError, match="positive"):
        load_calibration_set(trained.calib_dir, trained.preprocess, size=0)


def test_preprocessed_npy_tensors_are_accepted(trained: Any, tmp_path: Path) -> None:
    images = load_calibration_set(trained.calib_dir, trained.preprocess, size=3)
    np.save(tmp_path / "batch.npy", images.tensors)
    np.save(tmp_path / "wrong_size.npy", np.zeros((1, 3, 32, 32), np.float32))
    loaded = load_calibration_set(tmp_path, trained.preprocess)
    assert len(loaded) == 3 and np.array_equal(loaded.tensors, images.tensors)
    assert [p.name for p, _ in loaded.skipped] == ["wrong_size.npy"]


def test_raw_pixel_and_empty_tensor_files_are_skipped_not_calibrated_on(
    trained: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """uint8 pixels in a .npy were taken as preprocessed tensors (INT8 ranges ~100x too wide); a .npy of 0
    images counted as a file used ("0 images from 1 files"), then failed in the reader on its shape."""
    images = load_calibration_set(trained.calib_dir, trained.preprocess, size=2)
    np.save(tmp_path / "batch.npy", images.tensors)
    crop = trained.preprocess.crop
    np.save(tmp_path / "empty.npy", np.zeros((0, 3, crop, crop), np.float32))
    pixels = np.clip(np.round(images.tensors * 58 + 120), 0, 255).astype(np.uint8)  # raw-pixel range, right shape
    np.save(tmp_path / "pixels.npy", pixels)
    loaded = load_calibration_set(tmp_path, trained.preprocess)
    assert len(loaded) == 2 and np.array_equal(loaded.tensors, images.tensors)
    reasons = {p.name: why for p, why in loaded.skipped}
    assert reasons == {
        "empty.npy": f"ValueError: holds no images (shape (0, 3, {crop}, {crop}))",
        "pixels.npy": "ValueError: holds uint8 values: .npy/.npz must hold preprocessed float tensors (resized, "
        "cropped, normalized); raw pixels belong in .jpg/.png files",
    }
    err = capsys.readouterr().err.replace("\n", "")
    assert "calibration set: 2 images from 1 file in" in err and "0 images" not in err
    (tmp_path / "batch.npy").unlink()
    with pytest.raises(UsageError) as raised:
        load_calibration_set(tmp_path, trained.preprocess)
    msg = str(raised.value)
    assert "no usable calibration image" in msg and "all 2 files tried are unusable" in msg
    assert msg.endswith(f"arrays preprocessed with {trained.preprocess.describe()}, or use .jpg/.png images)")


def test_reader_feeds_every_image_once_in_chunks(trained: Any) -> None:
    tensors = load_calibration_set(trained.calib_dir, trained.preprocess, size=11).tensors
    seen: list[int] = []
    reader = ImageReader(tensors, "input", batch_size=4, on_batch=seen.append)
    batches = []
    while reader.chunk(2):
        while (item := reader.get_next()) is not None:
            batches.append(item["input"])
    assert seen == [4, 4, 3]
    assert np.array_equal(np.concatenate(batches), tensors)


def _fp32_only_workspace(models: Shared, dest: Path) -> Any:
    """A new workspace holding only the shared FP32 ONNX (so no INT8 export is copied along)."""
    pipe = models.trained.pipeline(dest)
    pipe.ws.dir.mkdir(parents=True)  # a pipeline writes its folder with its first artifact; this one is copied in
    shutil.copy(models.pipe.ws.path("resnet18.onnx"), pipe.ws.path("resnet18.onnx"))
    pipe.ws.artifacts["onnx-fp32"] = dict(models.pipe.ws.artifacts["onnx-fp32"])
    pipe.ws.save()
    return pipe


def test_onnx_int8_with_corrupt_folder_writes_nothing(models: Shared, tmp_path: Path) -> None:
    _corrupt(tmp_path / "calib", 2)
    pipe = _fp32_only_workspace(models, tmp_path / "ws")
    with pytest.raises(UsageError, match="no usable calibration image"):
        pipe.int8(CalibrationRequest(tmp_path / "calib"))
    assert not list(pipe.ws.dir.glob("*int8*"))
    manifest = json.loads(pipe.ws.manifest_path.read_text())
    assert set(manifest["artifacts"]) == {"onnx-fp32"}


def test_onnx_int8_with_one_good_image_records_the_skipped(models: Shared, tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    _corrupt(calib, 2)
    shutil.copy(sorted(models.trained.calib_dir.glob("*.jpg"))[5], calib / "good.jpg")
    pipe = _fp32_only_workspace(models, tmp_path / "ws")
    art = pipe.int8(CalibrationRequest(calib))
    cal = pipe.ws.artifacts["onnx-int8-tensorrt"]["calibration"]
    assert cal["size"] == 1
    assert sorted(Path(p).name for p, _ in cal["skipped"]) == ["bad_0.jpg", "bad_1.jpg", "truncated.png"]
    assert check_qdq(art.path) == []


def test_int8_that_the_default_gate_would_fail_is_kept_with_a_warning(
    models: Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lossy is not broken: an INT8 file under the gate's default bounds (here made stricter than any INT8
    export meets) is kept, and the export says now that `compare --gate` will fail it, with the counts."""
    from resnet_deploy import parity

    strict = dataclasses.replace(parity.DEFAULT_TOLERANCES["int8"], min_cosine=0.999999)
    monkeypatch.setitem(parity.DEFAULT_TOLERANCES, "int8", strict)
    pipe = _fp32_only_workspace(models, tmp_path / "ws")
    art = pipe.int8(CalibrationRequest(models.trained.calib_dir))
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert art.path.is_file() and "onnx-int8-tensorrt" in pipe.ws.artifacts
    assert "onnx-int8-tensorrt misses the default INT8 parity bounds on its own calibration images (cosine" in out
    assert "(must be >= 0.999999)" in out and "compare --gate will fail it" in out
    count = pipe.ws.artifacts["onnx-int8-tensorrt"]["verification"]["count"]
    assert f"of {count})" in out  # top-1 agreement as counts, not only a percentage


# -- the calibration cache -------------------------------------------------------------------------


def test_cache_is_reused_when_nothing_changed(models: Shared, tmp_path: Path) -> None:
    models.int8("tensorrt")
    pipe = _copy_workspace(models, tmp_path / "ws")
    cache_file = pipe.ws.path("resnet18.int8-tensorrt.calib.json")
    assert cache_file.is_file()
    key = json.loads(cache_file.read_text())["key"]
    assert key["onnx_sha256"] == pipe.ws.artifacts["onnx-fp32"]["sha256"]
    assert key["method"] == "percentile" and key["target"] == "tensorrt" and key["preprocess"]["crop"] == 64
    # the INT8 file is gone: it is rebuilt, but from the cached ranges, not by calibrating again
    pipe.ws.path("resnet18.int8-tensorrt.onnx").unlink()
    before = cache_file.read_text()
    pipe.int8(CalibrationRequest(models.trained.calib_dir))
    cal = pipe.ws.artifacts["onnx-int8-tensorrt"]["calibration"]
    assert cal["cache_reused"] is True
    assert cache_file.read_text() == before
    assert check_qdq(pipe.ws.path("resnet18.int8-tensorrt.onnx")) == []


def test_cache_is_invalidated_by_a_different_calibration_set_or_method(models: Shared, tmp_path: Path) -> None:
    models.int8("tensorrt")
    pipe = _copy_workspace(models, tmp_path / "ws")
    cache_file = pipe.ws.path("resnet18.int8-tensorrt.calib.json")
    old_key = json.loads(cache_file.read_text())["key"]

    pipe.int8(CalibrationRequest(models.trained.calib_dir, size=12))  # another calibration set: recalibrate
    cal = pipe.ws.artifacts["onnx-int8-tensorrt"]["calibration"]
    new_key = json.loads(cache_file.read_text())["key"]
    assert cal["cache_reused"] is False and cal["size"] == 12
    assert new_key["calibration_sha256"] != old_key["calibration_sha256"]

    pipe.int8(CalibrationRequest(models.trained.calib_dir, method="minmax", size=12))  # another method: recalibrate
    assert pipe.ws.artifacts["onnx-int8-tensorrt"]["calibration"]["cache_reused"] is False
    assert json.loads(cache_file.read_text())["key"]["method"] == "minmax"


def test_cache_key_must_match_exactly(models: Shared, tmp_path: Path) -> None:
    """Unit level: any field of the key differing (model hash, preprocessing, ...) means no reuse."""
    images = load_calibration_set(models.trained.calib_dir, models.trained.preprocess, size=4)
    fp32 = models.pipe.ws.path("resnet18.onnx")
    ranges, seconds = calibrate(fp32, images, "minmax", recipe("tensorrt"), 64)
    assert seconds > 0 and len(list(ranges.keys())) > 20
    key = {"onnx_sha256": "a" * 64, "calibration_sha256": images.fingerprint(), "preprocess": {"crop": 64}}
    CalibrationCache(tmp_path / "c.json", key).save(ranges, {"seconds": seconds})
    hit = CalibrationCache(tmp_path / "c.json", key).load()
    assert hit is not None and set(hit.ranges.keys()) == set(ranges.keys())
    for changed in ({"onnx_sha256": "b" * 64}, {"preprocess": {"crop": 96}}, {"method": "entropy"}):
        assert CalibrationCache(tmp_path / "c.json", {**key, **changed}).load() is None
    (tmp_path / "c.json").write_text("{not json")
    assert CalibrationCache(tmp_path / "c.json", key).load() is None


@pytest.mark.parametrize("edit", ["key", "ranges"])
def test_an_edited_cache_is_recalibrated_not_trusted(models: Shared, tmp_path: Path, edit: str) -> None:
    """A key rewritten to claim other ranges, or ranges removed: recalibrate (no crash in quantize_static)."""
    models.int8("tensorrt")
    pipe = _copy_workspace(models, tmp_path / "ws")
    cache_file = pipe.ws.path("resnet18.int8-tensorrt.calib.json")
    data = json.loads(cache_file.read_text())
    if edit == "key":  # minmax ranges relabelled as percentile ones, then asked for with minmax's key
        pipe.int8(CalibrationRequest(models.trained.calib_dir, method="minmax"))
        data = json.loads(cache_file.read_text())
        data["key"]["method"] = "percentile"
    else:
        for name in list(data["ranges"]["data"])[:20]:
            del data["ranges"]["data"][name]
    cache_file.write_text(json.dumps(data))
    pipe.ws.path("resnet18.int8-tensorrt.onnx").unlink()
    pipe.int8(CalibrationRequest(models.trained.calib_dir))  # percentile, the default
    cal = pipe.ws.artifacts["onnx-int8-tensorrt"]["calibration"]
    assert cal["cache_reused"] is False and cal["method"] == "percentile"
    rewritten = json.loads(cache_file.read_text())
    assert rewritten["key"]["method"] == "percentile" and len(rewritten["ranges"]["data"]) > 20
    assert check_qdq(pipe.ws.path("resnet18.int8-tensorrt.onnx")) == []
