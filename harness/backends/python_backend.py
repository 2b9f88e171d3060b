"""`python`: the pure-Python implementations in python_impl/, on lists.

Inputs are converted to lists (float32 values become Python floats exactly) before
timing starts; the output is converted back after. Only the Python function itself
is timed. Python floats are float64, so these results are more accurate than any
float32 backend: the point of this backend is how slow the interpreter is, and
what each variant's restructuring buys.
"""
from __future__ import annotations

import importlib
import platform

import numpy as np

from .base import Availability, Backend, CallBound, Kernel


def _to_numpy(out) -> np.ndarray:
    return np.asarray(out, dtype=np.float32)


class PythonKernel(Kernel):
    def __init__(self, fn):
        self.fn = fn

    def bind(self, inputs):
        args = tuple(a.tolist() for a in inputs.values())
        return CallBound(self.fn, args, _to_numpy)


class PythonBackend(Backend):
    name = "python"
    device = "cpu"
    language = "python_impl"
    description = f"pure Python on lists ({platform.python_implementation()} {platform.python_version()})"

    def availability(self):
        return Availability(True, detail=self.description)

    def _module(self, primitive):
        try:
            return importlib.import_module(f"python_impl.{primitive}")
        except ModuleNotFoundError:
            return None

    def variants(self, primitive):
        mod = self._module(primitive)
        return list(mod.VARIANTS) if mod else []

    def prepare(self, primitive, variant):
        return PythonKernel(self._module(primitive).VARIANTS[variant])
