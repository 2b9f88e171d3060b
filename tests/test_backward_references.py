"""Every backward primitive's float64 reference is proven against central finite differences
of its forward's float64 reference, so the gradients the kernels are checked against are
themselves checked.

For a backward primitive with `backward_of` (harness/core/declaration.py), the scalar

    L(forward inputs) = sum_o <F_o(inputs), upstream_o> + sum_unit F_u(inputs)

has the gradients the backward returns; each is compared, element by element, with
(L(x + h e_i) - L(x - h e_i)) / 2h on small odd dims and several distributions.
"""
import numpy as np
import pytest

from harness.core import catalogue

BACKWARDS = [p for p in catalogue.PRIMITIVES.values() if p.backward_of is not None]


def _small_dims(prim):
    dims = [d for d in prim.check_dims if 1 < np.prod(d) <= 400] or [prim.check_dims[0]]
    return dims[:3]


def _setup(prim, dims, dist, seed):
    fwd = catalogue.get(prim.forward)
    inputs = {k: (v.astype(np.float64) if v.dtype == np.float32 else v)
              for k, v in fwd.make_inputs(dims, dist, seed).items()}
    scalars = {s.name: v for s, v in zip(fwd.scalars, fwd.scalar_values().values())}
    rng = np.random.default_rng(seed + 1000)
    outs = fwd.reference_outputs(inputs, scalars)
    upstream = {b: rng.standard_normal(np.shape(outs[f])) for b, f in prim.backward_of.upstream.items()}
    return fwd, inputs, scalars, outs, upstream


def _objective(fwd, prim, inputs, scalars, upstream):
    outs = fwd.reference_outputs(inputs, scalars)
    total = sum(float(np.sum(outs[f] * upstream[b])) for b, f in prim.backward_of.upstream.items())
    return total + sum(float(np.sum(outs[u])) for u in prim.backward_of.unit)


def _magnitude(fwd, prim, inputs, scalars, upstream):
    """sum of |terms| of L: what float64 rounding of L is relative to."""
    outs = fwd.reference_outputs(inputs, scalars)
    total = sum(float(np.sum(np.abs(outs[f] * upstream[b]))) for b, f in prim.backward_of.upstream.items())
    return total + sum(float(np.sum(np.abs(outs[u]))) for u in prim.backward_of.unit)


def _analytic(prim, fwd, inputs, scalars, outs, upstream):
    args = {}
    for b, f in prim.backward_of.saved.items():
        args[b] = inputs[f] if f in inputs else outs[f]
    args.update(upstream)
    bscalars = {s.name: scalars[s.name] for s in prim.scalars}
    return prim.reference_outputs(args, bscalars)


CASES = [(p, d) for p in BACKWARDS for d in catalogue.get(p.forward).all_distributions]


@pytest.mark.parametrize("prim,dist", CASES, ids=[f"{p.name}-{d}" for p, d in CASES])
def test_reference_gradient_matches_central_differences(prim, dist):
    fwd = catalogue.get(prim.forward)
    assert {t.name for t in prim.scalars} <= {t.name for t in fwd.scalars}, "scalars pass through by name"
    for dims in _small_dims(prim):
        fwd, inputs, scalars, outs, upstream = _setup(prim, dims, dist, seed=sum(dims))
        grads = _analytic(prim, fwd, inputs, scalars, outs, upstream)
        for gname, fname in prim.backward_of.grads.items():
            x = inputs[fname]
            g = np.asarray(grads[gname])
            assert g.shape == x.shape, (gname, g.shape, x.shape)
            fd = np.empty_like(g)
            kink = np.zeros(g.shape, bool)
            base = _objective(fwd, prim, inputs, scalars, upstream)
            for idx in np.ndindex(x.shape):
                # An absolute step: the functions here vary on the scale of a row's spread,
                # which on DC-offset rows is 1e-3 around values of 1e4.
                h = 1e-6
                plus, minus = dict(inputs), dict(inputs)
                plus[fname] = x.copy()
                plus[fname][idx] += h
                minus[fname] = x.copy()
                minus[fname][idx] -= h
                up, down = _objective(fwd, prim, plus, scalars, upstream), _objective(fwd, prim, minus, scalars, upstream)
                fd[idx] = (up - down) / (2 * h)
                # A kink (relu at exactly 0): the one-sided slopes differ and the gradient
                # there is a convention, not a derivative to check.
                kink[idx] = abs((up - base) - (base - down)) / h > 1e-3 * (1 + abs(fd[idx]))
            scale = 1.0 + np.abs(fd).max()
            err = np.abs(np.where(kink, 0.0, fd - g)).max()
            # Central differences are exact to O(h^2) here; their rounding is ~eps |L| / h.
            noise = 1e-14 * _magnitude(fwd, prim, inputs, scalars, upstream) / 1e-6
            assert kink.mean() < 0.5, f"{prim.name}: most points look like kinks: the step is too large"
            assert err <= 1e-5 * scale + noise, \
                f"{prim.name} d/d{fname} at {dims} {dist}: max |fd - analytic| {err:.3g} (noise {noise:.3g})"


def test_every_primitive_with_a_backward_has_it_declared_and_every_backward_names_its_forward():
    names = set(catalogue.PRIMITIVES)
    for p in BACKWARDS:
        assert p.forward in names and p.file_stem == catalogue.get(p.forward).file_stem
        fwd = catalogue.get(p.forward)
        assert set(p.backward_of.grads.values()) <= {t.name for t in fwd.inputs}
        assert set(p.backward_of.upstream.values()) | set(p.backward_of.unit) <= {t.name for t in fwd.outputs}
    forwards = {p.forward for p in BACKWARDS}
    assert {"add", "relu", "gelu", "softmax", "layernorm", "matmul", "bias_add", "cross_entropy"} <= forwards


def test_a_wrong_reference_gradient_is_caught_by_the_check():
    """The proof can fail: a softmax backward without its row sum, and a layernorm backward
    with the unbiased variance, are told apart from their forwards' derivatives."""
    import dataclasses
    sm = catalogue.get("softmax_backward")
    wrong = dataclasses.replace(sm, reference=lambda y, dy: y * dy)
    with pytest.raises(AssertionError, match="max \\|fd - analytic\\|"):
        test_reference_gradient_matches_central_differences(wrong, "normal")
    ln = catalogue.get("layernorm_backward")

    def _unbiased(x, gamma, dy, eps):
        mean = x.mean(axis=-1, keepdims=True)
        xc = x - mean
        rstd = 1.0 / np.sqrt((xc * xc).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1) + eps)
        xhat, g = xc * rstd, dy * gamma
        dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
        return {"dx": dx, "dgamma": (dy * xhat).sum(axis=0), "dbeta": dy.sum(axis=0)}
    with pytest.raises(AssertionError, match="max \\|fd - analytic\\|"):
        test_reference_gradient_matches_central_differences(dataclasses.replace(ln, reference=_unbiased), "normal")
