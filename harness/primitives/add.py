"""add: out = a + b, elementwise; and its backward, da = db = dout (a residual connection
passes its gradient to both branches unchanged)."""
import numpy as np

from ..core.declaration import Backward, F32_EPS, Mutant, Primitive, Step, Tensor, Tolerance
from . import _common as c


def reference(a, b):
    return a + b


def numpy_add(a, b):
    return a + b


ADD = Primitive(
    steps=(Step("naive", "one element per step of a loop (a thread per element on a GPU)", python="loop", cuda="naive", mojo="scalar"),
           Step("vectorized", "several elements per instruction: float4 loads on a GPU, SIMD lanes on a CPU", cuda="vec4", mojo="simd"),),
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

def backward_reference(dout):
    return {"da": dout.copy(), "db": dout.copy()}


def numpy_add_backward(dout):
    return dout.copy(), dout.copy()


EXACT = Tolerance(atol=0.0, rtol=0.0)

ADD_BACKWARD = Primitive(
    steps=(Step("naive", "one element per step of a loop (a thread per element on a GPU)", python="loop", cuda="naive", mojo="scalar"),
           Step("vectorized", "several elements per instruction: float4 loads on a GPU, SIMD lanes on a CPU", cuda="vec4", mojo="simd"),),
    name="add_backward", summary="gradients of a + b: da = db = dout", order=11,
    stem="add", forward="add",
    backward_of=Backward(upstream={"dout": "out"}, grads={"da": "a", "db": "b"}),
    dims=("n",),
    tensors=(Tensor("dout", ("n",)),
             Tensor("da", ("n",), role="out", tolerance=EXACT),        # copies: exact
             Tensor("db", ("n",), role="out", tolerance=EXACT)),
    reference=backward_reference, numpy=numpy_add_backward,
    flops=lambda d: 0, flops_note="no arithmetic: two copies",
    size_to_dims=c.vector, ladder=c.ELEMENTWISE_LADDER, quick_ladder=c.ELEMENTWISE_QUICK,
    gpu_ladder=c.ELEMENTWISE_GPU, check_dims=c.ELEMENTWISE_CHECKS, long_check_dims=c.ELEMENTWISE_LONG,
    distributions=("normal", "wide"),
    naive_float32=numpy_add_backward,
    mutants=(
        Mutant("db_zero", "forgets the second input: db = 0", lambda dout: (dout.copy(), np.zeros_like(dout)),
               caught_on=("normal",)),
        Mutant("tail_off_by_one", "a vectorised loop's scalar tail starts one element late",
               lambda dout: (c.tail_off_by_one(dout), c.tail_off_by_one(dout)),
               caught_on=("normal",), where=lambda d: d["n"] % 4 != 0),
    ))

DECLARED = (ADD, ADD_BACKWARD)
