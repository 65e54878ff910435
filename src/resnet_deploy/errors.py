"""Errors the user can act on.

The CLIs print these as one line (problem, then the fix) and exit non-zero without a traceback;
anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import signal
from pathlib import Path


class DeployError(Exception):
    """A problem with the user's input or environment, with the fix in `hint`."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(DeployError):
    """Bad arguments, files or shapes: exit 2."""


class VerificationError(DeployError):
    """An artifact was made but does not reproduce the model: exit 1."""

    exit_code = 1


class MissingDependencyError(DeployError):
    """An optional package (TensorRT, pycuda, a CUDA device) is not available: exit 3."""

    exit_code = 3


def first_line(exc: BaseException, limit: int = 200, named: bool = False) -> str:
    """An exception as a clause of a one-line message: its first line (libraries put C++ frames and tips after
    it), at most `limit` characters. `named` leads with the type, where the text alone would not say what
    failed (a bare errno string, a KeyError's key); an exception with no text is its type."""
    lines = str(exc).splitlines()
    text = lines[0] if lines else ""
    if named or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:limit]


def environment_error(exc: BaseException) -> DeployError | None:
    """The machine, not the code, refused: memory for a shape too large, or a file's permissions. Said as
    one line like any bad input (torch words an allocation failure as a RuntimeError)."""
    text = first_line(exc, 1000)
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("you tried to allocate" in text or "out of memory" in text.lower())
    ):
        return UsageError(
            f"out of memory: {text[:200]}", "use a smaller batch or image size (--batch, --size, --*-shape)"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return UsageError(
            f"no space left on the device{where}", "free space there, or pass a --workspace (or report path) elsewhere"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        where = f": {exc.filename}" if exc.filename else ""
        return UsageError(f"read-only file system{where}", "pass a --workspace (or report path) on a writable one")
    if isinstance(exc, PermissionError):
        path = Path(exc.filename) if exc.filename else None
        try:  # a file being written: say the folder (probing may itself be refused, in a folder not to be entered)
            writing = path is not None and not path.exists() and path.parent.is_dir()
        except OSError:
            writing = False
        where = f"cannot write in {path.parent}" if writing and path is not None else str(path or "a file")
        return UsageError(
            f"permission denied: {where}", "make it readable and its folder writable, or pass another --workspace"
        )
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job's timeout, `kill`), raised like Ctrl-C so every temp file and folder is removed on the
    way out; the exit code is 143, as for a process the signal ended."""


#: the signals the CLI's handler saw: kept, because a C extension that checks for signals while it runs may
#: swallow the exception the handler raised (a Ctrl-C during INT8 calibration was lost that way in CI)
_SIGNALLED: list[int] = []


def interrupt(signum: int, frame: object = None) -> None:
    """The CLI's SIGINT/SIGTERM handler: remember the signal, then raise as Ctrl-C does (Terminated for SIGTERM)."""
    _SIGNALLED.append(signum)
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def check_interrupted() -> None:
    """Raise now if a signal came and its exception was lost: called before a step records what it wrote, so an
    interrupted step never leaves an artifact behind."""
    if _SIGNALLED:
        raise Terminated if _SIGNALLED[-1] == signal.SIGTERM else KeyboardInterrupt
