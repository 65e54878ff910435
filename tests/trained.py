"""A small ResNet that has learned something, so parity tests mean something.

Random weights predict nearly one class for every image, so "top-1 agreement" on them proves
little. This trains resnet18 for about a minute on the CPU to tell apart the 11 bundled sample
photos from random crops of them, then caches the checkpoint and the crop folders under
tests/.cache/ (keyed by VERSION), so later runs reuse them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_deploy.preprocess import Preprocess

VERSION = "v1"
REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "calibration"
CACHE = (
    Path(os.environ.get("RESNET_DEPLOY_TEST_CACHE", Path(__file__).resolve().parent / ".cache")) / f"trained-{VERSION}"
)
RESIZE, CROP, TILE = 72, 64, 80
TRAIN_CROPS, CALIB_CROPS, HELDOUT_CROPS = 1600, 48, 132
STEPS, BATCH = 160, 32


@dataclass
class TrainedModel:
    checkpoint: Path
    calib_dir: Path
    heldout_dir: Path
    classes: list[str]
    architecture: str = "resnet18"
    resize: int = RESIZE
    crop: int = CROP

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(self.resize, self.crop)

    @property
    def cli_args(self) -> list[str]:
        return [
            self.architecture,
            "--weights",
            str(self.checkpoint),
            "--resize",
            str(self.resize),
            "--crop",
            str(self.crop),
        ]

    @property
    def model(self):
        from resnet_deploy.models import load_model

        return load_model(self.architecture, str(self.checkpoint))[0]

    def pipeline(self, workspace: Path, dynamic: bool = True):
        """This model in `workspace`, dynamic 1x3x64x64 .. 4x3x128x128 by default (small, fast)."""
        from resnet_deploy.pipeline import ModelOptions, Pipeline, ShapeRequest

        opts = ModelOptions(self.architecture, str(self.checkpoint), resize=self.resize, crop=self.crop)
        shapes = ShapeRequest(dynamic, "1x3x64x64", None, "4x3x128x128") if dynamic else ShapeRequest(False)
        return Pipeline(opts, workspace, shapes=shapes)


def _photos() -> list[Path]:
    return sorted(PHOTOS.glob("*.jpg"))


def _random_crops(photo, n: int, rng: np.random.Generator) -> list:
    """Crops of 25-60% of the short side, random position and flip, resized to TILE px."""
    from PIL import Image

    w, h = photo.size
    out = []
    for _ in range(n):
        side = int(min(w, h) * rng.uniform(0.25, 0.6))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        tile = photo.crop((x, y, x + side, y + side)).resize((TILE, TILE), Image.BILINEAR)
        if rng.random() < 0.5:
            tile = tile.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(tile)
    return out


def _write_crops(folder: Path, photos: list, n_per: int, seed: int, fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for label, photo in enumerate(photos):
        for i, tile in enumerate(_random_crops(photo, n_per, rng)):
            tile.save(folder / f"{label:02d}_{i:03d}.{fmt}")


def build(cache: Path = CACHE) -> TrainedModel:
    """Train (about a minute on 2 cores) unless the cache has it."""
    meta = cache / "meta.json"
    ckpt = cache / "resnet18-photos.pt"
    if meta.exists() and ckpt.exists():
        classes = json.loads(meta.read_text())["classes"]
        return TrainedModel(ckpt, cache / "calib", cache / "heldout", classes)

    import torch
    import torchvision
    from PIL import Image

    from resnet_deploy.files import atomic_path

    paths = _photos()
    classes = [p.stem for p in paths]
    photos = [Image.open(p).convert("RGB") for p in paths]
    pre = Preprocess(RESIZE, CROP)
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for label, photo in enumerate(photos):
        for tile in _random_crops(photo, TRAIN_CROPS // len(photos), rng):
            xs.append(pre(tile))
            ys.append(label)
    x = torch.from_numpy(np.stack(xs))
    y = torch.tensor(ys)

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=STEPS)
    model.train()
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        idx = torch.randint(0, len(x), (BATCH,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    # Re-estimate BatchNorm statistics over the training set so eval mode matches what was learned.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for i in range(0, len(x), 128):
            model(x[i : i + 128])
    model.eval()

    cache.mkdir(parents=True, exist_ok=True)
    _write_crops(cache / "calib", photos, CALIB_CROPS // len(photos) + 1, seed=1, fmt="jpg")
    _write_crops(cache / "heldout", photos, HELDOUT_CROPS // len(photos), seed=2, fmt="png")
    with atomic_path(ckpt) as tmp:
        torch.save({"model_state_dict": model.state_dict(), "classes": classes}, tmp)
    meta.write_text(json.dumps({"classes": classes, "train_seconds": round(time.perf_counter() - start, 1)}))
    return TrainedModel(ckpt, cache / "calib", cache / "heldout", classes)
