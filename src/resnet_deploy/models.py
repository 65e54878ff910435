"""Build or load a torchvision ResNet, from random init, torchvision weights or a user checkpoint.

Also makes old fixed-pool ResNets size-agnostic (`make_pool_adaptive`), since dynamic height/width
is the point of exporting them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torchvision
from rich.markup import escape

from resnet_deploy import console
from resnet_deploy.checkpoints import (
    check_finite,
    check_not_quantized,
    extract_state_dict,
    read_checkpoint,
    strip_attribute_prefix,
    strip_wrapper_prefixes,
    tensors_sha256,
)
from resnet_deploy.console import listing, plural
from resnet_deploy.errors import UsageError
from resnet_deploy.files import sha256_file
from resnet_deploy.preprocess import Preprocess

ARCHITECTURES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)
TORCHVISION_WEIGHTS = ("DEFAULT", "IMAGENET1K_V1", "IMAGENET1K_V2")
# what a torchvision weights enum name can be spelled as: no folder, no suffix, no `:` (a path never looks so)
_WEIGHTS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass
class ModelSource:
    """What the exported artifacts were made from, recorded in the manifest."""

    architecture: str
    weights: str = "none"
    weights_sha256: str | None = None
    num_classes: int = 1000
    seed: int = 0
    classes: list[str] | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "num_classes": self.num_classes,
            "seed": self.seed if self.weights == "none" else None,
            "classes": self.classes,
        }

    def fingerprint(self) -> dict[str, Any]:
        """What determines the model's numbers (class names do not, nor where a checkpoint file lies: the
        same file named `ft.pt`, `/abs/ft.pt` or from another folder is the same model, known by its sha256)."""
        d = self.to_dict()
        d.pop("classes")
        if self.weights_sha256:
            d.pop("weights")
        return d


def resolve_architecture(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    squashed = {a.replace("_", ""): a for a in ARCHITECTURES}
    if key in ARCHITECTURES:
        return key
    if key.replace("_", "") in squashed:  # ResNet-18, resnext50-32x4d
        return squashed[key.replace("_", "")]
    close = difflib.get_close_matches(key, ARCHITECTURES, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else "choose one of: " + ", ".join(ARCHITECTURES)
    raise UsageError(f"unknown architecture '{name}'", hint)


def load_model(
    architecture: str,
    weights: str = "none",
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    seed: int = 0,
) -> tuple[Any, ModelSource]:
    """Return (eval-mode model with adaptive pooling, its ModelSource).

    `weights` is `none` (seeded random init), a torchvision weights name, or a checkpoint file.
    """
    arch = resolve_architecture(architecture)
    if num_classes is not None and num_classes <= 0:
        raise UsageError(f"--num-classes must be positive, got {num_classes}")
    spec = weights.strip()

    if not spec:  # `--weights "$UNSET"`: Path("") is the current folder, which said "weights path . is a folder"
        raise UsageError("--weights is empty", "pass 'none', a torchvision weights name or a checkpoint file")
    is_file = Path(spec).exists()
    named = spec.lower() == "none" or (
        not is_file and (spec.upper() in TORCHVISION_WEIGHTS or _looks_like_weights_name(spec))
    )
    member = torchvision_weights(arch, spec) if named and spec.lower() != "none" else None
    if named and trust_checkpoint:  # said, since the user expected it to matter
        console.warn(f"--trust-checkpoint has no effect: the weights are {spec}, not a checkpoint file")
    if spec.lower() == "none":
        torch.manual_seed(seed)
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes or 1000)
        source = ModelSource(arch, "none", None, num_classes or 1000, seed)
    elif member is not None:
        model, source = _torchvision_pretrained(arch, member, num_classes)
    else:
        model, source = _from_checkpoint(arch, Path(spec), num_classes, trust_checkpoint)

    make_pool_adaptive(model)
    model.eval()
    return model, source


def _looks_like_weights_name(spec: str) -> bool:
    """Whether a --weights value that is no existing file was meant as a torchvision weights name, so that a
    typo (IMAGENET1K_V3) is answered with the valid names, not "file does not exist". Spelled like one (no
    folder or suffix) and upper case as torchvision writes them, or in any case close to a known name
    (imagenet1k_v3); a bare lower-case word (`best`, `model`) stays a missing file."""
    if not _WEIGHTS_NAME.fullmatch(spec):
        return False
    if spec == spec.upper() or "IMAGENET" in spec.upper():
        return True
    known = {"DEFAULT", *(m.name for a in ARCHITECTURES for m in torchvision.models.get_model_weights(a))}
    return bool(difflib.get_close_matches(spec.upper(), known, n=1, cutoff=0.75))


def torchvision_weights(arch: str, name: str) -> Any:
    """The torchvision weights enum member `name` (any case; DEFAULT too) of `arch`, or an error listing the
    names `arch` has: they differ per architecture (resnet18 has no IMAGENET1K_V2)."""
    enum = torchvision.models.get_model_weights(arch)
    key = name.strip().upper()
    if key == "DEFAULT":
        return enum.DEFAULT
    if key in enum.__members__:
        return enum[key]
    have = ", ".join(m.name for m in enum)
    raise UsageError(
        f"unknown torchvision weights name '{name}' for {arch}",
        f"pass one of {arch}'s: DEFAULT (= {enum.DEFAULT.name}), {have}; or none for random init, "
        "or the path of an existing checkpoint file",
    )


def _torchvision_pretrained(arch: str, w: Any, num_classes: int | None) -> tuple[Any, ModelSource]:
    if num_classes not in (None, 1000):
        raise UsageError(
            f"torchvision weights {w.name} have 1000 classes, not {num_classes}",
            "drop --num-classes, or fine-tune and pass your checkpoint with --weights FILE",
        )
    try:
        model = torchvision.models.get_model(arch, weights=w)
    except Exception as exc:
        raise UsageError(
            f"could not get torchvision weights {arch}.{w.name}: {type(exc).__name__}: {str(exc)[:120]}",
            f"this machine may be offline: download {w.url} into torch's hub cache "
            "(~/.cache/torch/hub/checkpoints) or pass --weights FILE",
        ) from None
    t = w.transforms()
    pre = Preprocess(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std))  # type: ignore[arg-type]
    source = ModelSource(arch, f"torchvision:{w.name}", None, 1000, 0, list(w.meta["categories"]), pre)
    return model, source


def _from_checkpoint(arch: str, path: Path, num_classes: int | None, trust: bool) -> tuple[Any, ModelSource]:
    obj = read_checkpoint(path, trust)
    if trust and isinstance(obj, torch.nn.Module):  # its own forward, which its tensors do not describe: the file
        return _trusted_module(arch, obj, path, sha256_file(path), num_classes)

    notes: list[str] = []
    state = strip_attribute_prefix(extract_state_dict(obj, notes), notes)
    for note in notes:
        console.info(escape(f"{path.name}: {note}"))
    check_not_quantized(state, path.name)
    fc_w = state.get("fc.weight")
    ckpt_classes = int(fc_w.shape[0]) if isinstance(fc_w, torch.Tensor) and fc_w.ndim == 2 else None
    if num_classes is None:
        num_classes = ckpt_classes or 1000
    elif ckpt_classes is not None and ckpt_classes != num_classes:
        raise UsageError(
            f"--num-classes {num_classes} but the checkpoint's fc.weight has {ckpt_classes} classes",
            f"drop --num-classes or pass {ckpt_classes}",
        )
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    for key, buffer in model.state_dict().items():
        # checkpoints from before PyTorch 0.4.1 lack it; it only matters to training with momentum=None
        if (
            key.endswith(".num_batches_tracked")
            and key not in state
            and key.replace("num_batches_tracked", "running_mean") in state
        ):
            state[key] = torch.zeros_like(buffer)
    check_state_dict_fits(model, state, arch, path.name)
    check_float_dtypes(model, state, path.name)
    model.load_state_dict(state, strict=True)
    check_finite(model.state_dict(), path.name)  # after the cast to float32, which can overflow float64 to Inf
    classes = None
    if isinstance(obj, Mapping):
        names = obj.get("classes") or obj.get("class_names")
        if isinstance(names, list | tuple) and len(names) == num_classes and all(isinstance(c, str) for c in names):
            classes = list(names)
    return model, ModelSource(arch, str(path), tensors_sha256(model.state_dict()), num_classes, 0, classes)


def _trusted_module(arch: str, model: Any, path: Path, sha: str, num_classes: int | None) -> tuple[Any, ModelSource]:
    """A pickled nn.Module (--trust-checkpoint) is used as it is (its own forward), once it is shown to be
    the architecture it is recorded as, in float32 like every other source."""
    while isinstance(model, torch.nn.DataParallel | torch.nn.parallel.DistributedDataParallel):
        model = model.module
    fc = getattr(model, "fc", None)
    n = int(fc.out_features) if isinstance(fc, torch.nn.Linear) else (num_classes or 1000)
    if num_classes is not None and num_classes != n:
        raise UsageError(
            f"--num-classes {num_classes} but the pickled model's fc has {n} classes", f"drop --num-classes or pass {n}"
        )
    with torch.device("meta"):
        reference = torchvision.models.get_model(arch, weights=None, num_classes=n)
    state = {strip_wrapper_prefixes(k): v for k, v in model.state_dict().items()}
    check_not_quantized(state, path.name)
    check_state_dict_fits(reference, state, arch, path.name)
    check_float_dtypes(reference, state, path.name)
    dtypes = {p.dtype for p in model.parameters()} | {b.dtype for b in model.buffers() if b.is_floating_point()}
    if dtypes - {torch.float32}:
        console.info(escape(f"{path.name}: a {'/'.join(sorted(str(d) for d in dtypes))} model, converted to float32"))
    model = model.float()
    check_finite(model.state_dict(), path.name)
    return model, ModelSource(arch, str(path), sha, n, 0)


def check_float_dtypes(model: Any, state: Mapping[str, Any], label: str) -> None:
    """fp16/bf16/fp64 tensors are cast to the float32 model as the README says; integer tensors where the
    model has float weights are not (load_state_dict would cast int8 codes to float32 and export garbage
    that verifies, being compared with itself). Integer buffers (BatchNorm's num_batches_tracked) stay."""
    floats = {k for k, v in model.state_dict().items() if v.is_floating_point()}
    wrong = [k for k, v in state.items() if k in floats and isinstance(v, torch.Tensor) and not v.is_floating_point()]
    if wrong:
        first = listing([f"{k} is {str(state[k].dtype).removeprefix('torch.')}" for k in wrong])
        raise UsageError(
            f"checkpoint {label} holds {plural(len(wrong), 'integer tensor')} where the model has float weights "
            f"({first})",
            "it is not a float model's state_dict, perhaps a quantized one's: dequantize it, or save the float "
            "model's state_dict",
        )


def check_state_dict_fits(model: Any, state: Mapping[str, Any], arch: str, label: str) -> None:
    """Name the keys and shapes that do not fit, instead of torch's wall of text."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [k for k in expected if k in got and expected[k] != got[k]]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if wrong:
        k = wrong[0]
        mismatches = plural(len(wrong), "shape mismatch", "shape mismatches")
        parts.append(
            f"{mismatches} ({'first: ' if len(wrong) > 1 else ''}{k} is {list(got[k])}, {arch} needs {list(expected[k])})"
        )
    if missing:
        parts.append(f"{plural(len(missing), 'missing key')} ({listing(missing)})")
    if unexpected:
        parts.append(f"{plural(len(unexpected), 'unexpected key')} ({listing(unexpected)})")
    guess = guess_architecture(got)
    if guess and guess != arch:
        hint = f"it is a {guess} checkpoint: use {guess} as the model"
    elif wrong == ["fc.weight"] and not (missing or unexpected) and expected["fc.weight"][1] != got["fc.weight"][1]:
        hint = (
            f"its fc takes {got['fc.weight'][1]} features, not {expected['fc.weight'][1]}: the head was sized "
            "for one input resolution and cannot be made dynamic"
        )
    else:
        hint = "check the checkpoint is of a torchvision " + arch + " (architectures: " + ", ".join(ARCHITECTURES) + ")"
    raise UsageError(f"checkpoint {label} does not fit {arch}: " + "; ".join(parts), hint)


def guess_architecture(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The architecture whose every parameter and buffer has these names and shapes (the classifier's
    class count aside), built on the meta device so no memory is spent; None if none fits."""
    ignore = {"fc.weight", "fc.bias"}
    for arch in ARCHITECTURES:
        with torch.device("meta"):
            model = torchvision.models.get_model(arch, weights=None)
        want = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in ignore}
        if want == {k: v for k, v in shapes.items() if k not in ignore}:
            return arch
    return None


