"""softmax over the last axis of a (rows, cols) matrix, numerically stable:

    y[r, j] = exp(x[r, j] - max_r) / sum_k exp(x[r, k] - max_r)
"""
import numpy as np

from ..core.declaration import Mutant, Primitive, Tensor, Tolerance, sum_rtol
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

DECLARED = (SOFTMAX,)
