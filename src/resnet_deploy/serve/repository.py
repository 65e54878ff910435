"""`resnet-export triton`: a Triton model repository with one model per artifact of a workspace.

    DIR/README.md                       how to start tritonserver on it; each model; the preprocessing
    DIR/<model>-<key>/config.pbtxt      platform or backend, max_batch_size, dims, dynamic_batching, instance_group
    DIR/<model>-<key>/labels.txt        the class names, when the checkpoint carries them (the manifest's classes)
    DIR/<model>-<key>/resnet_deploy.json  what the model is: artifact, sha256, input range, preprocessing
    DIR/<model>-<key>/1/model.onnx|model.plan|model.pt      the artifact (standard backends), or
    DIR/<model>-<key>/1/model.py + model.<ext>              a Python-backend model running resnet-deploy's runtime

Everything a config says comes from the workspace: the batch and image range each artifact was exported (or an
engine's profile built) for, its tensor names, precision and classes. What Triton could not serve as asked is
refused before anything is written, in one line that names the artifact and the fix; the repository is written
into a temp folder beside DIR and moved into place whole, so a failure leaves the previous one or nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy import onnx_graph
from resnet_deploy.devices import Device
from resnet_deploy.errors import UsageError, VerificationError
from resnet_deploy.export.onnx import INPUT_NAME, OUTPUT_NAME
from resnet_deploy.files import atomic_folder, sha256_file, sha256_json, why_not_writable
from resnet_deploy.models import ModelSource
from resnet_deploy.provenance import tool_versions
from resnet_deploy.shapes import ShapeRange, format_shape
from resnet_deploy.workspace import Workspace, now

BACKENDS = ("auto", "python")
#: the standard Triton backend of each format (`--backend auto`); a .pt2 has none
PLATFORMS = {"onnx": "onnxruntime_onnx", "engine": "tensorrt_plan", "torchscript": "pytorch_libtorch"}
#: the file name each standard backend loads by default from the version folder
STANDARD_FILES = {"onnx": "model.onnx", "engine": "model.plan", "torchscript": "model.pt"}
#: the artifact's name beside a Python-backend model.py (the suffix tells resnet-deploy the format)
PYTHON_FILES = {
    "onnx": "model.onnx",
    "engine": "model.engine",
    "torchscript": "model.ts",
    "program": "model.pt2",
    "aoti": "model.pt2",
}
#: TensorRT's precision mode for an ONNX served through ONNX Runtime's TensorRT accelerator
TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
#: what each model folder holds about itself; the Python-backend model.py reads it
RECORD = "resnet_deploy.json"
#: at the repository's top (Triton reads folders only): what wrote it, so a rerun may replace it whole
MARKER = ".resnet-deploy-repository.json"
LABELS = "labels.txt"
#: the resnet-export command that makes each format
EXPORT_COMMANDS = {"onnx": "onnx", "torchscript": "torchscript", "program": "program", "aoti": "aoti", "engine": "trt"}
VERSION = "1"
#: the folder holding the resnet_deploy package: a Python-backend model imports the code that wrote it
SOURCE_ROOT = Path(__file__).resolve().parents[2]
MODEL_PY = Path(__file__).resolve().with_name("triton_model.py")


@dataclass
class RepositoryRequest:
    """What `resnet-export triton` was asked for; checked when made."""

    keys: list[str] | None = None  # manifest keys; None = every artifact in the workspace
    max_batch: int | None = None  # None = each artifact's recorded max batch
    instances: int = 1
    backend: str = "auto"  # "auto": each format's standard backend; "python": resnet-deploy's runtime
    device: str | None = None  # "cpu" | "cuda"; None = the CPU, engines on a GPU (where a plan runs)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown --backend '{self.backend}'", f"choose {' or '.join(BACKENDS)}")
        if self.instances < 1:
            raise UsageError(f"--instances {self.instances}: must be at least 1", "e.g. --instances 2")
        if self.max_batch is not None and self.max_batch < 1:
            raise UsageError(f"--max-batch {self.max_batch}: must be at least 1", "e.g. --max-batch 8")
        if self.device is not None:
            self.device = Device.parse(self.device).kind


@dataclass
class ModelPlan:
    """One model of the repository, as its config.pbtxt and README row say it."""

    name: str
    key: str
    source: Path  # the artifact in the workspace
    entry: dict[str, Any]
    format: str
    precision: str
    backend: str  # a platform ("onnxruntime_onnx", ...) or "python"
    filename: str  # in the version folder
    input_name: str
    output_name: str
    shape_range: ShapeRange
    max_batch: int
    dims: list[int]  # C, H, W: -1 where the range is dynamic
    preferred: list[int]
    gpu: bool
    instances: int
    num_classes: int
    classes: list[str] | None = None
    runtime: str | None = None  # the resnet-deploy runtime a Python-backend model runs
    preprocess: dict[str, Any] = field(default_factory=dict)

    @property
    def python(self) -> bool:
        return self.backend == "python"


def plan_repository(ws: Workspace, request: RepositoryRequest) -> list[ModelPlan]:
    """One plan per artifact asked for; the first that cannot be served as asked is refused, naming why."""
    if not ws.manifest_path.is_file():
        raise UsageError(
            f"no workspace at {ws.dir} (no {ws.manifest_path.name})",
            f"export the model first (resnet-export onnx {ws.name} --dynamic), or pass its --workspace",
        )
    if not ws.artifacts:
        raise UsageError(
            f"{ws.manifest_path} records no artifact to serve",
            f"export one first: resnet-export onnx {ws.name} --dynamic",
        )
    keys = request.keys or list(ws.artifacts)
    unknown = [k for k in keys if k not in ws.artifacts]
    if unknown:
        raise UsageError(
            f"--artifacts {','.join(unknown)}: not in {ws.manifest_path}", f"it has: {', '.join(ws.artifacts)}"
        )
    return [_plan(ws, key, request) for key in keys]


def _refuse(ws: Workspace, key: str, reason: str, fix: str) -> UsageError:
    name = Path(ws.artifacts[key]["path"]).name
    leave_out = f", or leave it out with --artifacts {','.join(k for k in ws.artifacts if k != key) or '...'}"
    return UsageError(f"cannot serve {key} ({name}): {reason}", fix + leave_out)


def _served_range(ws: Workspace, key: str, request: RepositoryRequest) -> ShapeRange:
    """The shapes the artifact was verified for (an engine: its profile), which Triton must batch within."""
    entry = ws.artifacts[key]
    recorded = entry.get("profile") if entry["format"] == "engine" else entry.get("input")
    if not recorded:
        raise _refuse(ws, key, "the manifest records no input range for it", "re-export it with resnet-export")
    rng = ShapeRange.from_dict(recorded)
    if not rng.dynamic:
        flags = "--min-shape 1x3xHxW --max-shape Nx3xHxW" if entry["format"] == "engine" else "--dynamic"
        raise _refuse(
            ws, key, f"it is static (only {format_shape(rng.opt)}): Triton batches requests along a dynamic batch axis",
            f"re-export it with a dynamic range (resnet-export {EXPORT_COMMANDS[entry['format']]} {ws.name} {flags})",
        )  # fmt: skip
    if rng.min[0] > 1:
        raise _refuse(ws, key, f"its batch starts at {rng.min[0]}, and Triton sends single requests as batch 1",
                      "re-export it with --min-shape 1x3xHxW")  # fmt: skip
    if request.max_batch is not None and request.max_batch > rng.max[0]:
        raise _refuse(ws, key, f"--max-batch {request.max_batch} is over the batch {rng.max[0]} it was verified up to",
                      f"pass --max-batch {rng.max[0]} or less, or re-export it with --max-shape "
                      f"{request.max_batch}x3x{rng.max[2]}x{rng.max[3]}")  # fmt: skip
    return rng


def _check_file(ws: Workspace, key: str) -> None:
    """The file is the one recorded, made from the model the workspace now records: a repository of stale or edited
    files would serve answers nobody verified, under the labels and preprocessing of another model."""
    state = ws.file_state(key)
    if state is not None:
        raise _refuse(ws, key, state if state not in ("missing", "modified") else f"its file is {state}",
                      "re-export it")  # fmt: skip
    model = ws.manifest.get("model") or {}
    source = ModelSource(model.get("architecture", ws.name), model.get("weights") or "none",
                         model.get("weights_sha256"), model.get("num_classes") or 1000, model.get("seed") or 0)  # fmt: skip
    if ws.artifacts[key].get("model_sha256") != sha256_json(source.fingerprint()):
        raise _refuse(ws, key, f"it was made from other weights than the {model.get('weights')} the workspace records",
                      "re-export it from these weights")  # fmt: skip


def _backend(ws: Workspace, key: str, request: RepositoryRequest) -> tuple[str, bool]:
    """The backend and whether the instances run on a GPU; a format without a standard backend is refused."""
    fmt = ws.artifacts[key]["format"]
    gpu = fmt == "engine" or request.device == "cuda"
    if fmt == "engine" and request.device == "cpu":
        raise _refuse(ws, key, "a TensorRT engine runs only on a GPU", "drop --device cpu")
    if request.backend == "python":
        return "python", gpu
    if fmt not in PLATFORMS:
        raise _refuse(
            ws, key, f"no standard Triton backend runs a {fmt} artifact",
            "pass --backend python, whose models run it with resnet-deploy's own runtime",
        )  # fmt: skip
    return PLATFORMS[fmt], gpu


def _tensor_names(ws: Workspace, key: str, backend: str) -> tuple[str, str]:
    """The input and output names the served model answers to: an ONNX file's own, an engine's from the ONNX it was
    built from, TorchScript's by Triton's PyTorch convention (a trace keeps no names)."""
    entry = ws.artifacts[key]
    if backend == "pytorch_libtorch":
        return "INPUT__0", "OUTPUT__0"
    onnx_path = ws.dir / entry["path"] if entry["format"] == "onnx" else None
    if entry["format"] == "engine":
        onnx_path = ws.dir / entry.get("source_onnx", "")
        if not entry.get("source_onnx") or not onnx_path.is_file():
            raise _refuse(ws, key, "the ONNX it was built from (which names its tensors) is not in the workspace",
                          "rebuild it with resnet-export trt")  # fmt: skip
    if onnx_path is None:
        return INPUT_NAME, OUTPUT_NAME
    graph = onnx_graph.read_onnx(onnx_path)
    if len(graph.graph.input) != 1 or len(graph.graph.output) != 1:
        raise _refuse(ws, key, "it does not have exactly one input and one output", "re-export it with resnet-export")
    return onnx_graph.input_name(graph), onnx_graph.output_name(graph)


def _plan(ws: Workspace, key: str, request: RepositoryRequest) -> ModelPlan:
    entry = ws.artifacts[key]
    backend, gpu = _backend(ws, key, request)
    rng = _served_range(ws, key, request)
    _check_file(ws, key)
    input_name, output_name = _tensor_names(ws, key, backend)
    max_batch = request.max_batch or rng.max[0]
    model = ws.manifest.get("model") or {}
    classes = model.get("classes")
    num_classes = int(model.get("num_classes") or 1000)
    fmt = entry["format"]
    return ModelPlan(
        name=f"{ws.name}-{key}",
        key=key,
        source=ws.dir / entry["path"],
        entry=entry,
        format=fmt,
        precision=entry.get("precision", "fp32"),
        backend=backend,
        filename=PYTHON_FILES[fmt] if backend == "python" else STANDARD_FILES[fmt],
        input_name=input_name,
        output_name=output_name,
        shape_range=rng,
        max_batch=max_batch,
        dims=[3] + [-1 if rng.min[i] != rng.max[i] else rng.max[i] for i in (2, 3)],
        preferred=sorted({b for b in (rng.opt[0], max_batch) if 1 < b <= max_batch}),
        gpu=gpu,
        instances=request.instances,
        num_classes=num_classes,
        classes=list(classes) if isinstance(classes, list) and len(classes) == num_classes else None,
        runtime=_python_runtime(fmt, gpu) if backend == "python" else None,
        preprocess=dict(ws.manifest.get("preprocess") or {}),
    )


def _python_runtime(fmt: str, gpu: bool) -> str:
    """The resnet-deploy runtime a Python-backend model runs its artifact with, on the instance's device."""
    if fmt == "onnx":
        return "onnxruntime-cuda" if gpu else "onnxruntime-cpu"
    return {"torchscript": "torchscript", "program": "torch-export", "aoti": "torch-aoti", "engine": "tensorrt"}[fmt]


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _parameters(plan: ModelPlan) -> list[str]:
    """What the served model is, readable from the server (`get_model_config`): `resnet-bench triton` judges it by
    its precision and checks its preprocessing against the reference's. Triton's backends ignore keys they do not
    know; the PyTorch backend's INFERENCE_MODE is its own."""
    params = {
        "resnet_deploy_artifact": plan.key,
        "resnet_deploy_precision": plan.precision,
        "resnet_deploy_sha256": plan.entry["sha256"],
        "resnet_deploy_preprocess": json.dumps(plan.preprocess, separators=(",", ":")),
    }
    if plan.backend == "pytorch_libtorch":
        params["INFERENCE_MODE"] = "true"
    return [f"parameters: {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}" for k, v in params.items()]


