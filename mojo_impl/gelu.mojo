# gelu: elementwise GELU, tanh approximation (as in GPT-2), on a float32 vector of length n:
#
#     y = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
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
# How Python calls them: gelu_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/gelu.py): x, y | n.
# gelu_call at the bottom reads them into the kernels' typed signature.

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
# elements, ~0.2 ms of work, or the call stays on one thread.
comptime MIN_PER_WORKER = 1 << 18


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


# ----------------------------------------------------------------------------- Python

comptime GeluKernel = def(F32Ptr, F32Ptr, Int) thin -> None


def gelu_call[kernel: GeluKernel](args: Args) raises:
    args.expect(3)                                   # x, y | n
    kernel(args.f32(0), args.f32(1), args.int(2))


@export
def PyInit_gelu() abi("C") -> PythonObject:
    try:
        var m = new_module("gelu")
        add_variant[gelu_call[gelu_scalar]](m, "gelu_scalar")
        add_variant[gelu_call[gelu_simd]](m, "gelu_simd")
        add_variant[gelu_call[gelu_parallel]](m, "gelu_parallel")
        return m.finalize()
    except e:
        abort(String("error creating the gelu module: ", e))
