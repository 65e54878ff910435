"""Deliberately broken copies of the trained model, for the gate and --explain tests.

Two classes swapped in `fc`, every weight perturbed by 1% of its spread, and a BGR channel flip baked
in front of the network: the mistakes a parity gate exists to catch. Exported to ONNX once per session
(the `tampered` fixture in conftest.py).
"""

from __future__ import annotations

import copy
from pathlib import Path


def swapped_classes(model, a: int = 0, b: int = 1):
    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        idx = torch.arange(m.fc.out_features)
        idx[a], idx[b] = b, a
        m.fc.weight.copy_(m.fc.weight[idx])
        m.fc.bias.copy_(m.fc.bias[idx])
    return m.eval()


def perturbed(model, scale: float = 0.01, seed: int = 0):
    """Every parameter plus noise of `scale` times its own standard deviation: slight, everywhere."""
    import torch

    m = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            spread = p.std() if p.numel() > 1 else p.abs()
            p.add_(torch.randn(p.shape, generator=gen) * spread * scale)
    return m.eval()


def bgr(model):
    """The network fed BGR instead of RGB: a preprocessing bug baked into the artifact."""
    import torch

    class FlipChannels(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.flip(1))

    return FlipChannels(copy.deepcopy(model)).eval()


TAMPERS = {"swapped": swapped_classes, "perturbed": perturbed, "bgr": bgr}


def tampered_onnx(trained, folder: Path) -> dict[str, Path]:
    """{'swapped': .../swapped.onnx, 'perturbed': ..., 'bgr': ...}: each broken copy exported to ONNX."""
    from resnet_deploy.export.onnx import export_onnx
    from resnet_deploy.shapes import make_range

    folder.mkdir(parents=True, exist_ok=True)
    model = trained.model
    rng = make_range(True, trained.crop)
    out = {}
    for name, tamper in TAMPERS.items():
        out[name] = folder / f"{name}.onnx"
        export_onnx(tamper(model), out[name], rng)
    return out
