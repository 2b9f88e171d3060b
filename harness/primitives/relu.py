"""relu: y = max(x, 0), elementwise, and its backward dx = dy * [x > 0]. Both exact: max
selects one of its inputs, and the mask keeps or zeroes dy. At x = 0 exactly relu has no
derivative; PyTorch and this project use 0 there."""
import numpy as np

from ..core.declaration import Backward, Mutant, Primitive, Step, Tensor, Tolerance
from . import _common as c

F32 = np.float32


def reference(x):
    return np.maximum(x, 0.0)


def numpy_relu(x):
    return np.maximum(x, F32(0))


def leaky_small_negatives(x):
    """Passes negatives above -1e-3 through: a threshold compared with the wrong sign or constant."""
    return np.where(x > F32(-1e-3), x, F32(0)).astype(F32)


RELU = Primitive(
    steps=(Step("naive", "one element per step of a loop (a thread per element on a GPU)", python="loop", cuda="naive", mojo="scalar"),
           Step("vectorized", "several elements per instruction: float4 loads on a GPU, SIMD lanes on a CPU", cuda="vec4", mojo="simd"),),
    name="relu", summary="elementwise max(x, 0)", order=20,
    dims=("n",),
    tensors=(Tensor("x", ("n",)),
             Tensor("y", ("n",), role="out", tolerance=Tolerance(atol=0.0, rtol=0.0))),  # exact
    reference=reference, numpy=numpy_relu,
    flops=lambda d: d["n"], flops_note="1 FLOP/element",
    size_to_dims=c.vector, ladder=c.ELEMENTWISE_LADDER, quick_ladder=c.ELEMENTWISE_QUICK,
    gpu_ladder=c.ELEMENTWISE_GPU, check_dims=c.ELEMENTWISE_CHECKS, long_check_dims=c.ELEMENTWISE_LONG,
    distributions=("normal", "outliers", "wide"),
    naive_float32=numpy_relu,
    mutants=(
        Mutant("leaky_small_negatives", "lets negatives above -1e-3 through", leaky_small_negatives,
               caught_on=("wide",), where=lambda d: d["n"] >= 127),
    ))

def backward_reference(x, dy):
    return dy * (x > 0)


def numpy_relu_backward(x, dy):
    return dy * (x > F32(0))


def upstream(shape, rng, dims):
    """The gradient flowing in: N(0, 1), whatever the distribution of x."""
    return rng.standard_normal(shape).astype(F32)


RELU_BACKWARD = Primitive(
    steps=(Step("naive", "one element per step of a loop (a thread per element on a GPU)", python="loop", cuda="naive", mojo="scalar"),
           Step("vectorized", "several elements per instruction: float4 loads on a GPU, SIMD lanes on a CPU", cuda="vec4", mojo="simd"),),
    name="relu_backward", summary="gradient of relu: dx = dy * [x > 0]", order=21,
    stem="relu", forward="relu",
    backward_of=Backward(saved={"x": "x"}, upstream={"dy": "y"}, grads={"dx": "x"}),
    dims=("n",),
    tensors=(Tensor("x", ("n",)), Tensor("dy", ("n",), init=upstream),
             Tensor("dx", ("n",), role="out", tolerance=Tolerance(atol=0.0, rtol=0.0))),
    reference=backward_reference, numpy=numpy_relu_backward,
    flops=lambda d: d["n"], flops_note="1 FLOP/element (a select)",
    size_to_dims=c.vector, ladder=c.ELEMENTWISE_LADDER, quick_ladder=c.ELEMENTWISE_QUICK,
    gpu_ladder=c.ELEMENTWISE_GPU, check_dims=c.ELEMENTWISE_CHECKS, long_check_dims=c.ELEMENTWISE_LONG,
    distributions=("normal", "outliers", "wide"),
    naive_float32=numpy_relu_backward,
    mutants=(
        Mutant("mask_at_zero", "passes the gradient where x == 0 (x >= 0)",
               lambda x, dy: dy * (x >= F32(0)), caught_on=("wide",), where=lambda d: d["n"] >= 4),
        Mutant("no_mask", "passes every gradient through", lambda x, dy: dy.copy(),
               caught_on=("normal", "outliers", "wide"), where=lambda d: d["n"] >= 127),
    ))

DECLARED = (RELU, RELU_BACKWARD)
