"""% of peak and the sanity flags."""
import pytest

from harness.core.peaks import NOISE, cpu_physical_gflops, merge, pct_and_flags

CPU = {"gflops": 100.0, "gbps": 20.0, "gflops_physical": 400.0, "cache_bytes": 32 << 20}
GPU = {"gflops": 50_000.0, "gbps": 4000.0, "gbps_physical": 4800.0, "cache_flushed": True, "cache_bytes": 50 << 20}


def row(**kw):
    base = {"median_s": 1.0, "gflops": 1.0, "gbps": 1.0, "bytes": 1 << 30}
    base.update(kw)
    return base


def test_compute_bound_uses_the_flop_peak_and_may_beat_it():
    pct, flags = pct_and_flags(row(gflops=120.0), CPU, "compute")
    assert pct == pytest.approx(120.0) and flags == []          # beating BLAS is news, not an error


def test_above_the_physical_flop_peak_is_a_measurement_error():
    pct, flags = pct_and_flags(row(gflops=500.0), CPU, "compute")
    assert any("physical FLOP peak" in f and "measurement error" in f for f in flags)


def test_in_cache_working_sets_are_marked_not_flagged():
    pct, flags = pct_and_flags(row(gbps=60.0, bytes=1 << 20), CPU, "memory")
    assert pct == pytest.approx(300.0) and flags == ["cache-assisted"]


def test_dram_sized_above_copy_bandwidth_is_flagged_beyond_noise():
    _, flags = pct_and_flags(row(gbps=20.0 * NOISE * 0.99), CPU, "memory")
    assert flags == []
    _, flags = pct_and_flags(row(gbps=20.0 * NOISE * 1.01), CPU, "memory")
    assert any("measurement error" in f for f in flags)


def test_a_noisy_median_above_the_peak_is_not_an_error_but_a_whole_iqr_is():
    _, flags = pct_and_flags(row(gbps=30.0, median_s=1.0, p75_s=2.0), CPU, "memory")   # p75 rate: 15 GB/s
    assert flags == []
    _, flags = pct_and_flags(row(gbps=30.0, median_s=1.0, p75_s=1.01), CPU, "memory")
    assert any("measurement error" in f for f in flags)


def test_gpu_rows_are_never_in_cache_because_l2_is_flushed():
    _, flags = pct_and_flags(row(gbps=4300.0, bytes=1 << 20), GPU, "memory")
    assert "cache-assisted" not in flags and any("copy bandwidth" in f for f in flags)
    _, flags = pct_and_flags(row(gbps=5000.0), GPU, "memory")
    assert any("physical memory bandwidth" in f for f in flags)


def test_no_peaks_no_percent():
    assert pct_and_flags(row(), None, "memory") == (None, [])
    assert pct_and_flags(row(median_s=None), CPU, "memory") == (None, [])


def test_physical_flop_bound_is_cores_times_clock_times_simd(monkeypatch):
    import harness.core.peaks as peaks
    monkeypatch.setattr(peaks, "cpu_max_hz", lambda: 3.0e9)
    monkeypatch.setattr(peaks.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(peaks, "cpu_flags", lambda: {"avx2", "fma"})
    assert cpu_physical_gflops() == pytest.approx(2 * 3.0 * 32)
    monkeypatch.setattr(peaks, "cpu_flags", lambda: {"avx512f", "avx2", "fma"})
    assert cpu_physical_gflops() == pytest.approx(2 * 3.0 * 64)
    monkeypatch.setattr(peaks, "cpu_max_hz", lambda: None)
    assert cpu_physical_gflops() is None


def test_peaks_measured_twice_keep_the_best_and_both_readings():
    start = {"gflops": 100.0, "gflops_source": "a", "gbps": 30.0, "gbps_source": "b", "cache_bytes": 1}
    end = {"gflops": 90.0, "gflops_source": "a", "gbps": 36.0, "gbps_source": "b", "cache_bytes": 1}
    m = merge(start, end)
    assert m["gflops"] == 100.0 and m["gbps"] == 36.0
    assert m["gbps_readings"] == [30.0, 36.0] and "start and end" in m["gbps_source"]
