# adamw: one AdamW step, in place on params, m and v, with PyTorch's semantics
# (decoupled weight decay; bias correction by the step number t >= 1):
#
#     p <- p * (1 - lr * weight_decay)
#     m <- beta1 * m + (1 - beta1) * g
#     v <- beta2 * v + (1 - beta2) * g^2
#     p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
#
# The last line is how torch.optim.AdamW (and the NumPy idiom in
# harness/primitives/adamw.py) writes the bias corrections: the first folded into the
# step size, the second applied to sqrt(v). Every variant keeps the idiom's order of
# float32 operations (only FMA contraction, on by default in Mojo, fuses a multiply and
# an add into one rounding), so it agrees with it to a few ulp per step. The same
# algebra written another way (m / (1 - beta1^t) first, then sqrt of v / (1 - beta2^t))
# is equal in real numbers and rounds differently in float32.
#
# Per call, once: decay = 1 - lr * weight_decay, step_size = lr / (1 - beta1^t) and
# root_bias2 = sqrt(1 - beta2^t). beta^t is computed in float64 by repeated squaring
# (t is an integer; `**` on floats is an approximate pow) and rounded once to float32.
#
# Variants (naive first), each registered as adamw_<variant>:
#   scalar    one element per loop step: the four updates of p, m, v.
#   simd      vectorize[]: F32_WIDTH elements per step. Every array is read once and
#             written once (28 bytes per element), where the NumPy idiom's in-place
#             operations and temporaries make some thirty passes over arrays.
#   parallel  simd over chunks, one chunk per worker thread, above MIN_PER_WORKER.
#
# What to expect: one sqrt and two divisions per element (the idiom's order: sqrt(v) /
# sqrt(bias2), then m / denominator) are the slow instructions, several cycles per vector
# each on one port, so once the loop is vectorised they, not memory, set the speed for
# arrays that fit in cache (16384 parameters: ~9 us, against NumPy's ~37).
#
# How Python calls them: adamw_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/adamw.py): params, grads, m, v
# | n | lr, beta1, beta2, eps, weight_decay, step. params, m and v are `inout`: the
# kernel reads and overwrites them. A training step changes `step` every call, and the
# op layer rewrites that one slot of the block (Call.set_scalars), nothing else.

from std.algorithm.functional import vectorize
from std.math import sqrt
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, new_module

# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# elements, ~0.2 ms of work, or the call stays on one thread.
comptime MIN_PER_WORKER = 1 << 18


@fieldwise_init
struct Step(Copyable, ImplicitlyCopyable, Movable):
    """The per-call constants of one AdamW step, float32 as the kernels use them."""

    var beta1: Float32
    var beta2: Float32
    var eps: Float32
    var decay: Float32            # 1 - lr * weight_decay
    var step_size: Float32        # lr / (1 - beta1^t)
    var root_bias2: Float32       # sqrt(1 - beta2^t)


def power(base: Float32, t: Int) -> Float64:
    """Returns base^t for an integer t, in float64, by repeated squaring."""
    var result: Float64 = 1
    var b = Float64(base)
    var e = t if t >= 0 else -t
    while e > 0:
        if e & 1:
            result *= b
        b *= b
        e >>= 1
    return result if t >= 0 else 1 / result


def step_constants(lr: Float32, beta1: Float32, beta2: Float32, eps: Float32, weight_decay: Float32, t: Int) -> Step:
    var bias1 = Float32(1 - power(beta1, t))
    var bias2 = Float32(1 - power(beta2, t))
    return Step(beta1, beta2, eps, 1 - lr * weight_decay, lr / bias1, sqrt(bias2))


# ----------------------------------------------------------------------------- scalar

