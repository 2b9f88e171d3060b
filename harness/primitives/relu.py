"""relu: y = max(x, 0), elementwise. Exact: max selects one of its inputs."""
import numpy as np

from ..core.declaration import Mutant, Primitive, Tensor, Tolerance
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

DECLARED = (RELU,)
