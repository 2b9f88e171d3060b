"""What a backend is: a name, whether it can run here (and if not, why), its variants per
primitive, and how to run one variant on a primitive's tensors.

The life of one measurement, for any backend:

    kernel = backend.prepare("layernorm", "fused")    # compile/load once; kernel.compile_s
    bound  = kernel.bind(inputs, scalars)             # validate, allocate outputs, copy to the device
    outs   = bound.run()                              # restore inout, poison out, one call: {name: array}
    t      = bound.time_once(clock, calls)            # restore inout (untimed), time `calls` calls
    e2e    = bound.time_end_to_end()                  # device backends: copies in + kernel + copies out
    bound.close()

A bound case owns its tensors. `out` tensors are poisoned (NaN, or a sentinel for int64)
before every verified call, so an element a kernel fails to write can never keep a value
a previous call, variant or allocation left there. `inout` tensors keep a pristine copy and
are restored from it before every call, outside the timed region, so an in-place update
(an optimizer step) is measured on the same inputs every time and never leaks into the
next sample or variant. Inputs (`in`) are never written.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core.declaration import INT_SENTINEL, Primitive


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""        # why not, in a few words ("no NVIDIA driver (libcuda.so.1 not found)")
    hint: str = ""          # what to do about it ("pip install mojo==1.2.0")
    detail: str = ""        # when ok: versions, device name


class BackendError(RuntimeError):
    """A backend failed on one case (compile error, launch failure). One line, no traceback."""


def poison_array(a: np.ndarray) -> None:
    """NaN into a float array, the int sentinel into an int64 one."""
    a.fill(np.nan if a.dtype.kind == "f" else INT_SENTINEL)


class Bound(ABC):
    """One variant bound to one set of tensors, ready to run many times."""

    timer = "perf_counter_ns"        # what time_once measures with
    transfer = None                  # device backends: "pinned" or "pageable" for the end-to-end copies
    batchable = True                 # a sample may time several calls back to back (CPU timers)

    @abstractmethod
    def call(self) -> None:
        """Do the work once; the outputs stay where `outputs()` can fetch them."""

    @abstractmethod
    def outputs(self) -> dict[str, np.ndarray]:
        """Every out and inout tensor after the latest call, as host numpy arrays, by name."""

    def poison(self) -> None:
        """Overwrite every out tensor with NaN (int64: a sentinel), so the next call must
        write every element again."""

    def restore(self) -> None:
        """Put every inout tensor back to its pristine value."""

    def run(self) -> dict[str, np.ndarray]:
        """One verified call: restore, poison, call, fetch."""
        self.restore()
        self.poison()
        self.call()
        return self.outputs()

    def time_once(self, clock: Callable[[], int], calls: int = 1) -> float:
        """Seconds per call over `calls` back-to-back calls, after an untimed restore."""
        self.restore()
        t0 = clock()
        for _ in range(calls):
            self.call()
        return (clock() - t0) * 1e-9 / calls

    def time_end_to_end(self) -> float | None:
        """Seconds for inputs in + work + outputs out; None where that equals time_once."""
        return None

    def changed_inputs(self) -> list[str]:
        """The `in` tensors whose contents a kernel changed (it must only read them)."""
        return []

    def close(self) -> None:
        pass


class Kernel(ABC):
    """One prepared (primitive, variant): compiled and loaded, reusable across sizes."""

    compile_s: float | None = None   # None: nothing was compiled (pure Python, NumPy)
    compile_cached: bool = False     # True: loaded from the on-disk cache, compile_s is the load time

    @abstractmethod
    def bind(self, inputs: dict[str, np.ndarray], scalars: dict | None = None) -> Bound:
        ...


class Backend(ABC):
    name: str = ""
    device: str = "cpu"              # "cpu" or "gpu": which peaks its figures are compared with
    description: str = ""
    # A baseline is the idiom people use instead (NumPy, torch, cupy): measured on the stress
    # inputs, not held to them. The project's own implementations are.
    baseline: bool = False

    @abstractmethod
    def availability(self) -> Availability:
        ...

    @abstractmethod
    def variants(self, primitive: str) -> list[str]:
        """Variant names for a primitive, naive first; [] if this backend lacks it."""

    @abstractmethod
    def prepare(self, primitive: str, variant: str) -> Kernel:
        ...

    def ops(self):
        """The backend's op layer (harness/backends/ops.py), or None where it cannot run."""
        return None

    def measure_floor(self, timing, clock) -> dict | None:
        """The empty-call floor: a no-op through the same path as a kernel call, timed the
        same way ({"median_s", "p25_s", "p75_s", "how"}), or None where it cannot be measured."""
        return None

    def measure_peaks(self, quick: bool) -> dict | None:
        """Device backends measure their device's peaks once per run (see harness.core.peaks)."""
        return None

    def environment(self) -> dict:
        """Versions and device facts for the results' environment block."""
        return {}

    def max_problem_bytes(self) -> int | None:
        """The most bytes one case may use (device memory free), or None for no limit."""
        return None


