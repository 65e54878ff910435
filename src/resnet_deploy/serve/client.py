"""Talking to a Triton server with tritonclient's asyncio clients (HTTP: `tritonclient.http.aio`, gRPC:
`tritonclient.grpc.aio`): what a served model takes and is, its logits, and a load level of concurrent requests.

tritonclient is the optional `triton` extra: it is imported inside functions only, and asking for a protocol whose
client cannot be imported is an error, never a switch to the other one. Every way a server can refuse or fail (a
request of the wrong shape or dtype, a model that is not there or not ready, no server at the address, a host that
does not resolve, the wrong protocol for the port) becomes one `DeployError` line that names the server, the model
and the fix: `translate` is the one place that reads tritonclient's, aiohttp's and gRPC's exceptions.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError, VerificationError, first_line

PROTOCOLS = ("http", "grpc")
#: how long one request may take before the server counts as not answering
REQUEST_TIMEOUT_S = 60.0
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")
T = TypeVar("T")


def parse_url(text: str) -> str:
    """`HOST:PORT` as tritonclient takes it (no scheme, no path), checked before anything connects."""
    text = (text or "").strip()
    if "://" in text:
        raise UsageError(f"--url {text}: give HOST:PORT without a scheme", "e.g. --url 127.0.0.1:8000")
    match = _HOST_PORT.match(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise UsageError(f"--url '{text}' is not HOST:PORT", "e.g. --url 127.0.0.1:8000 (HTTP) or :8001 (gRPC)")
    return text


def client_module(protocol: str) -> Any:
    """`tritonclient.http.aio` or `tritonclient.grpc.aio`, or the error that says what to install."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown --protocol '{protocol}'", "choose http or grpc")
    try:
        if protocol == "grpc":
            import tritonclient.grpc.aio as module
        else:
            import tritonclient.http.aio as module
    except ImportError as exc:
        raise MissingDependencyError(
            f"--protocol {protocol} needs tritonclient's {protocol} client, which cannot be imported here ({exc})",
            f"pip install 'tritonclient[{protocol}]' (or the resnet-deploy triton extra: pip install -e '.[triton]')",
        ) from None
    return module


@dataclass(frozen=True)
class ServedModel:
    """What a served model takes and answers, from the server's metadata and config."""

    url: str
    protocol: str
    name: str
    input_name: str
    output_name: str
    input_shape: list[int]  # with the batch axis (-1) when max_batch > 0
    output_shape: list[int]
    max_batch: int
    backend: str  # its platform or backend
    device: str  # "cpu" or "cuda": where its instances run
    server_version: str = ""
    #: what resnet-export triton recorded in its config (precision, artifact, sha256, preprocessing)
    recorded: dict[str, str] = field(default_factory=dict)

    @property
    def precision(self) -> str | None:
        return self.recorded.get("resnet_deploy_precision")

    @property
    def preprocess(self) -> dict[str, Any] | None:
        text = self.recorded.get("resnet_deploy_preprocess")
        return json.loads(text) if text else None

    @property
    def where(self) -> str:
        return f"model '{self.name}' at {self.url} ({self.protocol})"


def translate(exc: BaseException, url: str, protocol: str, model: str | None = None) -> DeployError | None:
    """A server's refusal or failure as one line with the fix; None for an exception that is no such thing (a bug)."""
    from tritonclient.utils import InferenceServerException

    where = f"model '{model}' at {url}" if model else f"the server at {url}"
    other = "grpc" if protocol == "http" else "http"
    check = f"check --url (Triton listens for HTTP on 8000, gRPC on 8001) and --protocol (or try --protocol {other})"
    if isinstance(exc, InferenceServerException):
        status, message = str(exc.status() or ""), _message(exc.message() or str(exc))
        if status in ("400", "StatusCode.INVALID_ARGUMENT"):
            return UsageError(f"{where} refused the request: {message}",
                              "send what its config takes (--batch, --size within the range it was exported for)")  # fmt: skip
        if status in ("404", "StatusCode.NOT_FOUND"):
            return UsageError(f"{where}: {message}", "pass a --model the server has (see its repository index)")
        if any(t in message for t in ("DNS resolution failed", "errors resolving", "Name or service not known")):
            return UsageError(f"cannot resolve the host of --url {url}: {message}", "check --url")
        if status in ("StatusCode.UNAVAILABLE", "503", "StatusCode.DEADLINE_EXCEEDED") or not status:
            return MissingDependencyError(f"no Triton server answers over {protocol} at {url}: {message}",
                                          f"start it (see the repository's README), or {check}")  # fmt: skip
        return VerificationError(f"{where} failed ({status}): {message}", "see the server's log")
    return _transport_error(exc, url, protocol, check)


