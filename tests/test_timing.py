"""Timing statistics on a fake clock: warm-up by count and by time, then median/IQR."""
import pytest

from harness.core.timing import Stats, TimingConfig, cpu_sampler, measure


class FakeClock:
    """A nanosecond clock that advances only when the fake work says so."""

    def __init__(self):
        self.now = 0

    def __call__(self):
        return self.now

    def work(self, ns):
        self.now += ns


def test_stats_median_and_iqr():
    s = Stats.of([5, 1, 3, 2, 4])
    assert (s.median_s, s.p25_s, s.p75_s, s.samples, s.min_s) == (3, 2, 4, 5, 1)
    assert s.iqr_s == 2


def test_stats_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        Stats.of([])


def test_warmup_calls_are_not_samples_and_slow_first_calls_do_not_count():
    clock = FakeClock()
    durations = iter([10_000_000, 5_000_000] + [1_000_000] * 1000)   # two slow calls, then 1 ms each
    calls = []

    def work():
        d = next(durations)
        calls.append(d)
        clock.work(d)

    cfg = TimingConfig(warmup_calls=2, warmup_s=0.0, min_samples=10, max_samples=10, target_s=0.0)
    stats = measure(cpu_sampler(work, clock), cfg, clock)
    assert stats.samples == 10
    assert stats.median_s == pytest.approx(1e-3) and stats.iqr_s == 0
    assert len(calls) == 12


def test_warmup_continues_until_the_time_floor():
    clock = FakeClock()
    n = {"calls": 0}

    def work():
        n["calls"] += 1
        clock.work(1_000_000)                 # 1 ms

    cfg = TimingConfig(warmup_calls=1, warmup_s=0.05, min_samples=3, max_samples=3, target_s=0.0)
    measure(cpu_sampler(work, clock), cfg, clock)
    assert n["calls"] == 50 + 3               # 50 warm-up calls reach 50 ms, then 3 samples


def test_sampling_stops_at_the_time_target_but_not_before_min_samples():
    clock = FakeClock()
    cfg = TimingConfig(warmup_calls=0, warmup_s=0.0, min_samples=5, max_samples=1000, target_s=0.1)
    stats = measure(cpu_sampler(lambda: clock.work(10_000_000), clock), cfg, clock)
    assert stats.samples == 10                # 10 x 10 ms = the 0.1 s target
    stats = measure(cpu_sampler(lambda: clock.work(1_000_000_000), clock), cfg, clock)
    assert stats.samples == 5                 # 1 s each: the minimum still applies


def test_iqr_reflects_the_spread():
    clock = FakeClock()
    seq = iter([1, 2, 3, 4, 5, 6, 7, 8] * 10)
    cfg = TimingConfig(warmup_calls=0, warmup_s=0.0, min_samples=8, max_samples=8, target_s=0.0)
    stats = measure(cpu_sampler(lambda: clock.work(next(seq) * 1_000_000), clock), cfg, clock)
    assert stats.median_s == pytest.approx(4.5e-3)
    assert stats.p25_s == pytest.approx(2.75e-3) and stats.p75_s == pytest.approx(6.25e-3)


def test_calls_under_the_sample_floor_are_batched_and_reported_per_call():
    clock = FakeClock()
    cfg = TimingConfig(warmup_calls=3, warmup_s=0.0, min_samples=5, max_samples=5, target_s=0.0,
                       min_sample_s=10e-6)
    stats = measure(cpu_sampler(lambda: clock.work(500), clock), cfg, clock, batch=True)   # 0.5 us a call
    assert stats.calls_per_sample == 20                    # 20 x 0.5 us = the 10 us floor
    assert stats.median_s == pytest.approx(0.5e-6)         # still per call


def test_a_slow_first_call_does_not_shrink_the_batch():
    clock = FakeClock()
    durations = iter([50_000] + [200] * 100_000)           # a cold 50 us call, then 0.2 us each
    cfg = TimingConfig(warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=3, target_s=0.0,
                       min_sample_s=10e-6)
    stats = measure(cpu_sampler(lambda: clock.work(next(durations)), clock), cfg, clock, batch=True)
    assert stats.calls_per_sample * stats.median_s >= 10e-6
    assert stats.median_s == pytest.approx(0.2e-6)


def test_unbatched_samples_are_one_call_each():
    clock = FakeClock()
    cfg = TimingConfig(warmup_calls=1, warmup_s=0.0, min_samples=4, max_samples=4, target_s=0.0)
    stats = measure(cpu_sampler(lambda: clock.work(100), clock), cfg, clock)
    assert stats.calls_per_sample == 1 and stats.samples == 4
