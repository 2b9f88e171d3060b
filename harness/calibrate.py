"""`python -m harness calibrate`: how each tolerance was chosen, reproducibly.

For every primitive, every applicable distribution, the check dims plus a few long
rows / long dot products, and three seeds, it reports the worst "% of tolerance used" by

  numpy        NumPy float32 (pairwise sums, BLAS)
  sequential   a deliberately naive float32 version: every sum accumulated left to right
               (what a one-thread-per-row kernel or a scalar loop does), GELU through
               exp() instead of tanh(), layernorm with a one-pass Welford in float32
  python       the pure-Python reference variants (float64 inside), small cases only

and, the other way round, in how many cases two broken kernels fail: one that writes
zeros and one that copies its first input. Good tolerances put the first three far
below 100 % and make the broken ones fail (a case whose right answer *is* zeros or the
input, such as relu of positive numbers, cannot catch them; the others must).
"""
from __future__ import annotations

import numpy as np
from rich.table import Table

from . import catalogue
from .backends.numpy_backend import FUNCTIONS as NUMPY
from .verify import verify

F32 = np.float32
EXTRA_DIMS = {"softmax": ((64, 4096), (8, 16384)), "layernorm": ((64, 4096), (8, 16384)),
              "matmul": ((32, 2048, 32), (16, 4096, 16)), "add": ((1 << 20,),), "relu": ((1 << 20,),),
              "gelu": ((1 << 20,),)}


def _seq_sum(a):
    """Left-to-right float32 sum along the last axis (np.cumsum is sequential)."""
    return np.cumsum(a, axis=-1, dtype=F32)[..., -1:]


def seq_gelu(x):
    with np.errstate(over="ignore"):                             # exp(2z) -> inf gives t = 1: correct
        return _seq_gelu(x)


def _seq_gelu(x):
    z = F32(np.sqrt(2 / np.pi)) * (x + F32(0.044715) * x * x * x)
    t = F32(1) - F32(2) / (np.exp(F32(2) * z) + F32(1))       # tanh through exp, as some kernels do
    return F32(0.5) * x * (F32(1) + t)


def seq_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / _seq_sum(e)


def seq_layernorm(x, gamma, beta):
    mean = np.zeros((x.shape[0], 1), F32)
    m2 = np.zeros((x.shape[0], 1), F32)
    for k in range(x.shape[1]):                                  # Welford, in float32, column by column
        v = x[:, k:k + 1]
        d = v - mean
        mean = mean + d / F32(k + 1)
        m2 = m2 + d * (v - mean)
    rstd = F32(1) / np.sqrt(m2 / F32(x.shape[1]) + F32(1e-5))
    return (x - mean) * rstd * gamma + beta


def seq_matmul(a, b):
    c = np.zeros((a.shape[0], b.shape[1]), F32)
    for p in range(a.shape[1]):                                  # k-outer: each C[i,j] summed in order
        c += np.outer(a[:, p], b[p, :]).astype(F32)
    return c


SEQUENTIAL = {"add": NUMPY["add"], "relu": NUMPY["relu"], "gelu": seq_gelu, "softmax": seq_softmax,
              "layernorm": seq_layernorm, "matmul": seq_matmul}


def _zeros(prim, inputs, dims):
    return np.zeros(prim.output_shape(dims), F32)


def _copy(prim, inputs, dims):
    first = next(iter(inputs.values()))
    out = np.zeros(prim.output_shape(dims), F32)
    flat = first.reshape(-1)[: out.size]
    out.reshape(-1)[: flat.size] = flat
    return out


def calibrate(primitive: str, seeds=(0, 1, 2)) -> dict:
    import importlib
    prim = catalogue.PRIMITIVES[primitive]
    py = importlib.import_module(f"python_impl.{primitive}")
    py_fn = list(py.VARIANTS.values())[-1]
    worst = {"numpy": 0.0, "sequential": 0.0, "python": 0.0}
    where = {}
    broken = {"zeros": [0, 0, 0.0], "copy": [0, 0, 0.0]}      # cases failed, cases, max % used
    for dims in prim.check_dims + EXTRA_DIMS.get(primitive, ()):
        for dist in prim.distributions:
            for seed in seeds:
                inputs = prim.make_inputs(dims, dist, seed)
                ref = prim.reference_output(inputs)
                outs = {"numpy": NUMPY[primitive](*inputs.values()),
                        "sequential": SEQUENTIAL[primitive](*inputs.values())}
                if prim.flops(dims) < 3e6:
                    outs["python"] = np.asarray(py_fn(*(a.tolist() for a in inputs.values())), F32)
                for name, out in outs.items():
                    used = verify(prim, inputs, out.astype(F32), dims, ref=ref).tol_used_pct
                    if used > worst[name]:
                        worst[name], where[name] = used, f"{prim.shape_label(dims)} {dist}"
                for name, fn in (("zeros", _zeros), ("copy", _copy)):
                    v = verify(prim, inputs, fn(prim, inputs, dims), dims, ref=ref)
                    b = broken[name]
                    b[0] += not v.ok
                    b[1] += 1
                    b[2] = max(b[2], v.tol_used_pct)
    return {"worst": worst, "broken": broken, "where": where}


def calibrate_report(primitives, console) -> None:
    t = Table(title="tolerance calibration: worst % of tolerance used (three seeds, all distributions)",
              title_justify="left")
    for c in ("primitive", "tolerance", "numpy", "sequential fp32", "python", "zeros kernel fails",
              "copy kernel fails"):
        t.add_column(c, justify="right" if c != "primitive" else "left")
    for p in primitives:
        prim = catalogue.PRIMITIVES[p]
        r = calibrate(p)
        tol = prim.tolerance(prim.check_dims[-1])
        tol_text = f"atol {tol.atol:g}, rtol {tol.rtol:.2g}" + (f" at {prim.shape_label(prim.check_dims[-1])}"
                                                               if len(prim.dim_names) > 1 else "")
        w, b, at = r["worst"], r["broken"], r["where"]
        cell = lambda k, d: f"{d[k]:.3g}%" + (f"\n[dim]{at[k]}[/]" if k in at else "")  # noqa: E731
        fails = lambda k: f"{b[k][0]}/{b[k][1]} cases"  # noqa: E731
        t.add_row(p, tol_text, cell("numpy", w), cell("sequential", w), cell("python", w),
                  fails("zeros"), fails("copy"))
    console.print(t)
