"""The CUDA driver API through cuda-bindings (`cuda.bindings.driver`): probing the GPU, a
context, device and pinned memory, kernel launches, and event timing with an L2 flush.
Shared by the `cuda` backend and the cupy/torch peers.

Why the low-level driver API and not cuda.core: every call is explicit (which context,
which stream), nothing is created behind our back, and there is no path into the cuda.core
no-driver deadlock (`get_kernel()` with no libcuda blocks every later driver call). The
first driver call anywhere is `cuInit`, inside `probe()`.

Contexts: the `cuda` backend runs in a context of its own, made current only inside
`with ctx:` (push/pop). cupy and torch use the device's *primary* context through the
runtime API; keeping ours separate means a kernel fault (which poisons its context for
good) cannot break them, and ours can be destroyed and recreated (see CudaBackend).
"""
from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

# Errors after which the context is unusable ("sticky"): every later call in it fails.
STICKY_ERRORS = {
    "CUDA_ERROR_ILLEGAL_ADDRESS", "CUDA_ERROR_LAUNCH_FAILED", "CUDA_ERROR_MISALIGNED_ADDRESS",
    "CUDA_ERROR_ILLEGAL_INSTRUCTION", "CUDA_ERROR_INVALID_ADDRESS_SPACE", "CUDA_ERROR_INVALID_PC",
    "CUDA_ERROR_HARDWARE_STACK_ERROR", "CUDA_ERROR_ASSERT", "CUDA_ERROR_LAUNCH_TIMEOUT",
    "CUDA_ERROR_ECC_UNCORRECTABLE", "CUDA_ERROR_CONTEXT_IS_DESTROYED",
}
FLUSH_MIN_BYTES = 64 << 20

_driver_module = None                  # tests may install a stand-in here


def driver():
    """The cuda.bindings.driver module (ImportError when cuda-bindings is not installed)."""
    global _driver_module
    if _driver_module is None:
        from cuda.bindings import driver as _d
        _driver_module = _d
    return _driver_module


class CudaError(RuntimeError):
    """A driver call failed. `.name` is the CUresult name, `.sticky` says the context is lost."""

    def __init__(self, call: str, name: str, text: str = ""):
        self.call, self.name, self.text = call, name, text
        super().__init__(f"{call}: {name}" + (f" ({text})" if text else ""))

    @property
    def sticky(self) -> bool:
        return self.name in STICKY_ERRORS


def _error_name(err) -> tuple[str, str]:
    name = getattr(err, "name", None) or f"CUresult {int(err)}"
    try:
        e, text = driver().cuGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) and int(e) == 0 else ""
    except Exception:
        text = ""
    return name, text


