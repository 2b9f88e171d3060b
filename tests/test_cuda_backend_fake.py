"""The CUDA backend end to end on a machine without a GPU, through a fake driver.

`FakeDriver` stands in for `cuda.bindings.driver`: device memory is host memory, kernel
launches run the real NVRTC-compiled kernels' *source* on the CPU emulator (tests/cuda_emu),
reading each argument with its own type out of the kernelParams array, events report a
fixed time, and an out-of-bounds access in a kernel poisons the context with
CUDA_ERROR_ILLEGAL_ADDRESS the way a GPU does (sticky: every later call in that context
fails). The backend code under test is the real one - specs, compile, cache, contexts,
uploads, typed launches, poison and restore, timing, the empty-call floor, end-to-end
copies, peaks, fault recovery - driven by the real Runner.

Every call the backend makes is also made against the real cuda.bindings functions, which
(with no libcuda here) fail only after converting their arguments: a TypeError there means
the backend passes an argument the real driver API would refuse.
"""
from __future__ import annotations

import ctypes
import shutil
from collections import Counter

import numpy as np
import pytest

from harness import backends
from harness.backends.base import BackendError
from harness.backends.cuda import driver as cd
from harness.backends.cuda import kernels as K
from harness.backends.cuda import nvrtc as cc
from harness.core import catalogue
from harness.core.declaration import INT_SENTINEL
from harness.core.runner import RunConfig, Runner
from harness.core.timing import TimingConfig, perf_clock_ns
from harness.core.verify import verify
from harness.errors import InputError
from tests.test_cuda_demo import demo  # noqa: F401 - a fixture

real_driver = pytest.importorskip("cuda.bindings.driver", reason="cuda-bindings is not installed")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")

FAKE_MS = 0.25                        # every event interval the fake reports


