"""The one place images become tensors, for calibration, parity and verification alike.

Using the same code for calibration and for the parity images matters: INT8 ranges computed on
differently preprocessed data are wrong ranges, and that error would look like a quantization loss.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from resnet_deploy.errors import UsageError

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
        from PIL import Image

        image = _to_rgb(image)
        w, h = image.size
        scale = self.resize / min(w, h)
        # torchvision's Resize(int) rounds the long side down (int()), bilinear with antialias.
        new_w, new_h = (self.resize, int(h * scale)) if w <= h else (int(w * scale), self.resize)
        image = image.resize((new_w, new_h), Image.BILINEAR)
        left = round((new_w - self.crop) / 2.0)
        top = round((new_h - self.crop) / 2.0)
        image = image.crop((left, top, left + self.crop, top + self.crop))
        arr = np.asarray(image, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _to_rgb(image):
    """8-bit RGB. PIL's convert() clips 16-bit grayscale (a 16-bit PNG, mode I;16) at 255, making it almost
    all white: those are scaled to 8 bits instead. Float images have no agreed range and are refused."""
    from PIL import Image

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
    return scan_inputs(folder)[0]


def scan_inputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """(inputs, ignored) below `folder`, both sorted. Ignored, to be said rather than passed over in silence:
    images in formats this tool does not read (.gif, .heic, ...) and hidden image files (macOS's `._x.jpg`,
    anything under a `.folder`). A broken link named like an image is an input, and reported as unreadable."""
    folder = Path(folder)
    if not folder.exists():
        raise UsageError(f"image folder {folder} does not exist", "pass a folder of .jpg/.png images")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", "pass a folder of .jpg/.png images")
    suffixes = IMAGE_SUFFIXES | TENSOR_SUFFIXES
    inputs, ignored = [], []
    for path in folder.rglob("*"):
        suffix = path.suffix.lower()
        if suffix not in suffixes | OTHER_IMAGE_SUFFIXES or path.is_dir():
            continue
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        (ignored if hidden or suffix in OTHER_IMAGE_SUFFIXES else inputs).append(path)

    def order(p: Path) -> str:
        return p.relative_to(folder).as_posix()

    return sorted(inputs, key=order), sorted(ignored, key=order)


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
    return f"ignored {len(ignored)} file{'s' if len(ignored) != 1 else ''}: " + ", ".join(parts)


def load_file(path: Path, pre: Preprocess) -> np.ndarray:
    """One file -> (N, 3, H, W) float32. Raises ValueError/OSError when unreadable."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arrays = [np.load(path, allow_pickle=False)]
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            arrays = [npz[k] for k in npz.files]
    else:
        from PIL import Image

        with warnings.catch_warnings():
            # a large photo the user chose (> 89 MP) is read without a raw warning line; one past Pillow's
            # hard limit (2x that) raises DecompressionBombError and is skipped with that reason
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return pre(img)[None]
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"tensor of shape {a.shape}, expected (3,H,W) or (N,3,H,W)")
        if not np.isfinite(a).all():
            raise ValueError("tensor holds NaN or inf")
        out.append(a)
    return np.concatenate(out)


@dataclass
class ImageSet:
    """Preprocessed images plus what was skipped and why, so callers can report it."""

    tensors: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # not tried: other formats, hidden files

    def __len__(self) -> int:
        return int(self.tensors.shape[0])

    def fingerprint(self) -> str:
        """Hash of the pixel data actually used: same files, same preprocessing -> same hash."""
        h = hashlib.sha256()
        h.update(str(self.tensors.shape).encode())
        h.update(np.ascontiguousarray(self.tensors).tobytes())
        return h.hexdigest()


def select(paths: Sequence[Path], limit: int | None) -> list[Path]:
    """A deterministic, evenly spread subset (not the first N, which may all be one class folder)."""
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
    import torch

    x = torch.nn.functional.interpolate(torch.from_numpy(images), size=size, mode="bilinear", align_corners=False)
    return x.numpy().astype(np.float32, copy=False)


def require_inputs(folder: Path, what: str = "image") -> list[Path]:
    """`find_inputs`, or the error that there is nothing to read: cheap (no decoding), so commands call it
    before anything slow, and a wrong folder is reported in a second rather than after an export."""
    return _require_inputs(folder, what)[0]


def _require_inputs(folder: Path, what: str) -> tuple[list[Path], list[Path]]:
    candidates, ignored = scan_inputs(folder)
    if not candidates:
        many = "500 or more " if what.startswith("calibration") else ""
        found = f" ({describe_ignored(ignored)})" if ignored else ""
        raise UsageError(
            f"{what} folder {folder} holds no {INPUT_SUFFIXES_TEXT} files{found}",
            f"put {many}images from your deployment domain in it",
        )
    return candidates, ignored


def load_folder(folder: Path, pre: Preprocess, limit: int | None = None, what: str = "image") -> ImageSet:
    """Load a folder recursively; unreadable files are skipped and listed, none usable is an error."""
    folder = Path(folder)
    candidates, ignored = _require_inputs(folder, what)
    tensors: list[np.ndarray] = []
    used: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in select(candidates, limit):
        try:
            arr = load_file(path, pre)
        except Exception as exc:
            skipped.append((path, f"{type(exc).__name__}: {exc}".splitlines()[0][:160]))
            continue
        if arr.shape[2:] != (pre.crop, pre.crop):
            if path.suffix.lower() in TENSOR_SUFFIXES:
                skipped.append((path, f"tensor is {arr.shape[2]}x{arr.shape[3]}, preprocessing crops {pre.crop}"))
                continue
        tensors.append(arr)
        used.append(path)
    if not tensors:
        first = f"; first: {skipped[0][0].name}: {skipped[0][1]}" if skipped else ""
        raise UsageError(
            f"no usable {what} in {folder}: all {len(skipped)} files are unreadable{first}",
            "replace them with readable .jpg/.png images",
        )
    return ImageSet(np.concatenate(tensors).astype(np.float32, copy=False), used, skipped, ignored)
