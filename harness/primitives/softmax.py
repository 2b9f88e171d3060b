"""softmax over the last axis of a (rows, cols) matrix, numerically stable:

    y[r, j] = exp(x[r, j] - max_r) / sum_k exp(x[r, k] - max_r)

and its backward, from the forward's output y and the incoming gradient dy:

    dx[r, j] = y[r, j] * (dy[r, j] - sum_k dy[r, k] * y[r, k])

A row's sum s = <dy, y> is a dot product of `cols` terms, so dx may be off by rounding at
the size of those terms: the error scale is y_j * (|dy_j| + sum_k |dy_k y_k|).
"""
import numpy as np

from ..core.declaration import Backward, Mutant, Primitive, Step, Tensor, Tolerance, sum_rtol
from . import _common as c

F32 = np.float32


def reference(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def sequential_sum(a):
    """Left-to-right float32 sum along the last axis (np.cumsum is sequential)."""
    return np.cumsum(a, axis=-1, dtype=F32)[..., -1:]


def naive_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / sequential_sum(e)


def no_max_subtraction(x):
    """exp(x) / sum(exp(x)): overflows to inf (then NaN) once x > 88."""
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        return (e / e.sum(axis=-1, keepdims=True)).astype(F32)


def sum_misses_last(x):
    """The denominator's loop stops one column short."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (e / e[:, :-1].sum(axis=-1, keepdims=True)).astype(F32)


def drop_last_column(x):
    y = numpy_softmax(x)
    y[:, -1] = 0
    return y


SOFTMAX = Primitive(
    steps=(Step("naive", "three passes over each row: max, sum of exponentials, normalise", python="three_pass", cuda="row_per_thread", mojo="scalar"),
           Step("online", "the max and the sum in one pass, rescaling the running sum when the max grows", python="online", cuda="warp_online", mojo="online_simd"),
           Step("one_read", "each row read from memory once: held in registers on a GPU, in L1 on a CPU", cuda="block_registers", mojo="fused"),),
    name="softmax", summary="row-wise softmax over the last axis, numerically stable", order=40,
    dims=("rows", "cols"),
    tensors=(Tensor("x", ("rows", "cols")),
             Tensor("y", ("rows", "cols"), role="out",
                    tolerance=lambda d: Tolerance(atol=1e-9, rtol=sum_rtol(d["cols"])))),
    reference=reference, numpy=numpy_softmax,
    flops=lambda d: 5 * d["rows"] * d["cols"], flops_note="5 FLOP/element: max, subtract, exp, add, scale",
    size_to_dims=c.square, ladder=c.ROWS_LADDER, quick_ladder=c.ROWS_QUICK, gpu_ladder=c.ROWS_GPU,
    check_dims=c.ROWS_CHECKS, long_check_dims=c.ROWS_LONG,
    distributions=("normal", "outliers", "large_offset", "constant_rows"),
    naive_float32=naive_softmax,
    mutants=(
        Mutant("no_max_subtraction", "exp(x) without subtracting the row max first", no_max_subtraction,
               caught_on=("outliers", "large_offset")),
        Mutant("sum_misses_last", "the denominator's loop stops one column short", sum_misses_last,
               caught_on=("normal", "large_offset", "constant_rows")),
        Mutant("drop_last_column", "the last column is never written", drop_last_column,
               caught_on=("normal", "large_offset", "constant_rows")),
    ))

def backward_reference(y, dy):
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def backward_error_scale(inputs, refs, scalars):
    y, dy = inputs["y"].astype(np.float64), inputs["dy"].astype(np.float64)
    return y * (np.abs(dy) + np.abs(dy * y).sum(axis=-1, keepdims=True))


def numpy_softmax_backward(y, dy):
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def naive_softmax_backward(y, dy):
    return y * (dy - sequential_sum(dy * y))


def softmax_of_draw(shape, rng, dims, draw):
    """y as the forward pass leaves it: the softmax of the case's distribution."""
    return reference(draw(shape).astype(np.float64)).astype(F32)


def upstream(shape, rng, dims):
    return rng.standard_normal(shape).astype(F32)


SOFTMAX_BACKWARD = Primitive(
    steps=(Step("naive", "two passes per row: the dot product <dy, y>, then dx", python="two_pass", cuda="row_per_thread", mojo="scalar"),
           Step("parallel_dot", "the dot product split over lanes (a warp, or SIMD lanes) and combined", cuda="warp_dot", mojo="simd"),),
    name="softmax_backward", summary="gradient of softmax from its output: dx = y * (dy - <dy, y>)", order=41,
    stem="softmax", forward="softmax",
    backward_of=Backward(saved={"y": "y"}, upstream={"dy": "y"}, grads={"dx": "x"}),
    dims=("rows", "cols"),
    tensors=(Tensor("y", ("rows", "cols"), init=softmax_of_draw),
             Tensor("dy", ("rows", "cols"), init=upstream),
             Tensor("dx", ("rows", "cols"), role="out", error_scale=backward_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-9, rtol=sum_rtol(d["cols"])))),
    reference=backward_reference, numpy=numpy_softmax_backward,
    flops=lambda d: 4 * d["rows"] * d["cols"], flops_note="4 FLOP/element: multiply, add, subtract, multiply",
    size_to_dims=c.square, ladder=c.ROWS_LADDER, quick_ladder=c.ROWS_QUICK, gpu_ladder=c.ROWS_GPU,
    check_dims=c.ROWS_CHECKS, long_check_dims=c.ROWS_LONG,
    distributions=("normal", "outliers", "large_offset", "constant_rows"),
    naive_float32=naive_softmax_backward,
    mutants=(
        Mutant("no_row_sum", "forgets the <dy, y> term: dx = y * dy",
               lambda y, dy: y * dy, caught_on=("normal", "large_offset", "constant_rows")),
        Mutant("sum_over_all_rows", "sums dy * y over the whole matrix, not per row",
               lambda y, dy: (y * (dy - (dy * y).sum())).astype(F32),
               caught_on=("normal", "large_offset", "constant_rows"), where=lambda d: d["rows"] > 1),
        Mutant("missing_y_factor", "dx = dy - <dy, y>, without the y factor",
               lambda y, dy: dy - (dy * y).sum(axis=-1, keepdims=True),
               caught_on=("normal", "large_offset", "constant_rows"), where=lambda d: d["cols"] > 1),
    ))

DECLARED = (SOFTMAX, SOFTMAX_BACKWARD)
