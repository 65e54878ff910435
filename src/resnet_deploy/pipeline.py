"""A model plus its workspace: make each artifact once, verify it, record it, reuse it while fresh.

The CLIs and `resnet-bench compare` go through here, so "export", "find in the workspace" and
"rebuild when stale" behave the same whichever command asked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from resnet_deploy import console
from resnet_deploy.console import plural
from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.files import atomic_path, check_writable, sha256_file, sha256_json
from resnet_deploy.models import load_model
from resnet_deploy.preprocess import Preprocess
from resnet_deploy.runtimes.base import Artifact
from resnet_deploy.shapes import ShapeRange, make_range
from resnet_deploy.workspace import Workspace

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


def _torch_version() -> str:
    import torch

    return torch.__version__


#: the modules whose versions a record carries
_TOOLS = ("torch", "torchvision", "onnx", "onnxruntime", "tensorrt")


def tool_versions() -> dict[str, str]:
    """Distribution -> version for this package and each tool, as it imports here.

    Keyed by the distribution that provides the module Python imports, so onnxruntime-gpu installed
    beside (and shadowing) the CPU-only onnxruntime is recorded as onnxruntime-gpu with its version,
    not as both. Read once per process (scanning the installed distributions takes ~0.1 s, and every
    artifact record asks).
    """
    return dict(_tool_versions())


@functools.cache
def _tool_versions() -> dict[str, str]:
    import importlib.metadata as md
    import importlib.util

    out = {"resnet-deploy": _version_of("resnet-deploy")}
    owners = md.packages_distributions()
    for module in _TOOLS:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        package_dir = Path(spec.origin).resolve().parent
        for dist_name in dict.fromkeys(owners.get(module, [module])):
            try:
                dist = md.distribution(dist_name)
            except md.PackageNotFoundError:
                continue
            if Path(str(dist.locate_file(module))).resolve() == package_dir:
                out[dist.metadata["Name"]] = dist.version
                break
        else:  # an unusual install (source tree, zip): the distribution named like the module
            out[module] = _version_of(module)
    return {name: version for name, version in out.items() if version}


def _version_of(dist: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return ""


class Pipeline:
    def __init__(
        self,
        options: ModelOptions,
        workspace: Path = DEFAULT_WORKSPACE,
        name: str | None = None,
        shapes: ShapeRequest | ShapeRange | None = None,
        dynamic_default: bool = True,
        new_workspace_shapes: ShapeRequest | None = None,
    ) -> None:
        """`shapes=None`: the range this workspace recorded last, else `new_workspace_shapes`, else the default
        range (dynamic, or static at the crop size with `dynamic_default=False`)."""
        from resnet_deploy.models import resolve_architecture

        arch = resolve_architecture(options.architecture)
        check_writable(workspace)
        self.ws = Workspace(workspace, name or arch)
        previous = self.ws.manifest.get("model") or {}
        remembered = options.weights is None and previous.get("architecture") == arch and "weights" in previous
        if options.weights is None:
            # the model this workspace was made from, so a follow-up command needs no repeating of it
            options.weights = previous["weights"] if remembered else "none"
            if options.weights.startswith("torchvision:"):
                options.weights = options.weights.split(":", 1)[1]
            if remembered and options.weights == "none" and options.num_classes is None:
                options.num_classes = previous.get("num_classes")  # random init: only the flag says how many
        if options.weights.strip().lower() != "none" and Path(options.weights).is_file():
            # recorded as typed, a relative path would name another file (or none) from another folder
            options.weights = str(Path(options.weights).absolute())
        self.options = options
        self.notes: list[str] = []  # what compare reports beside its rows (a preprocessing unlike the record's)
        with console.step(f"load {arch} (weights: {options.weights}{', as last used here' if remembered else ''})"):
            try:
                self.model, self.source = load_model(
                    arch, options.weights, options.num_classes, options.trust_checkpoint, options.seed
                )
            except DeployError as exc:
                if not remembered:
                    raise
                raise type(exc)(
                    f"{exc.message} [no --weights given: {options.weights} is what {self.ws.manifest_path} "
                    "recorded last]",
                    exc.hint,
                ) from None
        self._adopt_tensors_hash(previous)
        self.preprocess = self._preprocess(options, previous)
        if isinstance(shapes, ShapeRequest):
            shape_range = shapes.resolve(self.preprocess.crop)
        elif isinstance(shapes, ShapeRange):
            shape_range = shapes
        else:
            recorded = self.ws.manifest.get("input")
            if recorded:
                shape_range = ShapeRange.from_dict(recorded)
            elif new_workspace_shapes is not None:
                shape_range = new_workspace_shapes.resolve(self.preprocess.crop)
            else:
                shape_range = make_range(dynamic_default, self.preprocess.crop)
        self._checked: dict[str, dict[str, Any]] = {}  # artifact key -> fingerprint verified this run
        self.ws.set_source(self.source.to_dict(), self.preprocess.to_dict())
        self.set_range(shape_range)

    def _adopt_tensors_hash(self, previous: dict[str, Any]) -> None:
        """A manifest from before checkpoints were known by their tensors' sha256 records the file's: when that is
        this file's, it is this model, and the workspace is moved over to the tensors' hash (its artifacts and
        recorded preprocessing kept), not treated as other weights."""
        recorded, now = previous.get("weights_sha256"), self.source.weights_sha256
        weights = Path(self.options.weights)
        if not recorded or not now or recorded == now or previous.get("architecture") != self.source.architecture:
            return
        if not weights.is_file() or sha256_file(weights) != recorded:
            return
        old = {**self.source.fingerprint(), "weights_sha256": recorded}
        kept = self.ws.rename_model(old, self.source.fingerprint())
        previous["weights_sha256"] = now
        self.ws.save()  # once: the next command finds the tensors' hash and does not hash the file again
        console.info(
            f"[dim]{escape(str(self.ws.manifest_path))} named {weights.name} by its file's sha256 (an older "
            f"resnet-deploy): now by its tensors', {plural(kept, 'artifact')} kept[/]"
        )

    def _preprocess(self, options: ModelOptions, previous: dict[str, Any]) -> Preprocess:
        """Each of resize/crop/mean/std: the flag, else what this workspace recorded for these same weights
        (so `onnx --crop 64` then `torchscript` or `compare` keep 64, as they keep the weights and the range),
        else the weights' own transforms. Other weights start again from their own transforms."""
        base = self.source.preprocess
        source = self.source.to_dict()
        recorded = self.ws.manifest.get("preprocess")
        # the same weights: the same file's bytes (by whatever path), else the same name (none, torchvision's)
        same = ("architecture", "weights_sha256") if source["weights_sha256"] else ("architecture", "weights")
        same_weights = bool(recorded) and all(previous.get(k) == source[k] for k in same)
        if same_weights:
            base = Preprocess.from_dict(recorded)
        resize = base.resize if options.resize is None else options.resize
        crop = base.crop if options.crop is None else options.crop
        if crop > resize and (options.resize is None or options.crop is None):  # one came from the record or weights
            origin = "recorded in this workspace" if base is not self.source.preprocess else "of these weights"
            if options.crop is not None:
                raise UsageError(
                    f"--crop {crop} is larger than the resize {resize} {origin}",
                    f"add --resize (at least {crop}; ImageNet's ratio gives --resize {crop * 256 // 224})",
                )
            raise UsageError(
                f"--resize {resize} is smaller than the crop {crop} {origin}", f"add --crop (at most {resize})"
            )
        chosen = Preprocess(resize, crop, options.mean or base.mean, options.std or base.std)
        record = Preprocess.from_dict(recorded) if recorded and self.ws.artifacts else None
        if record is not None and chosen != record:
            # said, not silent: the flags, or other weights' own transforms, differ from what the artifacts there
            # were exported, calibrated and verified with, and what whatever reads the manifest feeds them
            flags = any(v is not None for v in (options.resize, options.crop, options.mean, options.std))
            whose = "" if same_weights else " (for the weights its artifacts were made from, not these)"
            why = "--resize/--crop/--mean/--std" if flags else "these weights' own transforms"
            note = (
                f"preprocessing {chosen.describe()} (from {why}) differs from what {self.ws.manifest_path} records"
                f"{whose}: {record.describe()}"
            )
            console.warn(note + ("" if flags else "; pass --resize/--crop/--mean/--std to use the recorded one"))
            self.notes.append(note)
        elif same_weights and chosen != self.source.preprocess:
            console.info(f"[dim]preprocessing as recorded here: {chosen.describe()}[/]")
        return chosen

    def set_range(self, shape_range: ShapeRange) -> None:
        """The input range every artifact built from now on is exported and verified for.

        Saved with the next artifact recorded, not now: a command that fails must not change what the
        next one takes as the workspace's range.
        """
        self.shape_range = shape_range
        self.ws.manifest["input"] = {
            "name": "input",
            "layout": "NCHW",
            "dims": ["batch", 3, "height", "width"] if shape_range.dynamic else list(shape_range.opt),
            **shape_range.to_dict(),
        }

    # -- identity -------------------------------------------------------------------------------

    def model_hash(self) -> str:
        return sha256_json(self.source.fingerprint())

    def fingerprint(self, **extra: Any) -> dict[str, Any]:
        """What every artifact of this model depends on, plus the artifact's own inputs."""
        return {"model": self.source.fingerprint(), "input": self.shape_range.to_dict(), **extra}

    def reference(self) -> Artifact:
        """The PyTorch FP32 eager model: the reference every artifact is compared against."""
        return Artifact("pytorch", None, "fp32", None, "pytorch", model=self.model)

    # -- building -------------------------------------------------------------------------------

    def build(
        self,
        key: str,
        filename: str,
        fmt: str,
        precision: str,
        fingerprint: dict[str, Any],
        write: Callable[[Path], dict[str, Any] | None],
        check: Callable[[Artifact], dict[str, Any]],
        **info: Any,
    ) -> Artifact:
        """Reuse `key` if fresh; else write to a temp file, `check` it, and only then move it in place.

        A failed write or check leaves nothing behind (and the previous file, if any, untouched). What `write`
        returns (what calibration saw, the engine builder's settings) goes into the record, under `check`'s
        details and `info`, so the entry is written once, complete.
        """
        if self._checked.get(key) == fingerprint:
            return self.artifact(key)  # already built or checked by this run: skip re-hashing the file
        stale = self.ws.why_stale(key, fingerprint)
        if stale is None:
            self._checked[key] = fingerprint
            console.info(
                f"[dim]reusing {escape(str(self.ws.dir / self.ws.artifacts[key]['path']))} (inputs unchanged)[/]"
            )
            return self.artifact(key)
        if key in self.ws.artifacts:
            console.info(f"[dim]{key} is stale ({stale}): rebuilding[/]")
        target = self.ws.path(filename)
        with atomic_path(target) as tmp:
            with console.step(f"export {key} -> {target}"):
                written = write(tmp) or {}
            details = check(Artifact(fmt, tmp, precision, self.shape_range, key, name=target.name))
            sha256 = sha256_file(tmp)
        fields = {
            **written,
            "format": fmt,
            "precision": precision,
            "model_sha256": self.model_hash(),
            "input": self.shape_range.to_dict(),
            "tools": tool_versions(),
            **details,
            **info,
        }
        self.ws.record(key, target, fingerprint, sha256, **fields)
        self._checked[key] = fingerprint
        return self.artifact(key)

    def verify_against_model(self, runtime_name: str, max_rel_l2: float | None = None) -> Callable[[Artifact], dict]:
        """A `check` for `build`: run the artifact at min/opt/max/odd shapes against PyTorch."""
        from resnet_deploy.export.verify import FP32_REL_L2, check_artifact

        def check(artifact: Artifact) -> dict[str, Any]:
            shapes = self.shape_range.verification_shapes()
            return check_artifact(self.model, runtime_name, artifact, shapes, max_rel_l2 or FP32_REL_L2)

        return check

    def onnx(self, opset: int | None = None) -> Artifact:
        from resnet_deploy.export.onnx import DEFAULT_OPSET, export_onnx

        opset = opset or DEFAULT_OPSET
        return self.build(
            "onnx-fp32",
            f"{self.ws.name}.onnx",
            "onnx",
            "fp32",
            self.fingerprint(format="onnx", opset=opset),
            lambda p: export_onnx(self.model, p, self.shape_range, opset),
            self.verify_against_model("onnxruntime-cpu"),
            opset=opset,
        )

    def torchscript(self) -> Artifact:
        from resnet_deploy.export.torchscript import CUDNN_SETTINGS, export_torchscript

        return self.build(
            "torchscript",
            f"{self.ws.name}.ts",
            "torchscript",
            "fp32",
            self.fingerprint(format="torchscript", cudnn=CUDNN_SETTINGS),  # a trace keeps them: see the module
            lambda p: export_torchscript(self.model, p, self.shape_range),
            self.verify_against_model("torchscript"),
            cudnn=CUDNN_SETTINGS,
        )

    def program(self) -> Artifact:
        from resnet_deploy.export.program import export_program

        return self.build(
            "program",
            f"{self.ws.name}.pt2",
            "program",
            "fp32",
            self.fingerprint(format="program", torch=_torch_version()),  # a .pt2 is tied to its torch
            lambda p: export_program(self.model, p, self.shape_range),
            self.verify_against_model("torch-export"),
        )

    # -- reading the workspace ------------------------------------------------------------------

    def artifact(self, key: str) -> Artifact:
        """The artifact this workspace records under `key` (`Workspace.artifact`)."""
        return self.ws.artifact(key)

    def why_unusable(self, key: str) -> str | None:
        """Why the artifact recorded under `key` cannot stand for this model, or None when it can: made from
        other weights, its file missing, or its file changed since it was built (another model's export
        copied over it, the FP16 file renamed to the FP32 one): then the record (weights, precision, input
        range) no longer describes the file, and numbers that happen to pass would vouch for an unknown file."""
        entry = self.ws.artifacts[key]
        path = self.ws.dir / entry["path"]
        if entry.get("model_sha256") != self.model_hash():
            made = ((entry.get("inputs") or {}).get("model") or {}).get("weights_sha256")
            now = self.source.weights_sha256
            hashes = f" (sha256 {made[:12]}, not {now[:12]})" if made and now else ""
            return (
                f"made from other weights than {self.options.weights}{hashes}: re-export it from these weights, "
                f"or delete it from {self.ws.dir}"
            )
        state = self.ws.file_state(key)
        if state == "missing":
            return f"{path} is missing: re-export it"
        if state == "modified":
            return (
                f"the file was modified since it was built (its sha256 no longer matches "
                f"{self.ws.manifest_path.name}), so the record of what it was made from no longer describes it: "
                "re-export it"
            )
        return None

    def workspace_artifacts(self) -> list[tuple[Artifact, str | None]]:
        """Every artifact this workspace records, with why it cannot stand for this model (None: it can)."""
        return [(self.artifact(key), self.why_unusable(key)) for key in self.ws.artifacts]

    def current_artifacts(self) -> list[Artifact]:
        """Artifacts made from this very model whose files are intact (`why_unusable` says of the others)."""
        return [art for art, why in self.workspace_artifacts() if why is None]
