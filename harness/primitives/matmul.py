"""matmul: C = A @ B, A (M, K), B (K, N), C (M, N), row-major.

The error model. A float32 dot product of length K summed in any order makes rounding
errors at the size of its partial sums. With zero-mean terms the partial sums random-walk
to about sqrt((A*A) @ (B*B)) (the terms' root sum of squares); without cancellation (all
terms positive) they grow to |C|. So the scale is |C| + sqrt((A*A) @ (B*B)), with the
random-walk rtol of a K-term sum (sum_rtol(K) = 4 eps sqrt(K) + 8 eps). It grows like K
(sqrt(K) from each factor) where |A| @ |B| with the same rtol grew like K^1.5, which let a
kernel that rounds its inputs to TF32 (10-bit mantissa) pass at K = 4096. Now TF32
misses by a factor of ~10 at every K of the ladder, and a kernel that writes zeros
misses by ~1/rtol.
"""
import numpy as np

from ..core.declaration import Mutant, Primitive, Tensor, Tolerance, sum_rtol
from . import _common as c

F32 = np.float32


def reference(A, B):
    return A @ B


def error_scale(inputs, refs, scalars):
    a = inputs["A"].astype(np.float64)
    b = inputs["B"].astype(np.float64)
    return np.abs(refs["C"]) + np.sqrt((a * a) @ (b * b))


def numpy_matmul(A, B):
    return A @ B


def naive_matmul(A, B):
    """k-outer: every C[i, j] summed left to right in float32, as one thread per output does."""
    C = np.zeros((A.shape[0], B.shape[1]), F32)
    for p in range(A.shape[1]):
        C += np.outer(A[:, p], B[p, :]).astype(F32)
    return C


def round_to_tf32(a):
    """Round float32 to TF32's 10-bit mantissa (round to nearest even), as tensor cores do."""
    bits = a.astype(F32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x0FFF + ((bits >> 13) & 1)) & 0xFFFFE000
    return bits.astype(np.uint32).view(F32)


def tf32_inputs(A, B):
    return (round_to_tf32(A).astype(np.float64) @ round_to_tf32(B).astype(np.float64)).astype(F32)


def b_transposed(A, B):
    """Reads B as if it were stored column-major (N, K): an index order mixed up."""
    K, N = B.shape
    return A @ np.ascontiguousarray(B).reshape(N, K).T


def drop_last_k(A, B):
    return A[:, :-1] @ B[:-1, :]


def drop_last_column(A, B):
    C = A @ B
    C[:, -1] = 0
    return C


def tf32_extra_dims():
    """TF32 must fail at every K of the ladders, not only at the check dims."""
    ks = sorted(set(c.MATMUL_LADDER) | set(c.MATMUL_GPU))
    return tuple((8, k, 8) for k in ks)


MATMUL = Primitive(
    name="matmul", summary="C = A @ B, A (M, K), B (K, N)", order=60,
    dims=("M", "K", "N"),
    tensors=(Tensor("A", ("M", "K")), Tensor("B", ("K", "N")),
             Tensor("C", ("M", "N"), role="out", error_scale=error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-6, rtol=sum_rtol(d["K"])))),
    reference=reference, numpy=numpy_matmul,
    flops=lambda d: 2 * d["M"] * d["K"] * d["N"], flops_note="2*M*N*K",
    size_to_dims=c.cube, ladder=c.MATMUL_LADDER, quick_ladder=c.MATMUL_QUICK, gpu_ladder=c.MATMUL_GPU,
    check_dims=c.MATMUL_CHECKS, long_check_dims=c.MATMUL_LONG,
    distributions=("normal", "outliers", "positive"),
    bound="compute",
    naive_float32=naive_matmul,
    mutants=(
        Mutant("tf32_inputs", "rounds A and B to TF32 (10-bit mantissa), as tensor cores do", tf32_inputs,
               caught_on=("normal",), extra_dims=tf32_extra_dims()),
        Mutant("b_transposed", "reads B as (N, K) column-major", b_transposed,
               caught_on=("normal", "outliers", "positive"), where=lambda d: d["K"] > 1 and d["N"] > 1),
        Mutant("drop_last_k", "the inner loop stops one k short", drop_last_k,
               caught_on=("normal", "outliers", "positive")),
        Mutant("drop_last_column", "the last column of C is never written", drop_last_column,
               caught_on=("normal", "outliers", "positive")),
    ))

DECLARED = (MATMUL,)
