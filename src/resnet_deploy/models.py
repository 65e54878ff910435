"""Build or load a torchvision ResNet, from random init, torchvision weights or a user checkpoint.

Also makes old fixed-pool ResNets size-agnostic (`make_pool_adaptive`), since dynamic height/width
is the point of exporting them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from resnet_deploy import console
from resnet_deploy.errors import UsageError
from resnet_deploy.preprocess import Preprocess
from resnet_deploy.workspace import sha256_file

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
CHECKPOINT_KEYS = ("model_state_dict", "state_dict", "model", "module")  # module: DeepSpeed
EMA_KEYS = ("state_dict_ema", "model_ema")  # timm's exponential-moving-average copies
STRIP_PREFIXES = ("module.", "_orig_mod.")


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
        """What determines the model's numbers (class names do not)."""
        d = self.to_dict()
        d.pop("classes")
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
    import torch
    import torchvision

    arch = resolve_architecture(architecture)
    if num_classes is not None and num_classes <= 0:
        raise UsageError(f"--num-classes must be positive, got {num_classes}")
    spec = weights.strip()

    if spec.lower() == "none":
        torch.manual_seed(seed)
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes or 1000)
        source = ModelSource(arch, "none", None, num_classes or 1000, seed)
    elif spec.upper() in TORCHVISION_WEIGHTS and not Path(spec).exists():
        model, source = _torchvision_pretrained(arch, spec.upper(), num_classes)
    else:
        model, source = _from_checkpoint(arch, Path(spec), num_classes, trust_checkpoint)

    make_pool_adaptive(model)
    model.eval()
    return model, source


def _torchvision_pretrained(arch: str, name: str, num_classes: int | None) -> tuple[Any, ModelSource]:
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        w = enum.DEFAULT if name == "DEFAULT" else enum[name]
    except KeyError:
        have = ", ".join(m.name for m in enum)
        raise UsageError(f"{arch} has no torchvision weights '{name}'", f"available: {have}") from None
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


def _read_checkpoint(path: Path, trust: bool) -> Any:
    import pickle
    import re

    import torch

    if not path.exists():
        raise UsageError(
            f"weights file {path} does not exist", "pass an existing file, 'none', or a torchvision weights name"
        )
    if path.is_dir():
        raise UsageError(f"weights path {path} is a folder", "pass the checkpoint file inside it")
    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(path):
        return read_safetensors(path)
    if not _looks_like_torch_save(path):
        raise UsageError(
            f"cannot read weights file {path}: it is not a torch.save() file (empty, truncated or another format)",
            "check the file",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and "weights_only" in str(exc):
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = found.group(1) if found else "for example a whole nn.Module"
            raise UsageError(
                f"{path.name} holds pickled Python objects ({what}), not just tensors",
                "save model.state_dict() instead, or pass --trust-checkpoint if you trust where the file came from",
            ) from None
        raise UsageError(f"cannot read weights file {path}: it is not a PyTorch checkpoint", "check the file") from None
    except Exception as exc:
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UsageError(
            f"cannot read weights file {path}: {msg}", "check that it is a complete torch.save() file"
        ) from None


_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def read_safetensors(path: Path) -> dict[str, Any]:
    """A `.safetensors` file as a state_dict, read here (the format is an 8-byte header length, a JSON
    header, then raw little-endian tensors), so it loads without the safetensors package and without
    unpickling anything."""
    import json
    import math

    import torch

    def bad(why: str) -> UsageError:
        return UsageError(
            f"cannot read weights file {path}: not a complete .safetensors file ({why})", "check the file"
        )

    data = bytearray(path.read_bytes())
    if len(data) < 8:
        raise bad("shorter than its header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise bad("truncated header")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a table of tensors")
    header.pop("__metadata__", None)
    start_of_data, available = 8 + size, len(data) - 8 - size
    out: dict[str, Any] = {}
    for name, info in header.items():
        try:
            dtype = getattr(torch, _SAFETENSORS_DTYPES[info["dtype"]])
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name} has an unreadable entry or a dtype this reader does not know") from None
        count = math.prod(shape)
        if not 0 <= begin <= end <= available or end - begin != count * dtype.itemsize:
            raise bad(f"tensor {name} lies outside the file (truncated?)")
        flat = torch.frombuffer(data, dtype=dtype, count=count, offset=start_of_data + begin) if count else None
        out[name] = flat.reshape(shape).clone() if flat is not None else torch.empty(shape, dtype=dtype)
    return out


