"""Images as users have them, through the one preprocessing every path shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from resnet_deploy.preprocess import Preprocess, load_file, load_folder

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
