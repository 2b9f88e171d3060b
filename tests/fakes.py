"""Deliberately broken or slow backends, to test that the harness catches them."""
import numpy as np

from harness.backends.base import Availability, Backend, Bound, Kernel, OpsKernel, poison_array
from harness.backends.ops import HostOps
from harness.core import catalogue


def _fn_kernel(name, prim, fn):
    """A kernel that runs fn the NumPy way on host arrays, through the real op layer."""
    return OpsKernel(HostOps(name, lambda p, v: fn), prim.name, "v1")


class FakeBackend(Backend):
    """Correct (the NumPy idiom) by default; subclasses break one thing."""
    name = "fake"
    device = "cpu"

    def availability(self):
        return Availability(True, detail="fake")

    def variants(self, primitive):
        return ["v1"]

    def make(self, prim):
        return prim.numpy

    def prepare(self, primitive, variant):
        prim = catalogue.get(primitive)
        return _fn_kernel(self.name, prim, self.make(prim))


class ZerosBackend(FakeBackend):
    name = "zeros"

    def make(self, prim):
        def zeros(*arrays, **scalars):
            dims = prim.dims_from(dict(zip((t.name for t in prim.inputs), arrays)))
            outs = tuple(np.zeros(prim.shape_of(t, dims), t.np_dtype) for t in prim.returned)
            return outs[0] if len(outs) == 1 else outs
        return zeros


class CrashBackend(FakeBackend):
    name = "crash"

    def make(self, prim):
        def boom(*arrays, **scalars):
            raise RuntimeError("segfault-ish failure\nwith a second line that must not be shown")
        return boom


class BrokenCompileBackend(FakeBackend):
    name = "nocompile"

    def prepare(self, primitive, variant):
        raise RuntimeError("kernel.cu(12): error: identifier \"x\" is undefined")


class DriftBackend(FakeBackend):
    """Right on the first call of each binding, wrong afterwards: only re-verification after
    timing can catch it."""
    name = "drift"

    def prepare(self, primitive, variant):
        prim = catalogue.get(primitive)

        class K(Kernel):
            def bind(self, inputs, scalars=None):
                calls = {"n": 0}

                def f(*arrays, **kw):
                    calls["n"] += 1
                    out = prim.numpy(*arrays, **kw)
                    return out if calls["n"] == 1 else out + np.float32(1.0)
                return _fn_kernel("drift", prim, f).bind(inputs, scalars)
        return K()


class ProbeCrashBackend(FakeBackend):
    """Its availability check itself raises (a broken driver, a half-installed package)."""
    name = "probecrash"

    def availability(self):
        raise OSError("libsomething.so: cannot open shared object file\nsecond line")


class UnavailableBackend(FakeBackend):
    name = "gone"

    def availability(self):
        return Availability(False, reason="no such hardware here", hint="buy one")


class SlowBackend(FakeBackend):
    """Advances a fake clock by 10 us per FLOP of work, so the time budget bites."""
    name = "slow"
    clock = None

    def make(self, prim):
        def f(*arrays, **kw):
            dims = prim.dims_from(dict(zip((t.name for t in prim.inputs), arrays)))
            SlowBackend.clock.now += int(prim.flop_count(dims) * 1e4)
            return prim.numpy(*arrays, **kw)
        return f


class LazyBackend(FakeBackend):
    """Writes the right answer into its output buffer on the first call and does nothing
    after: the buffer still holds a correct result, so only poisoning it before the
    re-verified call can catch it."""
    name = "lazy"

    def prepare(self, primitive, variant):
        prim = catalogue.get(primitive)

        class K(Kernel):
            def bind(self, inputs, scalars=None):
                cache = {}

                def work(*arrays, **kw):
                    if "out" not in cache:
                        cache["out"] = prim.numpy(*arrays, **kw)
                    return cache["out"]
                return _fn_kernel("lazy", prim, work).bind(inputs, scalars)
        return K()


