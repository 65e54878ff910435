"""The workspace: `artifacts/<model>/` with every artifact and a manifest describing it.

An artifact entry stores a fingerprint of everything that determined it (weights hash, shapes,
opset, source ONNX hash, calibration set hash, ...). Same fingerprint and same file hash: reuse.
Anything different: rebuild. That is what keeps a stale artifact from being silently reused.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from resnet_deploy.artifact import Artifact
from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.files import atomic_write_text, sha256_file, sha256_json
from resnet_deploy.preprocess import Preprocess
from resnet_deploy.shapes import ShapeRange

MANIFEST = "manifest.json"
SCHEMA = 1


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys whose values differ, one level into nested dicts (`input.max`, `preprocess.crop`):
    what a stale artifact or calibration cache names as the reason it is rebuilt."""
    changed = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{k}.{sub}" for sub in sorted(set(a) | set(b)) if a.get(sub) != b.get(sub)]
        elif a != b:
            changed.append(k)
    return changed


def as_json(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples become lists, Paths strings): a deep copy that compares
    equal to what a manifest or cache on disk holds."""
    return json.loads(json.dumps(obj, default=str))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (no lock file left behind) where the OS has flock."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, as before
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def manifest_problem(data: Any) -> str | None:
    """What makes parsed manifest JSON unusable, or None. A hand-edited or foreign file would otherwise fail
    later, deep inside whatever reads the field first, as a traceback."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    if data.get("schema", SCHEMA) != SCHEMA:
        return f"schema {data.get('schema')!r}, where this resnet-deploy reads schema {SCHEMA}"
    artifacts = data.get("artifacts", {})
    if not isinstance(artifacts, dict):
        return "'artifacts' is not an object"

    def parsed(what: str, value: Any, make: Any) -> str | None:
        if value is None:
            return None
        try:
            make(value)
        except (DeployError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            return f"{what} is malformed ({exc})"
        return None

    model = data.get("model")
    if model is not None and not (
        isinstance(model, dict)
        and isinstance(model.get("architecture"), str)
        and (model.get("weights") is None or isinstance(model.get("weights"), str))
        and (model.get("num_classes") is None or (type(model["num_classes"]) is int and model["num_classes"] > 0))
    ):
        return "'model' is malformed (architecture, weights and num_classes)"
    for key, entry in artifacts.items():
        if not isinstance(entry, dict):
            return f"artifact '{key}' is not an object"
        for field in ("path", "format", "sha256"):
            if not isinstance(entry.get(field), str):
                return f"artifact '{key}' has no {field}"
        rel = PurePosixPath(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            return f"artifact '{key}' lies outside the workspace ({entry['path']})"
        problem = parsed(f"artifact '{key}' input", entry.get("input"), ShapeRange.from_dict)
        if problem:
            return problem
    return parsed("'input'", data.get("input"), ShapeRange.from_dict) or parsed(
        "'preprocess'", data.get("preprocess"), Preprocess.from_dict
    )


class Workspace:
    """One model's folder and manifest. Artifact keys look like `onnx-fp32`, `onnx-int8-tensorrt`."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root).absolute()  # manifest paths are relative to self.dir, so anchor it
        self.name = name
        self.dir = self.root / name
        self.manifest_path = self.dir / MANIFEST
        self.manifest: dict[str, Any] = self._load()
        self._as_loaded = as_json(self.artifacts)  # what save() may refresh from disk: entries this run left alone
        self._hashes: dict[Path, tuple[tuple[int, int, int], str]] = {}  # file -> ((inode, size, mtime), sha256)

    def _load(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"schema": SCHEMA, "model": None, "input": None, "preprocess": None, "artifacts": {}}
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(
                f"cannot read {self.manifest_path}: {exc}", "delete it; the next export rebuilds it"
            ) from None
        problem = manifest_problem(data)
        if problem:
            raise UsageError(f"cannot read {self.manifest_path}: {problem}", "delete it; the next export rebuilds it")
        data.setdefault("artifacts", {})
        return data

    def save(self) -> None:
        """Write the manifest. Another command on this workspace may have recorded artifacts since this one
        read it: under a lock, the entries this command did not change are taken from the file as it is now,
        so two commands at once each keep what they built (the last one's model and range are the top level)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir):
            if self.manifest_path.exists():
                on_disk = self._load()["artifacts"]
                for key, entry in on_disk.items():
                    if key not in self.artifacts or self.artifacts[key] == self._as_loaded.get(key):
                        self.artifacts[key] = entry
            atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=2, sort_keys=False) + "\n")
            self._as_loaded = as_json(self.artifacts)

    def path(self, filename: str) -> Path:
        return self.dir / filename

    @property
    def artifacts(self) -> dict[str, dict[str, Any]]:
        return self.manifest["artifacts"]

    def set_source(self, model: dict[str, Any], preprocess: dict[str, Any]) -> None:
        """Record the source model; a different model makes every artifact stale (kept until rebuilt)."""
        self.manifest["model"] = model
        self.manifest["preprocess"] = preprocess

    def rename_model(self, old: dict[str, Any], new: dict[str, Any]) -> int:
        """Record the model once known by fingerprint `old` under `new` (the same weights, identified another
        way): its artifacts stay fresh instead of being rebuilt or refused. Returns how many entries changed."""
        old, new = as_json(old), as_json(new)
        old_hash, new_hash = sha256_json(old), sha256_json(new)
        changed = 0
        for entry in self.artifacts.values():
            inputs = entry.get("inputs") or {}
            if entry.get("model_sha256") == old_hash:
                entry["model_sha256"] = new_hash
                changed += 1
            if inputs.get("model") == old:
                inputs["model"] = new
        model = self.manifest.get("model")
        if isinstance(model, dict) and model.get("weights_sha256") == old.get("weights_sha256"):
            model["weights_sha256"] = new.get("weights_sha256")
        return changed

    def why_stale(self, key: str, fingerprint: dict[str, Any]) -> str | None:
        """What makes `key` unusable: the inputs that changed (`input.max`, `model.weights`, ...), a file
        missing or edited; None if it is fresh. Said when rebuilding, so a rebuild is never a mystery."""
        entry = self.artifacts.get(key)
        if not entry:
            return "not built yet"
        old, new = entry.get("inputs") or {}, as_json(fingerprint)
        if old != new:
            return f"changed: {', '.join(changed_keys(old, new))}"
        state = self.file_state(key)
        if state:
            name = (self.dir / entry["path"]).name
            return f"{name} is missing" if state == "missing" else f"{name} was modified since it was built"
        return None

    def file_state(self, key: str) -> str | None:
        """'missing' or 'modified' (its sha256 is not the recorded one) when the file recorded under `key` is
        not the one that was built; None when it is. Rebuilds (`why_stale`) and compare (which checks every
        artifact it runs) both ask, so the hash is taken once per file version."""
        entry = self.artifacts[key]
        file = self.dir / entry["path"]
        if not file.exists():
            return "missing"
        return "modified" if self.sha256(file) != entry.get("sha256") else None

    def sha256(self, file: Path) -> str:
        """A file's hash, taken once per file version in this run: an artifact made from another (INT8 and FP16
        from the FP32 ONNX) records its source's hash, which the freshness check has just taken."""
        stat = file.stat()
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)  # a replaced file (atomic rename) is a new inode
        cached = self._hashes.get(file)
        if cached is None or cached[0] != stamp:
            cached = self._hashes[file] = (stamp, sha256_file(file))
        return cached[1]

    def record(
        self, key: str, file: Path, fingerprint: dict[str, Any], sha256: str | None = None, **info: Any
    ) -> dict[str, Any]:
        """`sha256`: the hash of the file this command wrote, taken before it was moved into place; hashing
        the path now could read another command's file, had one replaced it since."""
        file = Path(file)
        rel = file.relative_to(self.dir) if file.is_absolute() else file
        entry = {
            "path": rel.as_posix(),
            "sha256": sha256 or sha256_file(self.dir / rel),
            "created": now(),
            "inputs": as_json(fingerprint),
            **info,
        }
        self.artifacts[key] = entry
        self.save()
        return entry

    def artifact(self, key: str) -> Artifact:
        """The artifact recorded under `key` (`onnx-fp32`, `torchscript`, `onnx-int8-tensorrt`, ...), ready for
        `runtimes.create`: its file, format, precision, the input range it was exported for and its entry. How
        a service or a CI script opens what `resnet-export` wrote without loading the model."""
        entry = self.artifacts.get(key)
        if entry is None:
            self._require_manifest()
            raise UsageError(
                f"{self.manifest_path} records no artifact '{key}' (it has: {', '.join(self.artifacts) or 'none'})",
                "export it with resnet-export, or open one it has",
            )
        rng = ShapeRange.from_dict(entry["input"]) if entry.get("input") else None
        return Artifact(entry["format"], self.dir / entry["path"], entry.get("precision", "fp32"), rng, key, entry)

    def preprocess(self) -> Preprocess:
        """The preprocessing this workspace's artifacts were made and verified with (resize, crop, mean, std):
        images for any of them go through it (`preprocess.load_folder(folder, workspace.preprocess())`)."""
        self._require_manifest()
        recorded = self.manifest.get("preprocess")
        if not recorded:
            raise UsageError(f"{self.manifest_path} records no preprocessing", "export the model with resnet-export")
        return Preprocess.from_dict(recorded)

    def _require_manifest(self) -> None:
        """Reading a workspace that is not there is a wrong path, not an empty workspace."""
        if not self.manifest_path.is_file():
            raise UsageError(
                f"no workspace at {self.dir} (no {MANIFEST})",
                "pass the --workspace folder resnet-export wrote to and the model's name, e.g. artifacts, resnet50",
            )
