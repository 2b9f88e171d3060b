"""The mutant suite: every near-miss wrong implementation declared with a primitive fails
wherever it is declared to be caught, every honest float32 implementation passes, and the
margin between them is reported by calibrate.

Before contract v2 (measured against commit b22a479 with the same mutants): an output equal
to beta passed 9 of 18 DC-offset layernorm cases, a one-pass E[x^2] - E[x]^2 layernorm 28 of
32 check and long-row cases, eps = 1e-6 30 of 32, and TF32-rounded inputs passed matmul at
K = 4096 (58 % of the tolerance). Each of those is a case below that must fail now.
"""
import numpy as np
import pytest

from harness.core import catalogue
from harness.core.calibrate import calibrate, extra_dims, mutant_cases, run_mutant
from harness.core.verify import verify

MUTANTS = [(p, m) for p in catalogue.PRIMITIVES.values() for m in p.mutants]


def test_the_suite_has_at_least_twelve_mutants_and_every_primitive_has_some():
    assert len(MUTANTS) >= 12
    assert all(p.mutants for p in catalogue.PRIMITIVES.values())


@pytest.mark.parametrize("prim,mutant", MUTANTS, ids=[f"{p.name}-{m.name}" for p, m in MUTANTS])
def test_each_mutant_is_caught_everywhere_it_must_be(prim, mutant):
    cases = mutant_cases(prim, mutant)
    assert cases, f"{prim.name}/{mutant.name} declares no case where it must fail"
    missed = []
    for dims, dist in cases:
        v = run_mutant(prim, mutant, dims, dist)
        if v.ok:
            missed.append(f"{prim.shape_label(dims)} {dist} ({v.tol_used_pct:.3g}% of tolerance)")
    assert not missed, f"{prim.name}/{mutant.name} ({mutant.what}) passed at: {', '.join(missed)}"


@pytest.mark.parametrize("name", list(catalogue.PRIMITIVES))
def test_honest_float32_implementations_pass(name):
    """The careless-but-correct float32 version passes every distribution, stress included;
    the NumPy idiom passes every regular one."""
    prim = catalogue.get(name)
    failures = []
    for dims in prim.check_dims + extra_dims(prim):
        for dist in prim.all_distributions:
            inputs = prim.make_inputs(dims, dist, 0)
            refs = prim.reference_outputs(inputs)
            impls = [("naive fp32", prim.naive_float32)] + ([("numpy", prim.numpy)] if dist not in prim.stress else [])
            for label, fn in impls:
                outs = prim.call_numpy_style(fn, {k: v.copy() for k, v in inputs.items()})
                v = verify(prim, inputs, outs, dims, refs=refs)
                if not v.ok:
                    failures.append(f"{label} {prim.shape_label(dims)} {dist}: {v.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", list(catalogue.PRIMITIVES))
def test_calibrate_reports_a_margin_above_one(name):
    r = calibrate(name, seeds=(0,))
    assert all(not m["missed"] for m in r["mutants"]), r["mutants"]
    assert r["margin"] is not None and r["margin"] > 1.0, r


# ----------------------------------------------------------------------------- the holes, named

LAYERNORM = catalogue.get("layernorm")


def _dc_rows(dims, offset, spread, seed=0):
    rng = np.random.default_rng(seed)
    x = (offset + spread * rng.standard_normal(dims)).astype(np.float32)
    gamma = (1 + 0.1 * rng.standard_normal(dims[1])).astype(np.float32)
    beta = (0.1 * rng.standard_normal(dims[1])).astype(np.float32)
    return {"x": x, "gamma": gamma, "beta": beta}


@pytest.mark.parametrize("offset", [1e3, 1e4])
@pytest.mark.parametrize("spread", [1e-1, 1e-2, 1e-3])
@pytest.mark.parametrize("dims", [(3, 129), (17, 1000), (2, 4097)])
def test_no_normalisation_fails_on_dc_offset_rows_that_a_shifted_kernel_passes(offset, spread, dims):
    """Hole 2: the error scale is in units of the row's spread, not of its inputs' size."""
    from harness.primitives.layernorm import careful_layernorm
    inputs = _dc_rows(dims, offset, spread)
    beta_only = {"y": np.broadcast_to(inputs["beta"], dims).astype(np.float32)}
    assert not verify(LAYERNORM, inputs, beta_only, dims).ok
    careful = {"y": careful_layernorm(**inputs, eps=np.float32(1e-5))}
    v = verify(LAYERNORM, inputs, careful, dims)
    assert v.ok, v.message


def test_the_numpy_layernorm_idiom_loses_dc_offset_rows():
    """Hole 3, the lesson: subtracting a float32 mean (off by ~1e-3 at 1e4) from values that
    spread by 1e-2 is a 10 % error after normalisation."""
    from harness.primitives.layernorm import careful_layernorm, numpy_layernorm
    inputs = _dc_rows((8, 4096), 1e4, 1e-2, seed=1)
    ref = LAYERNORM.reference_outputs(inputs)["y"]
    err_numpy = np.abs(numpy_layernorm(**inputs, eps=np.float32(1e-5)) - ref).max()
    err_shifted = np.abs(careful_layernorm(**inputs, eps=np.float32(1e-5)) - ref).max()
    assert err_numpy > 1e-3 and err_shifted < 1e-4, (err_numpy, err_shifted)


def test_tf32_rounding_fails_matmul_at_every_ladder_k():
    """Hole 4: with |A| @ |B| as the scale the allowed error grew like K^1.5 and TF32 passed
    at K = 4096; with |C| + sqrt((A*A) @ (B*B)) it grows like K and TF32 fails everywhere."""
    prim = catalogue.get("matmul")
    tf32 = next(m for m in prim.mutants if m.name == "tf32_inputs")
    ks = sorted({d[1] for d in tf32.extra_dims})
    assert 4096 in ks and set(prim.ladder) <= set(ks)
    for dims in tf32.extra_dims:
        v = run_mutant(prim, tf32, dims, "normal")
        assert not v.ok and v.tol_used_pct > 300, (dims, v.tol_used_pct)
