"""gelu: the tanh approximation GPT-2 was trained with, elementwise:

    y = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)

and its backward, with t = tanh(u):

    dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))

The two terms of the derivative have opposite signs for x < 0 and cancel near x = -0.75,
so the backward's error scale is the sum of their magnitudes, not |dx|. And for 3 < |x| < 6
float32 can barely tell t from +-1: t is off by up to an ulp of 1 (1.2e-7), and 1 + t and
1 - t^2 are then mostly that rounding, which the factor x (1 + 3 * 0.044715 x^2) amplifies
up to ~20x. That error is absolute, bounded by (0.5 + |x| sqrt(2/pi) (1 + 0.134 x^2)) * 2 ulp
until float32 tanh saturates to exactly +-1, and it goes into the scale as such.
"""
import math

import numpy as np

from ..core.declaration import Backward, Mutant, Primitive, Step, Tensor, Tolerance
from . import _common as c

F32 = np.float32
GELU_SCALE = math.sqrt(2.0 / math.pi)


def reference(x):
    return 0.5 * x * (1.0 + np.tanh(GELU_SCALE * (x + 0.044715 * x ** 3)))


def numpy_gelu(x):
    return F32(0.5) * x * (F32(1) + np.tanh(F32(GELU_SCALE) * (x + F32(0.044715) * x * x * x)))


def naive_gelu(x):
    """tanh through exp, as some kernels write it: tanh(z) = 1 - 2 / (exp(2z) + 1)."""
    with np.errstate(over="ignore"):                           # exp(2z) -> inf gives tanh = 1: right
        z = F32(GELU_SCALE) * (x + F32(0.044715) * x * x * x)
        t = F32(1) - F32(2) / (np.exp(F32(2) * z) + F32(1))
        return F32(0.5) * x * (F32(1) + t)


def erf_gelu(x):
    """The exact GELU, x * Phi(x): a different function (up to 4.7e-4 off near x = -2.7)."""
    from math import erf
    v = np.vectorize(lambda t: 0.5 * t * (1.0 + erf(t / math.sqrt(2.0))), otypes=[np.float64])
    return v(x.astype(np.float64)).astype(F32)


def sigmoid_gelu(x):
    """x * sigmoid(1.702 x): the cheaper approximation, also not GPT-2's."""
    return (x / (F32(1) + np.exp(F32(-1.702) * x))).astype(F32)


GELU = Primitive(
    steps=(Step("naive", "one element per step of a loop (a thread per element on a GPU)", python="loop", cuda="naive", mojo="scalar"),
           Step("vectorized", "several elements per instruction: float4 loads on a GPU, SIMD lanes on a CPU", cuda="vec4", mojo="simd"),),
    name="gelu", summary="elementwise GELU, tanh approximation (GPT-2)", order=30,
    dims=("n",),
    tensors=(Tensor("x", ("n",)),
             # float32 tanhf/expf: a few ulp, amplified near the tanh saturation
             Tensor("y", ("n",), role="out", tolerance=Tolerance(atol=1e-6, rtol=1e-5))),
    reference=reference, numpy=numpy_gelu,
    flops=lambda d: 8 * d["n"], flops_note="8 FLOP/element, counting tanh as one",
    size_to_dims=c.vector, ladder=c.ELEMENTWISE_LADDER, quick_ladder=c.ELEMENTWISE_QUICK,
    gpu_ladder=c.ELEMENTWISE_GPU, check_dims=c.ELEMENTWISE_CHECKS, long_check_dims=c.ELEMENTWISE_LONG,
    distributions=("normal", "outliers", "wide"),
    naive_float32=naive_gelu,
    mutants=(
        Mutant("erf_gelu", "the exact (erf) GELU instead of the tanh form", erf_gelu,
               caught_on=("normal", "outliers", "wide"), where=lambda d: d["n"] >= 127),
        Mutant("sigmoid_gelu", "x * sigmoid(1.702 x) instead of the tanh form", sigmoid_gelu,
               caught_on=("normal", "outliers", "wide"), where=lambda d: d["n"] >= 3),
    ))

def _derivative_terms(x, tanh=np.tanh):
    u = GELU_SCALE * (x + 0.044715 * x ** 3)
    t = tanh(u)
    return 0.5 * (1.0 + t), 0.5 * x * (1.0 - t * t) * GELU_SCALE * (1.0 + 3 * 0.044715 * x * x)