def check(result, call: str):
    """Unpack a cuda-bindings result tuple (err, *values); raise CudaError on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CudaError(call, *_error_name(err))
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


# ----------------------------------------------------------------------------- probing

@dataclass(frozen=True)
class Probe:
    ok: bool
    reason: str = ""
    hint: str = ""
    device_count: int = 0


NO_GPU_HINT = ("CUDA kernels still compile without a GPU: python -m harness build -b cuda --arch sm_90; "
               "run on a machine with an NVIDIA GPU and driver to time them")


def probe() -> Probe:
    """Is there a usable NVIDIA driver and GPU? Never hangs: cuInit fails fast without libcuda."""
    try:
        drv = driver()
    except ImportError as e:
        return Probe(False, f"cuda-python is not installed ({e})", "pip install -e '.[cuda]'")
    try:
        (err,) = drv.cuInit(0)
    except RuntimeError:               # cuda-pathfinder: DynamicLibNotFoundError / failed dlopen
        return Probe(False, "no NVIDIA driver (libcuda.so.1 not found)", NO_GPU_HINT)
    if int(err) != 0:
        name, text = _error_name(err)
        if name == "CUDA_ERROR_NO_DEVICE":
            return Probe(False, "the NVIDIA driver sees no CUDA GPU (CUDA_ERROR_NO_DEVICE)", NO_GPU_HINT)
        return Probe(False, f"cuInit failed: {name}" + (f" ({text})" if text else ""),
                     "check the driver with nvidia-smi")
    count = check(drv.cuDeviceGetCount(), "cuDeviceGetCount")
    if count < 1:
        return Probe(False, "the NVIDIA driver sees no CUDA GPU", NO_GPU_HINT)
    return Probe(True, device_count=count)


# ----------------------------------------------------------------------------- the device

# FP32 FMA lanes per SM by compute capability (CUDA C Programming Guide, arithmetic throughput).
FP32_LANES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128,
                     (9, 0): 128, (10, 0): 128, (10, 3): 128, (12, 0): 128}


@dataclass(frozen=True)
class DeviceInfo:
    ordinal: int
    name: str
    cc: tuple[int, int]
    sm_count: int
    l2_bytes: int
    clock_khz: int                     # SM boost clock
    mem_clock_khz: int
    bus_width_bits: int
    total_bytes: int
    driver_cuda: str                   # CUDA version the driver supports, e.g. "13.0"

    @property
    def arch(self) -> str:
        return f"sm_{self.cc[0]}{self.cc[1]}"

    def physical_gflops(self) -> float | None:
        """SMs x FP32 lanes x 2 (FMA) x clock: an upper bound no fp32 kernel can beat."""
        lanes = FP32_LANES_PER_SM.get(self.cc)
        if not lanes or not self.clock_khz:
            return None
        return self.sm_count * lanes * 2 * self.clock_khz * 1e3 / 1e9

    def physical_gbps(self) -> float | None:
        """2 (double data rate) x memory clock x bus width: the DRAM's nominal bandwidth."""
        if not self.mem_clock_khz or not self.bus_width_bits:
            return None
        return 2 * self.mem_clock_khz * 1e3 * self.bus_width_bits / 8 / 1e9


def _attr(drv, dev, name: str) -> int:
    try:
        return int(check(drv.cuDeviceGetAttribute(getattr(drv.CUdevice_attribute, name), dev), name))
    except (AttributeError, CudaError):      # an attribute this driver/binding no longer has
        return 0


def device_info(ordinal: int = 0) -> DeviceInfo:
    drv = driver()
    dev = check(drv.cuDeviceGet(ordinal), "cuDeviceGet")
    raw = check(drv.cuDeviceGetName(256, dev), "cuDeviceGetName")
    name = raw.split(b"\x00", 1)[0].decode(errors="replace").strip() if isinstance(raw, bytes) else str(raw)
    version = check(drv.cuDriverGetVersion(), "cuDriverGetVersion")
    a = lambda n: _attr(drv, dev, f"CU_DEVICE_ATTRIBUTE_{n}")   # noqa: E731
    return DeviceInfo(
        ordinal=ordinal, name=name,
        cc=(a("COMPUTE_CAPABILITY_MAJOR"), a("COMPUTE_CAPABILITY_MINOR")),
        sm_count=a("MULTIPROCESSOR_COUNT"), l2_bytes=a("L2_CACHE_SIZE"), clock_khz=a("CLOCK_RATE"),
        mem_clock_khz=a("MEMORY_CLOCK_RATE"), bus_width_bits=a("GLOBAL_MEMORY_BUS_WIDTH"),
        total_bytes=int(check(drv.cuDeviceTotalMem(dev), "cuDeviceTotalMem")),
        driver_cuda=f"{version // 1000}.{version % 1000 // 10}")


