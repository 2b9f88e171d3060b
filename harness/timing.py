"""One statistic everywhere: the median and interquartile range of many samples,
taken after a warm-up that is long enough both by count and by time.

A *sample* is one timed execution, returned in seconds by a callable: for CPU
backends `time.perf_counter_ns` around the call, for GPU backends CUDA events around
the kernel. The loop itself is paced by a clock passed in (so tests can drive it with
a fake clock and check the statistics exactly).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class TimingConfig:
    warmup_calls: int = 2          # at least this many untimed calls ...
    warmup_s: float = 0.05         # ... and at least this long, so caches, clocks and JITs settle
    min_samples: int = 10
    max_samples: int = 200
    target_s: float = 0.5          # keep sampling (up to max_samples) until this much time is spent
    max_call_s: float = 1.0        # a case predicted to take longer per call is skipped (time budget)

    @staticmethod
    def gpu() -> "TimingConfig":
        """Kernels are short and event-timed; the host-side work per case (inputs, reference,
        verification) dominates a GPU run, so sample for less wall time."""
        return TimingConfig(warmup_calls=3, warmup_s=0.02, min_samples=10, max_samples=100,
                            target_s=0.2, max_call_s=0.25)

    @staticmethod
    def quick() -> "TimingConfig":
        return TimingConfig(warmup_calls=1, warmup_s=0.01, min_samples=5, max_samples=50,
                            target_s=0.05, max_call_s=0.1)


@dataclass(frozen=True)
class Stats:
    median_s: float
    p25_s: float
    p75_s: float
    samples: int
    min_s: float

    @property
    def iqr_s(self) -> float:
        return self.p75_s - self.p25_s

    @staticmethod
    def of(samples_s) -> "Stats":
        a = np.asarray(samples_s, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no samples")
        p25, med, p75 = np.percentile(a, [25, 50, 75])
        return Stats(float(med), float(p25), float(p75), int(a.size), float(a.min()))


def perf_clock_ns() -> int:
    return time.perf_counter_ns()


def cpu_sampler(call: Callable[[], object], clock: Callable[[], int] = perf_clock_ns) -> Callable[[], float]:
    """A sample = wall time of one call, from a nanosecond clock."""
    def sample() -> float:
        t0 = clock()
        call()
        return (clock() - t0) * 1e-9
    return sample


def measure(sample: Callable[[], float], config: TimingConfig,
            clock: Callable[[], int] = perf_clock_ns) -> Stats:
    """Warm up, then collect samples; return their median and IQR."""
    start = clock()
    calls = 0
    while calls < config.warmup_calls or (clock() - start) * 1e-9 < config.warmup_s:
        sample()
        calls += 1
    samples = []
    start = clock()
    while len(samples) < config.min_samples or (
            len(samples) < config.max_samples and (clock() - start) * 1e-9 < config.target_s):
        samples.append(sample())
    return Stats.of(samples)
