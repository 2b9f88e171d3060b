"""`numpy`: what a user would write with NumPy, in float32 — the honest CPU baseline.

Each primitive's idiom lives in its declaration (harness/primitives/<stem>.py, the
`numpy=` function): the vectorised expression a user writes. They make temporaries
(softmax and layernorm walk memory several times), which is exactly what fused Mojo and
CUDA kernels are measured against. matmul is BLAS (OpenBLAS in the PyPI wheel).
"""
from __future__ import annotations

import numpy as np

from ..core import catalogue
from .base import Availability, Backend, BackendError, OpsKernel
from .ops import HostOps


class NumpyOps(HostOps):
    """numpy arrays as storage; every kernel is the declaration's NumPy idiom."""

    def __init__(self):
        super().__init__("numpy", lambda prim, variant: prim.numpy)


class NumpyBackend(Backend):
    name = "numpy"
    device = "cpu"
    baseline = True
    description = f"NumPy {np.__version__} float32 (matmul: BLAS)"

    def __init__(self):
        self._ops = NumpyOps()

    def availability(self):
        return Availability(True, detail=self.description)

    def ops(self):
        return self._ops

    def variants(self, primitive):
        return ["numpy"] if catalogue.get(primitive).numpy is not None else []

    def prepare(self, primitive, variant):
        if variant != "numpy":
            raise BackendError(f"numpy has no variant {variant!r} of {primitive}; valid: numpy")
        return OpsKernel(self._ops, primitive, variant)

    def measure_floor(self, timing, clock):
        from ..core.timing import call_floor
        one = np.zeros(1, np.float32)
        return call_floor(np.add, (one, one), timing, clock,
                          how="np.add on one-element arrays (the cheapest call through NumPy's ufunc machinery)")
