"""This machine's peaks, measured once per run, and the sanity flags that use them.

  gflops    NumPy (BLAS) float32 matmul, best of a few calls: the practical compute
            peak a user gets for free. A kernel may beat it; that is news, not an error.
  gbps      STREAM-style "copy" (np.copyto) and "scale" (np.multiply by 1) of a buffer
            several times the last-level cache, split across one thread per core (NumPy
            releases the GIL), counting read + write bytes; the best of both, best of a few
            calls: the practical DRAM bandwidth all cores together can reach.
  gflops_physical   cores x clock x FLOP/cycle from the SIMD flags: an *upper bound*.
            A figure above it is physically impossible, so it is flagged as a
            measurement error.

Memory-bound figures are compared with gbps. A working set that fits in the cache is
served faster than DRAM, and one a few times larger still gets a share of hits (a
victim L3 keeps part of a stream: measured here, a 2-thread relu reached 118 % of the
copy bandwidth at 4x the L3 and 94-101 % at 8x and 16x). Rows whose working set is at
most CACHE_ASSISTED x the last-level cache are marked "cache-assisted", not flagged;
a DRAM-sized working set more than NOISE (5 %) above the copy bandwidth is flagged —
the peak is itself a measurement, and a kernel that streams memory as well as a copy
lands within a few percent of it either side.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..env import cpu_flags, last_level_cache_bytes


NOISE = 1.05


def _best_seconds(fn, repeats: int) -> float:
    fn()                                                   # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) * 1e-9)
    return best


def cpu_max_hz() -> float | None:
    f = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(f.read_text()) * 1e3
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                # The current clock, not the boost clock: allow 50 % boost headroom so the
                # bound stays an upper bound.
                return float(line.split(":")[1]) * 1e6 * 1.5
    except (OSError, ValueError):
        pass
    return None


def cpu_physical_gflops() -> float | None:
    hz = cpu_max_hz()
    if hz is None:
        return None
    flags = cpu_flags()
    # FLOP/cycle/core for fp32 assuming two FMA pipes (generous on purpose: an upper bound).
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 16 if "avx" in flags else 8
    return (os.cpu_count() or 1) * hz * per_cycle / 1e9


def measure_cpu(quick: bool = False) -> dict:
    n = 1024 if quick else 2048
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    t_mm = _best_seconds(lambda: a @ b, 3 if quick else 5)
    llc = last_level_cache_bytes() or (32 << 20)
    nbytes = max(64 << 20, 4 * llc)
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    threads = os.cpu_count() or 1
    edges = np.linspace(0, src.size, threads + 1).astype(int)
    slices = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
    one = np.float32(1)
    with ThreadPoolExecutor(threads) as pool:
        def copy():
            list(pool.map(lambda s: np.copyto(dst[s], src[s]), slices))

        def scale():
            list(pool.map(lambda s: np.multiply(src[s], one, out=dst[s]), slices))
        t_cp = min(_best_seconds(copy, 3 if quick else 5), _best_seconds(scale, 3 if quick else 5))
    return {
        "device": "cpu",
        "gflops": 2.0 * n ** 3 / t_mm / 1e9,
        "gflops_source": f"numpy float32 matmul {n}x{n}x{n}, best of runs",
        "gbps": 2.0 * nbytes / t_cp / 1e9,
        "gbps_source": (f"STREAM-style copy/scale of {nbytes >> 20} MiB on {threads} threads "
                        f"(read + write bytes), best of runs"),
        "gflops_physical": cpu_physical_gflops(),
        "cache_bytes": llc,
    }


CACHE_ASSISTED = 4.0    # working sets up to 4x the last-level cache still get a share of cache hits


def merge(start: dict, end: dict) -> dict:
    """Peaks measured at the start and at the end of a run: keep the better of each, and
    both readings, so drift on a shared machine is visible in the results."""
    out = dict(start)
    for key in ("gflops", "gbps"):
        readings = [p[key] for p in (start, end) if p.get(key)]
        if readings:
            out[key] = max(readings)
            out[f"{key}_readings"] = readings
            out[f"{key}_source"] = start[f"{key}_source"] + " (best of the start and end of the run)"
    return out


def pct_and_flags(row: dict, peaks: dict | None, bound: str, in_cache_factor: float = CACHE_ASSISTED) -> tuple[float | None, list[str]]:
    """% of the relevant peak for a row (from its median), and any flags about it.

    A flag is raised only when the figure is above a bound beyond its own spread: the
    check uses the slow end of the IQR (the 75th-percentile time), so one lucky median
    of a noisy case is not called an error, while a whole distribution above the bound is."""
    flags: list[str] = []
    if not peaks or row.get("median_s") is None:
        return None, flags
    gflops, gbps = row.get("gflops"), row.get("gbps")
    slow = row["median_s"] / (row.get("p75_s") or row["median_s"])     # <= 1: scales a rate to the p75 time
    phys = peaks.get("gflops_physical")
    if phys and gflops and gflops * slow > phys:
        flags.append(f"above the physical FLOP peak ({phys:.0f} GFLOP/s): measurement error")
    phys_bw = peaks.get("gbps_physical")
    if phys_bw and gbps and gbps * slow > phys_bw:
        flags.append(f"above the physical memory bandwidth ({phys_bw:.0f} GB/s): measurement error")
    if bound == "compute":
        pct = 100.0 * gflops / peaks["gflops"] if gflops and peaks.get("gflops") else None
        return pct, flags
    pct = 100.0 * gbps / peaks["gbps"] if gbps and peaks.get("gbps") else None
    cache = peaks.get("cache_bytes")
    in_cache = bool(cache) and row.get("bytes", 0) <= in_cache_factor * cache and not peaks.get("cache_flushed")
    if in_cache:
        flags.append("cache-assisted")
    elif pct is not None and pct * slow > 100.0 * NOISE:
        flags.append("above the measured copy bandwidth with a DRAM-sized working set: measurement error")
    return pct, flags
