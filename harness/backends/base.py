"""What a backend is: a name, whether it can run here (and if not, why), its variants
per primitive, and how to run one variant on numpy inputs.

The life of one measurement, for any backend:

    kernel = backend.prepare("softmax", "online")   # compile/load once; kernel.compile_s
    bound  = kernel.bind(inputs)                    # allocate output, copy to the device
    out    = bound.run()                            # one call, output back on the host
    t      = bound.time_once(clock)                 # one timed sample of the work itself
    e2e    = bound.time_end_to_end()                # device backends: copies in + kernel + copy out
    bound.close()

CPU backends implement `call()` (the timed work) and `result()`; device backends
also override `time_once` (CUDA events) and `time_end_to_end`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""        # why not, in a few words ("no NVIDIA driver (libcuda.so.1 not found)")
    hint: str = ""          # what to do about it ("pip install mojo==1.2.0")
    detail: str = ""        # when ok: versions, device name


class BackendError(RuntimeError):
    """A backend failed on one case (compile error, launch failure). One line, no traceback."""


class Bound(ABC):
    """One variant bound to one set of inputs, ready to run many times."""

    timer = "perf_counter_ns"        # what time_once measures with
    transfer = None                  # device backends: "pinned" or "pageable" for the end-to-end copies

    @abstractmethod
    def call(self) -> None:
        """Do the work once; the output stays where `result()` can fetch it."""

    @abstractmethod
    def result(self) -> np.ndarray:
        """The output of the latest call, as a float32 numpy array on the host."""

    def run(self) -> np.ndarray:
        self.call()
        return self.result()

    def time_once(self, clock: Callable[[], int]) -> float:
        t0 = clock()
        self.call()
        return (clock() - t0) * 1e-9

    def time_end_to_end(self) -> float | None:
        """Seconds for inputs in + work + output out; None where that equals time_once."""
        return None

    def poison(self) -> None:
        """Overwrite the output with NaN, so the next call must write every element again.
        The runner does this before the call it re-verifies after timing: without it a
        kernel that stopped working after the first call would leave the first, correct,
        output in place and pass. A backend whose call() returns a new array needs nothing."""

    def close(self) -> None:
        pass


class Kernel(ABC):
    """One prepared (primitive, variant): compiled and loaded, reusable across sizes."""

    compile_s: float | None = None   # None: nothing was compiled (pure Python, NumPy)
    compile_cached: bool = False     # True: loaded from the on-disk cache, compile_s is the load time

    @abstractmethod
    def bind(self, inputs: dict[str, np.ndarray]) -> Bound:
        ...


class Backend(ABC):
    name: str = ""
    device: str = "cpu"              # "cpu" or "gpu": which peaks its figures are compared with
    description: str = ""
    language: str = ""               # the folder its sources live in: "python_impl", "cuda_impl", "mojo_impl", ""

    @abstractmethod
    def availability(self) -> Availability:
        ...

    @abstractmethod
    def variants(self, primitive: str) -> list[str]:
        """Variant names for a primitive, naive first; [] if this backend lacks it."""

    @abstractmethod
    def prepare(self, primitive: str, variant: str) -> Kernel:
        ...

    def measure_peaks(self, quick: bool) -> dict | None:
        """Device backends measure their device's peaks once per run (see harness.peaks)."""
        return None

    def environment(self) -> dict:
        """Versions and device facts for the results' environment block."""
        return {}

    def max_problem_bytes(self) -> int | None:
        """The most bytes one case may use (device memory free), or None for no limit."""
        return None


class CallBound(Bound):
    """A CPU bound case: call a Python function on prepared arguments."""

    def __init__(self, fn: Callable, args: tuple, to_numpy: Callable[[object], np.ndarray]):
        self._fn, self._args, self._to_numpy = fn, args, to_numpy
        self._out = None

    def call(self) -> None:
        self._out = self._fn(*self._args)

    def result(self) -> np.ndarray:
        return self._to_numpy(self._out)

    def poison(self) -> None:
        if isinstance(self._out, np.ndarray) and self._out.flags.writeable:
            self._out.fill(np.nan)           # in case the function writes into the array it returned
