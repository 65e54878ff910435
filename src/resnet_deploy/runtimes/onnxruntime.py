"""ONNX Runtime with one explicitly chosen execution provider.

ONNX Runtime quietly falls back to the CPU when a provider fails to load; a benchmark labelled
"cuda" that ran on the CPU is worse than no benchmark, so the session's providers are checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resnet_deploy.errors import MissingDependencyError, UsageError
from resnet_deploy.runtimes.base import Artifact, Runtime, device_index, device_name
from resnet_deploy.shapes import format_shape

PROVIDERS = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntime(Runtime):
    def __init__(
        self,
        artifact: Artifact,
        device: str = "cpu",
        name: str | None = None,
        threads: int | None = None,
        **_: Any,
    ) -> None:
        if name is None:
            name = "onnxruntime-cpu" if device == "cpu" else "onnxruntime-cuda"
        self.name = name
        self.provider = PROVIDERS[name]
        self.device = session_device(name, device)
        self.artifact = artifact
        self.precision = artifact.precision
        self.threads = threads
        self.session = open_session(str(artifact.path), self.provider, self.device, threads, artifact.label)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dims = list(inp.shape)  # ints for static dims, names for dynamic ones
        out = self.session.get_outputs()[0]
        self.output_name = out.name
        self.num_classes = out.shape[1] if isinstance(out.shape[1], int) else None  # for device-resident outputs
        self.input_range = artifact.input_range if self.provider == "TensorrtExecutionProvider" else None

    def check_input(self, batch: Any) -> None:
        super().check_input(batch)
        shape = tuple(batch.shape)
        for d, want in zip(shape, self.input_dims, strict=False):
            if isinstance(want, int) and want != d:
                accepted = "x".join(str(x) if isinstance(x, int) else "?" for x in self.input_dims)
                raise UsageError(
                    f"input {format_shape(shape)} does not fit {self.artifact.label}, which accepts {accepted}",
                    "re-export with --dynamic to accept other batch sizes and image sizes",
                )

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.check_input(batch)
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]

    def run_device(self, batch: Any) -> Any:
        """Bind torch CUDA tensors directly (IO binding) so no host copy is timed."""
        import torch

        if self.device == "cpu" or not batch.is_cuda:
            return super().run_device(batch)
        self.check_input(batch)
        batch = batch.contiguous()
        binding = self.session.io_binding()
        dev_id = batch.device.index or 0
        binding.bind_input(self.input_name, "cuda", dev_id, np.float32, list(batch.shape), batch.data_ptr())
        if self.num_classes is None:
            # a class dimension the graph leaves symbolic: ONNX Runtime allocates the output, and reading
            # it here goes through the host, so this is not copy-free (ResNet exports never take this path)
            binding.bind_output(self.output_name, "cuda", dev_id)
            self.session.run_with_iobinding(binding)
            return torch.from_numpy(binding.copy_outputs_to_cpu()[0]).to(batch.device)
        out = torch.empty((batch.shape[0], self.num_classes), dtype=torch.float32, device=batch.device)
        binding.bind_output(self.output_name, "cuda", dev_id, np.float32, list(out.shape), out.data_ptr())
        torch.cuda.current_stream(batch.device).synchronize()
        self.session.run_with_iobinding(binding)
        return out

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def session_device(name: str, device: str) -> str:
    """Where backend `name` runs: the CPU provider on the CPU, the GPU ones on `device` (cuda:0 when the
    run itself is on the CPU). The runtime and --explain both ask here."""
    if PROVIDERS[name] == "CPUExecutionProvider":
        return "cpu"
    return "cuda:0" if device == "cpu" else device_name(device)


def open_session(source: str | bytes, provider: str, device: str, threads: int | None, label: str) -> Any:
    """An InferenceSession on exactly `provider`, or a clear error: the one place sessions are made.

    The runtime and `--explain` (which adds stage outputs to the graph) both come here, so a graph is
    read with the same provider options whether it is benchmarked or diagnosed: IEEE FP32 on CUDA (the
    CUDA provider enables TF32 by default) and no node quietly moved to the CPU.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    providers: list[Any] = [provider]
    if provider != "CPUExecutionProvider":
        import torch  # noqa: F401  loads the CUDA and cuDNN libraries (the nvidia-* wheels) the provider links to

        provider_options: dict[str, Any] = {"device_id": device_index(device)}
        if provider == "CUDAExecutionProvider":
            # FP32 means IEEE FP32, as for the torch runtimes: the CUDA provider enables TF32 by default
            provider_options["use_tf32"] = "0"
            # a node the CUDA provider cannot run would otherwise run on the CPU, unannounced
            opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        providers = [(provider, provider_options)]
    try:
        session = ort.InferenceSession(source, sess_options=opts, providers=providers)
    except Exception as exc:
        text = str(exc).splitlines()[0][:200]
        if "fallback" in text.lower():
            raise UsageError(
                f"ONNX Runtime's {provider} cannot run every node of {label}: {text}",
                "run it with --device cpu, or on TensorRT",
            ) from None
        raise UsageError(f"ONNX Runtime cannot load {label}: {text}") from None
    if provider not in session.get_providers():
        raise MissingDependencyError(
            f"ONNX Runtime could not start {provider} for {label} (session has {session.get_providers()})",
            "onnxruntime-gpu must be built for the CUDA major version torch uses "
            "(python -c 'import onnxruntime.capi.build_and_package_info as i; print(i.cuda_version)')",
        )
    return session
