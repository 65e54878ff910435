"""`--explain`: where does a failing artifact start to diverge from the PyTorch model?

The reference's stage outputs come from forward hooks on the model (stem = after `maxpool`, then
`layer1`..`layer4`, head = the logits). The artifact's come from the artifact itself:

- ONNX (on ONNX Runtime or OpenVINO, whichever ran the failing row): the dynamo exporter records each node's module path (`pkg.torch.onnx.name_scopes`); the last
  node inside `maxpool`/`layerN` is that stage's output. FP16 conversion and Q/DQ quantization keep the
  metadata. Without it (other exporters), the stage ends are found structurally: the Relu after the
  last residual Add of each stage, counting blocks per stage from the model. Either way the tensor read
  is the one the next stage consumes: past a following Relu and Q -> DQ pair (see `_as_consumed`; a
  quantizer may drop the Relu and leave the clamp to the Q/DQ). Those tensors are added as graph
  outputs and the model runs in ONNX Runtime.
- torch.export `.pt2`: nodes carry `nn_module_stack`; an FX interpreter records the same boundaries.
- TorchScript: no hooks on ScriptModules; if the file holds a ResNet's submodules (`conv1` ...
  `layer4`, `fc`), they are run one after another, else only the head can be compared.
- AOTInductor packages: only the head (Inductor fused the stages into generated kernels; the package computes
  no stage output to read), said in the method.
- TensorRT engines: only the head (the engine hides its intermediate tensors).

Errors use `parity.compare` on each stage's flattened activations; the first stage whose relative L2
error jumps (above a per-precision floor and several times the previous stage's) is where to look.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.fx

from resnet_deploy.artifact import Artifact
from resnet_deploy.devices import CPU, Device
from resnet_deploy.errors import UsageError
from resnet_deploy.onnx_graph import Graph
from resnet_deploy.parity import compare
from resnet_deploy.runtimes import create, run_batched
from resnet_deploy.runtimes.onnxruntime import PROVIDERS, open_session, session_device
from resnet_deploy.runtimes.openvino import compile_onnx
from resnet_deploy.runtimes.torch import cuda_math, load_program

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "head")
#: module whose output ends each stage (the head is the model output)
STAGE_MODULES = {"stem": "maxpool", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}
#: rel L2 at a stage below this is rounding for the precision, not divergence
NOISE_FLOOR = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.25}
JUMP_RATIO = 5.0
MAX_IMAGES = 8


def _component_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"(^|[.\]'\"]){re.escape(name)}($|[.\['\"])")


_STAGE_RES = {stage: _component_re(mod) for stage, mod in STAGE_MODULES.items()}


@dataclass
class StageError:
    stage: str
    rel_l2: float
    max_abs: float
    cosine: float
    shape: tuple[int, ...]


@dataclass
class Explanation:
    artifact: str
    method: str  # how the artifact's stages were read
    stages: list[StageError] = field(default_factory=list)
    first: str | None = None  # first stage whose error jumps
    note: str = ""
    floor: float = 1e-3

    def verdict(self) -> str:
        if self.first is None:
            return f"no stage of {self.artifact} diverges beyond rel L2 {self.floor:g}" + (
                f"; {self.note}" if self.note else ""
            )
        by = {s.stage: s for s in self.stages}
        idx = [s.stage for s in self.stages].index(self.first)
        before = self.stages[idx - 1].rel_l2 if idx > 0 else None
        jump = (
            f"rel L2 {before:.2e} -> {by[self.first].rel_l2:.2e}"
            if before is not None
            else (f"rel L2 {by[self.first].rel_l2:.2e} already")
        )
        now = by[self.first].rel_l2
        if before is not None and np.isfinite(now) and now <= JUMP_RATIO * before:  # no jump: accumulation
            return (
                f"no single stage of {self.artifact} breaks it: its error grows gradually and passes rel L2 "
                f"{self.floor:g} at {self.first} ({jump}), as rounding or quantization error adds up over the "
                "network; for INT8: more (and more varied) calibration images or another --calib-method"
            ) + (f"; {self.note}" if self.note else "")
        where = {
            "stem": "the stem (conv1/bn1/maxpool: weights other than the model's, or for INT8 the input's "
            "quantization range) or what happens to the input before it (channel order, normalization)",
            "head": "the head (avgpool/fc: class order, fc weights, or the output)",
        }.get(self.first, f"{self.first}")
        return f"{self.artifact} diverges first at {self.first} ({jump}): look at {where}" + (
            f"; {self.note}" if self.note else ""
        )

    def text(self) -> str:
        lines = [f"{'stage':<7} {'rel L2':>10} {'max abs':>10} {'cosine':>10}  shape"]
        for s in self.stages:
            mark = "  <- first jump" if s.stage == self.first else ""
            lines.append(
                f"{s.stage:<7} {s.rel_l2:>10.2e} {s.max_abs:>10.2e} {s.cosine:>10.6f}  "
                f"{'x'.join(map(str, s.shape))}{mark}"
            )
        lines.append(self.verdict())
        lines.append(f"(stages read by {self.method})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "method": self.method,
            "first": self.first,
            "verdict": self.verdict(),
            "stages": [s.__dict__ | {"shape": list(s.shape)} for s in self.stages],
        }


def first_jump(errors: Sequence[tuple[str, float]], floor: float, ratio: float = JUMP_RATIO) -> str | None:
    """The first stage above `floor` that is `ratio` times the previous stage's error; if the error
    only grows gradually, the first stage above `floor`; None when every stage is within `floor`."""
    prev = 0.0
    for stage, err in errors:
        if not np.isfinite(err) or (err > floor and err > ratio * prev):
            return stage
        prev = err
    for stage, err in errors:
        if err > floor:
            return stage
    return None


# -- tensors in and out, on the device the failing row ran on --------------------------------------


def _tensor(batch: np.ndarray, device: str = "cpu") -> Any:
    return torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(device)


def _numpy(t: Any) -> np.ndarray:
    return t.detach().float().cpu().numpy().copy()


@contextmanager
def _math(device: str) -> Iterator[None]:
    """IEEE FP32 on CUDA, as the runtimes run (cuDNN's TF32 default would read as divergence)."""
    if not Device.parse(device).is_cuda:
        yield
        return
    with cuda_math(tf32=False):
        yield


# -- the reference: forward hooks on the PyTorch model ----------------------------------------------


def _stage_modules(model: Any) -> dict[str, Any]:
    out = {}
    for name, mod in model.named_modules():
        for stage, rx in _STAGE_RES.items():
            if stage not in out and rx.search(name) and name.split(".")[-1] == STAGE_MODULES[stage]:
                out[stage] = mod
    return out


def reference_stages(model: Any, batch: np.ndarray) -> dict[str, np.ndarray]:
    captured: dict[str, np.ndarray] = {}
    handles = []
    for stage, mod in _stage_modules(model).items():

        def hook(_m: Any, _i: Any, out: Any, stage: str = stage) -> None:
            captured[stage] = _numpy(out)

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            captured["head"] = _numpy(model(_tensor(batch)))
    finally:
        for h in handles:
            h.remove()
    return captured


# -- ONNX ----------------------------------------------------------------------------------------------


def _scopes(node: Any) -> list[str]:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            return re.findall(r"'([^']*)'", p.value)
    return []


def _as_consumed(name: str, consumers: dict[str, list[Any]]) -> str:
    """`name` as the next stage reads it: past the Relu and the Q -> DQ pair that follow it, if any.

    In a Q/DQ graph the next stage reads the DequantizeLinear output, and that can differ from the
    stage's last tensor by more than rounding: ONNX Runtime's quantizer (the `--target cpu` recipe,
    uint8 activations) drops a Relu whose output goes into a QuantizeLinear with zero point 0, since
    the quantization clamps at 0 anyway, and renames the Add before it to the Relu's output. That
    tensor is the residual sum before the ReLU; only the DQ output is what PyTorch's stage returns.
    """
    while True:
        after = consumers.get(name, [])
        ops = {n.op_type for n in after}
        if ops == {"Relu"}:
            name = after[0].output[0]
            continue
        if ops == {"QuantizeLinear"}:
            dq = consumers.get(after[0].output[0], [])
            if dq and {n.op_type for n in dq} == {"DequantizeLinear"}:
                name = dq[0].output[0]
                continue
        return name


def onnx_stage_tensors(model: Any, blocks: Sequence[int] | None = None) -> tuple[dict[str, str], str]:
    """Map stage -> tensor name in an ONNX graph, and how they were found."""
    graph = Graph(model)
    found: dict[str, str] = {}
    for node in graph.nodes:  # topological order: the last node inside a module is its output
        scopes = _scopes(node)
        for stage, rx in _STAGE_RES.items():
            if any(rx.search(s) for s in scopes) and node.output:
                found[stage] = node.output[0]
    method = "ONNX node metadata (name_scopes)"
    if len(found) < len(STAGE_MODULES):
        found, method = _onnx_structural(graph, blocks)
    found = {stage: _as_consumed(name, graph.consumers) for stage, name in found.items()}
    if model.graph.output:
        found["head"] = model.graph.output[0].name
    return found, method


def _onnx_structural(graph: Graph, blocks: Sequence[int] | None) -> tuple[dict[str, str], str]:
    """Fallback: stem = first MaxPool, stage ends = the last residual Add of each stage (the caller
    moves them past the Relu and Q/DQ after them). A residual Add adds two computed tensors, no
    constant (an initializer, or one through DequantizeLinear/Cast)."""
    found: dict[str, str] = {}
    for n in graph.nodes:
        if n.op_type == "MaxPool":
            found["stem"] = n.output[0]
            break
    ends = [n.output[0] for n in graph.nodes if n.op_type == "Add" and not any(graph.is_weight(i) for i in n.input)]
    if blocks and len(ends) == sum(blocks):
        total = 0
        for stage, count in zip(("layer1", "layer2", "layer3", "layer4"), blocks, strict=True):
            total += count
            found[stage] = ends[total - 1]
        return found, "ONNX graph structure (residual Add -> Relu at each stage end)"
    return {k: v for k, v in found.items() if k == "stem"}, "ONNX graph output only (stage ends not found)"


def _onnx_elem_type(model: Any, name: str) -> int:
    for vi in list(model.graph.value_info) + list(model.graph.output):
        if vi.name == name and vi.type.tensor_type.elem_type:
            return vi.type.tensor_type.elem_type
    return onnx.TensorProto.FLOAT


def onnx_stages(
    path: Path,
    batch: np.ndarray,
    blocks: Sequence[int] | None = None,
    runtime: str = "onnxruntime-cpu",
    device: str = "cpu",
) -> tuple[dict[str, np.ndarray], str]:
    """The stage outputs of an ONNX file, read as the failing row's runtime reads it: the file with its stage
    tensors added as graph outputs, run on that runtime's own session settings (ONNX Runtime's provider, or
    OpenVINO's compiled model)."""
    serialized, tensors, method = _with_stage_outputs(path, blocks)
    names = list(dict.fromkeys(tensors.values()))
    x = np.ascontiguousarray(batch, np.float32)
    if runtime == "openvino-cpu":
        compiled = compile_onnx(serialized, None, path.name)
        result = compiled.create_infer_request().infer({0: x})
        by_name = {name: np.array(result[compiled.output(name)]) for name in names}
        return {stage: np.asarray(by_name[name], np.float32) for stage, name in tensors.items()}, method
    # TensorRT's provider fuses the graph and hides its intermediate tensors: read them on CUDA instead
    provider = PROVIDERS["onnxruntime-cuda" if runtime == "onnxruntime-tensorrt" else runtime]
    session = open_session(serialized, provider, device, None, path.name)
    if runtime == "onnxruntime-tensorrt":
        method += ", read on the CUDA provider (TensorRT's hides intermediate tensors)"
    by_name = dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))
    return {stage: np.asarray(by_name[name], np.float32) for stage, name in tensors.items()}, method