def _accelerator(plan: ModelPlan) -> list[str]:
    """ONNX on a GPU instance: ONNX Runtime's TensorRT execution accelerator at the file's precision (CUDA runs what
    TensorRT does not take). The CPU INT8 recipe's uint8 activations are not TensorRT's: CUDA only."""
    if plan.backend != "onnxruntime_onnx" or not plan.gpu or plan.entry.get("inputs", {}).get("target") == "cpu":
        return []
    mode = TRT_PRECISION.get(plan.precision, "FP32")
    return [
        "optimization {",
        "  execution_accelerators {",
        f'    gpu_execution_accelerator: [ {{ name: "tensorrt" parameters {{ key: "precision_mode" value: "{mode}" }} }} ]',
        "  }",
        "}",
    ]


def config_text(plan: ModelPlan) -> str:
    """The model's config.pbtxt (Triton's ModelConfig in protobuf text format)."""
    engine = "backend" if plan.python else "platform"
    label = f"\n    label_filename: {_quote(LABELS)}" if plan.classes else ""
    preferred = f"\n  preferred_batch_size: [ {', '.join(map(str, plan.preferred))} ]" if plan.preferred else ""
    lines = [
        f"name: {_quote(plan.name)}",
        f"{engine}: {_quote(plan.backend)}",
        f"max_batch_size: {plan.max_batch}",
        "input [",
        "  {",
        f"    name: {_quote(plan.input_name)}",
        "    data_type: TYPE_FP32",
        f"    dims: [ {', '.join(map(str, plan.dims))} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f"    name: {_quote(plan.output_name)}",
        "    data_type: TYPE_FP32",
        f"    dims: [ {plan.num_classes} ]{label}",
        "  }",
        "]",
        f"dynamic_batching {{{preferred}\n}}",
        "instance_group [",
        "  {",
        f"    count: {plan.instances}",
        f"    kind: {'KIND_GPU' if plan.gpu else 'KIND_CPU'}",
        "  }",
        "]",
        *_accelerator(plan),
        *_parameters(plan),
    ]
    return "\n".join(lines) + "\n"


