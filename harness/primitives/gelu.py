"""gelu: the tanh approximation GPT-2 was trained with, elementwise:

    y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
"""
import math

import numpy as np

from ..core.declaration import Mutant, Primitive, Tensor, Tolerance
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

DECLARED = (GELU,)
