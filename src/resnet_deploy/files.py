"""Files written safely: hashes, atomic writes that leave nothing behind on failure, writability probes.

Every artifact, report, cache and manifest goes through here, so "a killed command leaves the previous file
or none, never half of one" holds everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resnet_deploy.errors import UsageError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def temp_beside(path: Path) -> Iterator[Path]:
    """Yield a new temp file beside `path` (same folder, so it can be renamed over `path`), removed when the block
    ends unless the block moved it away. Folders made for it are removed again when the block fails.

    Its name carries this process's id (`.<stem>.<pid>.<random>.tmp<suffix>`), so the leftovers of a killed
    process are told apart from a running one's and swept later (`sweep_leftovers`)."""
    path = Path(path)
    created = _make_parents(path.parent)
    try:
        # keep the real suffix last: some writers and readers go by it (torch.export warns unless ".pt2")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
        finally:
            tmp_path.unlink(missing_ok=True)
    except BaseException:
        _remove_empty(created)
        raise


def install(tmp: Path, path: Path) -> None:
    """Move a finished temp file over `path` in one rename, with normal permissions (mkstemp makes 0600)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds.

    An interrupted or failing writer therefore leaves either the old file or nothing, never half a file.
    """
    with temp_beside(Path(path)) as tmp:
        yield tmp
        install(tmp, Path(path))


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a new empty folder beside `path`; when the block succeeds it takes `path`'s place (a folder there
    before is moved aside first and removed after), when it fails it is removed. So a reader of `path` (a
    server polling a model repository) sees the old tree or the new one, never half of one, and a failed or
    interrupted writer leaves what was there before, or nothing. Folders made for it go again on failure."""
    path = Path(path)
    created = _make_parents(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        old = None
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:  # the previous tree goes back where it was
                os.replace(old / path.name, path)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


#: the folder, inside a workspace, that holds one run's temporary files and folders
SCRATCH = ".tmp"
_TEMP_FILE = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp(\.[^.]+)?$")
_RUN_DIR = re.compile(r"^run-(\d+)-")


@contextlib.contextmanager
def scratch(folder: Path) -> Iterator[Path]:
    """One folder for everything temporary a run makes in `folder` (`<folder>/.tmp/run-<pid>-<random>`), the
    temp files of the libraries it calls included (Python's `tempfile`, which ONNX Runtime's quantizer uses,
    points there meanwhile), removed on every exit path. Reentrant: a nested call shares the outer folder."""
    folder = Path(folder)
    current = tempfile.tempdir
    if current and Path(current).parent == folder / SCRATCH:
        yield Path(current)
        return
    created = _make_parents(folder / SCRATCH)
    run = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=folder / SCRATCH))
    tempfile.tempdir = str(run)
    try:
        yield run
    finally:
        tempfile.tempdir = current
        shutil.rmtree(run, ignore_errors=True)
        _remove_empty(created or [folder / SCRATCH])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


def sweep_leftovers(folder: Path) -> list[Path]:
    """Remove what killed processes left in `folder`: temp files beside its files and their run folders (the
    ones whose process id is no longer running). The caller holds the folder's lock, so no live writer in it
    is racing this. Returns what was removed."""
    folder = Path(folder)
    removed = []
    candidates = [(p, _TEMP_FILE.match(p.name)) for p in folder.glob(".*.tmp*") if p.is_file()]
    scratch_dir = folder / SCRATCH
    if scratch_dir.is_dir():
        candidates += [(p, _RUN_DIR.match(p.name)) for p in scratch_dir.iterdir() if p.is_dir()]
    for path, match in candidates:
        if match is None or _alive(int(match.group(1))):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if scratch_dir.is_dir():
        _remove_empty([scratch_dir])
    return removed


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return the ones made, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Undo `_make_parents` after a failure (a Ctrl-C before the first artifact, a failed export), so a
    command that made nothing leaves no empty `artifacts/<model>/` behind. A folder something else has
    written into since is kept."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _nearest_existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def why_not_writable(folder: Path) -> str | None:
    """Why files cannot be made in `folder` (created if missing), read off its nearest existing ancestor;
    None when they can. Cheap, so commands ask before minutes of work rather than after."""
    existing = _nearest_existing(Path(folder))
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def check_output_file(option: str, path: Path, example: str = "out") -> None:
    """A file an option names (a report, a timing cache, an engine) can be written there: checked before
    the minutes of work whose result it would hold, not after. `example`: a file name for the hint."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder", f"give a file name, e.g. {option} {path / example}")
    reason = why_not_writable(path.parent) or _probe_write(path.parent)
    if reason:
        raise UsageError(f"{option} {path}: {reason}", "pass a path in a writable folder")


def check_writable(folder: Path) -> None:
    """Fail early, with the fix, rather than after minutes of export."""
    folder = Path(folder)
    reason = why_not_writable(folder) or _probe_write(folder)
    if reason:
        raise UsageError(f"workspace {folder}: {reason}", "pass another, writable --workspace DIR")


def _probe_write(folder: Path) -> str | None:
    """Why a file cannot be made where `folder` is (or will be made), by making one: `os.access` says yes
    to root on a read-only mount and to paths like /proc. Nothing is created that stays."""
    try:
        fd, probe = tempfile.mkstemp(dir=_nearest_existing(folder), prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{_nearest_existing(folder)} is not writable ({exc.strerror})"
    return None