def kernel_driver_version() -> str | None:
    """The NVIDIA kernel module's version (e.g. 580.159), where Linux exposes it."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


# ----------------------------------------------------------------------------- contexts

class Context:
    """A CUDA context that is current only inside `with ctx:`.

    primary=False: a context of our own (cuCtxCreate) - destroyable after a fault.
    primary=True:  the device's primary context, the one cupy and torch use.
    """

    def __init__(self, ordinal: int = 0, primary: bool = False):
        drv = driver()
        self.primary, self.ordinal = primary, ordinal
        self.device = check(drv.cuDeviceGet(ordinal), "cuDeviceGet")
        if primary:
            self.handle = check(drv.cuDevicePrimaryCtxRetain(self.device), "cuDevicePrimaryCtxRetain")
        else:
            try:                                  # CUDA 13 bindings: (params, flags, device)
                self.handle = check(drv.cuCtxCreate(None, 0, self.device), "cuCtxCreate")
            except TypeError:                     # CUDA 12 bindings: (flags, device)
                self.handle = check(drv.cuCtxCreate(0, self.device), "cuCtxCreate")
            check(drv.cuCtxPopCurrent(), "cuCtxPopCurrent")   # cuCtxCreate made it current
        self.alive = True

    def __enter__(self) -> "Context":
        check(driver().cuCtxPushCurrent(self.handle), "cuCtxPushCurrent")
        return self

    def __exit__(self, *exc) -> None:
        driver().cuCtxPopCurrent()                # never mask the error that got us here

    def synchronize(self) -> None:
        with self:
            check(driver().cuCtxSynchronize(), "cuCtxSynchronize")

    def free_bytes(self) -> int:
        with self:
            free, _total = check(driver().cuMemGetInfo(), "cuMemGetInfo")
        return int(free)

    def destroy(self) -> None:
        """Release the context; errors are ignored (a faulted context may report its fault)."""
        if not self.alive:
            return
        self.alive = False
        drv = driver()
        try:
            if self.primary:
                drv.cuDevicePrimaryCtxRelease(self.device)
            else:
                drv.cuCtxDestroy(self.handle)
        except Exception:
            pass


class DeviceBuffer:
    """cuMemAlloc'd memory in one context (256-byte aligned)."""

    def __init__(self, ctx: Context, nbytes: int):
        self.ctx, self.nbytes = ctx, max(int(nbytes), 4)
        with ctx:
            self.ptr = int(check(driver().cuMemAlloc(self.nbytes), "cuMemAlloc"))

    def upload(self, host: np.ndarray) -> None:
        assert host.flags.c_contiguous and host.nbytes <= self.nbytes
        with self.ctx:
            check(driver().cuMemcpyHtoD(self.ptr, host.ctypes.data, host.nbytes), "cuMemcpyHtoD")

    def download(self, host: np.ndarray) -> np.ndarray:
        assert host.flags.c_contiguous and host.nbytes <= self.nbytes
        with self.ctx:
            check(driver().cuMemcpyDtoH(host.ctypes.data, self.ptr, host.nbytes), "cuMemcpyDtoH")
        return host

    def fill_u32(self, value: int, sync: bool = True) -> None:
        """Every 32-bit word of the buffer = value (0x7FC00000: float32 NaN; 0x81111111: the
        int64 sentinel, whose two halves are equal). sync=False only enqueues it on the legacy
        default stream, ordered before any kernel or copy enqueued after it."""
        with self.ctx:
            check(driver().cuMemsetD32Async(self.ptr, int(value), self.nbytes // 4, 0), "cuMemsetD32Async")
            if sync:
                self.ctx.synchronize()

    def fill_nan(self) -> None:
        """Every float32 of the buffer = NaN (0x7FC00000), synchronously."""
        self.fill_u32(0x7FC00000)

    def copy_from(self, src: "DeviceBuffer", nbytes: int | None = None) -> None:
        """Device-to-device copy on the legacy default stream: ordered before any kernel or
        event enqueued after it, so nothing has to wait for it here."""
        n = self.nbytes if nbytes is None else int(nbytes)
        assert n <= self.nbytes and n <= src.nbytes
        with self.ctx:
            check(driver().cuMemcpyDtoDAsync(self.ptr, src.ptr, n, 0), "cuMemcpyDtoDAsync")

    def free(self) -> None:
        if self.ptr and self.ctx.alive:
            try:
                with self.ctx:
                    driver().cuMemFree(self.ptr)
            except Exception:
                pass
        self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory (cuMemHostAlloc) with a numpy view: copies from it run at full
    PCIe/NVLink speed and asynchronously, unlike copies from ordinary (pageable) memory."""

    def __init__(self, ctx: Context, nbytes: int):
        self.ctx, self.nbytes = ctx, max(int(nbytes), 4)
        with ctx:
            self.ptr = int(check(driver().cuMemHostAlloc(self.nbytes, 0), "cuMemHostAlloc"))
        self.owner = None                              # which binding last filled it

    def view(self, dtype, shape) -> np.ndarray:
        count = int(np.prod(shape)) if shape else 1
        raw = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def free(self) -> None:
        if self.ptr and self.ctx.alive:
            try:
                with self.ctx:
                    driver().cuMemFreeHost(self.ptr)
            except Exception:
                pass
        self.ptr = 0


class KernelParams:
    """cuLaunchKernel's `kernelParams`: the address of an array of addresses, each pointing at
    one argument's value. Every value is a numpy scalar of exactly its parameter's C type -
    np.uint64 for a device pointer, np.int32 (int), np.int64 (long long), np.float32 (float) -
    as harness/backends/cuda/kernels.arguments() lays them out. A Python int or float is
    refused: its width would be a guess, and a wrong width is a silently wrong argument."""

    TYPES = (np.uint64, np.int32, np.int64, np.float32)

    def __init__(self, values):
        self._values = []
        for i, v in enumerate(values):
            if type(v) not in self.TYPES:
                raise TypeError(f"kernel argument {i} is {type(v).__name__} {v!r}: pass one of "
                                f"np.uint64 (pointers), np.int32, np.int64, np.float32")
            self._values.append(np.array([v], dtype=v.dtype))
        self._addresses = np.array([a.ctypes.data for a in self._values] or [0], dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def address(self) -> int:
        return int(self._addresses.ctypes.data)


class Module:
    """A CUBIN loaded into one context."""

    def __init__(self, ctx: Context, cubin: bytes):
        self.ctx = ctx
        with ctx:
            self.handle = check(driver().cuModuleLoadData(cubin), "cuModuleLoadData")
        self._functions = {}

    def function(self, name: str):
        if name not in self._functions:
            with self.ctx:
                self._functions[name] = check(driver().cuModuleGetFunction(self.handle, name.encode()),
                                              f"cuModuleGetFunction({name})")
        return self._functions[name]


def launch(function, grid, block, shared_bytes: int, params: KernelParams, stream=0) -> None:
    """Enqueue one kernel on `stream` (0: the legacy default stream). The caller holds the context."""
    check(driver().cuLaunchKernel(function, *grid, *block, int(shared_bytes), stream, params.address, 0),
          "cuLaunchKernel")


# ----------------------------------------------------------------------------- timing

class EventTimer:
    """Times GPU work between two CUDA events on the legacy default stream, after flushing
    the L2 cache so every timed call starts cold, as it would inside a real model.

    The flush writes a buffer of twice the L2 size (at least 64 MiB) with cuMemsetD32Async,
    a different value each time; it runs before the start event, so it is not timed.
    cupy and torch enqueue on the same legacy default stream of the primary context, so the
    same timer (in that context) times their calls too.
    """

    def __init__(self, ctx: Context, l2_bytes: int):
        drv = driver()
        self.ctx = ctx
        self.flush_bytes = max(FLUSH_MIN_BYTES, 2 * int(l2_bytes))
        self._flush = DeviceBuffer(ctx, self.flush_bytes)
        self._value = 0
        with ctx:
            flags = int(drv.CUevent_flags.CU_EVENT_DEFAULT)   # timing enabled
            self._start = check(drv.cuEventCreate(flags), "cuEventCreate")
            self._end = check(drv.cuEventCreate(flags), "cuEventCreate")

    def flush_l2(self) -> None:
        self._value = (self._value + 1) & 0x7FFFFFFF
        check(driver().cuMemsetD32Async(self._flush.ptr, self._value, self.flush_bytes // 4, 0),
              "cuMemsetD32Async")

    def time(self, work: Callable[[], None], flush: bool = True) -> float:
        """Seconds between the events around `work()` (which must enqueue on stream 0)."""
        drv = driver()
        with self.ctx:
            if flush:
                self.flush_l2()
            check(drv.cuEventRecord(self._start, 0), "cuEventRecord")
            work()
            check(drv.cuEventRecord(self._end, 0), "cuEventRecord")
            check(drv.cuEventSynchronize(self._end), "cuEventSynchronize")
            ms = check(drv.cuEventElapsedTime(self._start, self._end), "cuEventElapsedTime")
        return float(ms) * 1e-3

    def close(self) -> None:
        if self.ctx.alive:
            try:
                with self.ctx:
                    driver().cuEventDestroy(self._start)
                    driver().cuEventDestroy(self._end)
            except Exception:
                pass
        self._flush.free()