class FakeDriver:
    """Just enough of the CUDA driver API for harness/backends/cuda/driver.py, on the CPU."""

    CUresult = real_driver.CUresult
    CUdevice_attribute = real_driver.CUdevice_attribute
    CUevent_flags = real_driver.CUevent_flags
    ATTRIBUTES = {"COMPUTE_CAPABILITY_MAJOR": 9, "COMPUTE_CAPABILITY_MINOR": 0, "MULTIPROCESSOR_COUNT": 132,
                  "L2_CACHE_SIZE": 1 << 20, "CLOCK_RATE": 1_980_000, "MEMORY_CLOCK_RATE": 2_619_000,
                  "GLOBAL_MEMORY_BUS_WIDTH": 5120}

    def __init__(self, sources: dict[bytes, str], check_types: bool):
        self.sources, self.check_types = sources, check_types
        self.calls: Counter = Counter()
        self.type_errors: list[str] = []
        self.mem: dict[int, np.ndarray] = {}          # device allocations: address -> bytes
        self.pinned: dict[int, np.ndarray] = {}
        self.contexts: dict[int, dict] = {}
        self.stack: list[int] = []
        self.modules: dict[int, str] = {}
        self.functions: dict[int, tuple[str, str]] = {}
        self.free = 80 << 30
        self.refuse_new_contexts = False
        self.launches: list[str] = []
        self._next = 1000

    # ------------------------------------------------------------------ plumbing
    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name.startswith("cu") and callable(attr):
            def call(*args):
                self.calls[name] += 1
                if self.check_types:                  # the real binding converts, then fails to dlopen
                    try:
                        getattr(real_driver, name)(*args)
                    except TypeError as e:
                        self.type_errors.append(f"{name}{args!r}: {e}")
                    except Exception:
                        pass
                return attr(*args)
            return call
        return attr

    def _ok(self, *values):
        return (self.CUresult.CUDA_SUCCESS, *values)

    def _err(self, name):
        return (getattr(self.CUresult, name),)

    def _handle(self) -> int:
        self._next += 1
        return self._next

    def _current(self):
        return self.contexts[self.stack[-1]] if self.stack else None

    def _state_error(self):
        ctx = self._current()
        if ctx is None:
            return self._err("CUDA_ERROR_INVALID_CONTEXT")
        if ctx["poisoned"]:
            return self._err(ctx["poisoned"])
        return None

    def _region(self, table, ptr, n) -> np.ndarray | None:
        for base, buf in table.items():
            if base <= ptr and ptr + n <= base + buf.nbytes:
                return buf[ptr - base:ptr - base + n]
        return None

    def _alloc(self, table, n) -> int:
        raw = np.zeros(int(n) + 256, dtype=np.uint8)
        off = (-raw.ctypes.data) % 256                    # cuMemAlloc: 256-byte aligned
        buf = raw[off:off + int(n)]
        table[buf.ctypes.data] = buf
        return buf.ctypes.data

    def _copy(self, dst, src, n, dst_table, src_table):
        if self._state_error():
            return self._state_error()
        for table, ptr in ((dst_table, dst), (src_table, src)):
            if table is not None and self._region(table, ptr, n) is None:
                return self._err("CUDA_ERROR_INVALID_VALUE")
        if n <= 64 << 20:                                 # big copies are only peaks: skip the bytes
            ctypes.memmove(dst, src, n)
        return self._ok()

    # ------------------------------------------------------------------ device and contexts
    def cuInit(self, flags):
        return self._ok()

    def cuDeviceGetCount(self):
        return self._ok(1)

    def cuDeviceGet(self, ordinal):
        return self._ok(0)

    def cuDeviceGetName(self, length, dev):
        return self._ok(b"Fake H200 (emulated)".ljust(length, b"\x00"))

    def cuDeviceGetAttribute(self, attr, dev):
        return self._ok(self.ATTRIBUTES.get(attr.name.replace("CU_DEVICE_ATTRIBUTE_", ""), 0))

    def cuDeviceTotalMem(self, dev):
        return self._ok(141 << 30)

    def cuDriverGetVersion(self):
        return self._ok(13000)

    def cuGetErrorString(self, err):
        return self._ok(f"fake {err.name}".encode())

    def _new_context(self, primary=False):
        h = self._handle()
        self.contexts[h] = {"alive": True, "poisoned": None, "primary": primary}
        return h

    def cuDevicePrimaryCtxRetain(self, dev):
        for h, c in self.contexts.items():
            if c["primary"] and c["alive"]:
                return self._ok(h)
        return self._ok(self._new_context(primary=True))

    def cuDevicePrimaryCtxRelease(self, dev):
        return self._ok()

    def cuCtxCreate(self, params, flags, dev):
        if self.refuse_new_contexts:
            return self._err("CUDA_ERROR_OUT_OF_MEMORY")
        h = self._new_context()
        self.stack.append(h)
        return self._ok(h)

    def cuCtxPushCurrent(self, ctx):
        if not self.contexts[ctx]["alive"]:
            return self._err("CUDA_ERROR_CONTEXT_IS_DESTROYED")
        self.stack.append(ctx)
        return self._ok()

    def cuCtxPopCurrent(self):
        return self._ok(self.stack.pop()) if self.stack else self._err("CUDA_ERROR_INVALID_CONTEXT")

    def cuCtxDestroy(self, ctx):
        self.contexts[ctx]["alive"] = False
        self.stack = [h for h in self.stack if h != ctx]
        return self._ok()

    def cuCtxSynchronize(self):
        return self._state_error() or self._ok()

    def cuMemGetInfo(self):
        used = sum(b.nbytes for b in self.mem.values())
        return self._state_error() or self._ok(self.free - used, 141 << 30)

    # ------------------------------------------------------------------ memory
    def cuMemAlloc(self, n):
        if self._state_error():
            return self._state_error()
        return self._ok(self._alloc(self.mem, n))

    def cuMemFree(self, ptr):
        self.mem.pop(ptr, None)
        return self._ok()

    def cuMemHostAlloc(self, n, flags):
        return self._state_error() or self._ok(self._alloc(self.pinned, n))

    def cuMemFreeHost(self, ptr):
        self.pinned.pop(ptr, None)
        return self._ok()

    def cuMemcpyHtoD(self, dst, src, n):
        return self._copy(dst, src, n, self.mem, None)

    def cuMemcpyDtoH(self, dst, src, n):
        return self._copy(dst, src, n, None, self.mem)

    def cuMemcpyHtoDAsync(self, dst, src, n, stream):
        return self._copy(dst, src, n, self.mem, self.pinned)

    def cuMemcpyDtoHAsync(self, dst, src, n, stream):
        return self._copy(dst, src, n, self.pinned, self.mem)

    def cuMemcpyDtoDAsync(self, dst, src, n, stream):
        return self._copy(dst, src, n, self.mem, self.mem)

    def cuMemsetD32Async(self, ptr, value, count, stream):
        region = self._region(self.mem, ptr, 4 * count)
        if region is None:
            return self._err("CUDA_ERROR_INVALID_VALUE")
        region.view(np.uint32)[:] = value
        return self._state_error() or self._ok()

    # ------------------------------------------------------------------ modules and launches
    def cuModuleLoadData(self, image):
        if self._state_error():
            return self._state_error()
        source = self.sources.get(bytes(image))
        if source is None:
            return self._err("CUDA_ERROR_INVALID_IMAGE")
        h = self._handle()
        self.modules[h] = source
        return self._ok(h)

    def cuModuleGetFunction(self, module, name):
        from tests.cuda_emu import kernel_names
        source = self.modules[module]
        if name.decode() not in kernel_names(source):
            return self._err("CUDA_ERROR_NOT_FOUND")
        h = self._handle()
        self.functions[h] = (source, name.decode())
        return self._ok(h)

    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        from tests.cuda_emu import EmulatorError, compile_kernel, run_kernel
        from tests.cuda_emu.emu import _DTYPE_OF
        if self._state_error():
            return self._state_error()
        source, name = self.functions[f]
        infos = compile_kernel(source, name).params
        slots = np.frombuffer((ctypes.c_uint64 * max(1, len(infos))).from_address(params), dtype=np.uint64)
        args = []
        for slot, info in zip(slots, infos):
            dtype = np.dtype(_DTYPE_OF[(info.kind, info.size)])
            if info.is_pointer:
                ptr = int(np.frombuffer((ctypes.c_uint64 * 1).from_address(int(slot)), dtype=np.uint64)[0])
                if ptr not in self.mem:                   # a launch gets the start of an allocation
                    return self._err("CUDA_ERROR_INVALID_VALUE")
                args.append(self.mem[ptr].view(dtype))
            else:                                         # exactly the parameter's width, from its slot
                raw = (ctypes.c_char * dtype.itemsize).from_address(int(slot))
                args.append(np.frombuffer(raw, dtype=dtype)[0])
        self.launches.append(name)
        try:
            run_kernel(source, name, (gx, gy, gz), (bx, by, bz), shared, args)
        except EmulatorError:
            self._current()["poisoned"] = "CUDA_ERROR_ILLEGAL_ADDRESS"     # reported at the next sync
        return self._ok()

    # ------------------------------------------------------------------ events
    def cuEventCreate(self, flags):
        return self._state_error() or self._ok(self._handle())

    def cuEventDestroy(self, event):
        return self._ok()

    def cuEventRecord(self, event, stream):
        return self._state_error() or self._ok()

    def cuEventSynchronize(self, event):
        return self._state_error() or self._ok()

    def cuEventElapsedTime(self, start, end):
        return self._state_error() or self._ok(FAKE_MS)


