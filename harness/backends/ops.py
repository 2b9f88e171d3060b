"""The op layer: tensors that stay where a backend computes, and primitives run on them with
no transfer. A training step calls dozens of primitives; copying every tensor to a device
and back for each would measure the copies, not the step.

    ops = backend.ops()                                   # None where the backend cannot run
    x   = ops.upload(batch)                               # host -> the backend's memory (a copy)
    h   = ops.empty((64, 256))                            # float32 unless said
    mm  = ops.call("matmul", "tiled", {"A": x, "B": W1, "C": h})   # checked once, here
    mm.run()                                              # no checks, no copies
    ops.download(h)                                       # the backend's memory -> host

Buffers live in the backend's own memory: lists for pure Python, numpy arrays for NumPy and
Mojo (zero-copy), device buffers for CUDA. `call` validates names, shapes and dtypes once
(metadata only: a model's own intermediate tensors need no NaN scan) and returns a Call
that runs the (primitive, variant) on those buffers as often as asked: `out` buffers are
written, `inout` ones updated in place, `in` ones read. `set_scalars` changes a scalar
between runs (AdamW's step number) without rebinding.

Where a backend's kernels return new arrays (NumPy, pure Python) a run rebinds the out
Buffer to the returned storage, zero-copy, as a Python variable would be; where kernels
write in place (Mojo, CUDA) the storage never moves. Either way the caller holds the
Buffer and reads it after the run.

Bind/run (harness/backends/base.py) is a thin layer over this: OpsBound uploads a case's
inputs, allocates its outputs, and times Call.run.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from ..core import catalogue
from ..core.declaration import DTYPES, INT_SENTINEL, Primitive
from ..errors import InputError


class Buffer:
    """A tensor held in one backend's memory: its shape, its dtype name, and the storage.

    Views (ops.view) share one cell: a (64, 256) activation seen as the 16384-element vector
    relu is declared on is the same memory, and when a host backend's kernel returns a new
    array into one of them, the other sees it too."""

    __slots__ = ("ops", "shape", "dtype", "_cell")

    def __init__(self, ops: "Ops", shape: tuple[int, ...], dtype: str, storage, cell: list | None = None):
        self.ops, self.shape, self.dtype = ops, tuple(int(s) for s in shape), dtype
        self._cell = cell if cell is not None else [storage]

    @property
    def storage(self):
        stored = self._cell[0]
        seen = self.ops.reshape_storage(stored, self.shape)
        if seen is not stored:
            # Keep the storage as last seen: a kernel that updates it in place (AdamW on a
            # flat view of a pure-Python nested list) must update what the other views read.
            self._cell[0] = seen
        return seen

    @storage.setter
    def storage(self, value) -> None:
        self._cell[0] = value

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(DTYPES[self.dtype]).itemsize

    def __repr__(self) -> str:
        return f"Buffer({self.ops.name}, {self.shape}, {self.dtype})"


class Call(ABC):
    """One (primitive, variant) bound to buffers."""

    @abstractmethod
    def run(self) -> None:
        """Run once: no validation, no transfer."""

    @abstractmethod
    def set_scalars(self, **values) -> None:
        """Change declared scalars for the following runs (typed and checked here)."""

    def close(self) -> None:
        """Release what the call owns (a device backend's scratch memory); nothing by default."""


class Ops(ABC):
    name: str = ""

    @abstractmethod
    def upload(self, array: np.ndarray) -> Buffer:
        """A copy of a host array in the backend's memory."""

    @abstractmethod
    def empty(self, shape, dtype: str = "float32") -> Buffer:
        """Uninitialised storage (call poison() before trusting what is in it)."""

    @abstractmethod
    def download(self, buf: Buffer) -> np.ndarray:
        """The buffer's contents as a host array (for host backends it may share memory)."""

    @abstractmethod
    def write(self, buf: Buffer, array: np.ndarray) -> None:
        """Overwrite the buffer's contents from a host array of its shape and dtype."""

    @abstractmethod
    def copy(self, dst: Buffer, src: Buffer) -> None:
        """dst <- src, inside the backend's memory."""

    @abstractmethod
    def poison(self, buf: Buffer) -> None:
        """NaN into a float32 buffer, INT_SENTINEL into an int64 one."""

    @abstractmethod
    def call(self, primitive: str, variant: str, buffers: dict[str, Buffer], scalars: dict | None = None) -> Call:
        ...

    def synchronize(self) -> None:
        """Wait for queued work (a device backend); nothing to wait for on the host."""

    def view(self, buf: Buffer, shape) -> Buffer:
        """The same memory with another shape of the same number of elements."""
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape, dtype=np.int64)) != buf.size:
            raise InputError(f"cannot view {buf.shape} ({buf.size} elements) as {shape}")
        return Buffer(self, shape, buf.dtype, None, cell=buf._cell)

    def reshape_storage(self, storage, shape):
        """The storage as seen with `shape`: untouched for memory handles (a device pointer);
        host backends whose storage carries a shape reshape it (a view, for numpy)."""
        return storage

    def time(self, fn) -> float:
        """Seconds that fn() takes on this backend's clock, its queued work included (a device
        backend uses its own events); for the per-op breakdown of a model's step."""
        import time
        self.synchronize()
        t0 = time.perf_counter_ns()
        fn()
        self.synchronize()
        return (time.perf_counter_ns() - t0) * 1e-9

    def free(self, buf: Buffer) -> None:
        """Release the buffer's memory: every view of it is released with it."""
        buf.storage = None

    # ------------------------------------------------------------------ shared checks
    def _checked(self, primitive: str, buffers: dict[str, Buffer]) -> tuple[Primitive, tuple[int, ...]]:
        """The declaration and dims of a call, once every buffer is of this backend and of
        its tensor's shape and dtype; InputError (one line) otherwise."""
        prim = catalogue.get(primitive)
        want = [t.name for t in prim.tensors]
        if sorted(buffers) != sorted(want):
            missing = [n for n in want if n not in buffers]
            extra = [n for n in buffers if n not in want]
            raise InputError(f"{prim.name}: a call takes buffers ({', '.join(want)}); "
                             + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                         + ([f"unexpected {', '.join(extra)}"] if extra else [])))
        for t in prim.tensors:
            b = buffers[t.name]
            if not isinstance(b, Buffer) or b.ops is not self:
                raise InputError(f"{prim.name}: {t.name!r} is not a buffer of {self.name} (upload it first)")
            if b.dtype != t.dtype:
                raise InputError(f"{prim.name}: buffer {t.name!r} is {b.dtype}, the declaration says {t.dtype}")
            if len(b.shape) != len(t.shape):
                raise InputError(f"{prim.name}: buffer {t.name!r} must be {len(t.shape)}-D, got shape {b.shape}")
        dims = prim.dims_from({t.name: _Shaped(buffers[t.name].shape) for t in prim.inputs})
        for t in prim.outputs:
            if buffers[t.name].shape != prim.shape_of(t, dims):
                raise InputError(f"{prim.name}: buffer {t.name!r} has shape {buffers[t.name].shape}, "
                                 f"expected {prim.shape_of(t, dims)} for these inputs")
        if min(dims, default=1) < 1:
            raise InputError(f"{prim.name}: empty dims {dims}")
        return prim, dims