def _with_stage_outputs(path: Path, blocks: Sequence[int] | None) -> tuple[bytes, dict[str, str], str]:
    """The ONNX at `path`, serialized with its stage tensors as extra graph outputs; stage -> tensor; how found."""
    model = onnx.load(str(path))
    tensors, method = onnx_stage_tensors(model, blocks)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    existing = {o.name for o in model.graph.output}
    for name in tensors.values():
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, _onnx_elem_type(inferred, name), None))
            existing.add(name)
    return model.SerializeToString(), tensors, method


# -- torch.export .pt2 ---------------------------------------------------------------------------------


def program_stages(path: Path, batch: np.ndarray, device: str = "cpu") -> tuple[dict[str, np.ndarray], str]:
    gm = load_program(path).to(device)
    last: dict[str, Any] = {}
    nodes = list(gm.graph.nodes)
    for node in nodes:
        if node.op != "call_function":
            continue
        stack = [
            str(v[0]) if isinstance(v, tuple) else str(v) for v in (node.meta.get("nn_module_stack") or {}).values()
        ]
        for stage, rx in _STAGE_RES.items():
            if any(rx.search(s) for s in stack):
                last[stage] = node
    wanted = {node.name: stage for stage, node in last.items()}
    captured: dict[str, np.ndarray] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.name in wanted and isinstance(out, torch.Tensor):
                captured[wanted[n.name]] = _numpy(out)
            return out

    with torch.inference_mode(), _math(device):
        out = Recorder(gm).run(_tensor(batch, device))
    if isinstance(out, list | tuple):
        out = out[0]
    captured["head"] = _numpy(out)
    return captured, "torch.export node metadata (nn_module_stack)"


