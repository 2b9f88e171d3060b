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

from ..core.declaration import Backward, Mutant, Primitive, Step, Tensor, Tolerance, sum_rtol
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
    steps=(Step("naive", "the textbook triple loop: one dot product per output", python="ijk", cuda="naive", mojo="naive"),
           Step("reordered", "the loops reordered so that consecutive steps touch consecutive addresses", python="ikj", cuda="coalesced", mojo="reordered"),
           Step("vectorized", "wide loads and SIMD arithmetic", cuda="vectorized", mojo="vectorized"),
           Step("register_tiles", "a tile of C held in registers, fed by tiles of A and B from fast memory", cuda="blocktile_2d", mojo="tiled"),),
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

# ----------------------------------------------------------------------------- backward
# dA = dC @ B^T is a dot product over N, dB = A^T @ dC one over M: the same error model
# as the forward, with the sums they make.

def backward_reference(A, B, dC):
    return {"dA": dC @ B.T, "dB": A.T @ dC}


def _f64(inputs, name):
    return inputs[name].astype(np.float64)


def dA_error_scale(inputs, refs, scalars):
    dC, B = _f64(inputs, "dC"), _f64(inputs, "B")
    return np.abs(refs["dA"]) + np.sqrt((dC * dC) @ (B * B).T)


def dB_error_scale(inputs, refs, scalars):
    A, dC = _f64(inputs, "A"), _f64(inputs, "dC")
    return np.abs(refs["dB"]) + np.sqrt((A * A).T @ (dC * dC))


def numpy_matmul_backward(A, B, dC):
    return dC @ B.T, A.T @ dC


def naive_matmul_backward(A, B, dC):
    return naive_matmul(dC, np.ascontiguousarray(B.T)), naive_matmul(np.ascontiguousarray(A.T), dC)


def backward_tf32(A, B, dC):
    A32, B32, dC32 = (round_to_tf32(t).astype(np.float64) for t in (A, B, dC))
    return (dC32 @ B32.T).astype(F32), (A32.T @ dC32).astype(F32)


def dB_reads_A_untransposed(A, B, dC):
    """dB = A^T @ dC with A^T taken as A's memory read in the other shape: a forgotten transpose."""
    M, K = A.shape
    return dC @ B.T, np.ascontiguousarray(A).reshape(K, M) @ dC


def dA_drops_last_n(A, B, dC):
    return dC[:, :-1] @ B[:, :-1].T, A.T @ dC


def tf32_backward_extra_dims():
    ks = sorted(set(c.MATMUL_LADDER) | set(c.MATMUL_GPU))
    return tuple((k, 8, k) for k in ks)           # long sums over both M (for dB) and N (for dA)


MATMUL_BACKWARD = Primitive(
    steps=(Step("naive", "dA = dC·Bᵀ and dB = Aᵀ·dC as triple loops", python="naive", cuda="naive", mojo="naive"),
           Step("reuse_forward", "the forward's fast kernels, fed transposed operands", python="reuse", cuda="via_transpose", mojo="tiled"),),
    name="matmul_backward", summary="gradients of C = A @ B: dA = dC @ B^T, dB = A^T @ dC", order=61,
    stem="matmul", forward="matmul",
    backward_of=Backward(saved={"A": "A", "B": "B"}, upstream={"dC": "C"}, grads={"dA": "A", "dB": "B"}),
    dims=("M", "K", "N"),
    tensors=(Tensor("A", ("M", "K")), Tensor("B", ("K", "N")), Tensor("dC", ("M", "N")),
             Tensor("dA", ("M", "K"), role="out", error_scale=dA_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-6, rtol=sum_rtol(d["N"]))),
             Tensor("dB", ("K", "N"), role="out", error_scale=dB_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-6, rtol=sum_rtol(d["M"])))),
    reference=backward_reference, numpy=numpy_matmul_backward,
    flops=lambda d: 4 * d["M"] * d["K"] * d["N"], flops_note="two matmuls: 4*M*N*K",
    size_to_dims=c.cube, ladder=c.MATMUL_LADDER, quick_ladder=c.MATMUL_QUICK, gpu_ladder=c.MATMUL_GPU,
    check_dims=c.MATMUL_CHECKS, long_check_dims=c.MATMUL_LONG,
    distributions=("normal", "outliers", "positive"),
    bound="compute",
    naive_float32=naive_matmul_backward,
    mutants=(
        Mutant("tf32_inputs", "rounds A, B and dC to TF32", backward_tf32,
               caught_on=("normal",), extra_dims=tf32_backward_extra_dims()),
        Mutant("dB_reads_A_untransposed", "takes A^T as A's memory in the other shape",
               dB_reads_A_untransposed, caught_on=("normal", "outliers", "positive"),
               where=lambda d: d["M"] > 1 and d["K"] > 1),
        Mutant("dA_drops_last_n", "dA's inner loop stops one column of dC short", dA_drops_last_n,
               caught_on=("normal", "outliers", "positive")),
    ))

DECLARED = (MATMUL, MATMUL_BACKWARD)
