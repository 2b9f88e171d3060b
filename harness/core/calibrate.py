"""`python -m harness calibrate`: how each tolerance was chosen, and how much room it leaves.

For every primitive, over the check dims plus a few long rows / long dot products, every
distribution and three seeds, it reports the worst "% of tolerance used" by honest
implementations:

  numpy        the NumPy idiom (float32, pairwise sums, BLAS), on the regular distributions
               (on the stress ones it is measured, not held to them: see `numpy (stress)`)
  naive fp32   the declaration's deliberately careless float32 version: every sum left to
               right, as a one-thread-per-row kernel or a scalar loop does
  python       the pure-Python variants (float64 inside), small cases only

and, the other way round, the mutant suite: near-miss wrong implementations declared with
each primitive (a one-pass variance, a wrong eps, TF32 rounding, a loop one element
short, ...), each with the cases where it must be caught. The mildest mutant is the one
that comes closest to passing on a case where it must fail; the margin is how many times
more of its tolerance it uses than the worst honest implementation. A margin above 1 is
the whole point: every honest float32 error passes and every mutant fails.
"""
from __future__ import annotations

import numpy as np
from rich.markup import escape
from rich.table import Table

from . import catalogue
from .declaration import Mutant, Primitive
from .verify import Verdict, verify

SEEDS = (0, 1, 2)
PYTHON_MAX_FLOPS = 3e6                 # pure Python only where it finishes in well under a second
EXTRA_DIMS = {2: ((64, 4096), (8, 16384)), 3: ((32, 2048, 32), (16, 4096, 16)), 1: ((1 << 20,),)}


def extra_dims(prim: Primitive) -> tuple:
    """Long rows / long dot products beyond the check dims, for shapes like these."""
    return EXTRA_DIMS.get(len(prim.dims), ())


def mutant_cases(prim: Primitive, m: Mutant) -> list[tuple[tuple, str]]:
    """Every (dims, distribution) where mutant m must fail."""
    dims = [d for d in prim.check_dims if m.where is None or m.where(prim.dims_dict(d))]
    dims += [d for d in m.extra_dims if d not in dims]
    return [(d, dist) for d in dims for dist in m.caught_on]


def run_mutant(prim: Primitive, m: Mutant, dims, dist, seed: int = 0) -> Verdict:
    inputs = prim.make_inputs(dims, dist, seed)
    with np.errstate(all="ignore"):                 # overflowing mutants are the point
        outs = prim.call_numpy_style(m.fn, {k: v.copy() for k, v in inputs.items()})
    return verify(prim, inputs, outs, dims)


def _python_functions(prim: Primitive):
    from ..backends.pure_python import module_variants
    return module_variants(prim.file_stem).get(prim.name, {})


def calibrate(primitive: str, seeds=SEEDS) -> dict:
    prim = catalogue.get(primitive)
    worst = {"numpy": 0.0, "numpy (stress)": 0.0, "naive fp32": 0.0, "python": 0.0}
    where: dict[str, str] = {}
    py = list(_python_functions(prim).values())
    for dims in prim.check_dims + extra_dims(prim):
        for dist in prim.all_distributions:
            for seed in seeds:
                inputs = prim.make_inputs(dims, dist, seed)
                refs = prim.reference_outputs(inputs)
                impls = {"numpy (stress)" if dist in prim.stress else "numpy": prim.numpy}
                if prim.naive_float32 is not None:
                    impls["naive fp32"] = prim.naive_float32
                for name, fn in impls.items():
                    outs = prim.call_numpy_style(fn, {k: v.copy() for k, v in inputs.items()})
                    _record(worst, where, name, verify(prim, inputs, outs, dims, refs=refs), dims, dist, prim)
                if py and prim.flop_count(dims) < PYTHON_MAX_FLOPS:
                    for fn in py:
                        outs = prim.call_numpy_style(fn, {k: v.tolist() for k, v in inputs.items()})
                        outs = {t.name: np.asarray(outs[t.name], dtype=t.np_dtype) for t in prim.outputs}
                        _record(worst, where, "python", verify(prim, inputs, outs, dims, refs=refs), dims, dist, prim)
    mutants = []
    for m in prim.mutants:
        mild, at, missed = float("inf"), "", []
        for dims, dist in mutant_cases(prim, m):
            v = run_mutant(prim, m, dims, dist)
            if v.tol_used_pct < mild or not at:
                mild, at = v.tol_used_pct, f"{prim.shape_label(dims)} {dist}"
            if v.ok:
                missed.append(f"{prim.shape_label(dims)} {dist}")
        mutants.append({"name": m.name, "what": m.what, "mildest_pct": mild, "where": at, "missed": missed})
    honest = max(v for k, v in worst.items() if k != "numpy (stress)")
    mildest = min((m["mildest_pct"] for m in mutants), default=None)
    if mildest is None:
        margin = None
    else:                                            # an exact primitive (relu): honest error is 0
        margin = mildest / honest if honest > 0 else float("inf")
    return {"worst": worst, "where": where, "mutants": mutants, "honest_pct": honest, "mildest_pct": mildest,
            "margin": margin}


def _record(worst, where, name, v: Verdict, dims, dist, prim):
    if v.tol_used_pct > worst[name]:
        worst[name], where[name] = v.tol_used_pct, f"{prim.shape_label(dims)} {dist}"


def _pct(v: float) -> str:
    return "inf" if v == float("inf") else f"{v:.3g}%"


def calibrate_report(primitives, console) -> None:
    t = Table(title="tolerance calibration: worst % of tolerance used (three seeds, all distributions), "
                    "and the mildest mutant", title_justify="left")
    for c in ("primitive", "numpy", "numpy (stress)", "naive fp32", "python", "mildest mutant", "margin"):
        t.add_column(c, justify="right" if c != "primitive" else "left")
    details = []
    for p in primitives:
        r = calibrate(p)
        w, at = r["worst"], r["where"]
        cell = lambda k: _pct(w[k]) + (f"\n[dim]{at[k]}[/]" if k in at else "")  # noqa: E731
        mild = min(r["mutants"], key=lambda m: m["mildest_pct"], default=None)
        mild_text = f"{mild['name']}: {_pct(mild['mildest_pct'])}\n[dim]{mild['where']}[/]" if mild else "—"
        margin = "—" if r["margin"] is None else "∞ (exact)" if r["margin"] == float("inf") else f"{r['margin']:.3g}×"
        t.add_row(p, cell("numpy"), cell("numpy (stress)") if catalogue.get(p).stress else "—",
                  cell("naive fp32"), cell("python"), mild_text, margin)
        for m in r["mutants"]:
            status = "[green]caught everywhere[/]" if not m["missed"] else \
                f"[bold red]MISSED at {', '.join(m['missed'][:4])}[/]"
            details.append(f"  {p}/{m['name']}: {escape(m['what'])}; mildest {_pct(m['mildest_pct'])} at "
                           f"{m['where']}; {status}")
    console.print(t)
    console.print("[bold]mutants[/] (each must fail wherever it is declared to be caught):", highlight=False)
    for line in details:
        console.print(line, highlight=False)