def record(plan: ModelPlan, ws: Workspace) -> dict[str, Any]:
    """resnet_deploy.json: what the model is and was made from; a Python-backend model.py runs from it."""
    out: dict[str, Any] = {
        "artifact": plan.key,
        "file": f"{VERSION}/{plan.filename}",
        "format": plan.format,
        "precision": plan.precision,
        "sha256": plan.entry["sha256"],
        "source": str(plan.source),
        "manifest": str(ws.manifest_path),
        "model": ws.manifest.get("model"),
        "input": plan.shape_range.to_dict(),
        "preprocess": plan.preprocess,
        "backend": plan.backend,
        "created": now(),
        "tools": tool_versions(),
    }
    if plan.python:
        out |= {"runtime": plan.runtime, "python_path": str(SOURCE_ROOT), "entry": plan.entry}
    return out


def check_output(output: Path, ws: Workspace) -> None:
    """`--output` may be new, empty, or a repository this command wrote (replaced whole); anything else is kept."""
    output = Path(output)
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise UsageError(f"--output {output} is not a folder", "pass a folder for the model repository")
    if ws.dir.resolve().is_relative_to(output.resolve()):
        raise UsageError(f"--output {output} holds the workspace {ws.dir}", "pass a folder outside it")
    if output.is_dir() and any(output.iterdir()) and not (output / MARKER).is_file():
        raise UsageError(
            f"--output {output} holds files resnet-export triton did not write",
            "pass a new or empty folder, or a repository an earlier resnet-export triton wrote (it is replaced whole)",
        )
    reason = why_not_writable(output.parent)
    if reason:
        raise UsageError(f"--output {output}: {reason}", "pass a folder in a writable place")


