"""bias_add: the linear layer's bias, y = x + b broadcast over the rows of a (rows, cols)
matrix; and its backward, db = the column sums of dy (dx = dy is the identity and is not
computed: a model passes dy on).

Kept apart from matmul on purpose: the broadcast add is memory-bound and the column sum a
reduction across rows, two lessons a fused matmul epilogue would hide.
"""
import numpy as np

from ..core.declaration import Backward, F32_EPS, Mutant, Primitive, Step, Tensor, Tolerance, sum_rtol
from . import _common as c

F32 = np.float32


def reference(x, b):
    return x + b


def numpy_bias_add(x, b):
    return x + b


def drop_last_column(x, b):
    y = x + b
    y[:, -1] = 0
    return y


BIAS_ADD = Primitive(
    steps=(Step("naive", "one element per step of a loop (a thread per element on a GPU)", python="loop", cuda="naive", mojo="scalar"),
           Step("vectorized", "several elements per instruction: float4 loads on a GPU, SIMD lanes on a CPU", cuda="vec4", mojo="simd"),),
    name="bias_add", summary="y = x + b, b broadcast over the rows", order=70,
    dims=("rows", "cols"),
    tensors=(Tensor("x", ("rows", "cols")), Tensor("b", ("cols",)),
             Tensor("y", ("rows", "cols"), role="out", tolerance=Tolerance(atol=1e-7, rtol=2 * F32_EPS))),
    reference=reference, numpy=numpy_bias_add,
    flops=lambda d: d["rows"] * d["cols"], flops_note="1 FLOP/element",
    size_to_dims=c.square, ladder=c.ROWS_LADDER, quick_ladder=c.ROWS_QUICK, gpu_ladder=c.ROWS_GPU,
    check_dims=c.ROWS_CHECKS, long_check_dims=c.ROWS_LONG,
    distributions=("normal", "outliers", "large_offset"),
    naive_float32=numpy_bias_add,
    mutants=(
        Mutant("drop_last_column", "the last column of each row is never written", drop_last_column,
               caught_on=("normal", "large_offset")),
        Mutant("bias_of_column_0", "adds b[0] everywhere: an index that does not move",
               lambda x, b: x + b[:1], caught_on=("normal", "large_offset"), where=lambda d: d["cols"] > 1),
    ))


def backward_reference(dy):
    return dy.sum(axis=0)


def backward_error_scale(inputs, refs, scalars):
    return np.abs(inputs["dy"].astype(np.float64)).sum(axis=0)


def numpy_bias_add_backward(dy):
    return dy.sum(axis=0)


def naive_bias_add_backward(dy):
    return np.cumsum(dy, axis=0, dtype=F32)[-1]


BIAS_ADD_BACKWARD = Primitive(
    steps=(Step("naive", "one column sum per loop (a thread per column on a GPU)", python="loop", cuda="naive", mojo="scalar"),),
    name="bias_add_backward", summary="gradient of the bias: db = column sums of dy", order=71,
    stem="bias_add", forward="bias_add",
    backward_of=Backward(upstream={"dy": "y"}, grads={"db": "b"}),
    dims=("rows", "cols"),
    tensors=(Tensor("dy", ("rows", "cols")),
             Tensor("db", ("cols",), role="out", error_scale=backward_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-7, rtol=sum_rtol(d["rows"])))),
    reference=backward_reference, numpy=numpy_bias_add_backward,
    flops=lambda d: d["rows"] * d["cols"], flops_note="1 FLOP/element: a column sum",
    size_to_dims=c.square, ladder=c.ROWS_LADDER, quick_ladder=c.ROWS_QUICK, gpu_ladder=c.ROWS_GPU,
    check_dims=c.ROWS_CHECKS, long_check_dims=c.ROWS_LONG,
    distributions=("normal", "outliers", "large_offset"),
    naive_float32=naive_bias_add_backward,
    mutants=(
        Mutant("misses_last_row", "the column sums stop one row short", lambda dy: dy[:-1].sum(axis=0),
               caught_on=("normal", "large_offset")),
        Mutant("mean_not_sum", "averages the rows instead of summing them", lambda dy: dy.mean(axis=0),
               caught_on=("normal", "large_offset"), where=lambda d: d["rows"] > 1),
    ))

DECLARED = (BIAS_ADD, BIAS_ADD_BACKWARD)
