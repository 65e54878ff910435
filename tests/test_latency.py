"""Latency measurement mechanics (no timing assertions: only what was run, how, and the statistics)."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy.bench.latency import measure, random_inputs, summarize
from resnet_deploy.devices import default_threads
from resnet_deploy.runtimes import Runtime


class Recorder(Runtime):
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.check_input(batch)
        self.seen.append(batch)
        return np.zeros((batch.shape[0], 10), np.float32)


def test_summarize_statistics() -> None:
    times = [0.010, 0.020, 0.030, 0.040, 0.100]  # seconds
    s = summarize(times, batch=4, warmup=2, threads=3)
    assert s.min_ms == pytest.approx(10.0)
    assert s.max_ms == pytest.approx(100.0)
    assert s.mean_ms == pytest.approx(40.0)
    assert s.p50_ms == pytest.approx(30.0)
    assert s.p90_ms == pytest.approx(float(np.percentile([10, 20, 30, 40, 100], 90)))
    assert s.p99_ms == pytest.approx(float(np.percentile([10, 20, 30, 40, 100], 99)))  # 97.6, not the max
    assert s.p99_ms < s.max_ms
    assert s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.std_ms == pytest.approx(float(np.std([10, 20, 30, 40, 100], ddof=1)))
    assert s.images_per_s == pytest.approx(4 / 0.030)  # the median: the 100 ms stall does not count
    assert (s.iterations, s.warmup, s.batch, s.threads) == (5, 2, 4, 3)
    d = s.to_dict()
    for key in ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "images_per_s"):
        assert key in d
    with pytest.raises(ValueError):
        summarize([], batch=1)


def test_random_inputs_are_distinct_and_never_zero() -> None:
    bufs = random_inputs((2, 3, 8, 8), buffers=3, seed=1)
    assert len(bufs) == 3
    for b in bufs:
        assert b.dtype == np.float32 and b.shape == (2, 3, 8, 8)
        assert np.count_nonzero(b) == b.size
        assert 0.5 < b.std() < 2.0  # the scale of normalized images
    assert not np.array_equal(bufs[0], bufs[1])


def test_measure_runs_warmup_then_iters_rotating_buffers() -> None:
    rt = Recorder()
    ticks = []
    stats = measure(rt, (2, 3, 16, 16), warmup=3, iters=7, buffers=4, threads=2, on_iteration=lambda: ticks.append(1))
    assert len(rt.seen) == 10 and len(ticks) == 10
    assert stats.iterations == 7 and stats.warmup == 3 and stats.batch == 2 and stats.threads == 2
    assert stats.copies_included and stats.timer == "perf_counter"
    ids = [id(x) for x in rt.seen]
    assert len(set(ids)) == 4  # rotated between buffers
    assert all(ids[i] != ids[i + 1] for i in range(len(ids) - 1))
    assert all(x.shape == (2, 3, 16, 16) for x in rt.seen)


def test_measure_rejects_bad_requests() -> None:
    rt = Recorder()
    with pytest.raises(ValueError):
        measure(rt, (1, 3, 8, 8), iters=0)
    with pytest.raises(ValueError, match="CUDA"):
        measure(rt, (1, 3, 8, 8), device_resident=True)
    rt.device = "cuda:0"  # a runtime whose only way to the GPU is the host path: never "copies excluded"
    with pytest.raises(ValueError, match="no device-resident path"):
        measure(rt, (1, 3, 8, 8), device_resident=True)
    assert rt.seen == []


def test_default_threads_positive() -> None:
    assert default_threads() >= 1
