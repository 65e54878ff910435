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
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from resnet_deploy.artifact import Artifact
from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.files import (
    atomic_write_text,
    install,
    scratch,
    sha256_file,
    sha256_json,
    sweep_leftovers,
    why_not_writable,
)
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


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    kinds += ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a file")


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
        if not rel.parts:  # "" and "." name the folder itself
            return f"artifact '{key}' names no file (path {entry['path']!r})"
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
        self._sweep()

    @property
    def writable(self) -> bool:
        """Whether this command could write here (a restored CI cache may be read-only: reading needs no more)."""
        return why_not_writable(self.dir) is None

    def _sweep(self) -> None:
        """Remove what a killed command left here (its temp files, its scratch folder), under the lock: a live
        command's are told apart by their process id."""
        if self.dir.is_dir() and self.writable:
            with _locked(self.dir):
                sweep_leftovers(self.dir)

    def scratch(self) -> Any:
        """One folder in the workspace for this run's temporary files (`files.scratch`), gone on every exit."""
        return scratch(self.dir)

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
            self._write()

    def _write(self) -> None:
        """The manifest written, the caller holding the lock; a manifest that cannot be written is named."""
        if self.manifest_path.exists():
            on_disk = self._load()["artifacts"]
            for key, entry in on_disk.items():
                if key not in self.artifacts or self.artifacts[key] == self._as_loaded.get(key):
                    self.artifacts[key] = entry
        try:
            atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=2, sort_keys=False) + "\n")
        except OSError as exc:
            raise UsageError(
                f"cannot write {self.manifest_path}: {exc.strerror or exc}",
                "make it and its folder writable (chmod, chattr -i), free space there, or pass another --workspace",
            ) from None
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
            wording = {"missing": f"{name} is missing", "modified": f"{name} was modified since it was built"}
            return wording.get(state, state)
        return None

    def file_state(self, key: str) -> str | None:
        """'missing' or 'modified' (its sha256 is not the recorded one) when the file recorded under `key` is
        not the one that was built, or a sentence when the path is no file to read (a folder, a FIFO, a link
        out of the workspace); None when it is the file. Rebuilds (`why_stale`) and compare (which checks every
        artifact it runs) both ask, so the hash is taken once per file version. Nothing that is not a regular
        file is ever opened: reading a FIFO would wait forever."""
        entry = self.artifacts[key]
        file = self.dir / entry["path"]
        try:
            mode = file.stat().st_mode
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            return f"{file} cannot be read ({exc.strerror})"
        if not stat.S_ISREG(mode):
            return f"{file} is {_file_kind(mode)}, not a regular file"
        inside = self.dir.resolve()
        if not file.resolve().is_relative_to(inside):  # a link, or a path through a linked folder
            return f"{file} lies outside the workspace (it resolves to {file.resolve()})"
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
        self,
        key: str,
        file: Path,
        fingerprint: dict[str, Any],
        sha256: str | None = None,
        written: Path | None = None,
        **info: Any,
    ) -> dict[str, Any]:
        """Record `file` under `key`. `written`: the finished temp file to move to `file`, recorded first and
        moved second, under the lock, so an artifact is never left in place unrecorded (a manifest that cannot
        be written fails before the file moves; a move that fails takes its entry back). `sha256`: the hash of
        the file this command wrote, taken before it was moved; hashing the path now could read another
        command's file, had one replaced it since."""
        file = Path(file)
        rel = file.relative_to(self.dir) if file.is_absolute() else file
        entry = {
            "path": rel.as_posix(),
            "sha256": sha256 or sha256_file(written or self.dir / rel),
            "created": now(),
            "inputs": as_json(fingerprint),
            **info,
        }
        previous = self.artifacts.get(key)
        self.artifacts[key] = entry
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir):
            self._write()
            if written is not None:
                self._install(key, written, self.dir / rel, previous)
        return entry

    def _install(self, key: str, written: Path, target: Path, previous: dict[str, Any] | None) -> None:
        try:
            install(written, target)
        except OSError as exc:
            # the entry just written goes back to what it was (the file did not move): set on the manifest
            # as it is on disk, since `_write` would take this key's new entry from there again
            artifacts = self._load()["artifacts"]
            if previous is None:
                artifacts.pop(key, None)
            else:
                artifacts[key] = previous
            self.manifest["artifacts"] = artifacts
            self._as_loaded = {}
            self._write()
            raise UsageError(
                f"cannot write {target}: {exc.strerror or exc}",
                "make the workspace writable or pass another --workspace",
            ) from None

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
