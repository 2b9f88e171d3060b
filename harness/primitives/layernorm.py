"""layernorm: row-wise layer normalisation with a learned scale and shift (PyTorch's
semantics: biased variance, eps added to it):

    y[r, j] = (x[r, j] - mean_r) * rstd_r * gamma[j] + beta[j],   rstd_r = 1 / sqrt(var_r + eps)

The error model. A careful float32 kernel's error in xhat = (x - mean) * rstd comes from
two places: rstd, which is off by a few ulp times sqrt(cols) and scales every xhat of the
row, and the mean, whose error is shared by the whole row and, measured in units of the
row's spread, is a few ulp times sqrt(cols) times the row's largest |xhat| (a sum is exact
to eps times its largest partial sums). So element j may be off by

    rtol * (|gamma_j| * (|xhat_j| + max_row |xhat|) + |beta_j|),   rtol = sum_rtol(cols)

plus a tiny atol. The scale is in units of the row's spread, never of the inputs' size:
layernorm is shift-invariant, so a row offset by 1e4 with a spread of 1e-2 must normalise
as well as one at zero. An output equal to beta (no normalisation), a one-pass
E[x^2] - E[x]^2 variance or a wrong eps all fail somewhere in the suite, and so does the
NumPy idiom on the stress rows: subtracting a float32 mean that is off by an ulp of 1e4
(1e-3) from values that spread by 1e-2 is a 10 % error after normalisation. The project's
own kernels shift each row by a value near its mean before summing (exact, by Sterbenz's
lemma), and pass.
"""
import numpy as np

from ..core.declaration import Backward, Mutant, Primitive, Scalar, Step, Tensor, Tolerance, sum_rtol
from . import _common as c
from .softmax import sequential_sum

F32 = np.float32


