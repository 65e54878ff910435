"""A local tritonserver on loopback, from the nvidia-pytriton wheel: for the tests, and for trying a repository.

The wheel ships Triton's server binary with its Python backend (no other backend: ONNX, TensorRT and TorchScript
models answer "unable to find backend library" there; serve those with NVIDIA's container). Only its files are
used, never the `pytriton` package, whose numpy<2 pin must not reach the project's environment. So it is
installed on its own, without dependencies:

    pip install --no-deps --no-compile --target ~/.cache/resnet-deploy/tritonserver nvidia-pytriton==0.7.0

(`ensure_tritonserver` runs exactly that; `python -m resnet_deploy.serve.server --install ...` too). Starting it:
a temp backends folder of symlinks (python/ -> the wheel's backend library and utils, and the stub built for this
Python), and this environment's bin/ first on PATH, since the stub embeds the first `python3` there. Stopping it:
SIGTERM to its process group, 15 s, then SIGKILL; what an unclean exit leaves (the Python backend's shared-memory
regions, an empty /tmp/python_env_*) is removed when this start made it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.files import atomic_folder

WHEEL = "nvidia-pytriton==0.7.0"
#: the wheel's tag: manylinux_2_35 (glibc 2.35 or newer), x86_64
GLIBC = (2, 35)
DEFAULT_SERVER_DIR = Path(os.environ.get("RESNET_DEPLOY_TRITONSERVER", "~/.cache/resnet-deploy/tritonserver"))
SHM_PREFIX = "triton_python_backend_shm_region_"
ENV_TMP_PREFIX = "python_env_"  # the Python backend's mkdtemp("/tmp/python_env_XXXXXX")
DEFAULT_PORTS = (8000, 8001, 8002)  # HTTP, gRPC, metrics: Triton's own defaults


def install_command(target: Path) -> list[str]:
    """The pip command that installs the server binary into `target` (and nothing into this environment)."""
    return [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(target), WHEEL]


def why_cannot_run() -> str | None:
    """Why the wheel's binary cannot run on this machine, or None."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the nvidia-pytriton wheel is built for Linux x86_64, not {sys.platform} {platform.machine()}"
    libc, version = platform.libc_ver()
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if libc != "glibc" or parts < GLIBC:
        return f"its tritonserver needs glibc {GLIBC[0]}.{GLIBC[1]} or newer, and this machine has {libc} {version}"
    return None


