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
    inputs are checked many times: for matmul the scale is a float64 matmul of its own."""
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
    got64 = got.astype(np.float64)
    tol = prim.tolerance(dims)
    allowed = tol.atol + tol.rtol * (prim.scale(inputs, ref) if scale is None else scale)
    err = np.abs(got64 - ref)
    bad_value = ~np.isfinite(got64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Fraction of each element's own tolerance used; 0/0 (exact where tolerance is 0) is 0.
        frac = np.where(err == 0, 0.0, err / allowed)
        rel = np.where(err == 0, 0.0, err / np.abs(ref))
    frac = np.where(bad_value, np.inf, frac)
    if got.size == 0:
        return Verdict(True, 0.0, 0.0, 0.0)
    flat = int(np.argmax(frac))
    worst = np.unravel_index(flat, got.shape)
    used = float(frac.reshape(-1)[flat])
    max_abs = float(np.nanmax(np.where(bad_value, np.inf, err)))
    max_rel = float(np.nanmax(np.where(bad_value, np.inf, rel)))
    v = Verdict(ok=bool(used <= 1.0), max_abs_err=max_abs, max_rel_err=max_rel,
                tol_used_pct=100.0 * used, worst_index=tuple(int(i) for i in worst),
                worst_got=float(got64[worst]), worst_ref=float(ref[worst]))
    if not v.ok:
        what = "non-finite value" if bad_value.reshape(-1)[flat] else "error"
        v.message = (f"{what} at {_fmt_index(v.worst_index)}: got {v.worst_got:.9g}, "
                     f"expected {v.worst_ref:.9g} (|err| {err[worst]:.3g} > allowed {allowed[worst]:.3g}; "
                     f"{int((frac > 1).sum())} of {got.size} elements out of tolerance)")
    return v
