"""The one place parity metrics are computed: every artifact's logits against PyTorch FP32.

Export verification, `resnet-bench compare` and the CI gate all call `compare`, so "matches" means
the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ParityMetrics:
    max_abs: float
    mean_abs: float
    rel_l2: float  # ||cand - ref|| / ||ref|| over the whole batch
    cosine: float  # mean over images of the cosine similarity of the logit vectors
    min_cosine: float
    top1_agreement: float  # fraction of images whose argmax matches
    top5_overlap: float  # mean |top5(ref) & top5(cand)| / 5
    count: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def compare(reference: np.ndarray, candidate: np.ndarray) -> ParityMetrics:
    """Compare (N, classes) logits. Both are cast to float64 so the metric adds no error of its own."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {cand.shape}")
    diff = np.abs(cand - ref)
    ref_norm = float(np.linalg.norm(ref))
    rel_l2 = float(np.linalg.norm(cand - ref) / ref_norm) if ref_norm > 0 else float(np.linalg.norm(cand))
    dots = (ref * cand).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = np.where(norms > 0, dots / np.maximum(norms, 1e-300), 1.0)
    k = min(5, ref.shape[1])
    top_ref = np.argsort(-ref, axis=1)[:, :k]
    top_cand = np.argsort(-cand, axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_cand, strict=True)]
    return ParityMetrics(
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        rel_l2=rel_l2,
        cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
        top1_agreement=float((ref.argmax(1) == cand.argmax(1)).mean()),
        top5_overlap=float(np.mean(overlap)),
        count=int(ref.shape[0]),
    )


def distinct_predictions(reference: np.ndarray) -> int:
    """How many classes the reference predicts over the images; few means top-1 agreement says little."""
    return len(np.unique(np.asarray(reference).argmax(axis=1)))