def server_root(folder: Path) -> Path | None:
    """The installed server's root (bin/tritonserver, backends/, python_backend_stubs/) under `folder`, or None."""
    root = Path(folder).expanduser() / "pytriton" / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def ensure_tritonserver(folder: Path = DEFAULT_SERVER_DIR, install: bool = True) -> Path:
    """The server root under `folder`, installing the wheel there first when it is missing and `install` is set.
    The install goes into a temp folder moved into place, so an interrupted one leaves nothing half-installed."""
    folder = Path(folder).expanduser()
    reason = why_cannot_run()
    if reason:
        raise MissingDependencyError(
            f"cannot run tritonserver here: {reason}", "serve the repository with NVIDIA's container"
        )
    root = server_root(folder)
    if root is not None:
        return root
    command = install_command(folder)
    if not install:
        raise MissingDependencyError(f"no tritonserver under {folder}", f"install it: {' '.join(command[2:])}")
    with atomic_folder(folder) as tmp:
        done = subprocess.run([*command[:-2], str(tmp), WHEEL], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise MissingDependencyError(
                f"cannot install {WHEEL} into {folder}: {tail[0]}", f"install it by hand: {' '.join(command[2:])}"
            )
    root = server_root(folder)
    if root is None:
        raise MissingDependencyError(f"{WHEEL} installed into {folder} holds no pytriton/tritonserver/bin/tritonserver")
    return root


def python_version(prefix: Path) -> str:
    """'3.11' for the environment at `prefix` (the stub must be the one built for it)."""
    if Path(prefix).resolve() == Path(sys.prefix).resolve():
        return f"{sys.version_info[0]}.{sys.version_info[1]}"
    code = "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"
    done = subprocess.run([str(Path(prefix) / "bin" / "python3"), "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(f"no Python environment at {prefix}", "pass the prefix of a venv (its bin/python3)")
    return done.stdout.strip()


def backends_folder(root: Path, version: str, into: Path) -> Path:
    """backends/python/ of symlinks to the wheel's backend and the stub for Python `version`: nothing is written
    into the wheel, and the binaries' RPATH ($ORIGIN/...) resolves through symlinks (not through copies)."""
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = ", ".join(sorted(p.name for p in (root / "python_backend_stubs").iterdir()))
        raise MissingDependencyError(f"the tritonserver wheel has no Python-backend stub for Python {version}",
                                     f"run it from a Python it has: {have}")  # fmt: skip
    python = into / "backends" / "python"
    python.mkdir(parents=True)
    for source in (root / "backends" / "python").iterdir():
        (python / source.name).symlink_to(source)
    (python / "triton_python_backend_stub").symlink_to(stub)
    return into / "backends"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free TCP ports (bound to port 0 and read back); `start` retries if one is taken meanwhile."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _names(folder: str, prefix: str) -> set[str]:
    try:
        return {n for n in os.listdir(folder) if n.startswith(prefix)}
    except FileNotFoundError:
        return set()


class TritonServer:
    """`with TritonServer(repository) as server:` a tritonserver on loopback serving `repository`, ready (every
    model loaded) when the block starts, stopped with nothing left when it ends. Ports 0 are free ones."""

    def __init__(
        self,
        repository: Path,
        root: Path | None = None,
        *,
        host: str = "127.0.0.1",
        ports: tuple[int, int, int] = (0, 0, 0),
        python_env: Path | None = None,
        ready_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.root = root or ensure_tritonserver(install=False)
        self.host, self.requested_ports = host, ports
        self.http_port, self.grpc_port, self.metrics_port = ports
        self.python_env = Path(python_env or sys.prefix).absolute()
        self.ready_timeout, self.stop_timeout = ready_timeout, stop_timeout
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.tmp: Path | None = None
        self.log: IO[bytes] | None = None
        self.startup_s: float | None = None
        self.removed: list[str] = []  # what an unclean exit left and `stop` removed
        self._before: tuple[set[str], set[str]] = (set(), set())

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def log_path(self) -> Path | None:
        return self.tmp / "tritonserver.log" if self.tmp else None

    def command(self, backends: Path) -> list[str]:
        host = self.host
        return [
            str(self.root / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={self.root / 'caches'}",
            f"--http-address={host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=5",
            "--strict-readiness=true",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        """This environment's bin/ first on PATH: the Python-backend stub embeds the first `python3` there."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
        env["PATH"] = f"{self.python_env / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["VIRTUAL_ENV"] = str(self.python_env)
        return env

    def start(self, attempts: int = 3) -> TritonServer:
        """Start and wait until ready; a port taken between choosing it and binding it is retried with new ones."""
        self._before = (_names("/dev/shm", SHM_PREFIX), _names("/tmp", ENV_TMP_PREFIX))
        version = python_version(self.python_env)
        for attempt in range(1, attempts + 1):
            self.tmp = Path(tempfile.mkdtemp(prefix="resnet-deploy-tritonserver-"))
            try:
                self._launch(backends_folder(self.root, version, self.tmp))
                return self
            except BaseException as exc:
                taken = isinstance(exc, DeployError) and "already in use" in str(exc)
                self.stop()
                if not taken or attempt == attempts or 0 not in self.requested_ports:
                    raise
        raise AssertionError("unreachable")

    def _launch(self, backends: Path) -> None:
        chosen = iter(free_ports(3, self.host))
        self.http_port, self.grpc_port, self.metrics_port = (p or next(chosen) for p in self.requested_ports)
        assert self.log_path is not None
        self.log = open(self.log_path, "wb")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(backends), env=self.environment(), stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,  # its own process group: stop() ends stubs too
        )  # fmt: skip
        url = f"http://{self.http_url}/v2/health/ready"
        while True:
            if self.proc.poll() is not None:
                raise UsageError(
                    f"tritonserver exited with {self.proc.returncode} before it was ready: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        self.startup_s = time.monotonic() - started
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - started > self.ready_timeout:
                raise UsageError(f"tritonserver not ready after {self.ready_timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self) -> str:
        """The server's error lines (`E...`, `error: ...`), else its last line: what a one-line error can say."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path else []
        except OSError:
            return "(no log)"
        lines = [ln for ln in lines if ln.strip() and not ln.startswith(("+", "|"))]
        errors = [ln for ln in lines if ln.startswith(("E", "error:")) and "CudaDriverHelper" not in ln]
        return " / ".join((errors or lines[-1:] or ["(empty log)"])[:3])

    def stop(self) -> int | None:
        """SIGTERM the process group, wait, SIGKILL what is left; reap; remove what it left. Its exit status."""
        code = None
        if self.proc is not None:
            code = self._end(self.proc)
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None
        self._sweep()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        return code

    def _end(self, proc: subprocess.Popen) -> int:
        group = proc.pid  # start_new_session: the group is the server's pid
        if proc.poll() is None:
            try:
                os.killpg(group, signal.SIGTERM)
                proc.wait(self.stop_timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:  # a hung server, or a stub that outlived it
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait()

    def _sweep(self) -> None:
        """Shared-memory regions and empty /tmp/python_env_* that appeared while this server ran and are still
        there (only an unclean exit leaves them; another server's are not empty or were there before)."""
        shm, envs = self._before
        for name in sorted(_names("/dev/shm", SHM_PREFIX) - shm):
            try:
                os.unlink(f"/dev/shm/{name}")
                self.removed.append(f"/dev/shm/{name}")
            except OSError:
                pass
        for name in sorted(_names("/tmp", ENV_TMP_PREFIX) - envs):
            try:
                os.rmdir(f"/tmp/{name}")
                self.removed.append(f"/tmp/{name}")
            except OSError:
                pass

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m resnet_deploy.serve.server",
        description="Serve a model repository with the nvidia-pytriton wheel's tritonserver (Python backend), "
        "on loopback, until Ctrl-C.",
    )
    parser.add_argument("--model-repository", type=Path, required=True, help="what resnet-export triton wrote")
    parser.add_argument("--server-dir", type=Path, default=DEFAULT_SERVER_DIR, help="where the wheel is installed")
    parser.add_argument("--install", action="store_true", help=f"pip install {WHEEL} into --server-dir if missing")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    for name, port in zip(("http", "grpc", "metrics"), DEFAULT_PORTS, strict=True):
        parser.add_argument(f"--{name}-port", type=int, default=port, help=f"default {port}; 0 = a free port")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a `kill`, a CI timeout) stops the server as Ctrl-C does."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM, then stop clean; every fault is one line and an exit code."""
    args = _arguments(argv)
    server: TritonServer | None = None
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not args.model_repository.is_dir():
            raise UsageError(f"no model repository at {args.model_repository}", "write one with resnet-export triton")
        root = ensure_tritonserver(args.server_dir, install=args.install)
        ports = (args.http_port, args.grpc_port, args.metrics_port)
        server = TritonServer(args.model_repository, root, host=args.host, ports=ports).start()
        print(f"ready in {server.startup_s:.1f} s: HTTP {server.http_url}, gRPC {server.grpc_url} "
              f"(log: {server.log_path}); Ctrl-C stops it", flush=True)  # fmt: skip
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(0.2)
        print(f"error: tritonserver exited by itself: {server.log_tail()}", file=sys.stderr)
        return 1
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            print(f"stopped (exit status {server.stop()})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
