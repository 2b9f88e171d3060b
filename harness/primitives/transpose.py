"""transpose: swap the two middle axes of a 4-D tensor,

    y[n, q, p, i] = x[n, p, q, i]        x (outer, p, q, inner)  ->  y (outer, q, p, inner)

A GPT uses it three ways, all the same primitive:
  - split heads: q = x @ Wq is (batch, time, heads, head_dim); attention wants
    (batch, heads, time, head_dim), each head's rows contiguous;
  - merge heads: attention's (batch, heads, time, head_dim) back to (batch, time, channels);
  - the tied output head: wte (vocab, channels) seen as (1, vocab, channels, 1) gives
    wte^T (channels, vocab), the B of logits = x @ wte^T.
A transpose is its own backward: the gradient of y = transpose(x) is dx = transpose(dy),
the same primitive with p and q exchanged. So there is no transpose_backward; the model
calls transpose again.

No arithmetic: every element is moved once, exactly. What the ladder teaches is memory
order. With inner = head_dim (64) every row of `inner` floats moves as a unit, so reads
and writes are both contiguous runs; with inner = 1 (a 2-D transpose) one side of the copy
is strided, the case a GPU's shared-memory tile exists for.
"""
import numpy as np

from ..core.declaration import Mutant, Primitive, Step, Tensor, Tolerance

F32 = np.float32
DIMS = ("outer", "p", "q", "inner")
EXACT = Tolerance(atol=0.0, rtol=0.0)


def reference(x):
    return np.ascontiguousarray(np.swapaxes(x, 1, 2))


def numpy_transpose(x):
    """x.transpose(0, 2, 1, 3) is a view; the copy is what makes it a tensor of its own."""
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3))


def reinterpreted(x):
    """Reshapes instead of transposing: the same memory read as (outer, q, p, inner)."""
    n, p, q, i = x.shape
    return x.reshape(n, q, p, i).copy()


def last_element_missing(x):
    y = numpy_transpose(x)
    y.reshape(-1)[-1] = 0
    return y


def outer_mixed(x):
    """Reads the next outer slice (batch b + 1 for batch b): a base offset with the wrong stride."""
    return numpy_transpose(np.roll(x, -1, axis=0))


def inner_reversed(x):
    """Copies each row of `inner` back to front: an index counted from the wrong end."""
    return numpy_transpose(x)[..., ::-1].copy()


def size_to_dims(n):
    """The ladder's n is tokens (batch x time) of GPT-2 small's attention: 12 heads of 64,
    split from (n / 256, 256, 12, 64)."""
    return (max(n // 256, 1), min(n, 256), 12, 64)


# (outer, p, q, inner): one element; odd everything; a 2-D transpose (outer 1, inner 1: the
# tied head's wte^T); a head split at GPT sizes; odd inner for the vector tails.
CHECKS = ((1, 1, 1, 1), (1, 3, 5, 7), (1, 65, 33, 1), (2, 17, 4, 33), (3, 64, 4, 16), (2, 9, 12, 129))
LONG = ((4, 256, 12, 64),)
LADDER = (256, 1024, 4096, 16384, 65536)
QUICK = (256, 4096)
GPU = (4096, 16384, 65536, 262144)

TRANSPOSE = Primitive(
    steps=(Step("naive", "one element per loop step (a thread per output element on a GPU)", python="loop",
                cuda="naive", mojo="scalar"),
           Step("rows", "a row of `inner` contiguous floats at a time: SIMD lanes, float4 on a GPU", python="rows",
                cuda="vec4", mojo="simd"),),
    name="transpose", summary="swap the middle axes, y(n, q, p, i) = x(n, p, q, i): heads split and merged, wte^T",
    order=95,
    dims=DIMS,
    tensors=(Tensor("x", ("outer", "p", "q", "inner")),
             Tensor("y", ("outer", "q", "p", "inner"), role="out", tolerance=EXACT)),
    reference=reference, numpy=numpy_transpose,
    flops=lambda d: 0, flops_note="no arithmetic: a copy in another order",
    size_to_dims=size_to_dims, ladder=LADDER, quick_ladder=QUICK, gpu_ladder=GPU,
    check_dims=CHECKS, long_check_dims=LONG,
    distributions=("normal",),
    naive_float32=numpy_transpose,
    mutants=(
        Mutant("reinterpreted", "reshapes instead of transposing", reinterpreted, caught_on=("normal",),
               where=lambda d: d["p"] > 1 and d["q"] > 1),
        Mutant("last_element_missing", "a loop bound one short: the last element is never written",
               last_element_missing, caught_on=("normal",)),
        Mutant("outer_mixed", "reads the next outer slice", outer_mixed, caught_on=("normal",),
               where=lambda d: d["outer"] > 1),
        Mutant("inner_reversed", "copies each row back to front", inner_reversed, caught_on=("normal",),
               where=lambda d: d["inner"] > 1),
    ))

DECLARED = (TRANSPOSE,)
