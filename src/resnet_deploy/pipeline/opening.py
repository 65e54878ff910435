"""Opening a model into its workspace: which weights (the ones asked for, else those the workspace recorded),
loading them, and which preprocessing the artifacts are made and checked with.

A follow-up command needs no repeating of what the first one was told: the workspace remembers the weights, the
range and the preprocessing, and a command that says otherwise is told where it differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from resnet_deploy import console
from resnet_deploy.console import plural
from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.files import sha256_file
from resnet_deploy.models import ModelSource, load_model
from resnet_deploy.pipeline.options import ModelOptions
from resnet_deploy.preprocess import Preprocess
from resnet_deploy.workspace import Workspace


@dataclass
class OpenedModel:
    """The model, what it is, and the preprocessing chosen for it, in its workspace."""

    ws: Workspace
    options: ModelOptions  # as resolved: the weights the workspace remembered, a checkpoint's absolute path
    model: Any
    source: ModelSource
    preprocess: Preprocess
    notes: list[str] = field(default_factory=list)  # what compare reports beside its rows


def open_model(options: ModelOptions, ws: Workspace, arch: str) -> OpenedModel:
    """Load the model `options` name (or the one `ws` recorded) and choose its preprocessing."""
    previous = ws.manifest.get("model") or {}
    options, remembered = _remembered(options, previous, arch)
    shown = f"{options.weights}{', as last used here' if remembered else ''}"
    with console.step(f"load {arch} (weights: {shown})"):
        try:
            model, source = load_model(
                arch, options.weights, options.num_classes, options.trust_checkpoint, options.seed
            )
        except DeployError as exc:
            if not remembered:
                raise
            raise type(exc)(
                f"{exc.message} [no --weights given: {options.weights} is what {ws.manifest_path} recorded last]",
                exc.hint,
            ) from None
    _adopt_tensors_hash(ws, source, Path(str(options.weights)), previous)
    notes: list[str] = []
    preprocess = _choose_preprocess(ws, source, options, previous, notes)
    return OpenedModel(ws, options, model, source, preprocess, notes)


def _remembered(options: ModelOptions, previous: dict[str, Any], arch: str) -> tuple[ModelOptions, bool]:
    """`options` with the weights filled in: `--weights` as given (a checkpoint's path made absolute: recorded as
    typed, a relative path would name another file, or none, from another folder), else what this workspace was
    made from, so a follow-up command needs no repeating of it, else random init."""
    remembered = options.weights is None and previous.get("architecture") == arch and "weights" in previous
    weights, num_classes = options.weights, options.num_classes
    if weights is None:
        weights = previous["weights"] if remembered else "none"
        if weights.startswith("torchvision:"):
            weights = weights.split(":", 1)[1]
        if remembered and weights == "none" and num_classes is None:
            num_classes = previous.get("num_classes")  # random init: only the flag says how many
    if weights.strip().lower() != "none" and Path(weights).is_file():
        weights = str(Path(weights).absolute())
    return dataclasses.replace(options, weights=weights, num_classes=num_classes), remembered


def _adopt_tensors_hash(ws: Workspace, source: ModelSource, weights: Path, previous: dict[str, Any]) -> None:
    """A manifest from before checkpoints were known by their tensors' sha256 records the file's: when that is
    this file's, it is this model, and the workspace is moved over to the tensors' hash (its artifacts and
    recorded preprocessing kept), not treated as other weights."""
    recorded, now = previous.get("weights_sha256"), source.weights_sha256
    if not recorded or not now or recorded == now or previous.get("architecture") != source.architecture:
        return
    if not weights.is_file() or sha256_file(weights) != recorded:
        return
    old = {**source.fingerprint(), "weights_sha256": recorded}
    kept = ws.rename_model(old, source.fingerprint())
    previous["weights_sha256"] = now
    if ws.writable:  # once: the next command finds the tensors' hash and does not hash the file again
        ws.save()
    console.info(
        f"[dim]{escape(str(ws.manifest_path))} named {weights.name} by its file's sha256 (an older "
        f"resnet-deploy): now by its tensors', {plural(kept, 'artifact')} kept[/]"
    )


def _choose_preprocess(
    ws: Workspace, source: ModelSource, options: ModelOptions, previous: dict[str, Any], notes: list[str]
) -> Preprocess:
    """Each of resize/crop/mean/std: the flag, else what this workspace recorded for these same weights
    (so `onnx --crop 64` then `torchscript` or `compare` keep 64, as they keep the weights and the range),
    else the weights' own transforms. Other weights start again from their own transforms."""
    recorded = ws.manifest.get("preprocess")
    # the same weights: the same file's bytes (by whatever path), else the same name (none, torchvision's)
    identity = source.to_dict()
    same = ("architecture", "weights_sha256") if identity["weights_sha256"] else ("architecture", "weights")
    same_weights = bool(recorded) and all(previous.get(k) == identity[k] for k in same)
    base = Preprocess.from_dict(recorded) if same_weights else source.preprocess
    resize = base.resize if options.resize is None else options.resize
    crop = base.crop if options.crop is None else options.crop
    if crop > resize and (options.resize is None or options.crop is None):  # one came from the record or weights
        _refuse_crop(resize, crop, options, "recorded in this workspace" if same_weights else "of these weights")
    chosen = Preprocess(resize, crop, options.mean or base.mean, options.std or base.std)
    record = Preprocess.from_dict(recorded) if recorded and ws.artifacts else None
    if record is not None and chosen != record:
        # said, not silent: the flags, or other weights' own transforms, differ from what the artifacts there
        # were exported, calibrated and verified with, and what whatever reads the manifest feeds them
        flags = any(v is not None for v in (options.resize, options.crop, options.mean, options.std))
        whose = "" if same_weights else " (for the weights its artifacts were made from, not these)"
        why = "--resize/--crop/--mean/--std" if flags else "these weights' own transforms"
        note = (
            f"preprocessing {chosen.describe()} (from {why}) differs from what {ws.manifest_path} records"
            f"{whose}: {record.describe()}"
        )
        console.warn(note + ("" if flags else "; pass --resize/--crop/--mean/--std to use the recorded one"))
        notes.append(note)
    elif same_weights and chosen != source.preprocess:
        console.info(f"[dim]preprocessing as recorded here: {chosen.describe()}[/]")
    return chosen


def _refuse_crop(resize: int, crop: int, options: ModelOptions, origin: str) -> None:
    if options.crop is not None:
        raise UsageError(
            f"--crop {crop} is larger than the resize {resize} {origin}",
            f"add --resize (at least {crop}; ImageNet's ratio gives --resize {crop * 256 // 224})",
        )
    raise UsageError(f"--resize {resize} is smaller than the crop {crop} {origin}", f"add --crop (at most {resize})")
