"""add: out = a + b, elementwise."""
import numpy as np

from ..core.declaration import F32_EPS, Mutant, Primitive, Tensor, Tolerance
from . import _common as c


def reference(a, b):
    return a + b


def numpy_add(a, b):
    return a + b


ADD = Primitive(
    name="add", summary="elementwise a + b", order=10,
    dims=("n",),
    tensors=(Tensor("a", ("n",)), Tensor("b", ("n",)),
             # one correctly rounded float32 add: <= 0.5 ulp
             Tensor("out", ("n",), role="out", tolerance=Tolerance(atol=1e-7, rtol=2 * F32_EPS))),
    reference=reference, numpy=numpy_add,
    flops=lambda d: d["n"], flops_note="1 FLOP/element",
    size_to_dims=c.vector, ladder=c.ELEMENTWISE_LADDER, quick_ladder=c.ELEMENTWISE_QUICK,
    gpu_ladder=c.ELEMENTWISE_GPU, check_dims=c.ELEMENTWISE_CHECKS, long_check_dims=c.ELEMENTWISE_LONG,
    distributions=("normal", "outliers", "wide"),
    naive_float32=numpy_add,
    mutants=(
        Mutant("drop_last", "the loop stops one element short", lambda a, b: c.drop_last(a + b),
               caught_on=("normal", "outliers")),
        Mutant("tail_off_by_one", "a vectorised loop's scalar tail starts one element late",
               lambda a, b: c.tail_off_by_one(a + b), caught_on=("normal", "outliers"),
               where=lambda d: d["n"] % 4 != 0),
    ))

DECLARED = (ADD,)
