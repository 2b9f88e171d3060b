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

import copy
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


class CallBound(Bound):
    """A CPU case: call a Python function the NumPy way (see harness/core/declaration.py):
    fn(*in_and_inout, **scalars) returns the out tensors and updates inout ones in place.
    `convert` turns a returned or inout value into a numpy array of its tensor's dtype."""

    def __init__(self, prim: Primitive, fn: Callable, args: dict, scalars: dict | None,
                 convert: Callable[[object, np.dtype], np.ndarray]):
        self.prim, self._fn, self._convert = prim, fn, convert
        self._names = [t.name for t in prim.inputs]
        self._inout = [i for i, t in enumerate(prim.inputs) if t.role == "inout"]
        self._args = [args[n] for n in self._names]
        self._pristine = {i: copy.deepcopy(self._args[i]) for i in self._inout}
        for i in self._inout:                        # work on a copy: the caller's arrays stay as given
            self._args[i] = copy.deepcopy(self._args[i])
        self._scalars = dict(scalars) if scalars is not None else prim.scalar_values()
        self._result = None

    def call(self) -> None:
        self._result = self._fn(*self._args, **self._scalars)

    def restore(self) -> None:
        for i, value in self._pristine.items():
            if isinstance(value, np.ndarray):
                np.copyto(self._args[i], value)
            else:
                self._args[i] = copy.deepcopy(value)

    def outputs(self) -> dict[str, np.ndarray]:
        returned = self.prim.returned
        values = (self._result,) if len(returned) == 1 else tuple(self._result or ())
        if len(values) != len(returned):
            raise BackendError(f"{self.prim.name}: the implementation returned {len(values)} values, "
                               f"expected {len(returned)} ({', '.join(t.name for t in returned)})")
        outs = {t.name: v for t, v in zip(returned, values)}
        for i in self._inout:
            outs[self._names[i]] = self._args[i]
        return {t.name: self._convert(outs[t.name], t.np_dtype) for t in self.prim.outputs}

    def poison(self) -> None:
        """A function that writes into an array it returned before (a cache, a reused buffer)
        must write all of it again: poison what the last call returned."""
        if self._result is None:
            return
        values = (self._result,) if len(self.prim.returned) == 1 else tuple(self._result)
        for v in values:
            if isinstance(v, np.ndarray) and v.flags.writeable:
                poison_array(v)
