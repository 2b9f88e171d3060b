"""Compare every output with the float64 reference, element by element.

A verdict per output carries what is needed to see *how* it is wrong: max absolute and
relative error, the worst element (by fraction of its own tolerance) with its index,
value and reference, the number of elements out of tolerance, and "% of tolerance used"
(100 % = right at the limit). The call's verdict passes when every output passes; its
summary fields are those of the output that used the most of its tolerance.

float32 outputs pass when |got - ref| <= atol + rtol * scale, element by element (see each
declaration for its scale). int64 outputs must be exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .declaration import Primitive, Tensor


@dataclass
class OutputVerdict:
    name: str
    ok: bool
    max_abs_err: float
    max_rel_err: float
    tol_used_pct: float
    worst_index: tuple | None = None
    worst_got: float | None = None
    worst_ref: float | None = None
    n_bad: int = 0
    message: str = ""

    def as_fields(self) -> dict:
        return {"ok": self.ok, "max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err,
                "tol_used_pct": self.tol_used_pct,
                "worst_index": list(self.worst_index) if self.worst_index is not None else None,
                "worst_got": self.worst_got, "worst_ref": self.worst_ref, "n_bad": self.n_bad,
                "message": self.message or None}


@dataclass
class Verdict:
    outputs: dict[str, OutputVerdict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.outputs.values())

    @property
    def worst(self) -> OutputVerdict:
        """The failing output if any (the first in declaration order), else the one closest to its limit."""
        bad = [v for v in self.outputs.values() if not v.ok]
        return bad[0] if bad else max(self.outputs.values(), key=lambda v: v.tol_used_pct)

    @property
    def message(self) -> str:
        bad = [v for v in self.outputs.values() if not v.ok]
        if not bad:
            return ""
        many = len(self.outputs) > 1
        return "; ".join((f"output {v.name!r}: " if many else "") + v.message for v in bad)

    @property
    def max_abs_err(self) -> float:
        return self.worst.max_abs_err

    @property
    def tol_used_pct(self) -> float:
        return self.worst.tol_used_pct

    @property
    def worst_index(self):
        return self.worst.worst_index

    @property
    def worst_got(self):
        return self.worst.worst_got

    @property
    def worst_ref(self):
        return self.worst.worst_ref

    def as_fields(self) -> dict:
        """The row fields of a result: the worst output's figures, and every output's verdict."""
        w = self.worst
        return {"max_abs_err": w.max_abs_err, "max_rel_err": w.max_rel_err, "tol_used_pct": w.tol_used_pct,
                "worst_output": w.name,
                "worst_index": list(w.worst_index) if w.worst_index is not None else None,
                "worst_got": w.worst_got, "worst_ref": w.worst_ref,
                "outputs": {name: v.as_fields() for name, v in self.outputs.items()}}


def _fmt_index(idx) -> str:
    return "[" + ", ".join(str(i) for i in idx) + "]"


def _fail(name, message) -> OutputVerdict:
    nan = float("nan")
    return OutputVerdict(name, False, nan, nan, float("inf"), message=message)


def verify(prim: Primitive, inputs: dict[str, np.ndarray], got: dict, dims=None, refs=None,
           scales=None, scalars=None) -> Verdict:
    """Check every output in `got` (name -> array) against the reference. Never raises on a
    bad output. `refs` and `scales` may be passed in when the same inputs are checked many
    times (for matmul the scale is a float64 matmul of its own)."""
    dims = dims if dims is not None else prim.dims_from(inputs)
    if refs is None:
        refs = prim.reference_outputs(inputs, scalars)
    verdict = Verdict()
    if not isinstance(got, dict):
        got = {prim.outputs[0].name: got} if len(prim.outputs) == 1 else {}
    for t in prim.outputs:
        if t.name not in got:
            verdict.outputs[t.name] = _fail(t.name, f"output {t.name!r} was not returned")
            continue
        scale = None if scales is None else scales.get(t.name)
        verdict.outputs[t.name] = _verify_one(prim, t, inputs, got[t.name], dims, refs, scale, scalars)
    return verdict


def _verify_one(prim: Primitive, t: Tensor, inputs, got, dims, refs, scale, scalars) -> OutputVerdict:
    ref = refs[t.name]
    expected_shape = prim.shape_of(t, dims)
    if isinstance(got, np.generic):              # a 0-d result as NumPy returns it (x.sum())
        got = np.asarray(got)
    if got is None or not isinstance(got, np.ndarray):
        return _fail(t.name, f"output is {type(got).__name__}, not a numpy array")
    if got.shape != expected_shape:
        return _fail(t.name, f"output shape {got.shape} != expected {expected_shape}")
    if got.dtype != np.dtype(t.np_dtype):
        return _fail(t.name, f"output dtype {got.dtype} != {t.dtype}")
    if got.size == 0:
        return OutputVerdict(t.name, True, 0.0, 0.0, 0.0)
    if t.dtype == "int64":
        return _verify_exact(t, got, ref)
    tol = prim.tolerance(t, dims)
    if scale is None:
        scale = prim.error_scale(t, inputs, refs, scalars)
    allowed = tol.atol + tol.rtol * scale
    all_finite = bool(np.isfinite(got).all())
    # Written to make few full-size passes and two float64 buffers: at 2^26 elements the
    # verification, not the kernel, is what a GPU run spends its time on.
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
        n_bad = int(np.count_nonzero(~(frac <= 1.0)))
        max_abs = float(np.fmax.reduce(err, axis=None)) if all_finite else float("inf")
        np.abs(ref, out=frac)                   # reuse the buffer: relative error, NaN for 0/0
        np.divide(err, frac, out=frac)
        max_rel = float(np.fmax.reduce(frac, axis=None)) if all_finite else float("inf")
    worst = np.unravel_index(flat, got.shape)
    v = OutputVerdict(t.name, ok=bool(used <= 1.0), max_abs_err=max_abs, max_rel_err=max_rel,
                      tol_used_pct=100.0 * used, worst_index=tuple(int(i) for i in worst),
                      worst_got=float(got[worst]), worst_ref=float(ref[worst]), n_bad=n_bad)
    if not v.ok:
        what = "non-finite value" if not np.isfinite(got[worst]) else "error"
        allowed_here = allowed[worst] if np.ndim(allowed) else allowed
        v.message = (f"{what} at {_fmt_index(v.worst_index)}: got {v.worst_got:.9g}, "
                     f"expected {v.worst_ref:.9g} (|err| {abs(v.worst_got - v.worst_ref):.3g} > allowed "
                     f"{float(allowed_here):.3g}; {n_bad} of {got.size} elements out of tolerance)")
    return v


def _verify_exact(t: Tensor, got: np.ndarray, ref: np.ndarray) -> OutputVerdict:
    ref = np.asarray(ref)
    wrong = got != ref
    n_bad = int(np.count_nonzero(wrong))
    if not n_bad:
        return OutputVerdict(t.name, True, 0.0, 0.0, 0.0)
    worst = np.unravel_index(int(np.argmax(wrong)), got.shape)
    g, r = int(got[worst]), int(ref[worst])
    return OutputVerdict(t.name, False, float(abs(g - r)), float("inf"), float("inf"),
                         worst_index=tuple(int(i) for i in worst), worst_got=float(g), worst_ref=float(r),
                         n_bad=n_bad, message=(f"wrong value at {_fmt_index(worst)}: got {g}, expected {r} "
                                               f"({n_bad} of {got.size} elements differ; {t.dtype} must be exact)"))
