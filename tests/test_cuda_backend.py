"""The CUDA backend and the GPU peers on a machine without a GPU: unavailable, with a reason
that names the driver, never hanging; the rest of the harness unaffected. Plus the small
pure pieces of the driver layer (error classification, physical peaks)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.backends.cuda import driver as cd
from harness.env import REPO

HAS_GPU = cd.probe().ok
no_gpu_only = pytest.mark.skipif(HAS_GPU, reason="a GPU is present: the no-GPU behaviour cannot be observed here")
PROBE_TIMEOUT_S = 60


def _python(code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter with a timeout: the no-driver paths must not hang
    (cuda.core can deadlock there; the backend must never reach it)."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=PROBE_TIMEOUT_S)


@no_gpu_only
@pytest.mark.parametrize("name", ["cuda", "cupy", "torch"])
def test_gpu_backends_are_unavailable_with_the_reason(name):
    r = _python(f"from harness import backends; a = backends.get({name!r}).availability(); "
                f"print(a.ok); print(a.reason); print(a.hint)")
    assert r.returncode == 0, r.stderr
    ok, reason, hint = r.stdout.splitlines()[:3]
    assert ok == "False"
    assert "driver" in reason or "not installed" in reason, reason
    assert hint


@no_gpu_only
def test_cuda_variants_are_listed_and_skipped_in_a_run_without_a_gpu():
    from harness.backends.cuda.backend import CudaBackend
    from harness.core.runner import RunConfig, Runner
    from harness.core.timing import TimingConfig
    b = CudaBackend()
    assert b.variants("matmul")[0] == "naive" and "warptile" in b.variants("matmul")
    assert b.max_problem_bytes() is None
    assert b.ops() is None                                     # no op layer without a GPU
    assert b.measure_floor(TimingConfig.quick(), None) is None
    env = b.environment()
    assert "nvrtc" in env and "gpu" not in env and "cuda_core" not in env
    rows = Runner(RunConfig(primitives=["add"], backends=["cuda"], quick=True, sizes=[16],
                            timing=TimingConfig.quick())).run()
    assert [r["status"] for r in rows] == ["skip"]
    assert rows[0]["reason"].startswith("backend unavailable: no NVIDIA driver")


@no_gpu_only
def test_doctor_names_the_reason_and_does_not_hang():
    r = subprocess.run([sys.executable, "-m", "harness", "doctor"], cwd=REPO, capture_output=True, text=True,
                       timeout=PROBE_TIMEOUT_S, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "cuda" in ln and "NVIDIA" in ln)
    assert "no NVIDIA driver" in line


def test_build_report_defaults_to_sm_90_without_a_gpu(monkeypatch, tmp_path):
    pytest.importorskip("cuda.bindings.nvrtc")
    from harness.backends.cuda.backend import CudaBackend
    monkeypatch.setenv("KR_CACHE_DIR", str(tmp_path))
    b = CudaBackend()
    if b.availability().ok:
        pytest.skip("a GPU is present: its own arch is the default")
    rows = b.build_report(primitives=["relu"])
    assert [r["variant"] for r in rows] == ["naive", "grid_stride", "vec4"]
    assert all(r["ok"] and r["arch"] == "sm_90" and r["registers"] > 0 for r in rows)


@no_gpu_only
@pytest.mark.parametrize("name", ["cupy", "torch"])
def test_peers_are_baselines_with_their_variants_listed(name):
    from harness import backends
    b = backends.get(name)
    assert b.baseline and b.device == "gpu"
    assert b.variants("matmul") == ["cublas"] and b.variants("gelu") == ([] if name == "cupy" else ["gelu_tanh"])
    assert b.measure_floor(None, None) is None and b.max_problem_bytes() is None


def test_kernel_params_take_exactly_typed_values():
    import numpy as np
    p = cd.KernelParams([np.uint64(1 << 40), np.int32(-3), np.int64(1 << 40), np.float32(1e-5)])
    assert len(p) == 4 and p.address
    slots = np.frombuffer((np.ctypeslib.ctypes.c_uint64 * 4).from_address(p.address), dtype=np.uint64)
    values = [np.frombuffer((np.ctypeslib.ctypes.c_char * n).from_address(int(a)), dtype=t)[0]
              for a, n, t in zip(slots, (8, 4, 8, 4), (np.uint64, np.int32, np.int64, np.float32))]
    assert values == [1 << 40, -3, 1 << 40, np.float32(1e-5)]
    for bad in (5, 1.0, np.float64(1.0), np.uint32(3)):
        with pytest.raises(TypeError, match="kernel argument 0"):
            cd.KernelParams([bad])


def test_sticky_errors_are_the_ones_that_poison_a_context():
    assert cd.CudaError("cuMemcpyDtoH", "CUDA_ERROR_ILLEGAL_ADDRESS").sticky
    assert cd.CudaError("cuEventSynchronize", "CUDA_ERROR_MISALIGNED_ADDRESS").sticky
    assert not cd.CudaError("cuMemAlloc", "CUDA_ERROR_OUT_OF_MEMORY").sticky
    assert not cd.CudaError("cuLaunchKernel", "CUDA_ERROR_INVALID_VALUE").sticky
    assert str(cd.CudaError("cuMemAlloc", "CUDA_ERROR_OUT_OF_MEMORY", "out of memory")) == \
        "cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (out of memory)"


def test_check_unpacks_binding_results():
    class Ok(int):
        name = "CUDA_SUCCESS"
    assert cd.check((Ok(0),), "f") is None
    assert cd.check((Ok(0), 5), "f") == 5
    assert cd.check((Ok(0), 5, 6), "f") == (5, 6)


def test_physical_peaks_of_an_h200_from_its_attributes():
    h200 = cd.DeviceInfo(0, "NVIDIA H200", (9, 0), sm_count=132, l2_bytes=50 << 20, clock_khz=1_980_000,
                         mem_clock_khz=3_201_000, bus_width_bits=6144, total_bytes=141 << 30, driver_cuda="13.0")
    assert h200.arch == "sm_90"
    assert h200.physical_gflops() == pytest.approx(66_908, rel=1e-3)      # 132 SMs x 128 lanes x 2 x 1.98 GHz
    assert h200.physical_gbps() == pytest.approx(4_917, rel=1e-3)         # 2 x 3.2 GHz x 768 bytes
    unknown = cd.DeviceInfo(0, "?", (1, 0), 1, 0, 0, 0, 0, 0, "13.0")
    assert unknown.physical_gflops() is None and unknown.physical_gbps() is None


def test_peer_bindings_follow_the_bound_contract_on_a_stand_in_library():
    """The torch/cupy binding logic (LibraryBound) with NumPy standing in for the library
    and a timer that just runs the work: every output fetched with its dtype, scalars
    passed by name (layernorm's eps), poison reaching what the last call returned."""
    import numpy as np

    from harness.backends import peers
    from harness.backends.base import Availability
    from harness.core import catalogue
    from harness.core.timing import TimingConfig, perf_clock_ns
    from harness.core.verify import verify

    class Timer:
        def time(self, work):
            work()
            return 1e-3

    class NumpyPeer(peers._LibraryBackend):
        name = "numpy_peer"

        def __init__(self):
            super().__init__()
            self._lib = np
            self.ops = {"layernorm": peers.Op("layer_norm", lambda lib: catalogue.get("layernorm").numpy),
                        "relu": peers.Op("maximum", lambda lib: lambda x: lib.maximum(x, np.float32(0)))}

        def _probe(self):
            return Availability(True, detail="numpy stand-in")

        def to_device(self, a):
            return np.array(a, copy=True)

        def to_host(self, x):
            return np.asarray(x)

        def fill_nan(self, x):
            x.fill(np.nan)

        def copy_into(self, dst, src):
            dst[...] = src

        def timer(self):
            return Timer()

        def end_to_end(self, fn, prim, arrays, scalars, dims):
            return lambda: fn(*(arrays[t.name] for t in prim.inputs), **scalars)

    b = NumpyPeer()
    assert b.baseline and b.variants("layernorm") == ["layer_norm"] and b.variants("softmax") == []
    prim = catalogue.get("layernorm")
    dims = (5, 33)
    inputs = prim.make_inputs(dims, "small_spread", 0)
    for a in inputs.values():
        a.flags.writeable = False
    bound = b.prepare("layernorm", "layer_norm").bind(inputs, {"eps": 1e-2})
    outs = bound.run()
    assert set(outs) == {"y"} and outs["y"].dtype == np.float32
    assert verify(prim, inputs, outs, dims, scalars={"eps": 1e-2}).ok
    assert not verify(prim, inputs, outs, dims).ok                       # eps really was 1e-2
    returned = bound._result
    bound.poison()
    assert np.isnan(returned).all()
    assert bound.time_once(None) == 1e-3 and bound.time_end_to_end() == 1e-3 and not bound.batchable
    bound.close()
    floor = b.measure_floor(TimingConfig.quick(), perf_clock_ns)
    assert floor["median_s"] == 1e-3 and "maximum call on one-element tensors" in floor["how"]
    with pytest.raises(Exception, match="no variant 'x' of relu; valid: maximum"):
        b.prepare("relu", "x")