class _Shaped:
    """Anything with a shape: what dims_from reads."""

    __slots__ = ("shape",)

    def __init__(self, shape):
        self.shape = shape


def poison_value(dtype: str):
    return np.float32(np.nan) if dtype == "float32" else INT_SENTINEL


# ----------------------------------------------------------------------------- host backends

class HostOps(Ops):
    """Ops whose storage is host memory and whose kernels are Python callables called the
    NumPy way (harness/core/declaration.py): fn(*in_and_inout, **scalars) returns the out
    tensors and updates the inout ones in place. `resolve(prim, variant)` gives the callable.
    Subclasses choose the storage: numpy arrays here, lists for pure Python."""

    def __init__(self, name: str, resolve: Callable[[Primitive, str], Callable]):
        self.name, self._resolve = name, resolve

    def to_storage(self, array: np.ndarray):
        return np.array(array, copy=True)

    def to_array(self, storage, dtype: str) -> np.ndarray:
        return storage if isinstance(storage, np.ndarray) else np.asarray(storage, dtype=DTYPES[dtype])

    def python_scalars(self) -> bool:
        """Whether kernels take Python numbers (pure Python) rather than numpy scalars."""
        return False

    def reshape_storage(self, storage, shape):
        if isinstance(storage, np.ndarray) or hasattr(storage, "reshape"):
            return storage if tuple(storage.shape) == shape else storage.reshape(shape)
        if isinstance(storage, list):                 # nested lists (pure Python): flatten, regroup
            return _regroup(storage, shape)
        return storage

    def upload(self, array):
        a = np.asarray(array)
        return Buffer(self, a.shape, _dtype_name(a.dtype), self.to_storage(a))

    def empty(self, shape, dtype="float32"):
        return Buffer(self, shape, dtype, self.to_storage(np.empty(shape, DTYPES[dtype])))

    def download(self, buf):
        return self.to_array(buf.storage, buf.dtype)

    def write(self, buf, array):
        buf.storage = self.to_storage(np.asarray(array, dtype=DTYPES[buf.dtype]).reshape(buf.shape))

    def copy(self, dst, src):
        dst.storage = copy.deepcopy(src.storage)

    def poison(self, buf):
        if isinstance(buf.storage, np.ndarray):
            if buf.storage.flags.writeable:
                buf.storage.fill(poison_value(buf.dtype))
            else:
                buf.storage = np.full(buf.shape, poison_value(buf.dtype))
        else:
            buf.storage = self.to_storage(np.full(buf.shape, poison_value(buf.dtype)))

    def call(self, primitive, variant, buffers, scalars=None):
        prim, _ = self._checked(primitive, buffers)
        return FunctionCall(self, prim, self._resolve(prim, variant), buffers, scalars)