def _crc(a) -> int:
    import zlib
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


class OpsBound(Bound):
    """Bind/run over the op layer (harness/backends/ops.py): the case's inputs uploaded, its
    outputs allocated, one Call bound to them. `inout` tensors keep a pristine copy in the
    backend's memory and are restored from it; `out` tensors are poisoned in place."""

    def __init__(self, ops, prim: Primitive, variant: str, inputs: dict[str, np.ndarray], scalars: dict | None):
        self.ops, self.prim, self.variant = ops, prim, variant
        dims = prim.validate(inputs)                        # InputError on anything a user got wrong
        self.dims = dims
        self.buffers, self.pristine = {}, {}
        self._call = None
        self._crc = {t.name: _crc(inputs[t.name]) for t in prim.tensors if t.role == "in"}
        try:
            for t in prim.tensors:
                if t.role == "out":
                    self.buffers[t.name] = ops.empty(prim.shape_of(t, dims), t.dtype)
                else:
                    self.buffers[t.name] = ops.upload(inputs[t.name])
                    if t.role == "inout":
                        self.pristine[t.name] = ops.upload(inputs[t.name])
            self._call = ops.call(prim.name, variant, self.buffers, scalars)
        except BaseException:
            self.close()                                    # nothing allocated outlives a failed bind
            raise

    def call(self) -> None:
        self._call.run()

    def outputs(self) -> dict[str, np.ndarray]:
        self.ops.synchronize()
        return {t.name: self.ops.download(self.buffers[t.name]) for t in self.prim.outputs}

    def poison(self) -> None:
        for t in self.prim.returned:
            self.ops.poison(self.buffers[t.name])

    def restore(self) -> None:
        for name, keep in self.pristine.items():
            self.ops.copy(self.buffers[name], keep)

    def changed_inputs(self) -> list[str]:
        """Each `in` buffer read back and compared with the array it was uploaded from: a
        kernel that writes into an input (through a pointer, on a device) is caught here."""
        self.ops.synchronize()
        return [n for n, c in self._crc.items() if _crc(self.ops.download(self.buffers[n])) != c]

    def close(self) -> None:
        if self._call is not None:
            self._call.close()
            self._call = None
        for b in list(self.buffers.values()) + list(self.pristine.values()):
            self.ops.free(b)
        self.buffers, self.pristine = {}, {}


class OpsKernel(Kernel):
    """A (primitive, variant) of a backend with an op layer: bind() makes an OpsBound."""

    bound_class = OpsBound

    def __init__(self, ops, primitive: str, variant: str):
        from ..core import catalogue
        self.ops, self.prim, self.variant = ops, catalogue.get(primitive), variant

    def bind(self, inputs: dict[str, np.ndarray], scalars: dict | None = None) -> Bound:
        return self.bound_class(self.ops, self.prim, self.variant, inputs, scalars)
