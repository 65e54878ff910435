"""Shared fixtures: a trained small ResNet on real photos, and skips for GPU/TensorRT tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.tampering import tampered_onnx
from tests.trained import TrainedModel, build


@pytest.fixture(scope="session")
def trained() -> TrainedModel:
    return build()


@pytest.fixture(scope="session")
def tampered(trained, tmp_path_factory) -> dict[str, Path]:
    """ONNX exports of the broken copies in tests/tampering.py: {'swapped', 'perturbed', 'bgr'} -> path."""
    return tampered_onnx(trained, tmp_path_factory.getbasetemp() / "tampered")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = _has_cuda()
    trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        # markers, not item.keywords: keywords also hold parameter ids (a "tensorrt" INT8 recipe, say)
        if item.get_closest_marker("gpu") and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU visible to torch"))
        if item.get_closest_marker("tensorrt") and not (trt and cuda):
            missing = "TensorRT" if not trt else "a CUDA GPU"
            item.add_marker(pytest.mark.skip(reason=f"needs TensorRT and a CUDA GPU ({missing} not found)"))
