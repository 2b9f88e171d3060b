"""The Python API: run one primitive on your own arrays, validated first.

    >>> import numpy as np, harness
    >>> x = np.random.rand(4, 8).astype(np.float32)
    >>> y = harness.compute("softmax", x=x, backend="numpy")

Every input is checked in Python before a backend sees it — dtype, dimensions,
C-contiguity, matching shapes, non-empty, finite — and a problem raises InputError
with one line that names the input and what is wrong. This matters most for the
compiled backends: they receive raw addresses, and a float64 array read as float32
is silent garbage, a short array is a read past the end of a buffer.
"""
from __future__ import annotations

import numpy as np

from . import backends, catalogue
from .errors import InputError


def validate_inputs(prim: catalogue.Primitive, arrays: dict) -> tuple[int, ...]:
    """Check user arrays against the primitive's contract; return its dims."""
    example = prim.input_shapes(tuple(1 for _ in prim.dim_names))
    expected = list(example)
    if list(arrays) != expected and sorted(arrays) != sorted(expected):
        missing = [n for n in expected if n not in arrays]
        extra = [n for n in arrays if n not in expected]
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise InputError(f"{prim.name}: takes inputs ({', '.join(expected)}); {'; '.join(parts)}")
    for name in expected:
        a = arrays[name]
        if not isinstance(a, np.ndarray):
            raise InputError(f"{prim.name}: input {name!r} must be a numpy array, got {type(a).__name__}")
        if a.dtype != np.float32:
            raise InputError(f"{prim.name}: input {name!r} must be float32, got {a.dtype}")
        if a.ndim != len(example[name]):
            raise InputError(f"{prim.name}: input {name!r} must be {len(example[name])}-D, "
                             f"got shape {a.shape}")
        if a.size == 0:
            raise InputError(f"{prim.name}: input {name!r} is empty (shape {a.shape})")
        if not a.flags.c_contiguous:
            raise InputError(f"{prim.name}: input {name!r} must be C-contiguous "
                             f"(use np.ascontiguousarray)")
    dims = prim.dims_from_inputs({n: arrays[n] for n in expected})
    shapes = prim.input_shapes(dims)
    for name in expected:
        if tuple(arrays[name].shape) != tuple(shapes[name]):
            want = ", ".join(f"{n}{tuple(s)}" for n, s in shapes.items())
            got = ", ".join(f"{n}{tuple(arrays[n].shape)}" for n in expected)
            raise InputError(f"{prim.name}: shapes do not match: got {got}; expected {want}")
    for name in expected:
        a = arrays[name]
        if not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise InputError(f"{prim.name}: input {name!r} has a non-finite value "
                             f"({a[tuple(bad)]}) at index {list(map(int, bad))}")
    return dims


def compute(primitive: str, backend: str = "numpy", variant: str | None = None, **inputs) -> np.ndarray:
    """Run one primitive on validated float32 inputs and return the float32 output."""
    prim = catalogue.get(primitive)
    validate_inputs(prim, inputs)
    b = backends.get(backend)
    avail = b.availability()
    if not avail.ok:
        raise InputError(f"backend {backend!r} is not available here: {avail.reason}")
    names = b.variants(primitive)
    if not names:
        raise InputError(f"backend {backend!r} has no implementation of {primitive}")
    if variant is None:
        variant = names[-1]
    elif variant not in names:
        raise InputError(f"{backend} has no variant {variant!r} of {primitive}; valid: {', '.join(names)}")
    bound = b.prepare(primitive, variant).bind({n: inputs[n] for n in prim.input_shapes(
        prim.dims_from_inputs(inputs))})
    try:
        return bound.run()
    finally:
        bound.close()
