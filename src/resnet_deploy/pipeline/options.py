"""What identifies the model and the shapes a pipeline is asked for, as typed: the options every command shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from resnet_deploy.errors import UsageError
from resnet_deploy.shapes import ShapeRange, make_range

DEFAULT_MODEL = "resnet50"
DEFAULT_WORKSPACE = Path("artifacts")


@dataclass
class ModelOptions:
    """What identifies the model. `weights=None` means: what the workspace used last, else random init."""

    architecture: str = DEFAULT_MODEL
    weights: str | None = None
    num_classes: int | None = None
    trust_checkpoint: bool = False
    seed: int = 0
    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        """Refuse a zero or negative --resize/--crop before the model loads: 0 used to read as "not given"
        and quietly became the default, and -5 was reported as smaller than the crop."""
        for flag, value in (("--resize", self.resize), ("--crop", self.crop)):
            if value is not None and value <= 0:
                raise UsageError(f"{flag} {value}: must be a positive number of pixels", "e.g. --resize 256 --crop 224")


@dataclass
class ShapeRequest:
    """Shape options as typed; resolved once the model's crop size is known (it sets the default opt)."""

    dynamic: bool = True
    min_shape: str | None = None
    opt_shape: str | None = None
    max_shape: str | None = None

    def resolve(self, crop: int) -> ShapeRange:
        return make_range(self.dynamic, crop, self.min_shape, self.opt_shape, self.max_shape)
