"""One artifact for the pipeline to build, as data: the stages' writers and verify's checks meet here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy.artifact import Artifact


@dataclass
class Step:
    """One artifact to build: where it goes, what it is, what it is made from, how to write and check it."""

    key: str
    filename: str
    format: str
    precision: str
    fingerprint: dict[str, Any]
    #: writes the file at the temp path it is given; returns what the record should say of how it was made
    write: Callable[[Path], dict[str, Any] | None]
    #: verifies the written file (an Artifact at the temp path); returns what the record should say of that
    check: Callable[[Artifact], dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
