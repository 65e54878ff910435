"""The calibration cache: activation ranges stored beside the model, keyed by everything they depend on.

The key is the FP32 ONNX's sha256, the calibration set's hash (the preprocessed pixels actually used,
so it covers the files, the choice of `--calib-size` and the preprocessing), the preprocessing
itself, the method, the target and the ONNX Runtime version. All equal: the ranges are reused and
calibration is skipped. Anything different: recomputed and overwritten, and the reason is printed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_deploy import console
from resnet_deploy.files import atomic_write_text, sha256_json
from resnet_deploy.workspace import as_json, changed_keys, now

SCHEMA = 1


@dataclass
class CachedRanges:
    ranges: Any  # onnxruntime.quantization.calibrate.TensorsData
    info: dict[str, Any]


def _ranges_to_json(ranges: Any) -> Any:
    from onnxruntime.quantization.calibrate import CalibrationCacheEncoder

    return json.loads(json.dumps(ranges, cls=CalibrationCacheEncoder))


def _content_sha256(key: Any, ranges: Any) -> str:
    """What the ranges are and what they were computed for, hashed together: checked on every load."""
    return sha256_json({"key": key, "ranges": ranges})


class CalibrationCache:
    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path = Path(path)
        self.key = as_json(key)

    def load(self) -> CachedRanges | None:
        """The cached ranges if the file's key equals ours; None (and why) otherwise."""
        from onnxruntime.quantization.calibrate import TensorsData

        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
            stored = data["key"]
            ranges = TensorsData.from_dict(data["ranges"])
        except Exception as exc:
            console.warn(f"ignoring unreadable calibration cache {self.path.name} ({type(exc).__name__}): recomputing")
            return None
        if "content_sha256" not in data:
            console.info(f"[dim]calibration cache {self.path.name} is in an older format: recalibrating[/]")
            return None
        if data["content_sha256"] != _content_sha256(stored, data["ranges"]):
            # edited by hand or by another tool: a changed key could claim ranges that are not its own,
            # and a range removed would only surface deep inside quantize_static
            console.warn(f"calibration cache {self.path.name} was changed after it was written: recalibrating")
            return None
        if data.get("schema") != SCHEMA or stored != self.key:
            changed = ["schema"] if data.get("schema") != SCHEMA else changed_keys(stored, self.key)
            console.info(
                f"[dim]calibration cache {self.path.name} is stale ({', '.join(changed)} changed): recalibrating[/]"
            )
            return None
        return CachedRanges(ranges, data.get("info", {}))

    def save(self, ranges: Any, info: dict[str, Any]) -> None:
        data = _ranges_to_json(ranges)
        payload = {
            "schema": SCHEMA,
            "created": now(),
            "key": self.key,
            "content_sha256": _content_sha256(self.key, data),
            "info": info,
            "ranges": data,
        }
        atomic_write_text(self.path, json.dumps(payload, indent=1) + "\n")

    def write_ort_cache(self, ranges: Any, path: Path) -> None:
        """The same ranges in the file format `quantize_static(calibration_cache_path=...)` reads."""
        from onnxruntime.quantization.calibrate import save_tensors_data

        save_tensors_data(ranges, path)
