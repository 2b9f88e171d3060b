"""Peers: what a user would call instead of writing kernels - `torch` and `cupy`, where
installed. They are baselines: measured on every input, held to the stress inputs by no
one. matmul is cuBLAS SGEMM with TF32 OFF (true fp32, as every other backend here); the
other primitives are each library's own idiomatic call, only where it has one:

    primitive   torch                                 cupy
    add         torch.add                             cupy.add
    relu        torch.relu                            cupy.maximum(x, 0)
    gelu        F.gelu(approximate="tanh")            -
    softmax     torch.softmax(dim=-1)                 cupyx.scipy.special.softmax(axis=-1)
    layernorm   F.layer_norm(eps=eps)                 -
    matmul      torch.matmul (cuBLAS)                 cupy.matmul (cuBLAS)

An op is called the NumPy way (harness/core/declaration.py): its in and inout tensors
positionally in declaration order, the declared scalars by name; it returns the out
tensors and updates inout ones in place.

Timing is the CUDA backend's: CUDA events around the call after an L2 flush
(harness/backends/cuda/driver.EventTimer), in the device's primary context - the one both
libraries use - on the legacy default stream, which is where both enqueue by default. Each
call allocates its outputs through the library's caching allocator, as user code would;
poison() fills what the previous call returned with NaN, in case the allocator hands the
same memory back. The end-to-end figure copies from and to pinned host memory, like the
CUDA backend's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core import catalogue
from ..core.declaration import Primitive
from .base import Availability, Backend, BackendError, Bound, Kernel
from .cuda import driver as cd


@dataclass(frozen=True)
class Op:
    variant: str                        # the name shown in tables: what is called
    make: Callable[[object], Callable]  # library module -> fn(*in_and_inout, **scalars) -> out tensor(s)


def _torch_ops() -> dict[str, Op]:
    return {
        "add": Op("add", lambda torch: torch.add),
        "relu": Op("relu", lambda torch: torch.relu),
        "gelu": Op("gelu_tanh", lambda torch: lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
        "softmax": Op("softmax", lambda torch: lambda x: torch.softmax(x, dim=-1)),
        "layernorm": Op("layer_norm", lambda torch: lambda x, gamma, beta, eps: torch.nn.functional.layer_norm(
            x, (x.shape[-1],), gamma, beta, eps=eps)),
        "matmul": Op("cublas", lambda torch: torch.matmul),
        # what F.scaled_dot_product_attention(is_causal=True) runs on a CPU, called directly
        # because it also returns the log-sum-exp the declaration asks for
        "attention": Op("sdpa_flash", lambda torch: lambda q, k, v: tuple(
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)[:2])),
        "embedding": Op("embedding", lambda torch: lambda idx, wte, wpe: torch.nn.functional.embedding(idx, wte) + wpe),
        "transpose": Op("transpose_contiguous", lambda torch: lambda x: x.transpose(1, 2).contiguous()),
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


def _python_scalars(scalars: dict) -> dict:
    """Libraries take Python numbers (torch's eps= is a double in C++ anyway)."""
    return {k: (float(v) if isinstance(v, np.floating) else int(v)) for k, v in scalars.items()}


class _LibraryBackend(Backend):
    device = "gpu"
    baseline = True
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

    def fill_nan(self, x) -> None:
        raise NotImplementedError

    def copy_into(self, dst, src) -> None:
        raise NotImplementedError

    def version(self) -> str:
        return getattr(self._lib, "__version__", "?")

    def free_bytes(self) -> int:
        raise NotImplementedError

    def end_to_end(self, fn, prim: Primitive, arrays: dict, scalars: dict, dims) -> Callable[[], None]:
        """A callable that copies pinned inputs in, calls fn, copies every output to pinned memory."""
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
        op = self.ops.get(catalogue.get(primitive).name)
        return [op.variant] if op else []

    def prepare(self, primitive: str, variant: str) -> Kernel:
        prim = catalogue.get(primitive)
        op = self.ops.get(prim.name)
        if op is None or op.variant != variant:
            valid = op.variant if op else "none"
            raise BackendError(f"{self.name} has no variant {variant!r} of {primitive}; valid: {valid}")
        if not self.availability().ok:
            raise BackendError(f"{self.name} is not available: {self.availability().reason}")
        return LibraryKernel(self, prim, op.make(self._lib))

    def timer(self) -> cd.EventTimer:
        if self._timer is None:
            info = cd.device_info(0)
            self._timer = cd.EventTimer(cd.Context(0, primary=True), info.l2_bytes)
        return self._timer

    def measure_floor(self, timing, clock) -> dict | None:
        """One library call on one-element tensors (add, else relu), event-timed like every call."""
        from ..core.timing import measure
        if not self.availability().ok:
            return None
        for name in ("add", "relu"):
            if name in self.ops and name in catalogue.PRIMITIVES:
                prim = catalogue.get(name)
                bound = LibraryKernel(self, prim, self.ops[name].make(self._lib)).bind(
                    prim.make_inputs(prim.size_to_dims(1), "normal", 0))
                try:
                    stats = measure(lambda calls: bound.time_once(clock, calls), timing, clock, batch=False)
                finally:
                    bound.close()
                return {**stats.as_dict(), "how": f"CUDA events around one {self.name} {self.ops[name].variant} "
                                                  f"call on one-element tensors, after the same L2 flush"}
        return None

    def measure_peaks(self, quick: bool) -> dict | None:
        from .cuda.peaks import measure
        return measure(quick)

    def max_problem_bytes(self) -> int | None:
        if not self.availability().ok:
            return None
        return max(0, self.free_bytes() - (256 << 20))

    def environment(self) -> dict:
        return {self.name: self.version()} if self.availability().ok else {}


class LibraryKernel(Kernel):
    def __init__(self, backend: _LibraryBackend, prim: Primitive, fn: Callable):
        self.backend, self.prim, self.fn = backend, prim, fn

    def bind(self, inputs: dict[str, np.ndarray], scalars: dict | None = None) -> Bound:
        return LibraryBound(self, inputs, scalars)


class LibraryBound(Bound):
    timer = "cuda_events"
    transfer = "pinned"
    batchable = False                # event-timed

    def __init__(self, kernel: LibraryKernel, inputs: dict[str, np.ndarray], scalars: dict | None = None):
        self.kernel, self.backend, self.prim = kernel, kernel.backend, kernel.prim
        prim = self.prim
        self.dims = prim.validate(inputs)
        self._scalars = _python_scalars(prim.scalar_values(scalars))
        self._host = {t.name: inputs[t.name] for t in prim.inputs}
        b = self.backend
        self._dev = {t.name: b.to_device(self._host[t.name]) for t in prim.inputs}
        self._pristine = {t.name: b.to_device(self._host[t.name]) for t in prim.inputs if t.role == "inout"}
        self._result = None
        self._e2e = None

    def _args(self) -> list:
        return [self._dev[t.name] for t in self.prim.inputs]

    def _returned(self) -> tuple:
        n = len(self.prim.returned)
        if n == 0:
            return ()
        return (self._result,) if n == 1 else tuple(self._result)

    def call(self) -> None:
        self._result = self.kernel.fn(*self._args(), **self._scalars)

    def outputs(self) -> dict[str, np.ndarray]:
        values = dict(zip((t.name for t in self.prim.returned), self._returned()))
        for name in self._pristine:
            values[name] = self._dev[name]
        out = {}
        for t in self.prim.outputs:
            if t.name not in values:
                raise BackendError(f"{self.backend.name}: {self.prim.name} returned no {t.name!r}")
            out[t.name] = np.ascontiguousarray(self.backend.to_host(values[t.name]), dtype=t.np_dtype)
        return out

    def poison(self) -> None:
        if self._result is None:
            return
        for v in self._returned():
            self.backend.fill_nan(v)

    def restore(self) -> None:
        for name, keep in self._pristine.items():
            self.backend.copy_into(self._dev[name], keep)

    def time_once(self, clock, calls: int = 1) -> float:
        self.restore()

        def work():
            for _ in range(calls):
                self.call()
        return self.backend.timer().time(work) / calls

    def time_end_to_end(self) -> float:
        if self._e2e is None:
            self._e2e = self.backend.end_to_end(self.kernel.fn, self.prim, self._host, self._scalars, self.dims)
        return self.backend.timer().time(self._e2e)

    def close(self) -> None:
        self._dev, self._pristine, self._result, self._e2e = {}, {}, None, None


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
        return self._lib.from_numpy(np.array(a, copy=True)).to("cuda")   # a copy: case inputs are read-only

    def to_host(self, x):
        return x.cpu().numpy()

    def fill_nan(self, x) -> None:
        if x.dtype.is_floating_point:
            x.fill_(float("nan"))

    def copy_into(self, dst, src) -> None:
        dst.copy_(src)

    def free_bytes(self) -> int:
        return int(self._lib.cuda.mem_get_info()[0])

    def environment(self) -> dict:
        if not self.availability().ok:
            return {}
        t = self._lib
        return {"torch": t.__version__, "torch_cuda": t.version.cuda,
                "torch_tf32": bool(t.backends.cuda.matmul.allow_tf32)}

    def end_to_end(self, fn, prim, arrays, scalars, dims):
        t = self._lib
        names = [x.name for x in prim.inputs]
        pinned = [t.from_numpy(np.array(arrays[n], copy=True)).pin_memory() for n in names]
        outs = {x.name: t.from_numpy(np.empty(prim.shape_of(x, dims), dtype=x.np_dtype)).pin_memory()
                for x in prim.outputs}
        returned = [x.name for x in prim.returned]

        def work():
            dev = [p.to("cuda", non_blocking=True) for p in pinned]
            res = fn(*dev, **scalars)
            res = (res,) if len(returned) == 1 else tuple(res or ())
            for name, value in zip(returned, res):
                outs[name].copy_(value, non_blocking=True)
            for name, d in zip(names, dev):
                if name in outs and name not in returned:          # inout: updated in place
                    outs[name].copy_(d, non_blocking=True)
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

    def fill_nan(self, x) -> None:
        if x.dtype.kind == "f":
            x.fill(np.nan)

    def copy_into(self, dst, src) -> None:
        dst[...] = src

    def free_bytes(self) -> int:
        return int(self._lib.cuda.runtime.memGetInfo()[0])

    def end_to_end(self, fn, prim, arrays, scalars, dims):
        import cupyx
        cp = self._lib
        names = [x.name for x in prim.inputs]
        pinned = []
        for n in names:
            p = cupyx.empty_pinned(arrays[n].shape, dtype=arrays[n].dtype)
            p[...] = arrays[n]
            pinned.append(p)
        outs = {x.name: cupyx.empty_pinned(prim.shape_of(x, dims), dtype=x.np_dtype) for x in prim.outputs}
        dev = [cp.empty(arrays[n].shape, dtype=arrays[n].dtype) for n in names]
        returned = [x.name for x in prim.returned]

        def get(y, out):
            try:
                y.get(out=out, blocking=False)
            except TypeError:                           # older cupy: no `blocking`
                y.get(out=out)

        def work():
            for d, p in zip(dev, pinned):
                d.set(p)                                # async from pinned memory
            res = fn(*dev, **scalars)
            res = (res,) if len(returned) == 1 else tuple(res or ())
            for name, value in zip(returned, res):
                get(value, outs[name])
            for name, d in zip(names, dev):
                if name in outs and name not in returned:
                    get(d, outs[name])
        return work
