"""A model plus its workspace: make each artifact once, verify it, record it, reuse it while fresh.

The one orchestrator. The stages below it (export/, int8/, engines/) only write files; `verify.py` only
judges them; this decides what each artifact is made from (its fingerprint), whether the recorded one is still
fresh, and in which order things happen: write to a temp file, verify, move into place, record. The CLIs and
`resnet-bench compare` go through here, so "export", "find in the workspace" and "rebuild when stale" behave
the same whichever command asked.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.markup import escape

from resnet_deploy import console, verify
from resnet_deploy.artifact import Artifact
from resnet_deploy.devices import Device
from resnet_deploy.errors import UsageError, check_interrupted
from resnet_deploy.export.aoti import check_request, compile_settings, export_aoti
from resnet_deploy.export.fp16 import convert_fp16
from resnet_deploy.export.onnx import DEFAULT_OPSET, export_onnx
from resnet_deploy.export.program import export_program
from resnet_deploy.export.torchscript import CUDNN_SETTINGS, export_torchscript
from resnet_deploy.files import check_writable, sha256_file, sha256_json, temp_beside
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.models import resolve_architecture
from resnet_deploy.pipeline.engines import build_engine
from resnet_deploy.pipeline.int8 import build_int8
from resnet_deploy.pipeline.opening import open_model
from resnet_deploy.pipeline.options import DEFAULT_WORKSPACE, ModelOptions, ShapeRequest
from resnet_deploy.pipeline.step import Step
from resnet_deploy.preprocess import ImageSet
from resnet_deploy.provenance import compiled_for, cpu_vector_flags, tool_versions, torch_version
from resnet_deploy.shapes import ShapeRange, make_range
from resnet_deploy.workspace import Workspace

#: Inductor's cache inside the workspace: the kernels an AOTInductor build compiled, reused by the next one
INDUCTOR_CACHE = ".inductor-cache"


def aoti_key(device: str | Device, fp16: bool = False) -> str:
    """The manifest key of an AOTInductor package: `aoti-cpu`, `aoti-cuda`, `aoti-cuda-fp16`."""
    return "-".join(["aoti", Device.parse(device).kind, *(["fp16"] if fp16 else [])])


class Pipeline:
    def __init__(
        self,
        options: ModelOptions,
        workspace: Path = DEFAULT_WORKSPACE,
        name: str | None = None,
        shapes: ShapeRequest | ShapeRange | None = None,
        dynamic_default: bool = True,
        new_workspace_shapes: ShapeRequest | None = None,
    ) -> None:
        """`shapes=None`: the range this workspace recorded last, else `new_workspace_shapes`, else the default
        range (dynamic, or static at the crop size with `dynamic_default=False`)."""
        arch = resolve_architecture(options.architecture)
        self.ws = Workspace(workspace, name or arch)
        self._writable_checked = False
        opened = open_model(options, self.ws, arch)
        self.options, self.model, self.source = opened.options, opened.model, opened.source
        self.preprocess, self.notes = opened.preprocess, opened.notes
        self._checked: dict[str, dict[str, Any]] = {}  # artifact key -> fingerprint verified this run
        self.ws.set_source(self.source.to_dict(), self.preprocess.to_dict())
        self.set_range(self._initial_range(shapes, new_workspace_shapes, dynamic_default))

    def _initial_range(
        self, shapes: ShapeRequest | ShapeRange | None, if_new: ShapeRequest | None, dynamic_default: bool
    ) -> ShapeRange:
        if isinstance(shapes, ShapeRequest):
            return shapes.resolve(self.preprocess.crop)
        if isinstance(shapes, ShapeRange):
            return shapes
        recorded = self.ws.manifest.get("input")
        if recorded:
            return ShapeRange.from_dict(recorded)
        if if_new is not None:
            return if_new.resolve(self.preprocess.crop)
        return make_range(dynamic_default, self.preprocess.crop)

    def set_range(self, shape_range: ShapeRange) -> None:
        """The input range every artifact built from now on is exported and verified for.

        Saved with the next artifact recorded, not now: a command that fails must not change what the
        next one takes as the workspace's range.
        """
        self.shape_range = shape_range
        self.ws.manifest["input"] = {
            "name": "input",
            "layout": "NCHW",
            "dims": ["batch", 3, "height", "width"] if shape_range.dynamic else list(shape_range.opt),
            **shape_range.to_dict(),
        }

    # -- identity -------------------------------------------------------------------------------

    def model_hash(self) -> str:
        return sha256_json(self.source.fingerprint())

    def fingerprint(self, **extra: Any) -> dict[str, Any]:
        """What every artifact of this model depends on, plus the artifact's own inputs."""
        return {"model": self.source.fingerprint(), "input": self.shape_range.to_dict(), **extra}

    def reference(self) -> Artifact:
        """The PyTorch FP32 eager model: the reference every artifact is compared against."""
        return Artifact.reference(self.model)

    # -- building -------------------------------------------------------------------------------

    def build(self, step: Step) -> Artifact:
        """Reuse `step.key` if fresh; else write to a temp file, check it, and only then move it in place.

        A failed write or check leaves nothing behind (and the previous file, if any, untouched). What `write`
        returns (what calibration saw, the engine builder's settings) goes into the record, under `check`'s
        details and `info`, so the entry is written once, complete.
        """
        key, fingerprint = step.key, step.fingerprint
        if self._checked.get(key) == fingerprint:
            return self.artifact(key)  # already built or checked by this run: skip re-hashing the file
        stale = self.ws.why_stale(key, fingerprint)
        if stale is None:
            self._checked[key] = fingerprint
            console.info(
                f"[dim]reusing {escape(str(self.ws.dir / self.ws.artifacts[key]['path']))} (inputs unchanged)[/]"
            )
            return self.artifact(key)
        if key in self.ws.artifacts:
            console.info(f"[dim]{key} is stale ({stale}): rebuilding[/]")
        if not self._writable_checked:  # before the first artifact: reading a workspace needs no write access
            check_writable(self.ws.root)
            self._writable_checked = True
        target = self.ws.path(step.filename)
        if target.is_dir() and not target.is_symlink():  # replacing it would lose what is in it: said, before the work
            raise UsageError(f"{target} is a folder, where {key} is to be written", "move it out of the workspace")
        with self.ws.scratch(), temp_beside(target) as tmp:
            with console.step(f"export {key} -> {target}"):
                try:
                    written = step.write(tmp) or {}
                except OSError as exc:  # a full disk, say: named by the artifact, not by its temp file
                    exc.filename = str(target)
                    raise
            check_interrupted()
            details = step.check(Artifact(step.format, tmp, step.precision, self.shape_range, key, name=target.name))
            check_interrupted()
            self._record(step, target, tmp, written, details)
        self._checked[key] = fingerprint
        return self.artifact(key)

    def _record(self, step: Step, target: Path, tmp: Path, written: dict[str, Any], details: dict[str, Any]) -> None:
        """The entry for the file at `tmp`, recorded, and the file moved to `target` (the workspace does both
        under its lock, recording first: never an artifact in place that the manifest does not describe)."""
        fields = {
            **written,
            "format": step.format,
            "precision": step.precision,
            "model_sha256": self.model_hash(),
            "input": self.shape_range.to_dict(),
            "tools": tool_versions(),
            **details,
            **step.info,
        }
        self.ws.record(step.key, target, step.fingerprint, sha256_file(tmp), written=tmp, **fields)

    def verified_against_model(
        self, runtime_name: str, max_rel_l2: float = verify.FP32_REL_L2, device: str = "cpu"
    ) -> Callable[[Artifact], dict[str, Any]]:
        """A `check` for `build`: run the artifact at min/opt/max/odd shapes against PyTorch (on `device`: where
        an artifact compiled for a GPU runs)."""

        def check(artifact: Artifact) -> dict[str, Any]:
            shapes = self.shape_range.verification_shapes()
            return verify.check_artifact(self.model, runtime_name, artifact, shapes, max_rel_l2, device)

        return check

    def onnx(self, opset: int | None = None) -> Artifact:
        """The FP32 ONNX (`onnx-fp32`), verified on ONNX Runtime's CPU provider."""
        opset = opset or DEFAULT_OPSET
        return self.build(
            Step(
                "onnx-fp32",
                f"{self.ws.name}.onnx",
                "onnx",
                "fp32",
                self.fingerprint(format="onnx", opset=opset),
                lambda p: export_onnx(self.model, p, self.shape_range, opset),
                self.verified_against_model("onnxruntime-cpu"),
            )
        )

    def torchscript(self) -> Artifact:
        """The traced TorchScript file (`torchscript`); its cuDNN settings are part of what it is made from."""
        with warnings.catch_warnings():  # TorchScript's deprecation notice: it is still asked for
            warnings.simplefilter("ignore", FutureWarning)
            return self.build(
                Step(
                    "torchscript",
                    f"{self.ws.name}.ts",
                    "torchscript",
                    "fp32",
                    self.fingerprint(format="torchscript", cudnn=CUDNN_SETTINGS),  # a trace keeps them
                    lambda p: export_torchscript(self.model, p, self.shape_range),
                    self.verified_against_model("torchscript"),
                )
            )

    def program(self) -> Artifact:
        """The torch.export program (`program`, .pt2), tied to the torch that wrote it."""
        return self.build(
            Step(
                "program",
                f"{self.ws.name}.pt2",
                "program",
                "fp32",
                self.fingerprint(format="program", torch=torch_version()),
                lambda p: export_program(self.model, p, self.shape_range),
                self.verified_against_model("torch-export"),
            )
        )

    def aoti(self, device: str = "cpu", fp16: bool = False) -> Artifact:
        """The AOTInductor package (`aoti-cpu`, `aoti-cuda`, `aoti-cuda-fp16`), compiled for this torch and, on
        CUDA, this GPU (both in what it is made from: another one makes it stale), verified on `device`;
        Inductor's cache is kept in the workspace, so a rebuild reuses what it compiled."""
        dev = check_request(device, fp16)
        precision = "fp16" if fp16 else "fp32"
        key = aoti_key(dev, fp16)
        made_for = {k: v for k, v in compiled_for(dev).items() if v is not None}
        if not dev.is_cuda:  # the vector instructions its kernels may use: another CPU may lack them
            made_for["cpu_flags"] = cpu_vector_flags()
        return self.build(
            Step(
                key,
                f"{self.ws.name}.{key}.pt2",
                "aoti",
                precision,
                self.fingerprint(format="aoti", precision=precision, inductor=compile_settings(dev), **made_for),
                lambda p: export_aoti(self.model, p, self.shape_range, dev, fp16, self.ws.dir / INDUCTOR_CACHE),
                self.verified_against_model("torch-aoti", verify.FP16_REL_L2 if fp16 else verify.FP32_REL_L2, dev),
            )
        )

    def fp16(self, opset: int | None = None) -> Artifact:
        """The FP16 ONNX (`onnx-fp16`), made from the FP32 ONNX and verified on ONNX Runtime's CPU provider
        against PyTorch at the shapes of the model's range."""
        opset = opset or DEFAULT_OPSET
        fp32 = self.onnx(opset)
        fingerprint = self.fingerprint(
            format="onnx", precision="fp16", opset=opset, source_sha256=self.ws.sha256(fp32.path)
        )
        return self.build(
            Step(
                "onnx-fp16",
                f"{self.ws.name}.fp16.onnx",
                "onnx",
                "fp16",
                fingerprint,
                lambda tmp: convert_fp16(fp32.path, tmp),
                self.verified_against_model("onnxruntime-cpu", verify.FP16_REL_L2),
                {"opset": opset},
            )
        )

    def int8(self, request: CalibrationRequest, opset: int | None = None, images: ImageSet | None = None) -> Artifact:
        """The INT8 Q/DQ ONNX of `request`'s target (`onnx-int8-TARGET`), calibrated on its images (`images`: those
        already loaded, as the default set does for its two recipes); see `pipeline/int8.py`."""
        return build_int8(self, request, opset, images)

    def engine(self, precision: str = "fp32", calibration: CalibrationRequest | None = None, **build: Any) -> Artifact:
        """The TensorRT engine of the workspace's ONNX for `precision` (`tensorrt-PRECISION`), exporting that
        ONNX first if needed; `build`: profile shapes, workspace size, timing cache, device (`pipeline/engines.py`)."""
        return build_engine(self, precision, calibration, **build)

    # -- reading the workspace ------------------------------------------------------------------

    def artifact(self, key: str) -> Artifact:
        """The artifact this workspace records under `key` (`Workspace.artifact`)."""
        return self.ws.artifact(key)

    def why_unusable(self, key: str) -> str | None:
        """Why the artifact recorded under `key` cannot stand for this model, or None when it can: made from
        other weights, its file missing, or its file changed since it was built (another model's export
        copied over it, the FP16 file renamed to the FP32 one): then the record (weights, precision, input
        range) no longer describes the file, and numbers that happen to pass would vouch for an unknown file."""
        entry = self.ws.artifacts[key]
        path = self.ws.dir / entry["path"]
        if entry.get("model_sha256") != self.model_hash():
            made = ((entry.get("inputs") or {}).get("model") or {}).get("weights_sha256")
            now = self.source.weights_sha256
            hashes = f" (sha256 {made[:12]}, not {now[:12]})" if made and now else ""
            return (
                f"made from other weights than {self.options.weights}{hashes}: re-export it from these weights, "
                f"or delete it from {self.ws.dir}"
            )
        state = self.ws.file_state(key)
        if state == "missing":
            return f"{path} is missing: re-export it"
        if state == "modified":
            return (
                f"the file was modified since it was built (its sha256 no longer matches "
                f"{self.ws.manifest_path.name}), so the record of what it was made from no longer describes it: "
                "re-export it"
            )
        return f"{state}: re-export it, or delete its entry from {self.ws.manifest_path}" if state else None

    def workspace_artifacts(self) -> list[tuple[Artifact, str | None]]:
        """Every artifact this workspace records, with why it cannot stand for this model (None: it can)."""
        return [(self.artifact(key), self.why_unusable(key)) for key in self.ws.artifacts]

    def current_artifacts(self) -> list[Artifact]:
        """Artifacts made from this very model whose files are intact (`why_unusable` says of the others)."""
        return [art for art, why in self.workspace_artifacts() if why is None]
