"""`python`: the pure-Python implementations in python_impl/, on lists.

Inputs are converted to lists (float32 values become Python floats exactly) before
timing starts; the outputs are converted back after. Only the Python function itself
is timed. Python floats are float64, so these results are more accurate than any
float32 backend: the point of this backend is how slow the interpreter is, and
what each variant's restructuring buys.

python_impl/<stem>.py lists its functions in VARIANTS, naive first; each is named
`<primitive>_<variant>` (see harness/core/catalogue.py).
"""
from __future__ import annotations

import importlib
import platform

import numpy as np

from ..core import catalogue
from .base import Availability, Backend, BackendError, OpsKernel
from .ops import HostOps


def _noop(*args, **kwargs):
    return None


def module_variants(stem: str) -> dict[str, dict[str, object]]:
    """{primitive: {variant: function}} for python_impl/<stem>.py, in lesson order."""
    try:
        mod = importlib.import_module(f"python_impl.{stem}")
    except ModuleNotFoundError as e:
        if e.name == f"python_impl.{stem}":
            return {}
        raise
    found: dict[str, dict[str, object]] = {}
    for fn in getattr(mod, "VARIANTS", ()):
        hit = catalogue.resolve(stem, fn.__name__)
        if hit is None:
            raise BackendError(f"python_impl/{stem}.py: {fn.__name__} is not named <primitive>_<variant> "
                               f"for a primitive of {stem} ({', '.join(p.name for p in catalogue.with_stem(stem))})")
        prim, variant = hit
        found.setdefault(prim.name, {})[variant] = fn
    return found


class PythonOps(HostOps):
    """(Nested) lists of Python numbers as storage; kernels are python_impl's functions."""

    def __init__(self):
        super().__init__("python", self._function)

    @staticmethod
    def _function(prim, variant):
        fns = module_variants(prim.file_stem).get(prim.name, {})
        if variant not in fns:
            raise BackendError(f"python has no variant {variant!r} of {prim.name}; valid: {', '.join(fns) or 'none'}")
        return fns[variant]

    def to_storage(self, array):
        return np.asarray(array).tolist()

    def python_scalars(self) -> bool:
        return True


class PythonBackend(Backend):
    name = "python"
    device = "cpu"
    description = f"pure Python on lists ({platform.python_implementation()} {platform.python_version()})"

    def __init__(self):
        self._ops = PythonOps()

    def availability(self):
        return Availability(True, detail=self.description)

    def ops(self):
        return self._ops

    def variants(self, primitive):
        prim = catalogue.get(primitive)
        return list(module_variants(prim.file_stem).get(prim.name, {}))

    def prepare(self, primitive, variant):
        if variant not in self.variants(primitive):
            raise BackendError(f"python has no variant {variant!r} of {primitive}; "
                               f"valid: {', '.join(self.variants(primitive)) or 'none'}")
        return OpsKernel(self._ops, primitive, variant)

    def measure_floor(self, timing, clock):
        from ..core.timing import call_floor
        return call_floor(_noop, ([0.0],), timing, clock, how="a Python call of a no-op function on one list")
