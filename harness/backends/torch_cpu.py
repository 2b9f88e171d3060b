"""`torch-cpu`: PyTorch's own CPU ops, where torch is installed — what a user would call
instead of NumPy, and the other idiom in the accuracy lessons (torch's layer_norm on
DC-offset rows). A baseline: measured on the stress inputs, not held to them.

The ops are the torch peer's (harness/backends/peers.py), on CPU tensors (a copy of each
input at bind time, untimed). Timing is the CPU backends': perf_counter around back-to-back calls, batched
below 10 us. torch uses its own thread pool (all cores); matmul is its CPU BLAS in true
fp32. Not a dependency: `pip install torch==2.13.0` takes the CPU build.
"""
from __future__ import annotations

import numpy as np

from ..core import catalogue
from ..core.declaration import DTYPES
from .base import Availability, Backend, BackendError, OpsKernel
from .ops import HostOps
from .peers import _torch_ops

CPU_NAMES = {"cublas": "matmul"}           # the GPU peer's variant names that say cuBLAS


class TorchCpuOps(HostOps):
    """CPU torch tensors as storage; kernels are the torch peer's ops."""

    def __init__(self, torch, ops):
        super().__init__("torch-cpu", lambda prim, variant: ops[prim.name].make(torch))
        self.torch = torch

    def to_storage(self, array):
        return self.torch.from_numpy(np.array(array, copy=True))

    def to_array(self, storage, dtype):
        return storage.numpy() if hasattr(storage, "numpy") else np.asarray(storage, dtype=DTYPES[dtype])

    def python_scalars(self) -> bool:
        return True


class TorchCpuBackend(Backend):
    name = "torch-cpu"
    device = "cpu"
    baseline = True
    description = "PyTorch CPU ops (matmul: CPU BLAS, fp32)"

    def __init__(self):
        self._torch = None
        self._ops = None
        self._availability: Availability | None = None
        self.op_table = _torch_ops()

    def availability(self) -> Availability:
        if self._availability is None:
            try:
                import torch
            except Exception as e:
                self._availability = Availability(
                    False, reason=f"torch is not installed ({type(e).__name__})",
                    hint="pip install torch==2.13.0 (the CPU build; optional, a peer to compare with)")
            else:
                self._torch = torch
                self._availability = Availability(True, detail=f"torch {torch.__version__} CPU, "
                                                               f"{torch.get_num_threads()} threads")
        return self._availability

    def _variant(self, primitive: str) -> str | None:
        op = self.op_table.get(catalogue.get(primitive).name)
        return CPU_NAMES.get(op.variant, op.variant) if op else None

    def variants(self, primitive):
        v = self._variant(primitive)
        return [v] if v else []

    def prepare(self, primitive, variant):
        if not self.availability().ok:
            raise BackendError(f"torch-cpu is not available: {self.availability().reason}")
        if variant != self._variant(primitive):
            raise BackendError(f"torch-cpu has no variant {variant!r} of {primitive}; "
                               f"valid: {self._variant(primitive) or 'none'}")
        return OpsKernel(self.ops(), primitive, variant)

    def ops(self):
        if self._ops is None and self.availability().ok:
            self._ops = TorchCpuOps(self._torch, self.op_table)
        return self._ops

    def measure_floor(self, timing, clock):
        if not self.availability().ok:
            return None
        from ..core.timing import call_floor
        one = self._torch.zeros(1)
        return call_floor(self._torch.add, (one, one), timing, clock,
                          how="torch.add on one-element CPU tensors (the cheapest call through torch's dispatcher)")

    def environment(self) -> dict:
        if not self.availability().ok:
            return {}
        return {"torch": self._torch.__version__, "torch_cpu_threads": self._torch.get_num_threads()}