def _looks_like_safetensors(path: Path) -> bool:
    """A header length that fits the file, then the JSON header's opening brace."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _looks_like_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive (or, in the legacy format, a pickle starting with 0x80)."""
    import zipfile

    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def extract_state_dict(obj: Any, notes: list[str] | None = None) -> dict[str, Any]:
    """The model's tensors from what a training framework saved: a plain state_dict, a dict holding one
    ({'model_state_dict'|'state_dict'|'model': ...}, timm's EMA copies), wrapper prefixes (DataParallel,
    torch.compile) removed. What was chosen among several is appended to `notes`, to be said."""
    import torch

    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    where = "checkpoint"
    for _ in range(3):  # {'model': {'module': sd}}: a wrapper's state saved inside a trainer's dict
        if not isinstance(obj, Mapping):
            break
        found = [k for k in (*CHECKPOINT_KEYS, *EMA_KEYS) if isinstance(obj.get(k), Mapping | torch.nn.Module)]
        if not found:
            break
        inner = obj[found[0]]
        obj = inner.state_dict() if isinstance(inner, torch.nn.Module) else inner
        ema = [k for k in found if k in EMA_KEYS]
        if notes is not None and found[0] in EMA_KEYS:
            notes.append(f"using the EMA weights in '{found[0]}' (the checkpoint has no other weights)")
        elif notes is not None and ema:
            notes.append(
                f"using '{found[0]}'; the checkpoint also holds EMA weights in '{ema[0]}', not used "
                f"(to export those, torch.save({where}['{ema[0]}'], 'ema.pt') and pass that file)"
            )
        where += f"['{found[0]}']"
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(
            "the checkpoint holds no state_dict",
            "save model.state_dict(), or a dict with 'model_state_dict', 'state_dict' or 'state_dict_ema'",
        )
    return {strip_wrapper_prefixes(k): v for k, v in obj.items()}


def strip_attribute_prefix(state: dict[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """A LightningModule saves its network under the attribute it lives in (`model.conv1.weight`,
    `net.fc.bias`), beside whatever else it holds (a loss's weights). Keep the one ResNet found: the
    prefix under which both `conv1.weight` and `fc.weight` are. Several such networks is an error."""
    keys = set(state)
    prefixes = sorted(k[: -len("conv1.weight")] for k in keys if k.endswith("conv1.weight"))
    prefixes = [p for p in prefixes if (p == "" or p.endswith(".")) and f"{p}fc.weight" in keys]
    if not prefixes or "" in prefixes:
        return state
    if len(prefixes) > 1:
        quoted = ", ".join(f"'{p}'" for p in prefixes)
        raise UsageError(
            f"the checkpoint holds {len(prefixes)} networks (under {quoted}): which one to export is unclear",
            "save the one you want as a plain state_dict, its keys without the prefix",
        )
    prefix = prefixes[0]
    kept = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if notes is not None:
        others = [k for k in state if not k.startswith(prefix)]
        ignored = f"; ignored {len(others)} other key(s): {', '.join(others[:3])}" if others else ""
        notes.append(f"using the {len(kept)} tensors under '{prefix}'{ignored}")
    return kept


def strip_wrapper_prefixes(key: str) -> str:
    """`module._orig_mod.conv1.weight` and `_orig_mod.module.conv1.weight` alike -> `conv1.weight`."""
    while True:
        prefix = next((p for p in STRIP_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            return key
        key = key[len(prefix) :]


def _from_checkpoint(arch: str, path: Path, num_classes: int | None, trust: bool) -> tuple[Any, ModelSource]:
    import torch
    import torchvision

    obj = _read_checkpoint(path, trust)
    sha = sha256_file(path)
    if trust and isinstance(obj, torch.nn.Module):
        return _trusted_module(arch, obj, path, sha, num_classes)

    notes: list[str] = []
    state = strip_attribute_prefix(extract_state_dict(obj, notes), notes)
    for note in notes:
        console.info(escape(f"{path.name}: {note}"))
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
    model.load_state_dict(state, strict=True)
    classes = None
    if isinstance(obj, Mapping):
        names = obj.get("classes") or obj.get("class_names")
        if isinstance(names, list | tuple) and len(names) == num_classes and all(isinstance(c, str) for c in names):
            classes = list(names)
    return model, ModelSource(arch, str(path), sha, num_classes, 0, classes)


def _trusted_module(arch: str, model: Any, path: Path, sha: str, num_classes: int | None) -> tuple[Any, ModelSource]:
    """A pickled nn.Module (--trust-checkpoint) is used as it is (its own forward), once it is shown to be
    the architecture it is recorded as, in float32 like every other source."""
    import torch
    import torchvision

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
    check_state_dict_fits(reference, state, arch, path.name)
    dtypes = {p.dtype for p in model.parameters()} | {b.dtype for b in model.buffers() if b.is_floating_point()}
    if dtypes - {torch.float32}:
        console.info(escape(f"{path.name}: a {'/'.join(sorted(str(d) for d in dtypes))} model, converted to float32"))
    return model.float(), ModelSource(arch, str(path), sha, n, 0)


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
        parts.append(f"{len(wrong)} shape mismatches (first: {k} is {list(got[k])}, {arch} needs {list(expected[k])})")
    if missing:
        parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
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
    import torch
    import torchvision

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
    import torch.nn as nn

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
    import torch.nn as nn

    last = getattr(model, "layer4", None)
    if last is None:
        return None
    bns = [m for m in last.modules() if isinstance(m, nn.BatchNorm2d)]
    return int(bns[-1].num_features) if bns else None
