"""Kernel Rosetta's harness: one catalogue of primitives, many backends, honest timing.

    python -m harness list | doctor | run | show | plot | calibrate

See README.md. The Python API is `harness.compute(...)`.
"""
from .api import compute, validate_inputs
from .errors import InputError, UsageError

__all__ = ["compute", "validate_inputs", "InputError", "UsageError"]

