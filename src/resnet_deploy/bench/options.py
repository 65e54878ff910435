"""What `resnet-bench compare` is asked to do, as one object: runtimes, device, shapes, images, reports.

Made once per run (by the CLI or a caller), checked once by `preflight.validate`, which parses the device,
opens the --artifact files and scans the --calib folder; everything downstream reads those results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from resnet_deploy.artifact import Artifact
from resnet_deploy.devices import Device
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.parity import Tolerance
from resnet_deploy.preprocess import FolderScan
from resnet_deploy.results import DEFAULT_ITERS, DEFAULT_WARMUP
from resnet_deploy.tolerances import Tolerances

DEFAULT_MAX_IMAGES = 100


@dataclass
class CompareOptions:
    runtimes: list[str] | None = None  # registry names; None = every runtime available here
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N"; a Device once constructed
    batches: list[int] | None = None  # None = 1, or the batch a static workspace takes
    sizes: list[tuple[int, int]] | None = None  # (H, W); None = the crop size, or the size a static workspace takes
    warmup: int = DEFAULT_WARMUP
    iters: int = DEFAULT_ITERS
    threads: int | None = None  # None = the cores this process may use
    #: also run the torch runtimes as captured CUDA graphs (rows `...-graph`); CUDA only
    cuda_graphs: bool = False
    images: Path | None = None  # parity images; None = ./calibration
    max_images: int | None = DEFAULT_MAX_IMAGES  # evenly spread subset of a large folder
    artifacts: list[Path] = field(default_factory=list)  # extra files from anywhere
    build: bool = True  # build the default set when the workspace has no artifacts (and no --artifact)
    calib_dir: Path | None = None  # for the default INT8 build; None = ./calibration when it exists
    #: per precision and per artifact (`load_tolerances`); a {precision: Tolerance} mapping is taken too
    tolerances: Tolerances | Mapping[str, Tolerance] = field(default_factory=Tolerances)
    floor: bool = False  # measure this device's peak rates and report each row's distance from its floor
    #: when the default set is built and --batch/--size fall outside the pipeline's (default) range, export
    #: for exactly the shapes asked for instead; False when the user gave the range (--min/--max-shape)
    fit_range: bool = True
    progress: bool = True
    #: rewritten (atomically) after each artifact x runtime with the rows so far, `"partial": true`, so a run that
    #: is killed or times out leaves what it measured, and at the end with all of them; the CLI points it at --json
    partial_json: Path | None = None
    command: str | None = None  # the command line, for the reports (partial ones included)

    # -- what `preflight.validate` found, once --------------------------------------------------
    #: the --artifact files, opened (format from the suffix, precision from the file)
    artifact_files: list[Artifact] = field(default_factory=list, init=False, repr=False)
    #: the --calib folder, checked and scanned
    calibration: CalibrationRequest | None = field(default=None, init=False, repr=False)
    #: the --images folder, scanned
    images_scan: FolderScan | None = field(default=None, init=False, repr=False)
    checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.device = Device.parse(self.device)  # a spelling error is the caller's, said now
        if isinstance(self.tolerances, Mapping):  # one Tolerance per precision, as DEFAULT_TOLERANCES: no rules
            self.tolerances = Tolerances(dict(self.tolerances))