def _message(text: str) -> str:
    """The server's words as a clause: without the request id it leads with, and without the NOTE it may add."""
    text = re.sub(r"^\[request id: [^\]]*\]\s*", "", text.strip())
    return first_line(Exception(text.split(" NOTE: ")[0]), 300)


def _transport_error(exc: BaseException, url: str, protocol: str, check: str) -> DeployError | None:
    """What the HTTP transport (aiohttp) or the socket layer raised: no server, no such host, no answer."""

    text = first_line(exc, 300, named=True)
    dns = isinstance(exc, socket.gaierror) or isinstance(getattr(exc, "os_error", None), socket.gaierror)
    if dns or type(exc).__name__ == "ClientConnectorDNSError":
        return UsageError(f"cannot resolve the host of --url {url}: {text}", "check --url")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return MissingDependencyError(f"the server at {url} did not answer within {REQUEST_TIMEOUT_S:.0f} s",
                                      "check that it is up and not overloaded (fewer --concurrency)")  # fmt: skip
    try:
        import aiohttp
    except ImportError:
        aiohttp = None
    if "Bad status line" in text:  # an HTTP request answered in HTTP/2 frames: a gRPC port
        text = "what answers there does not speak HTTP/1.1 (a gRPC port?)"
    if isinstance(exc, ConnectionError | OSError) or (aiohttp is not None and isinstance(exc, aiohttp.ClientError)):
        return MissingDependencyError(f"no Triton server answers over {protocol} at {url}: {text}",
                                      f"start it (see the repository's README), or {check}")  # fmt: skip
    return None


class Connection:
    """One client of one server (`async with Connection(url, protocol) as conn:`); every call's failure is said
    as `translate` says it."""

    def __init__(self, url: str, protocol: str = "http") -> None:
        self.url, self.protocol = parse_url(url), protocol
        self.module = client_module(protocol)
        self.client: Any = None

    async def __aenter__(self) -> Connection:
        try:
            self.client = self.module.InferenceServerClient(self.url)
        except Exception as exc:
            raise translate(exc, self.url, self.protocol) or exc from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:  # an open keep-alive connection would hold a stopping server for its timeout
            await self.client.close()
            self.client = None

    async def call(self, coro: Awaitable[T], model: str | None = None) -> T:
        try:
            return await asyncio.wait_for(coro, REQUEST_TIMEOUT_S)
        except Exception as exc:
            error = translate(exc, self.url, self.protocol, model)
            if error is None:
                raise
            raise error from None

    def _json(self) -> dict[str, Any]:
        return {"as_json": True} if self.protocol == "grpc" else {}

    async def describe(self, name: str) -> ServedModel:
        """The served model `name`, or the line that says why it cannot be measured (not there, not ready, not
        one FP32 input and one output)."""
        c = self.client
        await self.call(c.is_server_live())
        index = await self.call(c.get_model_repository_index(**self._json()))
        models = index.get("models", []) if isinstance(index, dict) else index
        states = {m.get("name"): (m.get("state", ""), m.get("reason", "")) for m in models}
        if name not in states:
            raise UsageError(f"the server at {self.url} has no model '{name}'",
                             f"pass --model one of: {', '.join(sorted(states)) or 'none (its repository is empty)'}")  # fmt: skip
        if not await self.call(c.is_model_ready(name), name):
            state, reason = states[name]
            raise UsageError(f"model '{name}' at {self.url} is not ready ({state or 'not loaded'}: {reason or '-'})",
                             "see the server's log for why it did not load")  # fmt: skip
        meta = await self.call(c.get_model_metadata(name, **self._json()), name)
        config = await self.call(c.get_model_config(name, **self._json()), name)
        server = await self.call(c.get_server_metadata(**self._json()))
        return _served(self.url, self.protocol, name, meta, config.get("config", config), server)

    async def infer(self, served: ServedModel, batch: np.ndarray) -> np.ndarray:
        """The served logits for `batch`, sent as its own dtype (the server says if that is not what it takes)."""
        from tritonclient.utils import np_to_triton_dtype

        tensor = self.module.InferInput(served.input_name, list(batch.shape), np_to_triton_dtype(batch.dtype))
        tensor.set_data_from_numpy(np.ascontiguousarray(batch))
        options = {"binary_data": True} if self.protocol == "http" else {}
        wanted = [self.module.InferRequestedOutput(served.output_name, **options)]
        answer = await self.call(self.client.infer(served.name, [tensor], outputs=wanted), served.name)
        return answer.as_numpy(served.output_name)