def write_repository(
    ws: Workspace, output: Path, request: RepositoryRequest, command: str | None = None
) -> list[ModelPlan]:
    """Plan every model (refusing what cannot be served), then write the repository into a temp folder beside
    `output` and move it into place."""
    plans = plan_repository(ws, request)
    check_output(output, ws)
    with atomic_folder(Path(output)) as tmp:
        for plan in plans:
            _write_model(tmp / plan.name, plan, ws)
        (tmp / "README.md").write_text(readme_text(ws, plans, Path(output), command))
        marker = {"made_by": "resnet-export triton", "command": command, "workspace": str(ws.dir), "created": now()}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return plans


def _write_model(folder: Path, plan: ModelPlan, ws: Workspace) -> None:
    version = folder / VERSION
    version.mkdir(parents=True)
    target = version / plan.filename
    shutil.copyfile(plan.source, target)
    if sha256_file(target) != plan.entry["sha256"]:  # replaced by another command between the check and the copy
        raise VerificationError(f"{plan.source} changed while it was copied", "run resnet-export triton again")
    if plan.python:
        shutil.copyfile(MODEL_PY, version / "model.py")
    (folder / "config.pbtxt").write_text(config_text(plan))
    (folder / RECORD).write_text(json.dumps(record(plan, ws), indent=2) + "\n")
    if plan.classes:
        (folder / LABELS).write_text("".join(f"{c}\n" for c in plan.classes))


