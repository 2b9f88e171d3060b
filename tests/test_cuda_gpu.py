"""GPU tests for the CUDA backend and the cupy/torch peers (`pytest -m gpu`).

Each check runs in its own subprocess (tests/gpu_cuda_checks.py) with a timeout: a kernel
fault poisons a CUDA context and a hung kernel never returns, and neither may take the
test session down. Without a GPU every test is skipped with the probe's reason.
"""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("gpu_cuda_checks.py")
pytestmark = pytest.mark.gpu


def _run(check: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), check], capture_output=True, text=True, timeout=timeout,
                          cwd=SCRIPT.parent.parent)


@functools.lru_cache(maxsize=1)
def _no_gpu_reason() -> str | None:
    try:
        r = _run("probe", timeout=120)
    except subprocess.TimeoutExpired:
        return "the GPU probe timed out after 120 s"
    return r.stdout.strip().splitlines()[-1] if r.returncode == 3 else None


def _check(check: str, timeout: int) -> None:
    why = _no_gpu_reason()
    if why:
        pytest.skip(why)
    try:
        r = _run(check, timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gpu check {check!r} did not finish in {timeout} s (a hung kernel?)")
    print(r.stdout[-6000:])                             # shown with -s or on failure
    if r.returncode == 3:
        pytest.skip(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0, f"{check}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"


def test_every_variant_verifies_on_the_gpu_at_odd_and_large_sizes():
    _check("verify", timeout=480)          # every variant of ~20 primitives, every distribution


def test_event_timing_l2_flush_and_end_to_end_are_plausible():
    _check("timing", timeout=120)


def test_device_peaks_copy_bandwidth_and_cublas():
    _check("peaks", timeout=120)


def test_a_kernel_fault_is_reported_and_the_run_continues():
    _check("fault", timeout=120)


def test_every_kind_of_tensor_and_scalar_on_the_gpu():
    _check("contract", timeout=120)


def test_the_op_layer_runs_a_classifier_step_on_device_buffers():
    _check("ops", timeout=180)


def test_peers_verify_and_time():
    _check("peers", timeout=180)


def test_cubin_cache_hits_across_backend_instances():
    _check("cache", timeout=60)