# -- TorchScript ------------------------------------------------------------------------------------

_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")


def torchscript_stages(path: Path, batch: np.ndarray, device: str = "cpu") -> tuple[dict[str, np.ndarray], str]:
    module = torch.jit.load(str(path), map_location=device).eval()
    x = _tensor(batch, device)
    with torch.inference_mode(), _math(device):
        head = module(x).float()
        out = {"head": _numpy(head)}
        net = next(
            (m for _, m in module.named_modules() if all(hasattr(m, p) for p in _RESNET_PARTS)),
            None,
        )
        if net is None:
            return out, "TorchScript output only (no ResNet submodules in the file)"
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        out["stem"] = _numpy(y)
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            y = getattr(net, stage)(y)
            out[stage] = _numpy(y)
        composed = net.fc(torch.flatten(net.avgpool(y), 1)).float()
        if not torch.allclose(composed, head, rtol=1e-4, atol=1e-4):
            # the file's forward does something outside the ResNet (e.g. reorders the input):
            # the piecewise stages do not see it, so do not trust them
            return {"head": out["head"]}, (
                "TorchScript output only (its forward differs from its ResNet submodules: "
                "something outside the network, e.g. input handling)"
            )
    return out, "TorchScript submodules run one after another"


# -- AOTInductor ------------------------------------------------------------------------------------


