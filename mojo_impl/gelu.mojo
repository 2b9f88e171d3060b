# gelu: elementwise GELU, tanh approximation (as in GPT-2), on a float32 vector of length n:
#
#     y = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
#
# and its backward, with u the tanh's argument and t = tanh(u):
#
#     dx = dy * (0.5 * (1 + t) + 0.5 * x * (1 - t^2) * sqrt(2/pi) * (1 + 3 * 0.044715 * x^2))
#
# Variants (naive first), each registered as gelu_<variant>:
#   scalar    one element per loop step, scalar tanh: the direct translation of the formula.
#   simd      vectorize[]: F32_WIDTH lanes per step; tanh is evaluated on whole vectors
#             (Mojo's math functions are SIMD-generic), vectorize finishes the tail.
#   parallel  simd over chunks, one per worker thread with parallelize[].
#
# What to expect: unlike add and relu, GELU does tens of FLOPs per element (tanh
# included), so the arithmetic matters: SIMD pays ~10x and the threads almost 2x more.
# NumPy evaluates the formula one operation at a time, writing a temporary array for
# each of its nine steps; each variant here reads x once and writes y once.
#
# Backward variants, each registered as gelu_backward_<variant>:
#   scalar    one element per loop step, the derivative written as above.
#   simd      the same formula on whole vectors (gelu_backward_vector), one tanh per
#             element shared by both terms of the derivative.
#   parallel  simd over chunks, one per worker thread with parallelize[].
#
# The backward's accuracy is set by tanh, not by the arithmetic: for 3 < |x| < 6 float32
# can barely tell t from +-1, so 1 + t and 1 - t^2 are mostly its rounding, which the
# factor x * (1 + 0.134 x^2) amplifies (harness/primitives/gelu.py's error model). There
# is nothing a kernel can do about it short of computing t in float64; none here does.
#
# How Python calls them: gelu_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/gelu.py): x, y | n, and
# x, dy, dx | n for the backward. gelu_call and gelu_backward_call at the bottom read
# them into the kernels' typed signatures.

from std.algorithm.functional import vectorize
from std.math import tanh
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, new_module

comptime SQRT_2_OVER_PI: Float32 = 0.7978845608028654
comptime CUBIC: Float32 = 0.044715
# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# elements, or the call stays on one thread. Awake workers are what a long training
# step is made of: they fall asleep ~0.1-0.2 ms after their last task, so a run of
# one-thread calls between two matmuls makes the second one pay to wake them. At 1 << 17
# the 10.8M GPT's 1024 x 384 activations are split and its step took 308 ms, against
# 344 ms at 1 << 18 and 1 << 19 (two runs each, alternated, on the 2-core Xeon); the
# default GPT's activations (at most 512 x 256 = 1 << 17) stay on one thread.
comptime MIN_PER_WORKER = 1 << 17


def gelu_scalar(x: F32Ptr, y: F32Ptr, n: Int):
    for i in range(n):
        var v = x[unsafe_offset=i]
        y[unsafe_offset=i] = 0.5 * v * (1.0 + tanh(SQRT_2_OVER_PI * (v + CUBIC * v * v * v)))


# The same formula on a SIMD vector of any width (also width 1, for the tail).
def gelu_vector[width: Int](v: SIMD[DType.float32, width]) -> SIMD[DType.float32, width]:
    return 0.5 * v * (1.0 + tanh(SQRT_2_OVER_PI * (v + CUBIC * v * v * v)))


def gelu_simd(x: F32Ptr, y: F32Ptr, n: Int):
    def body[width: Int](i: Int) {var}:
        y.unsafe_store[width=width](i, gelu_vector(x.unsafe_load[width=width](i)))

    vectorize[F32_WIDTH](n, body)


def gelu_parallel(x: F32Ptr, y: F32Ptr, n: Int):
    var workers = min(parallelism_level(), max(1, n // MIN_PER_WORKER))
    if workers == 1:
        gelu_simd(x, y, n)
        return
    # Chunks are whole multiples of 64 floats (256 B): no two threads write one cache line.
    var chunk = ((n + workers - 1) // workers + 63) // 64 * 64

    def work(w: Int) {var}:
        var start = w * chunk
        var end = min(n, start + chunk)
        if start < end:
            gelu_simd(x.unsafe_offset(start), y.unsafe_offset(start), end - start)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- backward

comptime CUBIC_3: Float32 = 3 * 0.044715


def gelu_backward_scalar(x: F32Ptr, dy: F32Ptr, dx: F32Ptr, n: Int):
    for i in range(n):
        var v = x[unsafe_offset=i]
        var t = tanh(SQRT_2_OVER_PI * (v + CUBIC * v * v * v))
        var slope = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + CUBIC_3 * v * v)
        dx[unsafe_offset=i] = dy[unsafe_offset=i] * slope


def gelu_backward_vector[width: Int](
    v: SIMD[DType.float32, width], g: SIMD[DType.float32, width]
) -> SIMD[DType.float32, width]:
    var t = tanh(SQRT_2_OVER_PI * (v + CUBIC * v * v * v))
    return g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + CUBIC_3 * v * v))


def gelu_backward_simd(x: F32Ptr, dy: F32Ptr, dx: F32Ptr, n: Int):
    def body[width: Int](i: Int) {var}:
        dx.unsafe_store[width=width](
            i, gelu_backward_vector(x.unsafe_load[width=width](i), dy.unsafe_load[width=width](i)))

    vectorize[F32_WIDTH](n, body)


def gelu_backward_parallel(x: F32Ptr, dy: F32Ptr, dx: F32Ptr, n: Int):
    var workers = min(parallelism_level(), max(1, n // MIN_PER_WORKER))
    if workers == 1:
        gelu_backward_simd(x, dy, dx, n)
        return
    var chunk = ((n + workers - 1) // workers + 63) // 64 * 64

    def work(w: Int) {var}:
        var start = w * chunk
        var end = min(n, start + chunk)
        if start < end:
            gelu_backward_simd(x.unsafe_offset(start), dy.unsafe_offset(start), dx.unsafe_offset(start),
                               end - start)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- Python

comptime GeluKernel = def(F32Ptr, F32Ptr, Int) thin -> None


def gelu_call[kernel: GeluKernel](args: Args) raises:
    args.expect(3)                                   # x, y | n
    kernel(args.f32(0), args.f32(1), args.int(2))


comptime GeluBackwardKernel = def(F32Ptr, F32Ptr, F32Ptr, Int) thin -> None


def gelu_backward_call[kernel: GeluBackwardKernel](args: Args) raises:
    args.expect(4)                                   # x, dy, dx | n
    kernel(args.f32(0), args.f32(1), args.f32(2), args.int(3))


@export
def PyInit_gelu() abi("C") -> PythonObject:
    try:
        var m = new_module("gelu")
        add_variant[gelu_call[gelu_scalar]](m, "gelu_scalar")
        add_variant[gelu_call[gelu_simd]](m, "gelu_simd")
        add_variant[gelu_call[gelu_parallel]](m, "gelu_parallel")
        add_variant[gelu_backward_call[gelu_backward_scalar]](m, "gelu_backward_scalar")
        add_variant[gelu_backward_call[gelu_backward_simd]](m, "gelu_backward_simd")
        add_variant[gelu_backward_call[gelu_backward_parallel]](m, "gelu_backward_parallel")
        return m.finalize()
    except e:
        abort(String("error creating the gelu module: ", e))
