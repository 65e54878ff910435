"""The one place images become tensors, for calibration, parity and verification alike.

Using the same code for calibration and for the parity images matters: INT8 ranges computed on
differently preprocessed data are wrong ranges, and that error would look like a quantization loss.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from PIL import Image

from resnet_deploy.console import plural
from resnet_deploy.errors import UsageError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: what torchvision's ImageFolder reads, and .jfif (JPEG by another name); most common first, for messages
_IMAGES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif")
_TENSORS = (".npy", ".npz")
IMAGE_SUFFIXES = frozenset(_IMAGES)
TENSOR_SUFFIXES = frozenset(_TENSORS)
INPUT_SUFFIXES_TEXT = "/".join(_IMAGES + _TENSORS)
#: images in formats this tool does not take (animations, formats PIL needs plugins for, camera raw):
#: named when a folder holds them, never passed over in silence
OTHER_IMAGE_SUFFIXES = frozenset({".gif", ".heic", ".heif", ".avif", ".jp2", ".ico", ".dng", ".cr2", ".nef"})
#: the most pixels an image may have after the resize, before the crop: the short side goes to --resize, so a
#: very wide or tall image (a 1x12000 strip) would become gigapixels (gigabytes) to yield one crop
MAX_RESIZED_PIXELS = 64_000_000


@dataclass(frozen=True)
class Preprocess:
    """torchvision's ImageNet eval transform: resize shorter side, center crop, normalize."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.resize <= 0 or self.crop <= 0:
            raise UsageError("--resize and --crop must be positive")
        if self.crop > self.resize:
            raise UsageError(f"--crop {self.crop} is larger than --resize {self.resize}", "crop at most the resize")
        finite = all(math.isfinite(v) for v in (*self.mean, *self.std))  # a NaN std passes `s <= 0`
        if len(self.mean) != 3 or len(self.std) != 3 or not finite or any(s <= 0 for s in self.std):
            raise UsageError("--mean and --std take three finite numbers, std positive", "e.g. --std 0.229,0.224,0.225")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(int(d["resize"]), int(d["crop"]), tuple(d["mean"]), tuple(d["std"]))  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for logs, in the CLI's terms: `resize 256, crop 224, mean 0.485,..., std 0.229,...`."""
        return (
            f"resize {self.resize}, crop {self.crop}, "
            f"mean {','.join(map(str, self.mean))}, std {','.join(map(str, self.std))}"
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def __call__(self, image) -> np.ndarray:
        """PIL image -> float32 CHW array. EXIF orientation is not applied, as torchvision's ImageFolder (the
        usual training loader) does not apply it: calibration should see what training saw."""
        w, h = image.size
        scale = self.resize / min(w, h)
        # torchvision's Resize(int) rounds the long side down (int()), bilinear with antialias.
        new_w, new_h = (self.resize, int(h * scale)) if w <= h else (int(w * scale), self.resize)
        if new_w * new_h > MAX_RESIZED_PIXELS:  # checked before any pixel is converted or resized
            raise ValueError(
                f"{w}x{h} image: resizing its short side to {self.resize} makes it {new_w}x{new_h} "
                f"(over {MAX_RESIZED_PIXELS // 1_000_000} megapixels) for one crop; crop it nearer to square"
            )
        image = _to_rgb(image).resize((new_w, new_h), Image.BILINEAR)
        left = round((new_w - self.crop) / 2.0)
        top = round((new_h - self.crop) / 2.0)
        image = image.crop((left, top, left + self.crop, top + self.crop))
        arr = np.asarray(image, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _to_rgb(image):
    """8-bit RGB. PIL's convert() clips 16-bit grayscale (a 16-bit PNG, mode I;16) at 255, making it almost
    all white: those are scaled to 8 bits instead. Float images have no agreed range and are refused."""
    if image.mode == "F":
        raise ValueError("32-bit float image: no agreed pixel range, convert it to 8-bit")
    if image.mode.startswith("I"):
        wide = np.asarray(image).astype(np.float64)
        if wide.min() < 0 or wide.max() > 65535:
            raise ValueError(f"{image.mode} image with values outside 0..65535")
        image = Image.fromarray(np.round(wide / 257.0).astype(np.uint8), "L")
    return image.convert("RGB")


def parse_floats3(
    text: str | None, default: tuple[float, float, float], name: str = "value"
) -> tuple[float, float, float]:
    """Parse `0.485,0.456,0.406` for --mean/--std (`name`, for the message). `nan` and `inf` parse as
    floats but would turn every input into NaN: refused with the rest, before the model loads."""
    if text is None:
        return default
    try:
        vals = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise UsageError(f"invalid {name} '{text}'", "give three comma-separated numbers") from None
    if len(vals) != 3:
        raise UsageError(f"invalid {name} '{text}': need 3 numbers, got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise UsageError(f"invalid {name} '{text}': every number must be finite", "e.g. 0.485,0.456,0.406")
    return vals  # type: ignore[return-value]


def find_inputs(folder: Path) -> list[Path]:
    """Every image or preprocessed tensor file below `folder`, sorted so choices are deterministic."""
    return scan_inputs(folder).inputs


class FolderScan(NamedTuple):
    """What a folder holds, before anything is decoded."""

    inputs: list[Path]
    #: not tried, and said: other image formats, hidden files
    ignored: list[Path]
    #: folders that could not be listed, and why: their files are unknown, so they are reported like
    #: unreadable files rather than passed over
    unreadable: list[tuple[Path, str]]


def _why(exc: BaseException) -> str:
    """The one-line reason a file or folder was skipped."""
    return first_line(exc, 160, named=True)


def scan_inputs(folder: Path) -> FolderScan:
    """(inputs, ignored, unreadable) below `folder`, sorted. Ignored, to be said rather than passed over in
    silence: images in formats this tool does not read (.gif, .heic, ...) and hidden image files (macOS's
    `._x.jpg`, anything under a `.folder`). A broken link named like an image is an input, and reported as
    unreadable; a folder that cannot be listed is `unreadable`, with the reason.

    Linked folders are followed, as torchvision's ImageFolder follows them (a class folder is often a link
    to where the images are). A folder reached a second time (a link loop, or two links to one folder) is
    not read again: each file is listed once (nothing is dropped), under the first path reaching it, in
    sorted order with real folders before links beside them."""
    folder = Path(folder)
    if not folder.exists():
        raise UsageError(f"image folder {folder} does not exist", "pass a folder of .jpg/.png images")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", "pass a folder of .jpg/.png images")
    suffixes = IMAGE_SUFFIXES | TENSOR_SUFFIXES | OTHER_IMAGE_SUFFIXES
    inputs: list[Path] = []
    ignored: list[Path] = []
    unreadable: list[tuple[Path, str]] = []

    def not_listed(exc: OSError) -> None:
        unreadable.append((Path(exc.filename) if exc.filename is not None else folder, _why(exc)))

    visited = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, onerror=not_listed, followlinks=True):
        kept = []
        # among siblings, real folders claim their path before links, so `alias -> photos` lists photos/x.jpg
        # (a link higher up the tree than the folder it names is walked first, and names its files)
        for name in sorted(dirnames, key=lambda n: (os.path.islink(os.path.join(dirpath, n)), n)):
            real = os.path.realpath(os.path.join(dirpath, name))
            if real not in visited:  # a loop (`up -> ..`) or a second link to a folder already listed
                visited.add(real)
                kept.append(name)
        dirnames[:] = sorted(kept)  # os.walk descends only into these
        for name in filenames:
            suffix = os.path.splitext(name)[1].lower()
            if suffix not in suffixes:
                continue
            path = Path(dirpath, name)
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            (ignored if hidden or suffix in OTHER_IMAGE_SUFFIXES else inputs).append(path)

    def order(p: Path) -> str:
        return p.relative_to(folder).as_posix()

    return FolderScan(
        sorted(inputs, key=order), sorted(ignored, key=order), sorted(unreadable, key=lambda u: order(u[0]))
    )


def describe_ignored(ignored: Sequence[Path]) -> str | None:
    """`ignored 3 files: 2 .gif, 1 hidden (._a.jpg)`, or None when nothing was."""
    if not ignored:
        return None
    hidden = [p for p in ignored if p.suffix.lower() not in OTHER_IMAGE_SUFFIXES]
    kinds: dict[str, int] = {}
    for p in ignored:
        if p not in hidden:
            kinds[p.suffix.lower()] = kinds.get(p.suffix.lower(), 0) + 1
    parts = [f"{n} {suffix}" for suffix, n in sorted(kinds.items())]
    if kinds:
        parts[-1] += " (not read: convert to .png/.jpg)"
    if hidden:
        parts.append(f"{len(hidden)} hidden (first: {hidden[0].name})")
    return f"ignored {plural(len(ignored), 'file')}: " + ", ".join(parts)


def load_file(path: Path, pre: Preprocess) -> np.ndarray:
    """One file -> (N, 3, H, W) float32. Raises ValueError/OSError when unreadable or unusable.

    A .npy/.npz is taken as already preprocessed, so only float arrays are: integer pixels (0..255) would
    pass the shape check and calibrate INT8 on ranges ~100x those of the normalized inputs the model sees.
    A tensor file holding no images is refused like an unreadable one, not counted as a file that was used."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arrays = [np.load(path, allow_pickle=False)]
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            arrays = [npz[k] for k in npz.files]
        if not arrays:
            raise ValueError("holds no arrays, so no images")
    else:
        with warnings.catch_warnings():
            # a large photo the user chose (> 89 MP) is read without a raw warning line; one past Pillow's
            # hard limit (2x that) raises DecompressionBombError and is skipped with that reason
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return pre(img)[None]
    out = []
    for a in arrays:
        if a.dtype.kind != "f":
            raise ValueError(
                f"holds {a.dtype} values: .npy/.npz must hold preprocessed float tensors (resized, cropped, "
                "normalized); raw pixels belong in .jpg/.png files"
            )
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"tensor of shape {a.shape}, expected (3,H,W) or (N,3,H,W)")
        if not np.isfinite(a).all():
            raise ValueError("tensor holds NaN or inf")
        out.append(a)
    images = np.concatenate(out)
    if len(images) == 0:
        raise ValueError(f"holds no images (shape {images.shape})")
    return images


@dataclass
class ImageSet:
    """Preprocessed images plus what was skipped and why, so callers can report it."""

    tensors: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # not tried: other formats, hidden files
    available: int = 0  # input files in the folder, of which `limit` (an evenly spread subset) were read

    def __len__(self) -> int:
        return int(self.tensors.shape[0])

    def fingerprint(self) -> str:
        """Hash of the pixel data actually used: same files, same preprocessing -> same hash."""
        h = hashlib.sha256()
        h.update(str(self.tensors.shape).encode())
        h.update(np.ascontiguousarray(self.tensors).tobytes())
        return h.hexdigest()


T = TypeVar("T")


def select(paths: Sequence[T], limit: int | None) -> list[T]:
    """A deterministic, evenly spread subset (not the first N, which may all be one class folder): of files,
    or of indices into images already loaded."""
    paths = list(paths)
    if limit is None or limit >= len(paths):
        return paths
    if limit <= 0:
        raise UsageError("--calib-size must be positive")
    idx = np.linspace(0, len(paths) - 1, limit).round().astype(int)
    return [paths[i] for i in sorted(set(idx.tolist()))]


def resize_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Preprocessed NCHW tensors at another (H, W), bilinearly: how parity (and --explain) see the same
    images at each benchmark size without decoding them again."""
    if tuple(images.shape[2:]) == tuple(size):
        return images
    x = torch.nn.functional.interpolate(torch.from_numpy(images), size=size, mode="bilinear", align_corners=False)
    return x.numpy().astype(np.float32, copy=False)


def require_inputs(folder: Path, what: str = "image") -> list[Path]:
    """`find_inputs`, or the error that there is nothing to read: cheap (no decoding), so commands call it
    before anything slow, and a wrong folder is reported in a second rather than after an export."""
    return require_scan(folder, what).inputs


def require_scan(folder: Path, what: str = "image") -> FolderScan:
    """`scan_inputs`, or the error that the folder holds nothing to read."""
    scan = scan_inputs(folder)
    if not scan.inputs:
        if scan.unreadable and scan.unreadable[0][0] == Path(folder):
            raise UsageError(
                f"cannot read {what} folder {folder}: {scan.unreadable[0][1]}", "make it readable, or pass another"
            )
        many = "500 or more " if what.startswith("calibration") else ""
        said = [describe_ignored(scan.ignored)] if scan.ignored else []
        if scan.unreadable:
            first, why = scan.unreadable[0]
            said.append(f"{plural(len(scan.unreadable), 'folder')} not read, first: {first}: {why}")
        found = f" ({'; '.join(said)})" if said else ""
        fix = "make its folders readable, or " if scan.unreadable else ""
        raise UsageError(
            f"{what} folder {folder} holds no {INPUT_SUFFIXES_TEXT} files{found}",
            f"{fix}put {many}images from your deployment domain in it",
        )
    return scan


def load_folder(
    folder: Path, pre: Preprocess, limit: int | None = None, what: str = "image", scan: FolderScan | None = None
) -> ImageSet:
    """Load a folder recursively; unusable files and unreadable folders are skipped and listed (folders
    first), none usable is an error. `scan`: the folder already scanned (`require_scan`), not walked again."""
    folder = Path(folder)
    scan = scan if scan is not None else require_scan(folder, what)
    tensors: list[np.ndarray] = []
    used: list[Path] = []
    skipped: list[tuple[Path, str]] = [(path, f"folder not read: {why}") for path, why in scan.unreadable]
    for path in select(scan.inputs, limit):
        try:
            arr = load_file(path, pre)
        except Exception as exc:
            skipped.append((path, _why(exc)))
            continue
        if arr.shape[2:] != (pre.crop, pre.crop):
            if path.suffix.lower() in TENSOR_SUFFIXES:
                skipped.append((path, f"tensor is {arr.shape[2]}x{arr.shape[3]}, preprocessing crops {pre.crop}"))
                continue
        tensors.append(arr)
        used.append(path)
    if not tensors:
        raise _none_usable(folder, what, scan.unreadable, skipped[len(scan.unreadable) :], pre)
    tensors_ = np.concatenate(tensors).astype(np.float32, copy=False)
    return ImageSet(tensors_, used, skipped, scan.ignored, len(scan.inputs))


def _none_usable(
    folder: Path, what: str, folders: list[tuple[Path, str]], files: list[tuple[Path, str]], pre: Preprocess
) -> UsageError:
    """The error for a folder where every file tried was skipped: its hint fits what was skipped (an image to
    replace, a tensor file to save again, a folder to make readable)."""
    also = f" ({plural(len(folders), 'folder')} not read)" if folders else ""
    said = "the only file tried is" if len(files) == 1 else f"all {len(files)} files tried are"
    first = f"{': ' if len(files) == 1 else '; first: '}{files[0][0].name}: {files[0][1]}" if files else ""
    fixes = []
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p, _ in files):
        fixes.append("replace the images with readable .jpg/.png files")
    if any(p.suffix.lower() in TENSOR_SUFFIXES for p, _ in files):
        fixes.append(
            f"save .npy/.npz as float32 (N,3,{pre.crop},{pre.crop}) arrays preprocessed with {pre.describe()}, "
            "or use .jpg/.png images"
        )
    if folders:
        fixes.append("make the folders readable")
    return UsageError(f"no usable {what} in {folder}{also}: {said} unusable{first}", "; ".join(fixes))