# ----------------------------------------------------------------------------- fixtures

FAULTY_KERNEL = r'''
// Test only: stores through a wild pointer (address 16, never mapped): an illegal address.
// launch: grid=cdiv(n, 256) block=256
extern "C" __global__ void __launch_bounds__(256)
add_out_of_bounds(const float* a, const float* b, float* out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    volatile float* wild = reinterpret_cast<volatile float*>(16ull);
    if (i < n) wild[i] = a[i] + b[i];
}

'''


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The fake driver installed under harness.backends.cuda.driver, a fresh cuda backend, and the
    CUBIN -> source map it needs (filled by watching the real compiles)."""
    sources: dict[bytes, str] = {}
    real_compile = cc.compile_cubin

    def compile_and_remember(source, filename, arch, *a, **kw):
        out = real_compile(source, filename, arch, *a, **kw)
        sources[out.cubin] = source
        return out

    no_real_gpu = not cd.probe().ok
    drv = FakeDriver(sources, check_types=no_real_gpu)
    monkeypatch.setenv("KR_CACHE_DIR", str(tmp_path / "cubins"))
    monkeypatch.setattr(cc, "compile_cubin", compile_and_remember)
    monkeypatch.setattr(cd, "_driver_module", drv)
    monkeypatch.setattr(cd, "FLUSH_MIN_BYTES", 1 << 20)
    monkeypatch.setattr(backends, "_instances", {})
    # Without cupy/torch the peaks fall back to timing our own matmul at 2048^3 - on an
    # emulator that takes minutes: time it at 64^3 instead (same code path).
    from harness.backends.cuda.backend import CudaBackend
    own_sgemm = CudaBackend._own_sgemm
    monkeypatch.setattr(CudaBackend, "_own_sgemm", lambda self, n: own_sgemm(self, 64))
    yield drv
    assert drv.stack == [], "a context was left current: it would capture cupy/torch calls"
    assert drv.type_errors == [], "arguments the real cuda.bindings would refuse:\n" + "\n".join(drv.type_errors)


def _with_faulty_add(monkeypatch, tmp_path):
    """A kernel folder whose add.cu has a faulting variant right after naive: the spec
    mechanism picks it up from its // launch: line, as it does every kernel."""
    folder = tmp_path / "faulty"
    folder.mkdir()
    add = (K.SOURCE_DIR / "add.cu").read_text()
    at = add.index("// launch: grid=min(cdiv(n, THREADS)")
    (folder / "add.cu").write_text(add[:at] + FAULTY_KERNEL.lstrip("\n") + add[at:])
    monkeypatch.setattr(K, "SOURCE_DIR", folder)
    assert K.variants("add") == ["naive", "out_of_bounds", "grid_stride", "vec4"]


def _run(primitives, variants=None, sizes=(33,)):
    cfg = RunConfig(primitives=list(primitives), backends=["cuda"], quick=True, sizes=list(sizes),
                    timing=TimingConfig.quick(), variants=variants)
    runner = Runner(cfg)
    return runner, runner.run()


# ----------------------------------------------------------------------------- tests

def test_availability_and_environment_through_the_driver(fake):
    b = backends.get("cuda")
    a = b.availability()
    assert a.ok and "Fake H200" in a.detail and "sm_90" in a.detail and "132 SMs" in a.detail
    env = b.environment()
    assert env["gpu"] == "Fake H200 (emulated)" and env["gpu_arch"] == "sm_90"
    assert env["cuda_driver_api"] == "13.0" and env["nvrtc"] == "{}.{}".format(*cc.nvrtc_version())