def aoti_stages(artifact: Artifact, batch: np.ndarray, device: str = "cpu") -> tuple[dict[str, np.ndarray], str]:
    """Head only: a compiled package's kernels fuse across stage boundaries and it keeps no intermediate tensor,
    so there is nothing inside to compare. Run through its runtime (which refuses a package made elsewhere),
    at the batch it takes."""
    with create("torch-aoti", artifact, device) as runtime:
        rng = runtime.input_range
        head = run_batched(runtime, batch, min(len(batch), rng.max[0]) if rng else len(batch))
    return {"head": head}, "AOTInductor package output only (its compiled kernels expose no stage outputs)"


# -- entry point ---------------------------------------------------------------------------------------


def _blocks(model: Any) -> list[int] | None:
    try:
        return [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
    except (AttributeError, TypeError):
        return None


def _where(runtime: str | None, device: str | Device) -> tuple[str, Device]:
    """(ONNX Runtime backend, torch device) to read the artifact with: an ONNX Runtime backend named by
    the failing row decides the device; otherwise `device` does (and picks the provider)."""
    if runtime == "openvino-cpu":
        return runtime, CPU
    if runtime not in PROVIDERS:
        runtime = "onnxruntime-cuda" if Device.parse(device).is_cuda else "onnxruntime-cpu"
    return runtime, session_device(runtime, device)


def explain(
    artifact: Artifact,
    model: Any,
    images: np.ndarray,
    runtime: str | None = None,
    floor: float | None = None,
    max_images: int = MAX_IMAGES,
    device: str = "cpu",
) -> Explanation:
    """Compare the artifact's stage outputs with the model's on (up to `max_images` of) `images`.

    The artifact is read where the failing row ran (`device`, and for ONNX the `runtime`'s provider),
    so a failure that only happens on the GPU is looked for on the GPU; the reference is always
    PyTorch FP32 on the CPU, as in the benchmark.
    """
    onnx_runtime, device = _where(runtime, device)
    if device.is_cuda:
        if not torch.cuda.is_available():
            raise UsageError(f"--explain on {device} needs a CUDA GPU visible to torch", "explain it with --device cpu")
    if artifact.path is None:
        raise UsageError("--explain needs an artifact file (the PyTorch model is the reference itself)")
    batch = np.asarray(images, np.float32)[:max_images]
    if batch.ndim != 4 or len(batch) == 0:
        raise UsageError("--explain needs at least one preprocessed image (N, 3, H, W)")
    readers: dict[str, Callable[[], tuple[dict[str, np.ndarray], str]]] = {
        "onnx": lambda: onnx_stages(Path(artifact.path), batch, _blocks(model), onnx_runtime, device),
        "program": lambda: program_stages(Path(artifact.path), batch, device),
        "torchscript": lambda: torchscript_stages(Path(artifact.path), batch, device),
        "aoti": lambda: aoti_stages(artifact, batch, device),
    }
    reader = readers.get(artifact.format)
    if reader is None:
        raise UsageError(
            f"--explain cannot look inside {artifact.label} ({artifact.format})",
            "explain the ONNX file the engine was built from instead",
        )
    reference = reference_stages(model, batch)
    candidate, method = reader()
    if device.is_cuda:
        method += f", on {device}"
    floor = floor if floor is not None else NOISE_FLOOR.get(artifact.precision, 1e-3)
    result = Explanation(artifact.label, method, floor=floor)
    for stage in STAGES:
        if stage not in reference or stage not in candidate:
            continue
        ref, cand = reference[stage], candidate[stage]
        if ref.shape != cand.shape:
            result.stages.append(StageError(stage, float("inf"), float("inf"), float("nan"), tuple(cand.shape)))
            result.note = f"{stage} has shape {cand.shape}, the model's is {ref.shape}"
            continue
        m = compare(ref.reshape(len(ref), -1), cand.reshape(len(cand), -1))
        result.stages.append(StageError(stage, m.rel_l2, m.max_abs, m.cosine, tuple(ref.shape[1:])))
    result.first = first_jump([(s.stage, s.rel_l2) for s in result.stages], floor)
    if len(result.stages) == 1:
        result.note = (result.note + "; " if result.note else "") + "only the output could be compared"
    return result