def reference(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def error_scale(inputs, refs, scalars):
    x = inputs["x"].astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    xhat = np.abs(x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + float(scalars["eps"]))
    gamma = np.abs(inputs["gamma"].astype(np.float64))
    return gamma * (xhat + xhat.max(axis=-1, keepdims=True)) + np.abs(inputs["beta"].astype(np.float64))


def numpy_layernorm(x, gamma, beta, eps):
    """What a user writes: mean, deviations, variance, all in float32."""
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return xc * (F32(1) / np.sqrt(var + eps)) * gamma + beta


def careful_layernorm(x, gamma, beta, eps, unbiased=False):
    """float32 and left-to-right sums, made robust by a shift: the deviations d = x - x[r, 0]
    from the row's first value are exact (Sterbenz's lemma, wherever x is within 2x of it),
    small, and exactly zero on a constant row; the two-pass statistics of d follow."""
    n = x.shape[-1]
    d = x - x[:, :1]
    d = d - sequential_sum(d) / F32(n)
    var = sequential_sum(d * d) / F32(n - 1 if unbiased else n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (d * (F32(1) / np.sqrt(var + F32(eps))) * gamma + beta).astype(F32)


def one_pass_variance(x, gamma, beta, eps):
    """var = E[x^2] - E[x]^2 in float32: two large, nearly equal numbers subtracted."""
    mean = x.mean(axis=-1, keepdims=True)
    var = np.maximum((x * x).mean(axis=-1, keepdims=True) - mean * mean, F32(0))
    return (x - mean) * (F32(1) / np.sqrt(var + eps)) * gamma + beta


def beta_only(x, gamma, beta, eps):
    return np.broadcast_to(beta, x.shape).astype(F32)


def drop_last_row(x, gamma, beta, eps):
    y = careful_layernorm(x, gamma, beta, eps)
    y[-1] = 0
    return y


def gamma_like(shape, rng, dims):
    return (1.0 + 0.1 * rng.standard_normal(shape)).astype(F32)


def beta_like(shape, rng, dims):
    return (0.1 * rng.standard_normal(shape)).astype(F32)


def several_columns(d):
    return d["cols"] > 1                    # one column: x - mean is exactly 0 whatever is wrong


LAYERNORM = Primitive(
    steps=(Step("naive", "two passes for the statistics (mean, then variance), one to write", python="two_pass", cuda="row_per_thread", mojo="scalar"),
           Step("welford", "mean and variance in one pass (Welford), merged across lanes", python="welford", cuda="warp_welford", mojo="fused"),),
    name="layernorm", summary="row-wise layer normalisation with gamma, beta and eps", order=50,
    dims=("rows", "cols"),
    tensors=(Tensor("x", ("rows", "cols")),
             Tensor("gamma", ("cols",), init=gamma_like),
             Tensor("beta", ("cols",), init=beta_like),
             Tensor("y", ("rows", "cols"), role="out", error_scale=error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-6, rtol=sum_rtol(d["cols"])))),
    scalars=(Scalar("eps", "float32", 1e-5, "added to the variance (PyTorch's default)"),),
    reference=reference, numpy=numpy_layernorm,
    flops=lambda d: 8 * d["rows"] * d["cols"], flops_note="8 FLOP/element: sum, square-sum, subtract, scale, shift",
    size_to_dims=c.square, ladder=c.ROWS_LADDER, quick_ladder=c.ROWS_QUICK, gpu_ladder=c.ROWS_GPU,
    check_dims=c.ROWS_CHECKS, long_check_dims=c.ROWS_LONG,
    distributions=("normal", "outliers", "small_spread"),
    stress=("large_offset", "dc_offset", "constant_rows"),
    distribution_args={"large_offset": {"offset": 100.0}},
    naive_float32=careful_layernorm,
    mutants=(
        Mutant("one_pass_variance", "var = E[x^2] - E[x]^2 in float32", one_pass_variance,
               caught_on=("large_offset", "dc_offset"), where=several_columns),
        Mutant("eps_1e-6", "eps = 1e-6 instead of the declared 1e-5",
               lambda x, gamma, beta, eps: careful_layernorm(x, gamma, beta, F32(eps) * F32(0.1)),
               caught_on=("small_spread",), where=several_columns),
        Mutant("unbiased_variance", "divides the squared deviations by cols - 1",
               lambda x, gamma, beta, eps: careful_layernorm(x, gamma, beta, eps, unbiased=True),
               caught_on=("normal", "outliers", "large_offset")),
        Mutant("beta_only", "no normalisation at all: y = beta", beta_only,
               caught_on=("normal", "outliers", "large_offset", "small_spread", "dc_offset"),
               where=several_columns),
        Mutant("float32_mean", "subtracts a float32 mean without a shift (the NumPy idiom)", numpy_layernorm,
               caught_on=("dc_offset",), where=several_columns),
        Mutant("drop_last_row", "the last row is never written", drop_last_row,
               caught_on=("normal", "outliers", "large_offset", "small_spread", "dc_offset", "constant_rows")),
    ))

# ----------------------------------------------------------------------------- backward
#
# From x, gamma and the incoming dy (the statistics are recomputed, so the backward needs
# nothing saved but x), with xhat = (x - mean) * rstd and g = dy * gamma:
#
#     dx     = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))        per row
#     dgamma = sum_r dy * xhat,   dbeta = sum_r dy                     per column
#
# Error model: dx's three terms, each at its own size, plus the error of xhat itself (the
# forward's model: up to max |xhat| of the row); dgamma and dbeta are sums over the rows.

def _xhat(x, eps):
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    return xc * rstd, rstd


def backward_reference(x, gamma, dy, eps):
    xhat, rstd = _xhat(x, eps)
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return {"dx": dx, "dgamma": (dy * xhat).sum(axis=0), "dbeta": dy.sum(axis=0)}


def _f64(inputs, *names):
    return [inputs[n].astype(np.float64) for n in names]


def dx_error_scale(inputs, refs, scalars):
    x, gamma, dy = _f64(inputs, "x", "gamma", "dy")
    xhat, rstd = _xhat(x, float(scalars["eps"]))
    xhat = np.abs(xhat)
    g = np.abs(dy * gamma)
    mg, mgx = g.mean(axis=-1, keepdims=True), (g * xhat).mean(axis=-1, keepdims=True)
    return rstd * (g + mg + (xhat + xhat.max(axis=-1, keepdims=True)) * (mgx + mg))


def dgamma_error_scale(inputs, refs, scalars):
    x, dy = _f64(inputs, "x", "dy")
    xhat = np.abs(_xhat(x, float(scalars["eps"]))[0])
    return (np.abs(dy) * (xhat + xhat.max(axis=-1, keepdims=True))).sum(axis=0)


def dbeta_error_scale(inputs, refs, scalars):
    return np.abs(inputs["dy"].astype(np.float64)).sum(axis=0)


def numpy_layernorm_backward(x, gamma, dy, eps):
    """What a user writes: the forward's statistics again, then the three terms, in float32."""
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    rstd = F32(1) / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    xhat = xc * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def _column_sum(a):
    return np.cumsum(a, axis=0, dtype=F32)[-1]


def careful_layernorm_backward(x, gamma, dy, eps, unbiased=False, project=True):
    """float32, left-to-right sums, and the forward's shift by each row's first value."""
    n = x.shape[-1]
    d = x - x[:, :1]
    d = d - sequential_sum(d) / F32(n)
    var = sequential_sum(d * d) / F32(n - 1 if unbiased else n)
    with np.errstate(divide="ignore", invalid="ignore"):
        rstd = F32(1) / np.sqrt(var + F32(eps))
        xhat = d * rstd
        g = dy * gamma
        proj = xhat * (sequential_sum(g * xhat) / F32(n)) if project else F32(0)
        dx = rstd * (g - sequential_sum(g) / F32(n) - proj)
        return dx.astype(F32), _column_sum(dy * xhat), _column_sum(dy)


def upstream(shape, rng, dims):
    return rng.standard_normal(shape).astype(F32)


LAYERNORM_BACKWARD = Primitive(
    steps=(Step("naive", "each gradient recomputed from its formula, row by row", python="recompute", cuda="row_per_thread", mojo="scalar"),
           Step("fused", "dx, dgamma and dbeta in one sweep over the rows", python="one_sweep", cuda="fused", mojo="fused"),),
    name="layernorm_backward", summary="gradients of layernorm: dx, dgamma, dbeta (statistics recomputed)",
    order=51, stem="layernorm", forward="layernorm",
    backward_of=Backward(saved={"x": "x", "gamma": "gamma"}, upstream={"dy": "y"},
                         grads={"dx": "x", "dgamma": "gamma", "dbeta": "beta"}),
    dims=("rows", "cols"),
    tensors=(Tensor("x", ("rows", "cols")),
             Tensor("gamma", ("cols",), init=gamma_like),
             Tensor("dy", ("rows", "cols"), init=upstream),
             Tensor("dx", ("rows", "cols"), role="out", error_scale=dx_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-6, rtol=sum_rtol(d["cols"]))),
             Tensor("dgamma", ("cols",), role="out", error_scale=dgamma_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-6, rtol=sum_rtol(d["rows"]) + sum_rtol(d["cols"]))),
             Tensor("dbeta", ("cols",), role="out", error_scale=dbeta_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-6, rtol=sum_rtol(d["rows"])))),
    scalars=(Scalar("eps", "float32", 1e-5, "added to the variance, as in the forward"),),
    reference=backward_reference, numpy=numpy_layernorm_backward,
    flops=lambda d: 14 * d["rows"] * d["cols"], flops_note="14 FLOP/element: statistics, the three terms, two column sums",
    size_to_dims=c.square, ladder=c.ROWS_LADDER, quick_ladder=c.ROWS_QUICK, gpu_ladder=c.ROWS_GPU,
    check_dims=c.ROWS_CHECKS, long_check_dims=c.ROWS_LONG,
    distributions=("normal", "outliers", "small_spread"),
    stress=("large_offset", "dc_offset", "constant_rows"),
    distribution_args={"large_offset": {"offset": 100.0}},
    naive_float32=careful_layernorm_backward,
    mutants=(
        Mutant("no_projection", "dx without its xhat * mean(g * xhat) term",
               lambda x, gamma, dy, eps: careful_layernorm_backward(x, gamma, dy, eps, project=False),
               caught_on=("normal", "outliers", "small_spread"), where=several_columns),
        Mutant("dgamma_without_xhat", "dgamma = sum of dy (the dbeta formula)",
               lambda x, gamma, dy, eps: (lambda r: (r[0], r[2].copy(), r[2]))(
                   careful_layernorm_backward(x, gamma, dy, eps)),
               caught_on=("normal", "outliers", "small_spread")),
        Mutant("eps_1e-6", "eps = 1e-6 instead of the declared 1e-5",
               lambda x, gamma, dy, eps: careful_layernorm_backward(x, gamma, dy, F32(eps) * F32(0.1)),
               caught_on=("small_spread",), where=several_columns),
        Mutant("float32_mean", "subtracts a float32 mean without a shift (the NumPy idiom)",
               numpy_layernorm_backward, caught_on=("dc_offset",), where=several_columns),
        Mutant("unbiased_variance", "divides the squared deviations by cols - 1",
               lambda x, gamma, dy, eps: careful_layernorm_backward(x, gamma, dy, eps, unbiased=True),
               caught_on=("normal", "outliers"), where=lambda d: 1 < d["cols"] <= 1000),
    ))

DECLARED = (LAYERNORM, LAYERNORM_BACKWARD)