def backward_reference(x, dy):
    a, b = _derivative_terms(x)
    return dy * (a + b)


BACKWARD_RTOL = 1e-5
F32_ULP_1 = 2.0 ** -23                     # the spacing of float32 numbers at 1


def backward_error_scale(inputs, refs, scalars):
    x = inputs["x"].astype(np.float64)
    a, b = _derivative_terms(x)
    t = np.tanh(GELU_SCALE * (x + 0.044715 * x ** 3))
    sensitivity = 0.5 + np.abs(x) * GELU_SCALE * (1.0 + 3 * 0.044715 * x * x)     # |d(dx/dy)/dt|
    # Beyond |u| ~ 10.7 every float32 tanh returns exactly +-1 and the term is 0; below, an
    # implementation a ulp off (NumPy's is, near -1) may still return -1 + 2^-24.
    resolvable = (1.0 - t * t) >= 2.0 ** -30
    t_rounding = np.where(resolvable, sensitivity * 2 * F32_ULP_1, 0.0) / BACKWARD_RTOL   # absolute, in rtol units
    return np.abs(inputs["dy"].astype(np.float64)) * (np.abs(a) + np.abs(b) + t_rounding)


def numpy_gelu_backward(x, dy):
    s, k = F32(GELU_SCALE), F32(0.044715)
    t = np.tanh(s * (x + k * x * x * x))
    return dy * (F32(0.5) * (F32(1) + t) + F32(0.5) * x * (F32(1) - t * t) * s * (F32(1) + F32(3) * k * x * x))


def erf_gelu_backward(x, dy):
    """The derivative of the exact GELU, Phi(x) + x phi(x): another function's gradient."""
    from math import erf, exp, pi, sqrt
    v = np.vectorize(lambda t: 0.5 * (1 + erf(t / sqrt(2))) + t * exp(-t * t / 2) / sqrt(2 * pi),
                     otypes=[np.float64])
    return (dy.astype(np.float64) * v(x.astype(np.float64))).astype(F32)


def missing_cubic_derivative(x, dy):
    """Differentiates u as if it were sqrt(2/pi) x: the 3 * 0.044715 x^2 term forgotten."""
    s, k = F32(GELU_SCALE), F32(0.044715)
    t = np.tanh(s * (x + k * x * x * x))
    return dy * (F32(0.5) * (F32(1) + t) + F32(0.5) * x * (F32(1) - t * t) * s)


def upstream(shape, rng, dims):
    return rng.standard_normal(shape).astype(F32)


GELU_BACKWARD = Primitive(
    steps=(Step("naive", "one element per step of a loop (a thread per element on a GPU)", python="loop", cuda="naive", mojo="scalar"),
           Step("vectorized", "several elements per instruction: float4 loads on a GPU, SIMD lanes on a CPU", cuda="vec4", mojo="simd"),),
    name="gelu_backward", summary="gradient of GELU (tanh form)", order=31,
    stem="gelu", forward="gelu",
    backward_of=Backward(saved={"x": "x"}, upstream={"dy": "y"}, grads={"dx": "x"}),
    dims=("n",),
    tensors=(Tensor("x", ("n",)), Tensor("dy", ("n",), init=upstream),
             Tensor("dx", ("n",), role="out", error_scale=backward_error_scale,
                    tolerance=Tolerance(atol=1e-6, rtol=BACKWARD_RTOL))),
    reference=backward_reference, numpy=numpy_gelu_backward,
    flops=lambda d: 16 * d["n"], flops_note="16 FLOP/element, counting tanh as one",
    size_to_dims=c.vector, ladder=c.ELEMENTWISE_LADDER, quick_ladder=c.ELEMENTWISE_QUICK,
    gpu_ladder=c.ELEMENTWISE_GPU, check_dims=c.ELEMENTWISE_CHECKS, long_check_dims=c.ELEMENTWISE_LONG,
    distributions=("normal", "outliers", "wide"),
    naive_float32=numpy_gelu_backward,
    mutants=(
        Mutant("erf_gelu_backward", "the exact GELU's derivative instead of the tanh form's", erf_gelu_backward,
               caught_on=("normal", "wide"), where=lambda d: d["n"] >= 127),
        Mutant("missing_cubic_derivative", "drops the 3 * 0.044715 x^2 term of du/dx", missing_cubic_derivative,
               caught_on=("normal", "wide"), where=lambda d: d["n"] >= 127),
    ))

DECLARED = (GELU, GELU_BACKWARD)