def test_the_runner_verifies_times_and_reports_cuda_variants(fake, monkeypatch):
    runner, rows = _run(["add", "layernorm", "matmul"], variants=["vec4", "block_registers", "warptile"])
    checks = [r for r in rows if r["phase"] == "check"]
    timed = [r for r in rows if r["phase"] == "timed"]
    assert checks and all(r["status"] == "pass" for r in checks), [r["reason"] for r in checks if r["status"] != "pass"]
    assert {(r["primitive"], r["variant"]) for r in timed} == {("add", "vec4"), ("layernorm", "block_registers"),
                                                              ("matmul", "warptile")}
    for r in timed:
        assert r["status"] == "pass", r["reason"]
        assert r["timer"] == "cuda_events" and r["median_s"] == pytest.approx(FAKE_MS * 1e-3)
        assert r["e2e_median_s"] == pytest.approx(FAKE_MS * 1e-3) and r["transfer"] == "pinned"
        assert r["verified_after"] is True and r["compile_s"] > 0
    peaks = runner.peaks["gpu"]
    assert peaks["cache_flushed"] is True and peaks["cache_bytes"] == 1 << 20
    assert peaks["gbps"] == pytest.approx(2 * (256 << 20) / (FAKE_MS * 1e-3) / 1e9)
    assert peaks["gbps_physical"] == pytest.approx(2 * 2_619_000e3 * 5120 / 8 / 1e9)
    assert "no cupy/torch" in peaks["gflops_source"] and peaks["gflops"] > 0
    floor = runner.floors["cuda"]
    assert floor["median_s"] == pytest.approx(FAKE_MS * 1e-3) and "empty kernel" in floor["how"]
    assert peaks["gflops_physical"] == pytest.approx(132 * 128 * 2 * 1.98)
    # Timing flushed L2 before every sample; e2e copied in and out through pinned memory.
    assert fake.calls["cuMemsetD32Async"] >= fake.calls["cuEventElapsedTime"] - 1
    assert fake.calls["cuMemHostAlloc"] >= 2 and fake.calls["cuMemcpyHtoDAsync"] > 0


def test_compile_is_cached_across_processes(fake):
    first = backends.get("cuda").prepare("relu", "naive")
    assert not first.compile_cached
    backends._instances.clear()                       # a new backend, as in a new run
    again = backends.get("cuda").prepare("relu", "vec4")
    assert again.compile_cached and again.compile_s < first.compile_s


def test_a_kernel_fault_is_reported_for_that_kernel_and_the_run_goes_on(fake, monkeypatch, tmp_path):
    _with_faulty_add(monkeypatch, tmp_path)
    runner, rows = _run(["add"])
    bad = [r for r in rows if r["variant"] == "out_of_bounds"]
    good = [r for r in rows if r["variant"] in ("naive", "grid_stride", "vec4")]
    assert bad[0]["status"] == "error"
    assert "kernel fault in add/out_of_bounds: CUDA_ERROR_ILLEGAL_ADDRESS" in bad[0]["reason"]
    assert "fresh one" in bad[0]["reason"]
    assert all(r["status"] == "error" and "faulted earlier" in r["reason"] for r in bad[1:])
    assert good and all(r["status"] == "pass" for r in good), [r["reason"] for r in good if r["status"] != "pass"]
    assert backends.get("cuda").faults == [("add/out_of_bounds", "CUDA_ERROR_ILLEGAL_ADDRESS")]
    own = [c for c in fake.contexts.values() if not c["primary"]]
    assert len(own) == 2 and own[0]["poisoned"] and not own[0]["alive"] and own[1]["alive"]
    assert "cuda_kernel_faults" in backends.get("cuda").environment()


def test_when_no_fresh_context_can_be_made_later_cases_say_why(fake, monkeypatch, tmp_path):
    _with_faulty_add(monkeypatch, tmp_path)
    b = backends.get("cuda")
    kernel = b.prepare("add", "out_of_bounds")
    inputs = catalogue.get("add").make_inputs((100,), "normal", 0)
    fake.refuse_new_contexts = True
    bound = kernel.bind(inputs)
    with pytest.raises(BackendError, match="could not be recreated"):
        bound.run()
    bound.close()
    with pytest.raises(BackendError, match="cannot run in this process"):
        b.prepare("add", "naive")


def test_device_memory_is_checked_before_allocating(fake):
    b = backends.get("cuda")
    kernel = b.prepare("add", "naive")
    fake.free = 300 << 20                              # 300 MiB "free", 256 MiB kept as headroom
    in_use = sum(buf.nbytes for buf in fake.mem.values())   # the L2 flush buffer
    assert b.max_problem_bytes() == (300 << 20) - in_use - (256 << 20)
    allocs = fake.calls["cuMemAlloc"]
    with pytest.raises(BackendError, match="GiB of device memory"):
        kernel.bind(catalogue.get("add").make_inputs((8 << 20,), "normal", 0))
    assert fake.calls["cuMemAlloc"] == allocs


