"""Errors the user can act on.

The CLIs print these as one line (problem, then the fix) and exit non-zero without a traceback;
anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


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
