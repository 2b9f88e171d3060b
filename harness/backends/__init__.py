"""The backend registry. Order here is the order of columns and table rows.

Backends are imported lazily: one that needs a missing package (cuda-python, mojo)
still appears, as unavailable with the reason, instead of breaking the harness.
"""
from __future__ import annotations

import importlib

from ..errors import UsageError
from .base import Availability, Backend

# name -> "module:Class"
REGISTRY = {
    "python": "harness.backends.pure_python:PythonBackend",
    "numpy": "harness.backends.numpy_baseline:NumpyBackend",
    "cuda": "harness.backends.cuda.backend:CudaBackend",
    "cupy": "harness.backends.peers:CupyBackend",
    "torch": "harness.backends.peers:TorchBackend",
    "mojo": "harness.backends.mojo.backend:MojoBackend",
    "torch-cpu": "harness.backends.torch_cpu:TorchCpuBackend",
}

_instances: dict[str, Backend] = {}


class _Broken(Backend):
    """Stands in for a backend whose module failed to import: unavailable, with why."""

    def __init__(self, name, error):
        self.name, self._error = name, error

    def availability(self):
        return Availability(False, reason=f"backend module failed to import: {self._error}")

    def variants(self, primitive):
        return []

    def prepare(self, primitive, variant):
        raise RuntimeError(self._error)


def _guard_availability(backend: Backend) -> Backend:
    """A probe that raises (a broken driver, a half-installed package) makes its backend
    unavailable with that reason, in one place, instead of taking `list`, `doctor`, `run`
    and the Python API down with a traceback."""
    probe = backend.availability

    def availability() -> Availability:
        try:
            return probe()
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            return Availability(False, reason=f"availability check failed: {type(e).__name__}: {first}")
    backend.availability = availability
    return backend


def get(name: str) -> Backend:
    if name not in REGISTRY:
        raise UsageError(f"unknown backend {name!r}; valid: {', '.join(REGISTRY)}")
    if name not in _instances:
        mod_name, cls_name = REGISTRY[name].split(":")
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
            _instances[name] = _guard_availability(cls())
        except Exception as e:                      # an optional dependency broke on import
            _instances[name] = _Broken(name, f"{type(e).__name__}: {e}")
    return _instances[name]


def names() -> list[str]:
    return list(REGISTRY)


def all_backends() -> list[Backend]:
    return [get(n) for n in REGISTRY]
