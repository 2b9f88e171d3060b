"""Compare an output with the float64 reference, element by element.

The verdict carries everything needed to see *how* a result is wrong: max absolute and
relative error, the worst element (by fraction of its own tolerance) with its index,
value and reference, and "% of tolerance used" (100 % = right at the limit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .catalogue import Primitive


@dataclass
class Verdict:
    ok: bool
    max_abs_err: float
    max_rel_err: float
    tol_used_pct: float
    worst_index: tuple | None = None
    worst_got: float | None = None
    worst_ref: float | None = None
    message: str = ""

    def as_fields(self) -> dict:
        return {"max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err,
                "tol_used_pct": self.tol_used_pct,
                "worst_index": list(self.worst_index) if self.worst_index is not None else None,
                "worst_got": self.worst_got, "worst_ref": self.worst_ref}


def _fmt_index(idx) -> str:
    return "[" + ", ".join(str(i) for i in idx) + "]"


def verify(prim: Primitive, inputs: dict[str, np.ndarray], got, dims=None, ref=None, scale=None) -> Verdict:
    """Check `got` against the reference for `inputs`. Never raises on a bad output.

    `ref` and `scale` (the error scale, see the catalogue) may be passed in when the same
    inputs are checked many times: for matmul the scale is a float64 matmul of its own.
    Written to make few full-size passes and two float64 buffers: at 2^26 elements the
    verification, not the kernel, is what a GPU run spends its time on."""
    dims = dims if dims is not None else prim.dims_from_inputs(inputs)
    if ref is None:
        ref = prim.reference_output(inputs)
    expected_shape = tuple(prim.output_shape(dims))
    nan = float("nan")
    if got is None or not isinstance(got, np.ndarray):
        return Verdict(False, nan, nan, float("inf"),
                       message=f"output is {type(got).__name__}, not a numpy array")
    if got.shape != expected_shape:
        return Verdict(False, nan, nan, float("inf"),
                       message=f"output shape {got.shape} != expected {expected_shape}")
    if got.dtype != np.float32:
        return Verdict(False, nan, nan, float("inf"),
                       message=f"output dtype {got.dtype} != float32")
    if got.size == 0:
        return Verdict(True, 0.0, 0.0, 0.0)
    tol = prim.tolerance(dims)
    allowed = tol.atol + tol.rtol * (prim.scale(inputs, ref) if scale is None else scale)
    all_finite = bool(np.isfinite(got).all())
    err = got.astype(np.float64)
    np.subtract(err, ref, out=err)
    np.abs(err, out=err)
    # Fraction of each element's own tolerance used; 0/0 (exact where the tolerance is 0) is
    # 0, a non-finite output is infinitely wrong.
    frac = np.empty_like(err)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(err, allowed, out=frac)
        if np.any(np.asarray(allowed) == 0):
            frac[err == 0] = 0.0
        if not all_finite:
            np.nan_to_num(frac, copy=False, nan=np.inf, posinf=np.inf)
        flat = int(np.argmax(frac))
        used = float(frac.reshape(-1)[flat])
        max_abs = float(np.fmax.reduce(err, axis=None)) if all_finite else float("inf")
        np.abs(ref, out=frac)                   # reuse the buffer: relative error, NaN for 0/0
        np.divide(err, frac, out=frac)
        max_rel = float(np.fmax.reduce(frac, axis=None)) if all_finite else float("inf")
    worst = np.unravel_index(flat, got.shape)
    v = Verdict(ok=bool(used <= 1.0), max_abs_err=max_abs, max_rel_err=max_rel,
                tol_used_pct=100.0 * used, worst_index=tuple(int(i) for i in worst),
                worst_got=float(got[worst]), worst_ref=float(ref[worst]))
    if not v.ok:
        what = "non-finite value" if not np.isfinite(got[worst]) else "error"
        allowed_here = allowed[worst] if np.ndim(allowed) else allowed
        with np.errstate(divide="ignore", invalid="ignore"):
            n_bad = int((~(np.abs(got.astype(np.float64) - ref) <= allowed)).sum())
        v.message = (f"{what} at {_fmt_index(v.worst_index)}: got {v.worst_got:.9g}, "
                     f"expected {v.worst_ref:.9g} (|err| {abs(v.worst_got - v.worst_ref):.3g} > allowed "
                     f"{float(allowed_here):.3g}; {n_bad} of {got.size} elements out of tolerance)")
    return v
