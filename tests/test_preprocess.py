"""Images as users have them, through the one preprocessing every path shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_deploy.errors import UsageError
from resnet_deploy.preprocess import Preprocess, describe_ignored, load_file, load_folder

REPO = Path(__file__).resolve().parents[1]
PRE = Preprocess(72, 64)


def _gradient(h: int = 90, w: int = 120) -> np.ndarray:
    return np.linspace(0, 1, h * w).reshape(h, w)


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    g = _gradient()
    Image.fromarray(np.round(g * 65535).astype(np.uint16)).save(tmp_path / "scan16.png")
    Image.fromarray(np.round(g * 255).astype(np.uint8), "L").save(tmp_path / "scan8.png")
    assert Image.open(tmp_path / "scan16.png").mode.startswith("I")
    wide, narrow = load_file(tmp_path / "scan16.png", PRE), load_file(tmp_path / "scan8.png", PRE)
    np.testing.assert_allclose(wide, narrow, atol=1.01 / 255 / min(PRE.std))


def test_modes_other_than_rgb_become_rgb(tmp_path: Path) -> None:
    rgb = Image.fromarray((np.random.default_rng(0).random((50, 60, 3)) * 255).astype(np.uint8))
    for mode in ("L", "RGBA", "P", "CMYK", "LA", "1"):
        rgb.convert(mode).save(tmp_path / f"x_{mode}.{'jpg' if mode == 'CMYK' else 'png'}")
    images = load_folder(tmp_path, PRE)
    assert len(images) == 6 and not images.skipped


def test_files_not_read_are_named_not_passed_over(tmp_path: Path) -> None:
    picture = Image.fromarray((np.random.default_rng(1).random((50, 60, 3)) * 255).astype(np.uint8))
    picture.save(tmp_path / "a.jpg")
    picture.save(tmp_path / "b.gif")
    picture.save(tmp_path / "c.TIFF")  # read, as torchvision's ImageFolder reads it
    (tmp_path / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata beside a copied file
    (tmp_path / ".thumbnails").mkdir()
    picture.save(tmp_path / ".thumbnails" / "a.jpg")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")
    images = load_folder(tmp_path, PRE)
    assert images.paths == [tmp_path / "a.jpg", tmp_path / "c.TIFF"]
    assert [p.name for p, _ in images.skipped] == ["gone.png"]  # a broken link is unreadable, and listed
    assert sorted(p.name for p in images.ignored) == ["._a.jpg", "a.jpg", "b.gif"]
    said = describe_ignored(images.ignored)
    assert said == "ignored 3 files: 1 .gif (not read: convert to .png/.jpg), 2 hidden (first: ._a.jpg)"


def test_a_folder_of_only_unread_formats_says_what_it_holds(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "clip.GIF")
    with pytest.raises(UsageError, match=r"holds no \.jpg/.*\.npz files \(ignored 1 file: 1 \.gif \(not read"):
        load_folder(tmp_path, PRE)


@pytest.mark.parametrize(
    ("resize", "crop", "mean", "std"),
    [(256, 224, None, None), (255, 223, None, None), (72, 64, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))],
    ids=["imagenet", "odd-margins", "custom-stats"],
)
def test_preprocess_is_torchvisions_eval_transform_on_real_photos(resize, crop, mean, std) -> None:
    """Resize of the short side, center crop, RGB order, per-channel mean/std: what the model was trained
    with. A mistake here is invisible to parity (reference and artifact see the same wrong tensors) and
    to calibration (its ranges match the wrong tensors), and costs accuracy in deployment."""
    from torchvision import transforms as T

    kw = {"mean": mean, "std": std} if mean else {}
    pre = Preprocess(resize, crop, **kw)
    reference = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(pre.mean, pre.std)])
    for name in ("chelsea.jpg", "coins.jpg", "astronaut.jpg"):  # landscape, landscape, square
        with Image.open(REPO / "calibration" / name) as img:
            photo = img.convert("RGB")
        for im in (photo, photo.transpose(Image.Transpose.ROTATE_90)):  # and portrait
            ours = pre(im)
            want = reference(im).numpy()
            assert ours.shape == want.shape == (3, crop, crop), name
            np.testing.assert_allclose(ours, want, atol=1e-5, err_msg=name)


def test_a_large_photo_is_read_without_a_warning_and_a_bomb_is_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow warns above MAX_IMAGE_PIXELS (89 MP) and refuses above twice that; the limit is lowered here
    so the same paths run on small images."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    Image.fromarray(np.uint8(_gradient(110, 120) * 255), "L").save(tmp_path / "large.png")  # 1.3x the limit
    Image.fromarray(np.uint8(_gradient(150, 150) * 255), "L").save(tmp_path / "bomb.png")  # 2.25x
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_folder(tmp_path, PRE)
    assert [p.name for p in loaded.paths] == ["large.png"]
    [(path, reason)] = loaded.skipped
    assert path.name == "bomb.png" and reason.startswith("DecompressionBombError: Image size (22500 pixels)")


@pytest.mark.parametrize(
    ("mean", "std"), [((float("nan"), 0.0, 0.0), (1.0, 1.0, 1.0)), ((0.0, 0.0, 0.0), (1.0, float("inf"), 1.0))]
)
def test_a_mean_or_std_that_is_not_finite_is_refused(mean, std) -> None:
    """A NaN std passed the `std > 0` check (NaN compares false) and made every preprocessed pixel NaN."""
    with pytest.raises(UsageError, match="finite"):
        Preprocess(72, 64, mean, std)
