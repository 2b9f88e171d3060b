"""The float64 reference as an op layer: every primitive's declared reference, run on
float64 buffers. Not a backend to time, but the curve a model's float32 runs are judged
against: the same model code, the same initial weights and batches, computed in float64
by the very functions the kernels are verified against.
"""
from __future__ import annotations

import numpy as np

from .ops import Buffer, HostOps


def _reference_function(prim, variant):
    names = [t.name for t in prim.inputs]
    inouts = [t.name for t in prim.inputs if t.role == "inout"]
    returned = [t.name for t in prim.returned]

    def run(*arrays, **scalars):
        args = dict(zip(names, arrays))
        refs = prim.reference(**args, **{k: (float(v) if isinstance(v, np.floating) else int(v))
                                          for k, v in scalars.items()})
        if not isinstance(refs, dict):
            refs = {prim.outputs[0].name: refs}
        for name in inouts:                       # the reference returns the updated value
            np.copyto(args[name], refs[name])
        outs = tuple(np.asarray(refs[n], dtype=np.float64 if args_dtype(prim, n) == "float32" else np.int64)
                     for n in returned)
        return outs[0] if len(outs) == 1 else outs
    return run


def args_dtype(prim, name):
    return prim.tensor(name).dtype


class ReferenceOps(HostOps):
    """float64 storage for float32 tensors (int64 stays int64); kernels are the references."""

    keeps_float64 = True                # float64 uploads are kept as they are, not rounded to float32

    def __init__(self):
        super().__init__("float64 reference", _reference_function)

    def to_storage(self, array):
        a = np.asarray(array)
        return np.array(a, dtype=np.float64 if a.dtype.kind == "f" else a.dtype, copy=True)

    def upload(self, array):
        a = np.asarray(array)
        return Buffer(self, a.shape, "float32" if a.dtype.kind == "f" else "int64", self.to_storage(a))

    def empty(self, shape, dtype="float32"):
        return Buffer(self, shape, dtype, np.empty(shape, np.float64 if dtype == "float32" else np.int64))

    def write(self, buf, array):
        buf.storage = self.to_storage(np.asarray(array).reshape(buf.shape))