def readme_text(ws: Workspace, plans: list[ModelPlan], output: Path, command: str | None) -> str:
    """The repository's README: how to serve it, what each model is, what a client must send."""
    lines = [
        f"# Triton model repository: {ws.name}",
        "",
        f"Written by `{command or 'resnet-export triton'}` from `{ws.manifest_path}` ({now()}).",
        "",
        *_start_section(ws, plans, output),
        "## Models",
        "",
        "| model | artifact | backend | precision | input (batch from 1) | max batch | preferred batches | instances |",
        "|---|---|---|---|---|---:|---|---|",
    ]
    for p in plans:
        dims = "x".join("H" if d == -1 and i == 1 else "W" if d == -1 else str(d) for i, d in enumerate(p.dims))
        where = f"{p.instances} x {'GPU' if p.gpu else 'CPU'}"
        backend = f"python ({p.runtime})" if p.python else p.backend
        lines.append(f"| `{p.name}` | {p.key} ({p.source.name}) | {backend} | {p.precision} | `{p.input_name}` "
                     f"Nx{dims} FP32 -> `{p.output_name}` {p.num_classes} | {p.max_batch} | "
                     f"{', '.join(map(str, p.preferred)) or '-'} | {where} |")  # fmt: skip
    lines += ["", *_engine_notes(plans), *_preprocess_section(ws, plans)]
    return "\n".join(lines) + "\n"


def _start_section(ws: Workspace, plans: list[ModelPlan], output: Path) -> list[str]:
    python = [p for p in plans if p.python]
    standard = [p for p in plans if not p.python]
    lines = ["## Start the server", ""]
    if standard:
        lines += [
            "Standard backends (onnxruntime_onnx, tensorrt_plan, pytorch_libtorch) come with NVIDIA's Triton container:",
            "",
            f'    docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -v "$PWD/{output.name}:/models" \\',
            "        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models",
            "",
        ]
    if python:
        lines += [
            "Python-backend models run resnet-deploy's own runtime inside Triton's Python backend, with the Python",
            "that is first on PATH: put the environment holding resnet-deploy (and onnxruntime/torch) there:",
            "",
            f"    PATH={Path(sys.prefix) / 'bin'}:$PATH tritonserver --model-repository {output}",
            "",
            "or, without a Triton install, the tritonserver of the nvidia-pytriton wheel (Python backend only):",
            "",
            "    pip install --no-deps --no-compile --target ~/.cache/resnet-deploy/tritonserver nvidia-pytriton==0.7.0",
            f"    python -m resnet_deploy.serve.server --model-repository {output}",
            "",
        ]
    name = plans[0].name
    lines += [
        "Then check parity against PyTorch and load-test it (HTTP on 8000, gRPC on 8001):",
        "",
        f"    resnet-bench triton {ws.name} --workspace {ws.root} --url 127.0.0.1:8000 --model {name} --gate",
        "",
    ]
    return lines


def _engine_notes(plans: list[ModelPlan]) -> list[str]:
    """A plan loads only in a TensorRT of the version it was built with, on a GPU of its compute capability."""
    lines = []
    for p in plans:
        if p.format == "engine":
            e = p.entry
            lines.append(
                f"- `{p.name}` is a TensorRT {e.get('tensorrt_version')} plan built on {e.get('gpu_name')} (compute "
                f"capability {e.get('compute_capability')}): it loads only in a Triton whose TensorRT is "
                f"{e.get('tensorrt_version')}, on a GPU of compute capability {e.get('compute_capability')}; "
                "elsewhere rebuild it there (resnet-export trt) and write the repository again."
            )
    return [*lines, ""] if lines else []


def _preprocess_section(ws: Workspace, plans: list[ModelPlan]) -> list[str]:
    pre = plans[0].preprocess
    lines = [
        "## What a client sends",
        "",
        f"NCHW float32 RGB, preprocessed as the models were exported and verified ({ws.manifest_path.name}): resize "
        f"the shorter side to {pre.get('resize')}, center-crop {pre.get('crop')}x{pre.get('crop')}, scale to [0, 1], "
        f"normalize with mean {pre.get('mean')} and std {pre.get('std')} "
        "(`resnet_deploy.preprocess.Preprocess`). The output is the logits, one per class.",
    ]
    if plans[0].classes:
        lines += ["", f"`{LABELS}` in each model folder names the {plans[0].num_classes} classes in logit order."]
    return lines