def test_bad_inputs_never_reach_the_device(fake):
    kernel = backends.get("cuda").prepare("softmax", "warp_online")
    with pytest.raises(InputError, match="float32"):
        kernel.bind({"x": np.zeros((4, 8), dtype=np.float64)})
    with pytest.raises(InputError, match="C-contiguous"):
        kernel.bind({"x": np.zeros((8, 4), dtype=np.float32).T})
    with pytest.raises(InputError, match="missing x; unexpected y"):
        kernel.bind({"y": np.zeros((4, 8), dtype=np.float32)})
    with pytest.raises(InputError, match="unknown scalar eps"):
        kernel.bind({"x": np.zeros((4, 8), dtype=np.float32)}, {"eps": 1.0})
    with pytest.raises(BackendError, match="at most 32768 columns"):
        backends.get("cuda").prepare("softmax", "block_registers").bind(
            {"x": np.zeros((1, 40000), dtype=np.float32)})
    assert fake.calls["cuMemAlloc"] == 1                                  # only the L2 flush buffer


def test_a_spec_that_does_not_fit_fails_in_prepare(fake, monkeypatch, tmp_path):
    folder = tmp_path / "k"
    folder.mkdir()
    (folder / "relu.cu").write_text((K.SOURCE_DIR / "relu.cu").read_text().replace(
        "relu_naive(const float* __restrict__ x, float* __restrict__ y, int n)",
        "relu_naive(float* __restrict__ x, float* __restrict__ y, int n)"))
    monkeypatch.setattr(K, "SOURCE_DIR", folder)
    b = backends.get("cuda")
    with pytest.raises(BackendError, match="relu_naive: parameter 'x': tensor 'x' has role 'in': declare it `const`"):
        b.prepare("relu", "naive")
    assert b.prepare("relu", "vec4").variant == "vec4"
    with pytest.raises(BackendError, match="no variant 'nope' of relu; valid: naive, grid_stride, vec4"):
        b.prepare("relu", "nope")


def test_scalars_reach_the_kernel_typed(fake):
    """layernorm's eps is a float32 kernel argument: a different eps gives the answer for
    that eps (the fake reads the argument with the width the kernel declares)."""
    prim = catalogue.get("layernorm")
    dims = (5, 64)
    inputs = prim.make_inputs(dims, "small_spread", 0)
    for eps in (1e-5, 1e-2):
        bound = backends.get("cuda").prepare("layernorm", "block_registers").bind(inputs, {"eps": eps})
        try:
            outs = bound.run()
        finally:
            bound.close()
        assert verify(prim, inputs, outs, dims, scalars={"eps": eps}).ok
    assert not verify(prim, inputs, outs, dims).ok                        # eps = 1e-2 is not the default


def test_every_output_is_poisoned_fetched_and_inout_restored(fake, demo):
    """Several outputs of two dtypes and an inout tensor, through the device: poison() puts
    NaN and the int64 sentinel into the out tensors, restore() puts the inout one back, and
    every verified run starts from the same state."""
    dims = (129, 1000)
    inputs = demo.make_inputs(dims, "normal", 0)
    for a in inputs.values():
        a.flags.writeable = False                                         # as the runner hands them over
    b = backends.get("cuda")
    bound = b.prepare("gather_demo", "naive").bind(inputs, {"step": 5})
    try:
        bound.poison()
        outs = bound.outputs()
        assert set(outs) == {"hits", "y", "src"}
        assert np.isnan(outs["y"]).all() and (outs["src"] == INT_SENTINEL).all()
        assert np.array_equal(outs["hits"], inputs["hits"])               # inout: not poisoned, pristine
        first = bound.run()
        assert first["src"].dtype == np.int64 and first["hits"].dtype == np.int64
        assert verify(demo, inputs, first, dims, scalars={"step": 5}).ok
        bound.call()                                                      # a second step, no restore
        assert not np.array_equal(bound.outputs()["hits"], first["hits"])
        bound.restore()
        assert np.array_equal(bound.outputs()["hits"], inputs["hits"])
        again = bound.run()
        assert all(np.array_equal(again[k], first[k]) for k in first)
        assert bound.time_once(None) == pytest.approx(FAKE_MS * 1e-3)
        assert bound.time_end_to_end() == pytest.approx(FAKE_MS * 1e-3)
    finally:
        bound.close()
    assert fake.calls["cuMemcpyDtoDAsync"] >= 3                           # restores: device to device


def test_the_runner_verifies_a_primitive_with_inout_and_int64_outputs(fake, demo):
    runner, rows = _run(["gather_demo"], sizes=(65,))
    assert rows and all(r["status"] == "pass" for r in rows), [(r["phase"], r["reason"]) for r in rows]
    timed = [r for r in rows if r["phase"] == "timed"]
    assert len(timed) == 1 and timed[0]["verified_after"] is True
    assert set(timed[0]["outputs"]) == {"hits", "y", "src"}


