"""One statistic everywhere: the median and interquartile range of many samples,
taken after a warm-up that is long enough both by count and by time.

A *sample* is one timed execution, returned in seconds per call by a callable that takes
the number of calls to make: for CPU backends `time.perf_counter_ns` around `calls`
back-to-back calls, for GPU backends CUDA events around one kernel. Below MIN_SAMPLE_S a
single call is mostly the timer's own cost and its jitter, so a batchable sample times
enough calls to last at least that long (the count is picked from the warm-up and
recorded as calls_per_sample). The loop itself is paced by a clock passed in (so tests
can drive it with a fake clock and check the statistics exactly).
"""
from __future__ import annotations

import math
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
    min_sample_s: float = 10e-6    # batchable samples time enough calls to last this long
    max_calls: int = 100_000       # ... but never more calls than this per sample

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
    calls_per_sample: int = 1

    @property
    def iqr_s(self) -> float:
        return self.p75_s - self.p25_s

    @staticmethod
    def of(samples_s, calls_per_sample: int = 1) -> "Stats":
        a = np.asarray(samples_s, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no samples")
        p25, med, p75 = np.percentile(a, [25, 50, 75])
        return Stats(float(med), float(p25), float(p75), int(a.size), float(a.min()), int(calls_per_sample))

    def as_dict(self) -> dict:
        return {"median_s": self.median_s, "p25_s": self.p25_s, "p75_s": self.p75_s, "samples": self.samples,
                "calls_per_sample": self.calls_per_sample}


def perf_clock_ns() -> int:
    return time.perf_counter_ns()


def cpu_sampler(call: Callable[[], object], clock: Callable[[], int] = perf_clock_ns) -> Callable[[int], float]:
    """A sample = wall time of `calls` back-to-back calls, per call, from a nanosecond clock."""
    def sample(calls: int = 1) -> float:
        t0 = clock()
        for _ in range(calls):
            call()
        return (clock() - t0) * 1e-9 / calls
    return sample


def calls_for(per_call_s: float, config: TimingConfig) -> int:
    """Calls per sample so that a sample lasts at least config.min_sample_s."""
    if per_call_s >= config.min_sample_s:
        return 1
    return int(min(config.max_calls, math.ceil(config.min_sample_s / max(per_call_s, 1e-9))))


def measure(sample: Callable[[int], float], config: TimingConfig,
            clock: Callable[[], int] = perf_clock_ns, batch: bool = False) -> Stats:
    """Warm up (one call per sample), pick the calls per sample when `batch`, then collect
    samples; return their median and IQR, per call."""
    start = clock()
    calls = 0
    warm: list[float] = []
    while calls < config.warmup_calls or (clock() - start) * 1e-9 < config.warmup_s:
        warm.append(sample(1))
        calls += 1
    per_sample = 1
    if batch and warm:
        # A cold warm-up call overestimates a call: refine on whole batches (as timeit's
        # autorange does) until a batch really lasts min_sample_s.
        per_sample = calls_for(float(np.median(warm[-20:])), config)
        for _ in range(3):
            trial = sample(per_sample)
            if per_sample >= config.max_calls or trial * per_sample >= config.min_sample_s:
                break
            per_sample = max(per_sample + 1, calls_for(trial, config))
    samples = []
    start = clock()
    while len(samples) < config.min_samples or (
            len(samples) < config.max_samples and (clock() - start) * 1e-9 < config.target_s):
        samples.append(sample(per_sample))
    return Stats.of(samples, per_sample)


def call_floor(fn: Callable, args: tuple, config: TimingConfig, clock: Callable[[], int] = perf_clock_ns,
               how: str = "") -> dict:
    """The empty-call floor of a CPU path: a no-op called the way kernels are, timed the way
    they are (batched). Results within 2x of it are mostly call overhead."""
    stats = measure(cpu_sampler(lambda: fn(*args), clock), config, clock, batch=True)
    return {**stats.as_dict(), "how": how}
