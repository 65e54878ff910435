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
from resnet_deploy.preprocess import load_folder
from resnet_deploy.runtimes import Runtime, create
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