def update_scalar(p: F32Ptr, g: F32Ptr, m: F32Ptr, v: F32Ptr, n: Int, c: Step):
    for i in range(n):
        var gi = g[unsafe_offset=i]
        var mi = m[unsafe_offset=i] * c.beta1 + (1 - c.beta1) * gi
        var vi = v[unsafe_offset=i] * c.beta2 + (1 - c.beta2) * gi * gi
        m[unsafe_offset=i] = mi
        v[unsafe_offset=i] = vi
        var pi = p[unsafe_offset=i] * c.decay
        p[unsafe_offset=i] = pi - c.step_size * mi / (sqrt(vi) / c.root_bias2 + c.eps)


def adamw_scalar(
    params: F32Ptr, grads: F32Ptr, m: F32Ptr, v: F32Ptr, n: Int,
    lr: Float32, beta1: Float32, beta2: Float32, eps: Float32, weight_decay: Float32, step: Int,
):
    update_scalar(params, grads, m, v, n, step_constants(lr, beta1, beta2, eps, weight_decay, step))


# ----------------------------------------------------------------------------- simd

def update_simd(p: F32Ptr, g: F32Ptr, m: F32Ptr, v: F32Ptr, n: Int, c: Step):
    def body[width: Int](i: Int) {var}:
        comptime V = SIMD[DType.float32, width]
        var gi = g.unsafe_load[width=width](i)
        var mi = m.unsafe_load[width=width](i) * c.beta1 + (1 - c.beta1) * gi
        var vi = v.unsafe_load[width=width](i) * c.beta2 + (1 - c.beta2) * gi * gi
        m.unsafe_store[width=width](i, mi)
        v.unsafe_store[width=width](i, vi)
        var pi = p.unsafe_load[width=width](i) * c.decay
        p.unsafe_store[width=width](i, pi - V(c.step_size) * mi / (sqrt(vi) / c.root_bias2 + c.eps))

    vectorize[F32_WIDTH](n, body)


def adamw_simd(
    params: F32Ptr, grads: F32Ptr, m: F32Ptr, v: F32Ptr, n: Int,
    lr: Float32, beta1: Float32, beta2: Float32, eps: Float32, weight_decay: Float32, step: Int,
):
    update_simd(params, grads, m, v, n, step_constants(lr, beta1, beta2, eps, weight_decay, step))


# ----------------------------------------------------------------------------- parallel

def adamw_parallel(
    params: F32Ptr, grads: F32Ptr, m: F32Ptr, v: F32Ptr, n: Int,
    lr: Float32, beta1: Float32, beta2: Float32, eps: Float32, weight_decay: Float32, step: Int,
):
    var c = step_constants(lr, beta1, beta2, eps, weight_decay, step)
    var workers = min(parallelism_level(), max(1, n // MIN_PER_WORKER))
    if workers == 1:
        update_simd(params, grads, m, v, n, c)
        return
    # Chunks are whole multiples of 64 floats (256 B): no two threads write one cache line.
    var chunk = ((n + workers - 1) // workers + 63) // 64 * 64

    def work(w: Int) {var}:
        var start = w * chunk
        var end = min(n, start + chunk)
        if start < end:
            update_simd(params.unsafe_offset(start), grads.unsafe_offset(start), m.unsafe_offset(start),
                        v.unsafe_offset(start), end - start, c)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- Python

comptime AdamwKernel = def(
    F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Float32, Float32, Float32, Float32, Float32, Int
) thin -> None


def adamw_call[kernel: AdamwKernel](args: Args) raises:
    args.expect(11)                                  # params, grads, m, v | n | lr, beta1, beta2, eps, weight_decay, step
    kernel(args.f32(0), args.f32(1), args.f32(2), args.f32(3), args.int(4), args.float32(5), args.float32(6),
           args.float32(7), args.float32(8), args.float32(9), args.int(10))


@export
def PyInit_adamw() abi("C") -> PythonObject:
    try:
        var m = new_module("adamw")
        add_variant[adamw_call[adamw_scalar]](m, "adamw_scalar")
        add_variant[adamw_call[adamw_simd]](m, "adamw_simd")
        add_variant[adamw_call[adamw_parallel]](m, "adamw_parallel")
        return m.finalize()
    except e:
        abort(String("error creating the adamw module: ", e))
