"""The Python API: run one primitive on your own arrays, validated first.

    >>> import numpy as np, harness
    >>> x = np.random.rand(4, 8).astype(np.float32)
    >>> y = harness.compute("softmax", x=x, backend="numpy")
    >>> out = harness.compute("layernorm", x=x, gamma=g, beta=b, eps=1e-6)   # scalars by name

Every input is checked in Python before a backend sees it (dtype, dimensions,
C-contiguity, matching shapes, non-empty, finite), and a problem raises InputError with
one line that names the input and what is wrong. This matters most for the compiled
backends: they receive raw addresses, and a float64 array read as float32 is silent
garbage, a short array is a read past the end of a buffer.

One output comes back as an array; several come back as a dict by name.
"""
from __future__ import annotations

import numpy as np

from . import backends
from .core import catalogue
from .core.declaration import Primitive
from .errors import InputError


def validate_inputs(prim: Primitive, arrays: dict) -> tuple[int, ...]:
    """Check user arrays against the primitive's declaration; return its dims."""
    return prim.validate(arrays)


def compute(primitive: str, backend: str = "numpy", variant: str | None = None, **arguments):
    """Run one primitive on validated inputs (tensors and scalars, by name)."""
    prim = catalogue.get(primitive)
    scalar_names = {s.name for s in prim.scalars}
    arrays = {k: v for k, v in arguments.items() if k not in scalar_names}
    scalars = prim.scalar_values({k: v for k, v in arguments.items() if k in scalar_names})
    prim.validate(arrays)
    b = backends.get(backend)
    avail = b.availability()
    if not avail.ok:
        raise InputError(f"backend {backend!r} is not available here: {avail.reason}")
    names = b.variants(primitive)
    if not names:
        raise InputError(f"backend {backend!r} has no implementation of {primitive} yet")
    if variant is None:
        variant = names[-1]
    elif variant not in names:
        raise InputError(f"{backend} has no variant {variant!r} of {primitive}; valid: {', '.join(names)}")
    bound = b.prepare(primitive, variant).bind(arrays, scalars)
    try:
        outs = bound.run()
    finally:
        bound.close()
    outs = {k: np.array(v, copy=True) for k, v in outs.items()}
    return next(iter(outs.values())) if len(outs) == 1 else outs
