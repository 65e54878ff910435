"""Images as users have them, through the one preprocessing every path shares."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_deploy.errors import UsageError
from resnet_deploy.preprocess import Preprocess, describe_ignored, find_inputs, load_file, load_folder
from tests.privileges import run_unprivileged

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


def _photo(dest: Path, name: str = "chelsea.jpg") -> Path:
    """A copy of one of the bundled photos at `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "calibration" / name, dest)
    return dest


def test_linked_folders_are_followed_as_imagefolder_follows_them(tmp_path: Path) -> None:
    """Path.rglob (Python < 3.13) does not enter linked folders: a folder whose classes are links to where
    the images live said it held no images, and one real image beside a linked class folder was used alone."""
    _photo(tmp_path / "store" / "cats" / "chelsea.jpg")
    _photo(tmp_path / "store" / "cats" / "coffee.jpg", "coffee.jpg")
    (tmp_path / "only_links").mkdir()
    (tmp_path / "only_links" / "classA").symlink_to("../store/cats")
    _photo(tmp_path / "mixed" / "astronaut.jpg", "astronaut.jpg")
    (tmp_path / "mixed" / "classB").symlink_to(tmp_path / "store" / "cats")

    only = load_folder(tmp_path / "only_links", PRE)
    assert [p.relative_to(tmp_path).as_posix() for p in only.paths] == [
        "only_links/classA/chelsea.jpg",
        "only_links/classA/coffee.jpg",
    ]
    mixed = load_folder(tmp_path / "mixed", PRE)
    assert [p.relative_to(tmp_path / "mixed").as_posix() for p in mixed.paths] == [
        "astronaut.jpg",
        "classB/chelsea.jpg",
        "classB/coffee.jpg",
    ]
    assert len(mixed) == 3 and not mixed.skipped


def test_a_link_loop_neither_hangs_nor_lists_a_file_twice(tmp_path: Path) -> None:
    """os.walk(followlinks=True) alone would walk `back -> ..` until the path is too long, listing every
    image once per turn; a second link to a folder (`alias -> cls`) would list its images twice."""
    root = tmp_path / "photos"
    _photo(root / "a.jpg")
    _photo(root / "cls" / "b.jpg", "coins.jpg")
    (root / "cls" / "back").symlink_to("..")
    (root / "self").symlink_to(".")
    (root / "alias").symlink_to("cls")  # sorts before cls: the real folder still names the files
    (root / "cls" / "up").symlink_to(tmp_path)  # above the folder, and holding it: followed, but once
    _photo(tmp_path / "beside.jpg", "grass.jpg")
    found = find_inputs(root)
    assert [p.relative_to(root).as_posix() for p in found] == ["a.jpg", "cls/b.jpg", "cls/up/beside.jpg"]
    assert find_inputs(root) == found  # deterministic
    assert len(load_folder(root, PRE)) == 3


def _unprivileged(code: str, *args: str) -> str:
    done = run_unprivileged(["-c", code, *args], timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


_LOAD = """
import json, sys
from pathlib import Path
from resnet_deploy.errors import UsageError
from resnet_deploy.preprocess import Preprocess, load_folder
try:
    s = load_folder(Path(sys.argv[1]), Preprocess(72, 64))
    print(json.dumps({"paths": [p.name for p in s.paths], "skipped": [[p.name, why] for p, why in s.skipped]}))
except UsageError as e:
    print(json.dumps({"error": str(e)}))
"""


def test_an_unreadable_folder_is_listed_as_skipped_like_an_unreadable_file(tmp_path: Path) -> None:
    """A folder that cannot be listed was passed over in silence (its images simply missing), while an
    unreadable file in the same place was named with its reason."""
    _photo(tmp_path / "photos" / "a.jpg")
    _photo(tmp_path / "photos" / "locked" / "b.jpg", "coins.jpg")
    _photo(tmp_path / "photos" / "c.jpg", "grass.jpg")
    _photo(tmp_path / "empty_but_locked" / "locked" / "d.jpg")
    for folder in (tmp_path / "photos" / "locked", tmp_path / "empty_but_locked" / "locked"):
        folder.chmod(0)
    (tmp_path / "photos" / "c.jpg").chmod(0)
    tmp_path.chmod(0o755)  # so the child can reach what is not locked
    try:
        some = json.loads(_unprivileged(_LOAD, str(tmp_path / "photos")))
        none = json.loads(_unprivileged(_LOAD, str(tmp_path / "empty_but_locked")))
    finally:
        for folder in (tmp_path / "photos" / "locked", tmp_path / "empty_but_locked" / "locked"):
            folder.chmod(0o755)
    assert some["paths"] == ["a.jpg"]
    [folder, file] = some["skipped"]
    assert folder[0] == "locked" and folder[1].startswith("folder not read: PermissionError")
    assert file[0] == "c.jpg" and file[1].startswith("PermissionError")
    assert "holds no .jpg" in none["error"] and "1 folder not read, first: " in none["error"]
    assert "locked: PermissionError" in none["error"] and "make its folders readable" in none["error"]


def _raw_pixels(name: str = "chelsea.jpg", size: int = 64) -> np.ndarray:
    """A bundled photo as (3, size, size) uint8 pixels: what a .npy of raw pixels holds."""
    with Image.open(REPO / "calibration" / name) as img:
        return np.asarray(img.convert("RGB").resize((size, size))).transpose(2, 0, 1).copy()


def test_tensor_files_of_raw_pixels_are_refused_not_calibrated_on(tmp_path: Path) -> None:
    """uint8 pixels (0..255) passed the shape check and became "preprocessed" inputs ~100x too large."""
    raw = _raw_pixels()
    assert raw.dtype == np.uint8 and raw.max() > 200
    np.save(tmp_path / "pixels.npy", raw)
    np.save(tmp_path / "flags.npy", raw > 127)
    np.savez(tmp_path / "mixed.npz", good=PRE(Image.fromarray(raw.transpose(1, 2, 0))), raw=raw.astype(np.int64))
    np.save(
        tmp_path / "half.npy", load_file(_photo(tmp_path / "src" / "coins.jpg", "coins.jpg"), PRE).astype(np.float16)
    )
    (tmp_path / "src" / "coins.jpg").unlink()
    images = load_folder(tmp_path, PRE)
    assert [p.name for p in images.paths] == ["half.npy"]  # float16 is a float tensor: taken
    reasons = dict((p.name, why) for p, why in images.skipped)
    assert set(reasons) == {"flags.npy", "mixed.npz", "pixels.npy"}
    assert reasons["flags.npy"].startswith("ValueError: holds bool values")
    assert reasons["mixed.npz"].startswith("ValueError: holds int64 values")
    assert "must hold preprocessed float tensors" in reasons["pixels.npy"] and ".jpg/.png" in reasons["pixels.npy"]


def test_empty_tensor_files_hold_no_images_and_the_hint_fits_tensors(tmp_path: Path) -> None:
    """A .npy of 0 images was counted as a file used (then failed later on its shape), an empty .npz
    raised numpy's "need at least one array to concatenate"; the hint said to replace them with images."""
    np.save(tmp_path / "none.npy", np.zeros((0, 3, 64, 64), np.float32))
    np.savez(tmp_path / "nothing.npz")
    with pytest.raises(UsageError) as err:
        load_folder(tmp_path, PRE)
    msg = str(err.value)
    assert "all 2 files tried are unusable; first: none.npy: ValueError: holds no images (shape (0, 3, 64, 64))" in msg
    assert "concatenate" not in msg and "replace the images" not in msg
    assert "save .npy/.npz as float32 (N,3,64,64) arrays preprocessed with resize 72, crop 64" in msg
    with pytest.raises(ValueError, match=r"^holds no arrays"):
        load_file(tmp_path / "nothing.npz", PRE)
    _photo(tmp_path / "a.jpg")
    images = load_folder(tmp_path, PRE)
    assert len(images) == 1 and [p.name for p, _ in images.skipped] == ["none.npy", "nothing.npz"]


def test_one_unusable_file_is_said_in_the_singular(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    with pytest.raises(UsageError) as err:
        load_folder(tmp_path, PRE)
    msg = str(err.value)
    assert "the only file tried is unusable: broken.jpg: OSError: Truncated File Read" in msg and "all 1" not in msg
    assert msg.endswith("(replace the images with readable .jpg/.png files)")


def test_a_strip_too_wide_to_resize_is_skipped_with_the_reason(tmp_path: Path) -> None:
    """Resizing a 20000x1 strip's short side to 72 makes it 1440000x72 (100 MP, 300 MB as RGB; at 256,
    gigabytes) to crop 64x64 from it: skipped, with the reason, before any pixel is resized."""
    Image.fromarray(np.uint8(_gradient(1, 20000) * 255), "L").save(tmp_path / "strip.png")
    Image.fromarray(np.uint8(_gradient(20000, 1) * 255), "L").save(tmp_path / "tall.png")
    _photo(tmp_path / "photo.jpg")  # 451x300: as before
    Image.fromarray(np.uint8(_gradient(10, 8000) * 255), "L").save(tmp_path / "panorama.png")  # 57600x72: kept
    images = load_folder(tmp_path, PRE)
    assert [p.name for p in images.paths] == ["panorama.png", "photo.jpg"]
    reasons = dict((p.name, why) for p, why in images.skipped)
    assert reasons["strip.png"] == (
        "ValueError: 20000x1 image: resizing its short side to 72 makes it 1440000x72 (over 64 megapixels) "
        "for one crop; crop it nearer to square"
    )
    assert reasons["tall.png"].startswith("ValueError: 1x20000 image:")


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "IMAGENET1K_V2"])
def test_the_preprocessing_is_torchvisions_on_every_bundled_photo(weights: str) -> None:
    """The weights' own `transforms()` (ImageClassification: resize bilinear with antialias, center crop,
    normalize; 256/224 for V1, 232/224 for V2) and preprocess.py agree on every photo the package ships, to the
    last float32 bit: calibration, parity and deployment see what torchvision's eval pipeline sees."""
    import torchvision
    from PIL import Image

    from resnet_deploy.pipeline.default_set import PACKAGED_PHOTOS

    transform = torchvision.models.ResNet50_Weights[weights].transforms()
    pre = Preprocess(
        int(transform.resize_size[0]), int(transform.crop_size[0]), tuple(transform.mean), tuple(transform.std)
    )
    photos = sorted(PACKAGED_PHOTOS.glob("*.jpg"))
    assert len(photos) == 11
    for photo in photos:
        with Image.open(photo) as img:
            ours = pre(img)
            theirs = transform(img.convert("RGB")).numpy()  # torchvision takes RGB; ours converts grayscale itself
        assert ours.shape == theirs.shape == (3, 224, 224)
        assert float(np.abs(ours - theirs).max()) <= 1e-6, photo.name
