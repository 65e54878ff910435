"""A Triton Python-backend model that runs one resnet-deploy artifact with resnet-deploy's own runtime.

`resnet-export triton --backend python` copies this file to `<model>/1/model.py`, beside the artifact, and
writes `<model>/resnet_deploy.json` (repository.py's `record`): which file, format and precision, the runtime
to run it with (`resnet_deploy.runtimes.create`: ONNX Runtime, TorchScript, torch.export, TensorRT), its input
range, and the folder holding the resnet_deploy package that wrote it. It runs in Triton's Python-backend stub,
never imported by the package: the stub's Python is isolated (PYTHONPATH is ignored), so that folder is put
first on sys.path here, and the model runs the code that wrote the repository.

Tensors cross the stub by DLPack under numpy 2: the stub of tritonserver 2.51 (nvidia-pytriton 0.7.0) predates
numpy 2, and its `as_numpy()` then returns silently wrong data (zero strides) and `Tensor(name, ndarray)` an
empty tensor. Under numpy 1 the classic calls work (and DLPack of a numpy-1 array breaks that stub).
"""

import json
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_RECORD = json.loads((_HERE.parent / "resnet_deploy.json").read_text())
if _RECORD["python_path"] not in sys.path:
    sys.path.insert(0, _RECORD["python_path"])

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from resnet_deploy.artifact import Artifact  # noqa: E402
from resnet_deploy.errors import DeployError, first_line  # noqa: E402
from resnet_deploy.runtimes import create  # noqa: E402
from resnet_deploy.shapes import ShapeRange  # noqa: E402

NUMPY2 = int(np.__version__.split(".")[0]) >= 2


def to_numpy(tensor):
    return np.from_dlpack(tensor) if NUMPY2 else tensor.as_numpy()


def to_tensor(name, array):
    array = np.ascontiguousarray(array, dtype=np.float32)
    return pb_utils.Tensor.from_dlpack(name, array) if NUMPY2 else pb_utils.Tensor(name, array)


def _quiet_dlpack_capsules(hook=sys.unraisablehook):
    """The stub renames a consumed DLPack capsule 'used_dlpack' (the spec says 'used_dltensor'), so numpy 2's
    capsule destructor reports 'PyCapsule_GetPointer called with incorrect name' for every output: a traceback in
    the server log per response, about nothing. Exactly those are dropped; anything else reaches the hook."""

    def filtered(unraisable):
        text = str(unraisable.exc_value)
        if isinstance(unraisable.exc_value, ValueError) and "PyCapsule_GetPointer called with incorrect name" in text:
            return
        hook(unraisable)

    sys.unraisablehook = filtered


class TritonPythonModel:
    """One runtime per model instance, on the instance's device; requests of one shape run as one batch."""

    def initialize(self, args):
        if NUMPY2:
            _quiet_dlpack_capsules()
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args.get('model_instance_device_id', 0)}" if gpu else "cpu"
        self.range = rng = ShapeRange.from_dict(_RECORD["input"])
        artifact = Artifact(_RECORD["format"], _HERE / Path(_RECORD["file"]).name, _RECORD["precision"], rng,
                            _RECORD["artifact"], _RECORD.get("entry") or {})  # fmt: skip
        self.runtime = create(_RECORD["runtime"], artifact, device)
        pb_utils.Logger.log_info(
            f"{args['model_name']}: {artifact.label} on {self.runtime.name} ({device}), resnet_deploy from "
            f"{_RECORD['python_path']}, python {sys.version.split()[0]}, numpy {np.__version__}"
        )

    def _input(self, request):
        """The request's batch, or the error that refuses it: a shape outside the range the artifact was exported
        and verified for (the config's -1 dims let Triton pass any size)."""
        tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
        if tensor is None:
            return None, pb_utils.TritonError(f"missing input '{self.input_name}'", pb_utils.TritonError.INVALID_ARG)
        x = np.ascontiguousarray(to_numpy(tensor), dtype=np.float32)
        try:
            self.range.check(x.shape, _RECORD["artifact"])
        except DeployError as exc:
            return None, pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
        return x, None

    def execute(self, requests):
        inputs, errors = [], {}
        for i, request in enumerate(requests):
            x, error = self._input(request)
            inputs.append(x)
            if error is not None:
                errors[i] = error
        outputs = {}
        groups = {}
        for i, x in enumerate(inputs):
            if x is not None:
                groups.setdefault(x.shape[1:], []).append(i)
        for members in groups.values():  # one run per shape (dynamic batching), split back per request
            try:
                logits = self.runtime.run(np.concatenate([inputs[i] for i in members]))
            except DeployError as exc:  # a shape outside the artifact's range, say: the caller's to fix
                for i in members:
                    errors[i] = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                continue
            except Exception as exc:
                for i in members:
                    errors[i] = pb_utils.TritonError(first_line(exc, 300, named=True), pb_utils.TritonError.INTERNAL)
                continue
            start = 0
            for i in members:
                outputs[i] = logits[start : start + len(inputs[i])]
                start += len(inputs[i])
        return [
            pb_utils.InferenceResponse(output_tensors=[], error=errors[i])
            if i in errors
            else pb_utils.InferenceResponse(output_tensors=[to_tensor(self.output_name, outputs[i])])
            for i in range(len(requests))
        ]

    def finalize(self):
        self.runtime.close()