def _served(url: str, protocol: str, name: str, meta: dict, config: dict, server: dict) -> ServedModel:
    inputs, outputs = meta.get("inputs", []), meta.get("outputs", [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise UsageError(f"model '{name}' at {url} has {len(inputs)} inputs and {len(outputs)} outputs",
                         "resnet-bench triton measures an image classifier: one NCHW input, one logits output")  # fmt: skip
    if inputs[0].get("datatype") != "FP32":
        raise UsageError(f"model '{name}' at {url} takes {inputs[0].get('datatype')} input, not FP32",
                         "serve an artifact resnet-export triton wrote: it takes preprocessed FP32 NCHW batches")  # fmt: skip
    groups = config.get("instance_group") or [{}]
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    return ServedModel(
        url=url, protocol=protocol, name=name,
        input_name=inputs[0]["name"], output_name=outputs[0]["name"],
        input_shape=[int(d) for d in inputs[0].get("shape", [])], output_shape=[int(d) for d in outputs[0].get("shape", [])],
        max_batch=int(config.get("max_batch_size") or 0),
        backend=config.get("platform") or config.get("backend") or "",
        device="cuda" if groups[0].get("kind") == "KIND_GPU" else "cpu",
        server_version=str(server.get("version", "")),
        recorded={k: v for k, v in params.items() if k.startswith("resnet_deploy_")},
    )  # fmt: skip


async def parity_logits(
    conn: Connection, served: ServedModel, images: np.ndarray, batch: int, concurrency: int
) -> np.ndarray:
    """The served logits of `images`, sent `batch` at a time with up to `concurrency` requests in flight (so the
    server batches them as it would under load), put back in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(start: int) -> np.ndarray:
        async with gate:
            return await conn.infer(served, images[start : start + batch])

    return np.concatenate(await _all([one(i) for i in range(0, len(images), batch)]))


async def load_level(
    conn: Connection, served: ServedModel, x: np.ndarray, concurrency: int, requests: int, seconds: float
) -> tuple[list[float], float]:
    """`concurrency` workers, each sending `x` one request after another, until `requests` requests were sent or
    `seconds` passed, after one warm-up request each (connections, first-run costs). Returns each request's
    seconds and the wall time; any request's failure fails the level."""
    await _all([conn.infer(served, x) for _ in range(concurrency)])
    times: list[float] = []
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            sent += 1
            start = time.perf_counter()
            await conn.infer(served, x)
            times.append(time.perf_counter() - start)

    start = time.perf_counter()
    await _all([worker() for _ in range(concurrency)])
    return times, time.perf_counter() - start


async def _all(coros: list[Awaitable[T]]) -> list[T]:
    """Every coroutine's result in order; the first failure cancels the others (no request left running)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
