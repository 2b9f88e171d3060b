"""Peers: what a user would call instead of writing kernels - `torch` and `cupy`, where
installed. matmul is cuBLAS SGEMM with TF32 OFF (true fp32, as every other backend here);
the other primitives are each library's own idiomatic call, only where it has one:

    primitive   torch                                 cupy
    add         torch.add                             cupy.add
    relu        torch.relu                            cupy.maximum(x, 0)
    gelu        F.gelu(approximate="tanh")            -
    softmax     torch.softmax(dim=-1)                 cupyx.scipy.special.softmax(axis=-1)
    layernorm   F.layer_norm(eps=1e-5)                -
    matmul      torch.matmul (cuBLAS)                 cupy.matmul (cuBLAS)

Timing is the CUDA backend's: CUDA events around the call after an L2 flush
(harness/cuda_device.EventTimer), in the device's primary context - the one both libraries
use - on the legacy default stream, which is where both enqueue by default. Each call
allocates its output through the library's caching allocator, as user code would.
The end-to-end figure copies from and to pinned host memory, like the CUDA backend's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import catalogue
from .. import cuda_device as cd
from .base import Availability, Backend, BackendError, Bound, Kernel


@dataclass(frozen=True)
class Op:
    variant: str                        # the name shown in tables: what is called
    make: Callable[[object], Callable]  # library module -> fn(*device arrays) -> device array


def _torch_ops() -> dict[str, Op]:
    eps = catalogue.LAYERNORM_EPS
    return {
        "add": Op("add", lambda torch: torch.add),
        "relu": Op("relu", lambda torch: torch.relu),
        "gelu": Op("gelu_tanh", lambda torch: lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
        "softmax": Op("softmax", lambda torch: lambda x: torch.softmax(x, dim=-1)),
        "layernorm": Op("layer_norm", lambda torch: lambda x, g, b: torch.nn.functional.layer_norm(
            x, (x.shape[-1],), g, b, eps=eps)),
        "matmul": Op("cublas", lambda torch: torch.matmul),
    }


def _cupy_ops() -> dict[str, Op]:
    def softmax(cp):
        from cupyx.scipy.special import softmax as sm
        return lambda x: sm(x, axis=-1)
    return {
        "add": Op("add", lambda cp: cp.add),
        "relu": Op("maximum", lambda cp: (lambda x: cp.maximum(x, cp.float32(0)))),
        "softmax": Op("cupyx_softmax", softmax),
        "matmul": Op("cublas", lambda cp: cp.matmul),
    }


class _LibraryBackend(Backend):
    device = "gpu"
    language = ""
    package = ""                        # the pip name to suggest

    def __init__(self):
        self._availability: Availability | None = None
        self._lib = None
        self._timer: cd.EventTimer | None = None
        self.ops: dict[str, Op] = {}

    # library specifics -------------------------------------------------------------
    def _import(self):
        raise NotImplementedError

    def _device_ok(self, lib) -> str | None:
        """None when the library can use the GPU, else why not."""
        return None

    def to_device(self, a: np.ndarray):
        raise NotImplementedError

    def to_host(self, x) -> np.ndarray:
        raise NotImplementedError

    def version(self) -> str:
        return getattr(self._lib, "__version__", "?")

    def free_bytes(self) -> int:
        raise NotImplementedError

    def end_to_end(self, fn, arrays: list[np.ndarray], out_shape) -> Callable[[], None]:
        """A callable that copies pinned inputs in, calls fn, copies the output to pinned memory."""
        raise NotImplementedError

    # the Backend interface -----------------------------------------------------------
    def availability(self) -> Availability:
        if self._availability is None:
            self._availability = self._probe()
        return self._availability

    def _probe(self) -> Availability:
        probe = cd.probe()                             # the driver first: never import into a hang
        if not probe.ok:
            return Availability(False, reason=probe.reason,
                                hint=f"{self.name} is a GPU baseline: it runs where an NVIDIA GPU and driver are")
        try:
            self._lib = self._import()
        except Exception as e:                          # ImportError, or a broken CUDA build
            return Availability(False, reason=f"{self.name} is not importable ({type(e).__name__}: {e})",
                                hint=f"pip install {self.package}")
        why = self._device_ok(self._lib)
        if why:
            return Availability(False, reason=why, hint=f"a CUDA build of {self.name} matching the driver")
        return Availability(True, detail=f"{self.name} {self.version()} (matmul: cuBLAS SGEMM, TF32 off)")

    def variants(self, primitive: str) -> list[str]:
        op = self.ops.get(primitive)
        return [op.variant] if op else []

    def prepare(self, primitive: str, variant: str) -> Kernel:
        op = self.ops.get(primitive)
        if op is None or op.variant != variant:
            raise BackendError(f"{self.name} has no variant {variant!r} of {primitive}")
        if not self.availability().ok:
            raise BackendError(f"{self.name} is not available: {self.availability().reason}")
        return LibraryKernel(self, primitive, op.make(self._lib))

    def timer(self) -> cd.EventTimer:
        if self._timer is None:
            info = cd.device_info(0)
            self._timer = cd.EventTimer(cd.Context(0, primary=True), info.l2_bytes)
        return self._timer

    def measure_peaks(self, quick: bool) -> dict | None:
        from ..cuda_peaks import measure
        return measure(quick)

    def max_problem_bytes(self) -> int | None:
        if not self.availability().ok:
            return None
        return max(0, self.free_bytes() - (256 << 20))

    def environment(self) -> dict:
        return {self.name: self.version()} if self.availability().ok else {}


class LibraryKernel(Kernel):
    def __init__(self, backend: _LibraryBackend, primitive: str, fn: Callable):
        self.backend, self.primitive, self.fn = backend, primitive, fn

    def bind(self, inputs: dict[str, np.ndarray]) -> Bound:
        return LibraryBound(self, inputs)


class LibraryBound(Bound):
    timer = "cuda_events"
    transfer = "pinned"

    def __init__(self, kernel: LibraryKernel, inputs: dict[str, np.ndarray]):
        self.kernel, self.backend = kernel, kernel.backend
        prim = catalogue.get(kernel.primitive)
        self._arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in inputs.values()]
        self._out_shape = tuple(prim.output_shape(prim.dims_from_inputs(inputs)))
        self._dev = [self.backend.to_device(a) for a in self._arrays]
        self._out = None
        self._e2e = None

    def _call(self) -> None:
        self._out = self.kernel.fn(*self._dev)

    def call(self) -> None:
        self._call()

    def result(self) -> np.ndarray:
        return np.ascontiguousarray(self.backend.to_host(self._out), dtype=np.float32)

    def time_once(self, clock) -> float:
        return self.backend.timer().time(self._call)

    def time_end_to_end(self) -> float:
        if self._e2e is None:
            self._e2e = self.backend.end_to_end(self.kernel.fn, self._arrays, self._out_shape)
        return self.backend.timer().time(self._e2e)

    def close(self) -> None:
        self._dev, self._out, self._e2e = [], None, None


class TorchBackend(_LibraryBackend):
    name = "torch"
    package = "torch"
    description = "PyTorch CUDA ops (matmul: cuBLAS SGEMM, TF32 off)"

    def __init__(self):
        super().__init__()
        self.ops = _torch_ops()

    def _import(self):
        import torch
        return torch

    def _device_ok(self, torch) -> str | None:
        if not torch.cuda.is_available():
            return f"torch {torch.__version__} sees no CUDA device (a CPU-only build?)"
        # True fp32 matmul: TF32 would be ~8x faster and ~1e-3 accurate - not the same contest.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        return None

    def to_device(self, a):
        return self._lib.from_numpy(a).to("cuda")

    def to_host(self, x):
        return x.cpu().numpy()

    def free_bytes(self) -> int:
        return int(self._lib.cuda.mem_get_info()[0])

    def environment(self) -> dict:
        if not self.availability().ok:
            return {}
        t = self._lib
        return {"torch": t.__version__, "torch_cuda": t.version.cuda,
                "torch_tf32": bool(t.backends.cuda.matmul.allow_tf32)}

    def end_to_end(self, fn, arrays, out_shape):
        t = self._lib
        pinned = [t.from_numpy(a).pin_memory() for a in arrays]
        out = t.empty(out_shape, dtype=t.float32, pin_memory=True)

        def work():
            dev = [p.to("cuda", non_blocking=True) for p in pinned]
            out.copy_(fn(*dev), non_blocking=True)
        return work


class CupyBackend(_LibraryBackend):
    name = "cupy"
    package = "cupy-cuda13x"
    description = "CuPy (matmul: cuBLAS SGEMM, TF32 off)"

    def __init__(self):
        super().__init__()
        self.ops = _cupy_ops()

    def _import(self):
        # CuPy uses TF32 for fp32 matmul only when CUPY_TF32=1; it reads the variable at import.
        os.environ.setdefault("CUPY_TF32", "0")
        import cupy
        return cupy

    def _device_ok(self, cp) -> str | None:
        if os.environ.get("CUPY_TF32", "0") != "0":
            return "CUPY_TF32 is set: cupy matmul would not be fp32"
        try:
            n = cp.cuda.runtime.getDeviceCount()
        except Exception as e:
            return f"cupy cannot reach the GPU ({type(e).__name__}: {e})"
        return None if n > 0 else "cupy sees no CUDA device"

    def to_device(self, a):
        return self._lib.asarray(a)

    def to_host(self, x):
        return self._lib.asnumpy(x)

    def free_bytes(self) -> int:
        return int(self._lib.cuda.runtime.memGetInfo()[0])

    def end_to_end(self, fn, arrays, out_shape):
        import cupyx
        cp = self._lib
        pinned = []
        for a in arrays:
            p = cupyx.empty_pinned(a.shape, dtype=np.float32)
            p[...] = a
            pinned.append(p)
        out = cupyx.empty_pinned(out_shape, dtype=np.float32)
        dev = [cp.empty(a.shape, dtype=cp.float32) for a in arrays]

        def work():
            for d, p in zip(dev, pinned):
                d.set(p)                                # async from pinned memory
            y = fn(*dev)
            try:
                y.get(out=out, blocking=False)
            except TypeError:                           # older cupy: no `blocking`
                y.get(out=out)
        return work