def test_the_empty_call_floor_launches_an_empty_kernel(fake):
    b = backends.get("cuda")
    floor = b.measure_floor(TimingConfig.quick(), perf_clock_ns)
    assert floor["median_s"] == pytest.approx(FAKE_MS * 1e-3) and floor["samples"] >= 5
    assert "empty kernel" in floor["how"] and "L2 flush" in floor["how"]
    assert fake.launches and set(fake.launches) == {"floor_noop"}


@pytest.mark.parametrize("check", ["contract", "fault", "cache", "ops"])
def test_the_gpu_checks_hold_against_the_fake_driver(fake, monkeypatch, capsys, check):
    """tests/gpu_cuda_checks.py only runs where a GPU is; run the checks that are cheap on
    the emulator here, so their use of the API is proven before a GPU ever sees them."""
    import tests.gpu_cuda_checks as G
    from tests.test_cuda_demo import DEMO
    monkeypatch.setattr(K, "SOURCE_DIR", K.SOURCE_DIR)               # the checks repoint it: put it back after
    monkeypatch.setitem(catalogue.PRIMITIVES, DEMO.name, DEMO)
    monkeypatch.setenv("KR_CACHE_DIR", str(cc.cache_dir()))
    monkeypatch.setattr(G, "failures", [])
    monkeypatch.setattr(G, "facts", {})
    with pytest.raises(SystemExit) as info:
        G.CHECKS[check]()
    assert info.value.code == 0, capsys.readouterr().out


# ----------------------------------------------------------------------------- the op layer

def _bits(a: np.ndarray) -> set:
    return set(np.ascontiguousarray(a).view(np.uint32 if a.dtype == np.float32 else np.uint64).reshape(-1).tolist())


def test_ops_buffers_round_trip_copy_poison_and_free(fake):
    ops = backends.get("cuda").ops()
    assert ops is backends.get("cuda").ops() and ops.name == "cuda"
    f = np.arange(12, dtype=np.float32).reshape(3, 4)
    i = np.array([5, -7, 2**40], dtype=np.int64)
    bf, bi, b0 = ops.upload(f), ops.upload(i), ops.upload(np.float32(2.5))
    assert (bf.shape, bf.dtype, bi.dtype, b0.shape) == ((3, 4), "float32", "int64", ())
    assert np.array_equal(ops.download(bf), f) and np.array_equal(ops.download(bi), i)
    assert ops.download(b0).shape == () and float(ops.download(b0)) == 2.5
    ops.write(bf, f * 2)
    assert np.array_equal(ops.download(bf), f * 2)
    other = ops.empty((3, 4))
    ops.copy(other, bf)                                       # device to device
    assert np.array_equal(ops.download(other), f * 2)
    ops.poison(other)
    ops.poison(bi)
    assert _bits(ops.download(other)) == {0x7FC00000}         # NaN in every word
    assert (ops.download(bi) == INT_SENTINEL).all()           # cuMemsetD32 of 0x81111111
    flat = ops.view(bf, (12,))                                # the same memory, another shape
    assert np.array_equal(ops.download(flat), (f * 2).reshape(-1))
    with pytest.raises(InputError, match="sizes or dtypes differ"):
        ops.copy(ops.empty((4,)), bf)
    with pytest.raises(InputError, match="does not fit"):
        ops.write(bf, np.zeros(5, np.float32))
    with pytest.raises(InputError, match="float32 or int64"):
        ops.upload(np.zeros(3, np.float64).astype(np.float16))
    allocated = len(fake.mem)
    ops.free(other)
    assert len(fake.mem) == allocated - 1
    with pytest.raises(BackendError, match="has been freed"):
        ops.download(other)
    from harness.backends.numpy_baseline import NumpyOps
    with pytest.raises(InputError, match="not a buffer of cuda"):
        ops.download(NumpyOps().upload(f))
    for b in (bf, bi, b0):
        ops.free(b)


def test_ops_call_checks_once_and_run_only_launches(fake):
    ops = backends.get("cuda").ops()
    prim = catalogue.get("relu")
    x = prim.make_inputs((1001,), "normal", 0)["x"]
    bx, by = ops.upload(x), ops.empty((1001,))
    call = ops.call("relu", "vec4", {"x": bx, "y": by})
    copies = fake.calls["cuMemcpyHtoD"] + fake.calls["cuMemcpyDtoH"]
    for _ in range(3):
        call.run()
    assert fake.calls["cuMemcpyHtoD"] + fake.calls["cuMemcpyDtoH"] == copies     # no transfers
    assert fake.launches[-3:] == ["relu_vec4"] * 3
    assert verify(prim, {"x": x}, {"y": ops.download(by)}, (1001,)).ok
    # Checked at call(), once: names, shapes, dtypes, the launch, the variant.
    with pytest.raises(InputError, match="missing y"):
        ops.call("relu", "vec4", {"x": bx})
    with pytest.raises(InputError, match="expected"):
        ops.call("relu", "vec4", {"x": bx, "y": ops.empty((1000,))})
    with pytest.raises(InputError, match="is int64"):
        ops.call("relu", "vec4", {"x": bx, "y": ops.empty((1001,), "int64")})
    with pytest.raises(BackendError, match="no variant 'nope' of relu"):
        ops.call("relu", "nope", {"x": bx, "y": by})
    wide = ops.empty((1, 40000))
    with pytest.raises(BackendError, match="at most 32768 columns"):
        ops.call("softmax", "block_registers", {"x": wide, "y": ops.empty((1, 40000))})
    with pytest.raises(InputError, match="unknown scalar"):
        ops.call("relu", "vec4", {"x": bx, "y": by}, {"eps": 1.0})


