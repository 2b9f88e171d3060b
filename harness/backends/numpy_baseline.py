"""`numpy`: what a user would write with NumPy, in float32 — the honest CPU baseline.

Each primitive's idiom lives in its declaration (harness/primitives/<stem>.py, the
`numpy=` function): the vectorised expression a user writes. They make temporaries
(softmax and layernorm walk memory several times), which is exactly what fused Mojo and
CUDA kernels are measured against. matmul is BLAS (OpenBLAS in the PyPI wheel).
"""
from __future__ import annotations

import numpy as np

from ..core import catalogue
from .base import Availability, Backend, BackendError, CallBound, Kernel


def _as_array(value, dtype) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else np.asarray(value, dtype=dtype)


def _read_only(a: np.ndarray) -> np.ndarray:
    """A view numpy refuses to write through: an idiom that updated its input would raise."""
    v = a.view()
    v.flags.writeable = False
    return v


class NumpyKernel(Kernel):
    def __init__(self, prim):
        self.prim = prim

    def bind(self, inputs, scalars=None):
        args = {t.name: (_read_only(inputs[t.name]) if t.role == "in" else inputs[t.name]) for t in self.prim.inputs}
        return CallBound(self.prim, self.prim.numpy, args, scalars, _as_array)


class NumpyBackend(Backend):
    name = "numpy"
    device = "cpu"
    baseline = True
    description = f"NumPy {np.__version__} float32 (matmul: BLAS)"

    def availability(self):
        return Availability(True, detail=self.description)

    def variants(self, primitive):
        return ["numpy"] if catalogue.get(primitive).numpy is not None else []

    def prepare(self, primitive, variant):
        if variant != "numpy":
            raise BackendError(f"numpy has no variant {variant!r} of {primitive}; valid: numpy")
        return NumpyKernel(catalogue.get(primitive))

    def measure_floor(self, timing, clock):
        from ..core.timing import call_floor
        one = np.zeros(1, np.float32)
        return call_floor(np.add, (one, one), timing, clock,
                          how="np.add on one-element arrays (the cheapest call through NumPy's ufunc machinery)")