class FunctionCall(Call):
    def __init__(self, ops: HostOps, prim: Primitive, fn: Callable, buffers: dict[str, Buffer], scalars):
        self.ops, self.prim, self.fn = ops, prim, fn
        self._inputs = [buffers[t.name] for t in prim.inputs]
        self._returned = [buffers[t.name] for t in prim.returned]
        self.set_scalars(**(scalars or {}))

    def set_scalars(self, **values) -> None:
        """Only the scalars named are cast again (AdamW's step, every training step)."""
        if not hasattr(self, "_scalars"):
            typed = self.prim.scalar_values(values)
        else:
            unknown = set(values) - set(self._scalars)
            if unknown:
                self.prim.scalar_values(values)                      # raises the one-line InputError
            declared = {s.name: s for s in self.prim.scalars}
            typed = {**self._scalars, **{k: declared[k].cast(v) for k, v in values.items()}}
        if self.ops.python_scalars():
            typed = {k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in typed.items()}
        self._scalars = typed

    def run(self) -> None:
        result = self.fn(*(b.storage for b in self._inputs), **self._scalars)
        n = len(self._returned)
        if n == 1:
            self._returned[0].storage = result
        elif n:
            for b, value in zip(self._returned, result):
                b.storage = value


def _shape_of_lists(x) -> tuple[int, ...]:
    shape = []
    while isinstance(x, list):
        shape.append(len(x))
        x = x[0] if x else None
    return tuple(shape)


def _regroup(storage: list, shape: tuple[int, ...]):
    if _shape_of_lists(storage) == shape:
        return storage
    flat = np.asarray(storage).reshape(shape)
    return flat.tolist() if shape else flat.item()


def _dtype_name(dtype) -> str:
    for name, t in DTYPES.items():
        if np.dtype(t) == np.dtype(dtype):
            return name
    raise InputError(f"no tensor of dtype {dtype} can be uploaded: float32 or int64 only")
