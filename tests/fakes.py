"""Deliberately broken or slow backends, to test that the harness catches them."""
import numpy as np

from harness import catalogue
from harness.backends.base import Availability, Backend, CallBound, Kernel
from harness.backends.numpy_backend import FUNCTIONS


class _FnKernel(Kernel):
    def __init__(self, fn):
        self.fn = fn

    def bind(self, inputs):
        return CallBound(self.fn, tuple(inputs.values()), lambda out: out)


class FakeBackend(Backend):
    """Correct (NumPy) by default; subclasses break one thing."""
    name = "fake"
    device = "cpu"

    def availability(self):
        return Availability(True, detail="fake")

    def variants(self, primitive):
        return ["v1"]

    def make(self, primitive):
        return FUNCTIONS[primitive]

    def prepare(self, primitive, variant):
        return _FnKernel(self.make(primitive))


class ZerosBackend(FakeBackend):
    name = "zeros"

    def make(self, primitive):
        prim = catalogue.PRIMITIVES[primitive]
        return lambda *arrays: np.zeros(prim.output_shape(prim.dims_from_inputs(
            dict(zip(prim.input_shapes(tuple(1 for _ in prim.dim_names)), arrays)))), np.float32)


class CrashBackend(FakeBackend):
    name = "crash"

    def make(self, primitive):
        def boom(*arrays):
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
        fn = FUNCTIONS[primitive]
        backend = self

        class K(Kernel):
            def bind(self, inputs):
                calls = {"n": 0}

                def f(*arrays):
                    calls["n"] += 1
                    out = fn(*arrays)
                    return out if calls["n"] == 1 else out + np.float32(1.0)
                return CallBound(f, tuple(inputs.values()), lambda out: out)
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
    """Advances a fake clock by 1 ms per element-equivalent of work, so the time budget bites."""
    name = "slow"
    clock = None

    def make(self, primitive):
        prim = catalogue.PRIMITIVES[primitive]
        fn = FUNCTIONS[primitive]

        def f(*arrays):
            dims = prim.dims_from_inputs(dict(zip(prim.input_shapes(tuple(1 for _ in prim.dim_names)), arrays)))
            SlowBackend.clock.now += int(prim.flops(dims) * 1e4)      # 10 µs per FLOP
            return fn(*arrays)
        return f


class LazyBackend(FakeBackend):
    """Writes the right answer into its output buffer on the first call and does nothing
    after: the buffer still holds a correct result, so only poisoning it before the
    re-verified call can catch it."""
    name = "lazy"

    def prepare(self, primitive, variant):
        fn = FUNCTIONS[primitive]

        class LazyBound(CallBound):
            def __init__(self, inputs):
                super().__init__(self._work, tuple(inputs.values()), lambda out: out)
                self.buffer, self.calls = None, 0

            def _work(self, *arrays):
                self.calls += 1
                if self.buffer is None:
                    self.buffer = fn(*arrays)
                return self.buffer

        class K(Kernel):
            def bind(self, inputs):
                return LazyBound(inputs)
        return K()