def make_pool_adaptive(model: Any) -> bool:
    """Replace a fixed `nn.AvgPool2d` before `fc` with `AdaptiveAvgPool2d((1, 1))`; True if changed.

    At the size the old code was written for (7x7 map at 224x224) a 7x7 average is the global
    average, so outputs are identical there, and every other size now works. A head sized for a
    larger pooled map (fc.in_features = C*h*w) cannot be made size-agnostic and is refused.
    """
    pool = getattr(model, "avgpool", None)
    fc = getattr(model, "fc", None)
    if pool is None or not isinstance(fc, nn.Linear):
        raise UsageError(
            f"{type(model).__name__} has no `avgpool` + `fc` head",
            "pass a torchvision-style ResNet (its pooling in .avgpool, classifier in .fc)",
        )
    channels = _feature_channels(model)
    if channels is not None and fc.in_features != channels:
        raise UsageError(
            f"fc takes {fc.in_features} features but the network makes {channels} channels: the head was sized "
            f"for one input resolution ({fc.in_features // channels if fc.in_features % channels == 0 else '?'} "
            "pooled positions)",
            "such a model only runs at that size: export it without --dynamic, or retrain its fc on globally pooled features",
        )
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        size = pool.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if size != (1, 1):
            raise UsageError(
                f"avgpool outputs {size[0]}x{size[1]}, so fc was sized for that grid",
                "use AdaptiveAvgPool2d((1, 1)) with an fc over the channels to make the model dynamic",
            )
        return False
    if isinstance(pool, nn.AvgPool2d | nn.AdaptiveMaxPool2d | nn.MaxPool2d):
        if not isinstance(pool, nn.AvgPool2d):
            raise UsageError(f"unsupported pooling before fc: {pool}", "use average pooling")
        model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        return True
    raise UsageError(f"unsupported pooling before fc: {type(pool).__name__}", "use AdaptiveAvgPool2d((1, 1))")


def _feature_channels(model: Any) -> int | None:
    """Channels entering the head: the last BatchNorm of the last stage of a torchvision ResNet."""
    last = getattr(model, "layer4", None)
    if last is None:
        return None
    bns = [m for m in last.modules() if isinstance(m, nn.BatchNorm2d)]
    return int(bns[-1].num_features) if bns else None