# Shared by every PooledBound of a run, like memory a freed buffer comes back from.
POOL: dict[tuple, np.ndarray] = {}


class PooledBound(Bound):
    """A compiled-backend-like case: the output buffer comes from an allocator that hands
    back recently freed memory (np.empty, cuMemAlloc), and the kernel writes into it.
    `skip` leaves the last element (or row) unwritten, like a loop bound one short."""

    def __init__(self, prim, inputs, scalars, skip):
        self.prim, self.inputs, self.scalars, self.skip = prim, inputs, scalars, skip
        dims = prim.validate(inputs)
        t = prim.outputs[0]
        shape = prim.shape_of(t, dims)
        self.out = POOL.setdefault((t.name, shape), np.empty(shape, t.np_dtype))

    def call(self):
        t = self.prim.outputs[0]            # the reference rounded to float32: right on every input
        full = self.prim.reference_outputs(self.inputs, self.scalars)[t.name].astype(t.np_dtype)
        if self.skip == "element":
            self.out.reshape(-1)[:-1] = full.reshape(-1)[:-1]
        elif self.skip == "row":
            self.out[:-1] = full[:-1]
        else:
            self.out[...] = full

    def outputs(self):
        return {self.prim.outputs[0].name: self.out}

    def poison(self):
        poison_array(self.out)


class PooledBackend(FakeBackend):
    """Three variants sharing the allocator: right, then two that skip their last element or row."""
    name = "pooled"

    def variants(self, primitive):
        return ["right", "skips_last_element", "skips_last_row"] if len(catalogue.get(primitive).dims) > 1 \
            else ["right", "skips_last_element"]

    def prepare(self, primitive, variant):
        prim = catalogue.get(primitive)
        skip = {"right": None, "skips_last_element": "element", "skips_last_row": "row"}[variant]

        class K(Kernel):
            def bind(self, inputs, scalars=None):
                return PooledBound(prim, inputs, scalars, skip)
        return K()


class InputWriterBackend(FakeBackend):
    """Writes into its read-only input through a raw pointer, as a buggy compiled kernel can:
    numpy's writeable flag cannot stop that, the runner's checksum must."""
    name = "inputwriter"

    def make(self, prim):
        import ctypes

        def f(*arrays, **kw):
            out = prim.numpy(*arrays, **kw)
            a = arrays[0]
            ctypes.c_float.from_address(a.ctypes.data).value += 1.0     # behind numpy's back
            return out
        return f


class _OpsFake(FakeBackend):
    """A backend with an op layer: the NumPy idioms, except the primitives `wrong` replaces."""
    wrong: dict = {}

    def __init__(self):
        fns = dict(self.wrong)
        self._ops = HostOps(self.name, lambda prim, variant: fns.get(prim.name, prim.numpy))

    def ops(self):
        return self._ops

    def prepare(self, primitive, variant):
        return OpsKernel(self._ops, primitive, variant)


def _tf32_matmul(A, B):
    from harness.primitives.matmul import tf32_inputs
    return tf32_inputs(A, B)


def _relu_backward_without_mask(x, dy):
    return dy.copy()


def _mutant(primitive, name):
    from harness.core import catalogue
    return next(m.fn for m in catalogue.get(primitive).mutants if m.name == name)


class PeekingAttentionBackend(_OpsFake):
    """Attention whose mask lets each query see one key ahead: the GPT's loss is still a
    loss, but of a model that reads the answer."""
    name = "peeking"

    def __init__(self):
        self.wrong = {"attention": _mutant("attention", "peeks_one_ahead")}
        super().__init__()


class Tf32Backend(_OpsFake):
    """Rounds matmul's inputs to TF32: wrong from the first forward call on."""
    name = "tf32"
    wrong = {"matmul": _tf32_matmul}


class NoMaskBackend(_OpsFake):
    """relu_backward passes every gradient: the forward and the loss are right, the gradients not."""
    name = "nomask"
    wrong = {"relu_backward": _relu_backward_without_mask}
