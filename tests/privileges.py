"""Running a command that file permissions apply to, for the tests of unreadable and unwritable paths.

The test machines run as root, where chmod 000 stops nothing: such a test runs its command in a child
without the capabilities that override file permissions, or skips when that cannot be done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


def run_unprivileged(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`python ARGS` (e.g. ["-c", code] or ["-m", module, ...]) with file permissions enforced."""
    cmd = [sys.executable, *args]
    if os.geteuid() == 0:
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
        if not shutil.which("setpriv") or subprocess.run([*drop, "true"], capture_output=True).returncode != 0:
            pytest.skip("running as root, where chmod does not stop reads or writes, and setpriv cannot drop that")
        cmd = drop + cmd
    env = {**os.environ, "COLUMNS": "300"}  # a one-line error stays on one line
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
