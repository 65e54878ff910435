"""Read a weights file into a state_dict, whatever saved it: `torch.save` (weights only unless trusted),
`.safetensors` (by the safetensors package, nothing unpickled), and the dicts training frameworks wrap a state_dict in
(Lightning, timm EMA, DeepSpeed, DataParallel / torch.compile prefixes), and the checks that need no
architecture: quantized or NaN/Inf tensors, named. Whether the rest fits one (keys, shapes, float dtypes)
is `models.py`'s business; it runs these checks too, where the state_dict is at hand.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from resnet_deploy.console import listing, plural
from resnet_deploy.errors import UsageError, first_line

CHECKPOINT_KEYS = ("model_state_dict", "state_dict", "model", "module")  # module: DeepSpeed
EMA_KEYS = ("state_dict_ema", "model_ema")  # timm's exponential-moving-average copies
STRIP_PREFIXES = ("module.", "_orig_mod.")


def read_checkpoint(path: Path, trust: bool) -> Any:

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
        raise UsageError(
            f"cannot read weights file {path}: {first_line(exc, 160)}", "check that it is a complete torch.save() file"
        ) from None


#: bytes per element of each safetensors dtype, to say what is wrong with a file the package refuses
_SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}
_SAFETENSORS_ITEMSIZE |= {"BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def read_safetensors(path: Path) -> dict[str, Any]:
    """A `.safetensors` file as a state_dict, read by the safetensors package (the audited parser: nothing is
    unpickled). A file it refuses is said in the words of what is wrong with it: cut off (a download that
    stopped), or a header at odds with itself (a writer's bug), which call for different fixes. The package is
    imported only when such a file is read: the lent GPU machine's image has torch but no safetensors, and runs
    everything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file as load_safetensors

    try:
        return load_safetensors(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable_safetensors(path, exc) from None


def _unreadable_safetensors(path: Path, exc: BaseException) -> UsageError:
    """Why the package refused `path`, read off the file's header (an 8-byte length, then JSON)."""

    def bad(why: str) -> UsageError:
        return UsageError(
            f"cannot read weights file {path}: not a complete .safetensors file ({why})", "check the file"
        )

    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if size < 0:
        return bad("shorter than its header")
    if size > len(data) - 8:
        return bad("truncated header")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        return bad("its header is not JSON")
    if not isinstance(header, dict):
        return bad("its header is not a table of tensors")
    header.pop("__metadata__", None)
    available = len(data) - 8 - size
    for name, info in header.items():
        try:
            itemsize = _SAFETENSORS_ITEMSIZE[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            return bad(f"tensor {name} has an unreadable entry or a dtype this reader does not know")
        nbytes = math.prod(shape) * itemsize
        if not 0 <= begin <= end or end - begin != nbytes:
            return UsageError(
                f"cannot read weights file {path}: its .safetensors header is inconsistent (tensor {name}: header "
                f"says shape {shape} of dtype {info['dtype']} = {nbytes} bytes, but its data offsets "
                f"[{begin}, {end}] span {end - begin} bytes)",
                "the file was written or edited wrongly: save the state_dict again, e.g. with safetensors.torch.save_file",
            )
        if end > available:
            return bad(f"tensor {name} ends at byte {end} of the data but the file holds {available}: truncated?")
    return bad(f"safetensors: {first_line(exc, 200)}")


def _looks_like_safetensors(path: Path) -> bool:
    """A header length that fits the file, then the JSON header's opening brace."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _looks_like_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive (or, in the legacy format, a pickle starting with 0x80)."""

    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def extract_state_dict(obj: Any, notes: list[str] | None = None) -> dict[str, Any]:
    """The model's tensors from what a training framework saved: a plain state_dict, a dict holding one
    ({'model_state_dict'|'state_dict'|'model'|'module': ...}, nested, timm's EMA copies), wrapper prefixes (DataParallel,
    torch.compile) removed. What was chosen among several is appended to `notes`, to be said."""
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
        ignored = f"; ignored {plural(len(others), 'other key')}: {listing(others)}" if others else ""
        notes.append(f"using the {len(kept)} tensors under '{prefix}'{ignored}")
    return kept


def strip_wrapper_prefixes(key: str) -> str:
    """`module._orig_mod.conv1.weight` and `_orig_mod.module.conv1.weight` alike -> `conv1.weight`."""
    while True:
        prefix = next((p for p in STRIP_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            return key
        key = key[len(prefix) :]


def check_not_quantized(state: Mapping[str, Any], label: str) -> None:
    """A quantized model's state_dict (torch.ao: qint8 weights, scales, packed params) is not a float
    ResNet's: said as such, rather than as 80 keys that do not fit."""
    quantized = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_quantized]
    if quantized:
        first = listing([f"{k} ({str(state[k].dtype).removeprefix('torch.')})" for k in quantized])
        raise UsageError(
            f"checkpoint {label} is of a quantized model: {plural(len(quantized), 'quantized tensor')} ({first})",
            "pass the float model's state_dict, saved before quantization; --int8 quantizes the export itself",
        )


def check_finite(state: Mapping[str, Any], label: str) -> None:
    """NaN or Inf weights make every output NaN, which verification would then report as the export's
    fault: refused here, naming the tensors, since the fix is another checkpoint, not another export."""
    bad: list[str] = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or bool(torch.isfinite(value).all()):
            continue
        nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
        counts = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)
        bad.append(f"{key} holds {counts}")
    if bad:
        more = f"; and {plural(len(bad) - 3, 'more tensor')}" if len(bad) > 3 else ""
        raise UsageError(
            f"checkpoint {label} has non-finite weights: {'; '.join(bad[:3])}{more}",
            "the checkpoint is broken, e.g. training diverged: use an earlier one",
        )


def tensors_sha256(state: Mapping[str, Any]) -> str:
    """The sha256 of a loaded model's tensors (names, dtypes, shapes, values): what its artifacts are made
    from. Not the file's: the same weights saved plainly, in a Lightning checkpoint or with other optimizer
    state are one model, and its exports stay valid across them."""

    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
