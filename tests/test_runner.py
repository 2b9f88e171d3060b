"""The runner's rules: wrong results fail and get no speedup, crashes are contained,
re-verification after timing, the time budget, speedups only at the same size."""
import pytest

from harness.runner import RunConfig, Runner, compute_speedups, exit_status
from harness.results import new_row
from harness.timing import TimingConfig

FAST = TimingConfig(warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=3, target_s=0.0, max_call_s=5.0)


def _run(backends, prims=("add", "softmax"), sizes=(64,), checks=True, **kw):
    cfg = RunConfig(primitives=list(prims), backends=list(backends), sizes=list(sizes), timing=FAST,
                    checks=checks, quick=True)
    runner = Runner(cfg, **kw)
    return runner.run()


def _timed(rows, backend):
    return [r for r in rows if r["backend"] == backend and r["phase"] == "timed"]


def test_wrong_results_fail_with_worst_element_and_no_speedup(register):
    register(zeros="tests.fakes:ZerosBackend")
    rows = _run(["numpy", "zeros"])
    bad = _timed(rows, "zeros")
    assert bad and all(r["status"] == "fail" for r in bad)
    assert all(r["speedup_vs_numpy"] is None and r["median_s"] is None for r in bad)
    assert all(r["worst_index"] is not None and "expected" in r["reason"] for r in bad)
    checks = [r for r in rows if r["backend"] == "zeros" and r["phase"] == "check"]
    assert any(r["status"] == "fail" for r in checks)
    assert all(r["status"] == "pass" for r in _timed(rows, "numpy"))
    assert exit_status(rows) == 1


def test_a_crashing_backend_does_not_stop_the_others(register):
    register(crash="tests.fakes:CrashBackend", nocompile="tests.fakes:BrokenCompileBackend")
    rows = _run(["crash", "nocompile", "numpy"])
    crash = _timed(rows, "crash")
    assert crash and all(r["status"] == "error" for r in crash)
    assert all("\n" not in r["reason"] and "segfault-ish failure" in r["reason"] for r in crash)
    nocompile = _timed(rows, "nocompile")
    assert nocompile[0]["status"] == "error" and "identifier" in nocompile[0]["reason"]
    assert all(r["status"] == "pass" for r in _timed(rows, "numpy"))


def test_reverification_after_timing_catches_drift(register):
    register(drift="tests.fakes:DriftBackend")
    rows = _run(["drift"], prims=("add",), checks=False)
    (row,) = _timed(rows, "drift")
    assert row["status"] == "fail" and row["reason"].startswith("wrong after timing")
    assert row["verified_after"] is False and row["speedup_vs_numpy"] is None


def test_unavailable_backend_is_reported_with_its_reason(register):
    register(gone="tests.fakes:UnavailableBackend")
    rows = _run(["gone", "numpy"], prims=("add",))
    (row,) = _timed(rows, "gone")
    assert row["status"] == "skip" and "no such hardware here" in row["reason"]
    assert exit_status(rows) == 0


def test_time_budget_skips_larger_sizes_and_never_extrapolates(register):
    from tests.fakes import SlowBackend

    class Clock:
        now = 0

        def __call__(self):
            return self.now
    clock = Clock()
    SlowBackend.clock = clock
    register(slow="tests.fakes:SlowBackend")
    cfg = RunConfig(primitives=["add"], backends=["slow"], sizes=[10, 100, 1000, 10000], checks=False,
                    timing=TimingConfig(warmup_calls=1, warmup_s=0, min_samples=3, max_samples=3, target_s=0,
                                        max_call_s=0.05))
    rows = Runner(cfg, clock=clock).run()
    timed = {r["size"]: r for r in _timed(rows, "slow")}
    assert timed[10]["status"] == "pass" and timed[100]["status"] == "pass"      # 0.1 ms, 1 ms
    assert timed[1000]["status"] == "pass"                                         # 10 ms
    assert timed[10000]["status"] == "skip" and "time budget" in timed[10000]["reason"]
    assert timed[10000]["median_s"] is None


def test_speedups_only_between_the_same_dims():
    def row(backend, shape, t, status="pass"):
        return new_row(primitive="add", backend=backend, variant=backend, phase="timed", shape=shape,
                       status=status, median_s=t)
    rows = [row("python", "64", 1.0), row("python", "128", 2.0), row("numpy", "64", 0.01),
            row("fast", "64", 0.001), row("fast", "256", 0.001), row("wrong", "64", 1e-9, "fail")]
    compute_speedups(rows)
    assert rows[3]["speedup_vs_python"] == pytest.approx(1000) and rows[3]["speedup_vs_numpy"] == pytest.approx(10)
    assert rows[4]["speedup_vs_python"] is None and rows[4]["speedup_vs_numpy"] is None
    assert rows[5]["speedup_vs_python"] is None


def test_python_and_numpy_run_and_verify_end_to_end():
    rows = _run(["python", "numpy"], prims=("matmul", "layernorm"), sizes=(16, 32))
    timed = [r for r in rows if r["phase"] == "timed"]
    assert timed and all(r["status"] == "pass" for r in timed), [r["reason"] for r in timed]
    assert all(r["gflops"] > 0 and r["p25_s"] <= r["median_s"] <= r["p75_s"] for r in timed)
    numpy_rows = [r for r in timed if r["backend"] == "numpy"]
    assert all(r["speedup_vs_python"] and r["speedup_vs_numpy"] == pytest.approx(1.0) for r in numpy_rows)
    assert all(r["status"] == "pass" for r in rows if r["phase"] == "check")


def test_a_kernel_that_stops_working_after_the_first_call_is_caught(register):
    register(lazy="tests.fakes:LazyBackend")
    rows = _run(["lazy"], prims=("add",), checks=False)
    (row,) = _timed(rows, "lazy")
    assert row["status"] == "fail" and "wrong after timing" in row["reason"] and "non-finite" in row["reason"]


def test_an_availability_check_that_raises_makes_the_backend_unavailable_with_why(register):
    register(probecrash="tests.fakes:ProbeCrashBackend")
    rows = _run(["probecrash", "numpy"], prims=("add",))
    (row,) = _timed(rows, "probecrash")
    assert row["status"] == "skip" and "availability check failed: OSError: libsomething.so" in row["reason"]
    assert "second line" not in row["reason"]
    assert all(r["status"] == "pass" for r in _timed(rows, "numpy"))