def test_a_calls_scalars_are_typed_and_set_scalars_rebuilds_them(fake):
    """AdamW's step is an int32 kernel argument and lr a float32: the fake reads each with
    the width the kernel declares, so a wrong type would give a wrong answer here."""
    ops = backends.get("cuda").ops()
    prim = catalogue.get("adamw")
    dims = (1003,)
    inputs = prim.make_inputs(dims, "normal", 0)
    bufs = {name: ops.upload(a) for name, a in inputs.items()}
    keep = {name: ops.upload(a) for name, a in inputs.items() if prim.tensor(name).role == "inout"}
    call = ops.call("adamw", "vec4", bufs, {"lr": 1e-2})
    assert type(call.scalars["step"]) is np.int32 and type(call.scalars["lr"]) is np.float32
    for change in ({}, {"step": 1}, {"step": 1000}):        # lr = 1e-2 from call() is kept
        scalars = {"lr": 1e-2, **change}
        for name, b in keep.items():
            ops.copy(bufs[name], b)
        call.set_scalars(**change)
        call.run()
        outs = {t.name: ops.download(bufs[t.name]) for t in prim.outputs}
        v = verify(prim, inputs, outs, dims, scalars=scalars)
        assert v.ok, f"{scalars}: {v.message}"
    assert not verify(prim, inputs, outs, dims, scalars={"lr": 1e-2, "step": 3}).ok   # step 1000 really reached it
    with pytest.raises(InputError, match="unknown scalar"):
        call.set_scalars(momentum=0.5)
    with pytest.raises(InputError, match="fraction"):
        call.set_scalars(step=1.5)


@pytest.mark.parametrize("primitive,variant", [("layernorm_backward", "fused"), ("matmul_backward", "via_transpose"),
                                               ("cross_entropy", "warp_online")])
def test_a_variant_of_several_steps_runs_them_in_order_with_its_scratch(fake, primitive, variant):
    ops = backends.get("cuda").ops()
    prim = catalogue.get(primitive)
    dims = prim.check_dims[-2]
    inputs = prim.make_inputs(dims, prim.all_distributions[-1], 0)
    bufs = {t.name: ops.upload(inputs[t.name]) if t.is_input else ops.empty(prim.shape_of(t, dims), t.dtype)
            for t in prim.tensors}
    spec = K.spec(primitive, variant)
    before = len(fake.mem)
    call = ops.call(primitive, variant, bufs)
    assert len(fake.mem) == before + len(spec.scratch) and set(call.scratch) == {s.name for s in spec.scratch}
    for dev in call.scratch.values():                          # scratch starts as NaN, never as zeros
        assert _bits(ops.download(ops_view_of(ops, dev))) == {0x7FC00000}
    start = len(fake.launches)
    call.run()
    assert fake.launches[start:] == list(spec.kernels)
    outs = {t.name: ops.download(bufs[t.name]) for t in prim.outputs}
    v = verify(prim, inputs, outs, dims)
    assert v.ok, v.message
    call.close()
    assert len(fake.mem) == before


