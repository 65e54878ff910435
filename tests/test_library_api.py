"""resnet-deploy used as a library, as a service or CI script embeds it: open artifacts through the runtime
registry, feed them images from `preprocess`, and get one-line errors (the project's own classes) for the
mistakes a caller makes by accident, not a numpy, ONNX Runtime or torch error from deep inside.

Real files run by ONNX Runtime and torch on the bundled photos; nothing is mocked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_deploy.errors import UsageError
from resnet_deploy.parity import DEFAULT_TOLERANCES, check, compare
from resnet_deploy.preprocess import load_folder
from resnet_deploy.runtimes import Artifact, Runtime, create
from resnet_deploy.workspace import Workspace
from tests.trained import PHOTOS

RUNTIMES = ["onnxruntime-cpu", "torchscript", "torch-eager"]


@pytest.fixture(scope="module")
def pipe(trained, tmp_path_factory):
    pipe = trained.pipeline(tmp_path_factory.mktemp("library-api"))
    pipe.onnx()
    pipe.torchscript()
    return pipe


@pytest.fixture(scope="module")
def images(trained) -> np.ndarray:
    return load_folder(PHOTOS, trained.preprocess, limit=4).tensors


def _open(pipe, name: str) -> Runtime:
    art = pipe.reference() if name == "torch-eager" else pipe.artifact("onnx-fp32" if "onnx" in name else name)
    return create(name, art)


@pytest.mark.parametrize("name", RUNTIMES)
def test_integer_pixels_are_refused_not_cast_to_garbage_logits(pipe, images, name) -> None:
    """uint8 pixels (0..255, not normalized) cast to float32 give logits that look like logits: refused."""
    runtime = _open(pipe, name)
    pixels = np.clip(images * 60 + 120, 0, 255).astype(np.uint8)
    with pytest.raises(UsageError, match=r"input is uint8, not float32.*preprocess"):
        runtime.run(pixels)
    with pytest.raises(UsageError, match=r"input is uint8"):
        runtime.run_device(torch.from_numpy(pixels))
    # floating inputs of another width are the same numbers: cast, and the same logits
    np.testing.assert_allclose(runtime.run(images.astype(np.float64)), runtime.run(images), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_list_is_refused_as_not_an_array(pipe, images, name) -> None:
    runtime = _open(pipe, name)
    with pytest.raises(UsageError, match=r"input is a list, not an array"):
        runtime.run(images.tolist())


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_runtime_is_a_context_manager_and_a_closed_one_says_so(pipe, images, name) -> None:
    """`with` frees the session or module on exit; running it afterwards names the problem, instead of
    "'NoneType' object has no attribute 'run'" or a torch runtime blaming the input's shape."""
    with _open(pipe, name) as runtime:
        assert runtime.run(images).shape == (len(images), pipe.source.num_classes)
    assert runtime.closed
    with pytest.raises(UsageError, match=r"is closed \(create a new runtime"):
        runtime.run(images)
    with pytest.raises(UsageError, match=r"is closed"):
        runtime.run_device(torch.from_numpy(images))
    runtime.close()  # a second close is harmless


@pytest.mark.parametrize("name", RUNTIMES)
def test_run_device_gives_the_same_logits_as_run_on_the_runtimes_device(pipe, images, name) -> None:
    """The device-resident path is the one GPU timings use: torch tensor in, float32 logits out on the runtime's
    device, the same numbers `run` gives (test_gpu.py holds the CUDA side of this)."""
    with _open(pipe, name) as runtime:
        out = runtime.run_device(torch.from_numpy(images).double())
        assert out.device.type == "cpu" and out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), runtime.run(images), rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:x", ""])
def test_a_misspelled_device_is_a_usage_error_not_a_missing_package(pipe, device) -> None:
    """'gpu' was "onnxruntime-cpu does not run on gpu (pip install onnxruntime)": exit 3 and the wrong fix."""
    with pytest.raises(UsageError, match=r"unknown device"):
        create("onnxruntime-cpu", pipe.artifact("onnx-fp32"), device)


def test_device_case_and_spacing_do_not_matter(pipe, images) -> None:
    with create("onnxruntime-cpu", pipe.artifact("onnx-fp32"), " CPU ") as runtime:
        assert runtime.device == "cpu" and runtime.run(images).shape[0] == len(images)


def test_a_runtime_on_a_device_it_does_not_run_on_names_the_one_that_does(pipe) -> None:
    with pytest.raises(UsageError, match=r"onnxruntime-cpu runs on cpu, not cuda \(on cuda, use onnxruntime-cuda"):
        create("onnxruntime-cpu", pipe.artifact("onnx-fp32"), "cuda")


