"""Measure the parity metrics that `parity.DEFAULT_TOLERANCES` are derived from.

The small trained model of the test suite (tests/trained.py: resnet18 trained on crops of the bundled
photos, 64x64 input, 11 classes), its held-out crops as parity images, and these artifacts:
- FP32: ONNX (ONNX Runtime CPU), TorchScript, torch.export;
- FP16: the pipeline's FP16 ONNX (export/fp16.py; FP32 inputs/outputs kept);
- INT8: the pipeline's INT8 ONNX (int8/quantize.py) on the calibration crops, both recipes: `tensorrt`
  (symmetric int8 Q/DQ) and `cpu` (uint8 activations).
Prints every metric; writes benchmarks/results/parity_tolerances.json.

    python benchmarks/measure_parity_tolerances.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    import torch
    from tests.trained import build

    from resnet_deploy.int8.dataset import CalibrationRequest
    from resnet_deploy.parity import compare
    from resnet_deploy.preprocess import load_folder
    from resnet_deploy.runtimes import Artifact, create

    t = build()
    torch.set_num_threads(2)
    held = load_folder(t.heldout_dir, t.preprocess)
    model = t.model.eval()
    with torch.inference_mode():
        ref = model(torch.from_numpy(held.tensors)).numpy()
    results: dict[str, dict] = {}

    def record(name: str, precision: str, runtime_name: str, artifact: Artifact) -> None:
        rt = create(runtime_name, artifact, "cpu", threads=2)
        out = np.concatenate([rt.run(held.tensors[i : i + 4]) for i in range(0, len(held), 4)])
        m = compare(ref, out)
        results[name] = {"precision": precision, **m.to_dict()}
        print(
            f"{name:28s} {precision}  rel_l2 {m.rel_l2:.2e}  max_abs {m.max_abs:.2e}  cosine {m.cosine:.7f} "
            f"(min {m.min_cosine:.7f})  top1 {m.top1_agreement:.4f}  top5 {m.top5_overlap:.4f}"
        )

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        pipe = t.pipeline(ws)
        fp32 = pipe.onnx()
        record("onnx fp32 / ORT CPU", "fp32", "onnxruntime-cpu", fp32)
        record("torchscript fp32", "fp32", "torchscript", pipe.torchscript())
        record("torch.export fp32", "fp32", "torch-export", pipe.program())

        record("onnx fp16 / ORT CPU", "fp16", "onnxruntime-cpu", pipe.fp16())
        for target in ("tensorrt", "cpu"):
            record(
                f"onnx int8 {target} / ORT",
                "int8",
                "onnxruntime-cpu",
                pipe.int8(CalibrationRequest(t.calib_dir, target=target)),
            )

    out = REPO / "benchmarks" / "results" / "parity_tolerances.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": len(held), "model": "tests/trained.py resnet18", **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