def ops_view_of(ops, dev):
    """A scratch DeviceBuffer seen as a float32 Buffer of the op layer (test only)."""
    from harness.backends.ops import Buffer
    return Buffer(ops, (dev.nbytes // 4,), "float32", dev)


def test_ops_time_is_events_without_the_l2_flush(fake):
    ops = backends.get("cuda").ops()
    bx, by = ops.upload(np.ones(64, np.float32)), ops.empty((64,))
    call = ops.call("relu", "naive", {"x": bx, "y": by})
    memsets, events = fake.calls["cuMemsetD32Async"], fake.calls["cuEventRecord"]
    assert ops.time(call.run) == pytest.approx(FAKE_MS * 1e-3)
    assert fake.calls["cuMemsetD32Async"] == memsets          # no flush: a step's op sees a warm cache
    assert fake.calls["cuEventRecord"] == events + 2
    bound = backends.get("cuda").prepare("relu", "naive").bind({"x": np.ones(64, np.float32)})
    try:
        memsets = fake.calls["cuMemsetD32Async"]
        bound.time_once(None)                                  # the measurement path flushes
        assert fake.calls["cuMemsetD32Async"] == memsets + 1
    finally:
        bound.close()


def test_buffers_of_a_context_reset_by_a_fault_say_so(fake, monkeypatch, tmp_path):
    _with_faulty_add(monkeypatch, tmp_path)
    b = backends.get("cuda")
    ops = b.ops()
    a = ops.upload(np.ones(100, np.float32))
    good = ops.call("add", "naive", {"a": a, "b": a, "out": ops.empty((100,))})
    bad = ops.call("add", "out_of_bounds", {"a": a, "b": a, "out": ops.empty((100,))})
    good.run()
    bad.run()
    with pytest.raises(BackendError, match="kernel fault in one of add/naive, add/out_of_bounds"):
        ops.synchronize()                      # two calls since the last sync: both named, neither banned
    with pytest.raises(BackendError, match="reset after a kernel fault.*upload it again"):
        ops.download(a)
    with pytest.raises(BackendError, match="make the call again on new buffers"):
        good.run()
    fresh = ops.upload(np.ones(100, np.float32))
    bad2 = ops.call("add", "out_of_bounds", {"a": fresh, "b": fresh, "out": ops.empty((100,))})
    bad2.run()
    with pytest.raises(BackendError, match="kernel fault in add/out_of_bounds"):
        ops.download(fresh)                    # one call since the last sync: that one is banned
    with pytest.raises(BackendError, match="not run: add/out_of_bounds faulted earlier"):
        ops.call("add", "out_of_bounds", {"a": ops.upload(np.ones(4, np.float32)), "b": ops.upload(np.ones(4, np.float32)),
                                          "out": ops.empty((4,))})
    out = ops.empty((100,))
    again = ops.upload(np.ones(100, np.float32))
    ops.call("add", "vec4", {"a": again, "b": again, "out": out}).run()
    assert (ops.download(out) == 2).all()


def test_the_mlp_trains_on_the_cuda_op_layer_in_lockstep_with_float64(fake):
    """The training step's CUDA path end to end, with no GPU: every call of the model goes
    through CudaOps (device buffers, typed parameters, multi-step variants, AdamW's step
    rewritten each step) to the real kernels on the emulator, and three steps agree with
    the float64 reference within the training command's tolerances."""
    from harness import backends as registry
    from harness import train as tr
    from harness.backends.reference import ReferenceOps
    from harness.models import data as data_mod
    from harness.models import mlp

    cfg = mlp.Config(hidden=32, batch=16, steps=3)
    d = data_mod.load()
    weights = mlp.initial_weights(cfg)
    cuda = registry.get("cuda")
    assert cuda.availability().ok, cuda.availability().reason
    model = mlp.MLP.build(cuda.ops(), cfg, lambda p: cuda.variants(p)[-1], weights)
    ref = mlp.MLP.build(ReferenceOps(), cfg, lambda p: "reference", weights)
    try:
        for t, ix in enumerate(data_mod.batches(d, cfg.batch, cfg.steps, cfg.seed), start=1):
            for m in (model, ref):
                m.load_batch(d.x_train[ix], d.y_train[ix])
                m.forward_backward()
            if t == 1:
                got, want = model.gradients(), ref.gradients()
                for g in want:
                    r = tr.tensor_report(got[g], want[g], tr.GRAD_RTOL)
                    assert r["ok"], (g, r)
            for m in (model, ref):
                m.update(t)
            assert abs(model.loss() - ref.loss()) <= tr.loss_tolerance(ref.loss()), t
    finally:
        model.close()


def test_the_gpt_trains_on_the_cuda_op_layer_in_lockstep_with_float64(fake):
    """The GPT's CUDA step with no GPU: every kernel of the model (embedding, layernorm,
    the matmuls, transpose, flash attention and their backwards, AdamW) through CudaOps to
    the emulator, two steps in agreement with float64 at the training command's tolerances."""
    from harness import backends as registry
    from harness import train_gpt as tg
    from harness.backends.reference import ReferenceOps
    from harness.models import gpt, text

    corpus = text.load()
    cfg = gpt.Config(layers=1, heads=2, channels=8, context=5, batch=2, steps=2, vocab=corpus.vocab)
    weights = gpt.initial_weights(cfg)
    cuda = registry.get("cuda")
    assert cuda.availability().ok, cuda.availability().reason
    model = gpt.GPT.build(cuda.ops(), cfg, lambda p: cuda.variants(p)[-1], weights)
    ref = gpt.GPT.build(ReferenceOps(), cfg, lambda p: "reference", weights)
    try:
        for t, batch in enumerate(text.batches(corpus.train, cfg.batch, cfg.context, cfg.steps, 0), start=1):
            for m in (model, ref):
                m.load_batch(*batch)
                m.forward_backward()
            if t == 1:
                got, want = model.gradients(), ref.gradients()
                for g in want:
                    r = tg.tensor_report(got[g], want[g], tg.GRAD_RTOL)
                    assert r["ok"], (g, r)
            for m in (model, ref):
                m.update(t)
            assert abs(model.loss() - ref.loss()) <= tg.loss_tolerance(ref.loss()), t
    finally:
        model.close()
        ref.close()