def test_an_artifact_of_another_format_names_the_runtime_that_runs_it(pipe) -> None:
    """An ONNX handed to the TorchScript runtime was "PytorchStreamReader failed ... (a .pt that holds weights
    is a checkpoint)"; the model handed to ONNX Runtime was "Load model from None failed"."""
    with pytest.raises(UsageError, match=r"torchscript runs torchscript artifacts, not onnx .*use onnxruntime-cpu"):
        create("torchscript", pipe.artifact("onnx-fp32"))
    with pytest.raises(UsageError, match=r"onnxruntime-cpu runs onnx artifacts, not pytorch \(use torch-eager\)"):
        create("onnxruntime-cpu", pipe.reference())


@pytest.mark.parametrize(("fmt", "name"), [("onnx", "onnxruntime-cpu"), ("program", "torch-export")])
def test_a_missing_file_is_named_before_the_backend_reads_it(tmp_path, capfd, fmt, name) -> None:
    """torch.export logged a traceback on stderr for a missing .pt2 before its error."""
    with pytest.raises(UsageError, match=r"artifact .*missing\.x does not exist"):
        create(name, Artifact(fmt, tmp_path / "missing.x"))
    assert "Traceback" not in capfd.readouterr().err


def test_an_artifact_path_may_be_a_string(pipe, images) -> None:
    art = pipe.artifact("onnx-fp32")
    with create("onnxruntime-cpu", Artifact("onnx", str(art.path))) as runtime:
        assert runtime.describe().startswith(art.path.name)
        assert runtime.run(images).shape[0] == len(images)


def test_a_workspace_opens_its_artifacts_and_preprocessing_without_loading_the_model(pipe, trained) -> None:
    """What a service does with what resnet-export wrote: read the manifest, preprocess as it says, run."""
    ws = Workspace(pipe.ws.root, pipe.ws.name)  # a reader of its own, from the manifest on disk
    pre = ws.preprocess()
    assert pre == trained.preprocess
    images = load_folder(PHOTOS, pre).tensors
    art = ws.artifact("onnx-fp32")
    assert (art.format, art.precision, art.input_range) == ("onnx", "fp32", pipe.shape_range)
    with create("onnxruntime-cpu", art) as runtime:
        logits = runtime.run(images)
    with create("torch-eager", pipe.reference()) as reference:
        metrics = compare(reference.run(images), logits)
    assert check(metrics, DEFAULT_TOLERANCES["fp32"]) == [] and metrics.count == len(images)


def test_a_workspace_names_what_it_lacks(pipe, tmp_path) -> None:
    ws = Workspace(pipe.ws.root, pipe.ws.name)
    with pytest.raises(UsageError, match=r"records no artifact 'onnx-int8-cpu' \(it has: onnx-fp32, torchscript\)"):
        ws.artifact("onnx-int8-cpu")
    with pytest.raises(UsageError, match=r"records no artifact"):
        pipe.artifact("onnx-int8-cpu")  # was a KeyError
    nowhere = Workspace(tmp_path, "resnet18")
    for read in (lambda: nowhere.artifact("onnx-fp32"), nowhere.preprocess):
        with pytest.raises(UsageError, match=r"no workspace at .*resnet18 \(no manifest.json\)"):
            read()
    assert not (tmp_path / "resnet18").exists()


def test_one_images_logits_are_compared_as_one_image(pipe, images) -> None:
    """compare(ref[0], out[0]) read a (classes,) vector as `classes` images of one logit: top-1 and top-5
    agreement 100% whatever the values, here for two photos the trained model tells apart (which two depends on
    how training went on this machine's torch: the first photo and the first one predicted otherwise)."""
    with create("onnxruntime-cpu", pipe.artifact("onnx-fp32")) as runtime:
        logits = runtime.run(images)
    top1 = logits.argmax(axis=1)
    differ = [j for j in range(1, len(top1)) if top1[j] != top1[0]]
    assert differ, f"the trained model gives every photo class {top1[0]}: it has learned nothing"
    other = compare(logits[0], logits[differ[0]])
    assert (other.count, other.top1_agreement) == (1, 0.0)
    same = compare(logits[0], logits[0])
    assert (same.count, same.top1_agreement, same.rel_l2) == (1, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"no logits to compare"):
        compare(logits[:0], logits[:0])


def test_a_misspelled_runtime_option_is_refused_not_ignored(pipe) -> None:
    """Every backend takes **_ so the CLI can pass one set of options: thread=2 ran on the default threads."""
    with pytest.raises(
        UsageError, match=r"onnxruntime-cpu takes no option thread \(its options: name, prefer_nhwc, threads\)"
    ):
        create("onnxruntime-cpu", pipe.artifact("onnx-fp32"), thread=2)
    with pytest.raises(UsageError, match=r"torchscript takes no option precision"):
        create("torchscript", pipe.artifact("torchscript"), precision="fp16")
    with create("onnxruntime-cpu", pipe.artifact("onnx-fp32"), threads=1) as runtime:
        assert runtime.threads == 1
