# relu: elementwise y = max(x, 0) on a float32 vector of length n, and its backward
# dx = dy * [x > 0] (0 at x = 0 exactly, as in PyTorch).
#
# Variants (naive first), each registered as relu_<variant>:
#   scalar    one element per loop step: the direct translation of the Python loop.
#   simd      vectorize[]: F32_WIDTH lanes per step (8 with AVX2, 16 with AVX-512); one
#             vector max per step, and vectorize finishes the n % width tail.
#   parallel  simd over chunks, one chunk per worker thread with parallelize[]; inputs
#             under MIN_PER_WORKER elements per thread stay on the calling thread.
#
# What to expect: like add, relu moves 8 bytes per comparison, so once vectorized it runs
# at memory speed; Mojo leaves `scalar` scalar (one vmaxss per element in the assembly).
# The results are exact: max and the mask only select one of their inputs, so every
# variant must match the reference bit for bit.
#
# Backward variants, each registered as relu_backward_<variant>:
#   scalar    one element per loop step: dx = dy if x > 0 else 0. The compiler keeps
#             the `if` as a branch, and on N(0, 1) inputs it goes either way at random:
#             measured at 16384 elements, 60 us, where the scalar forward takes 4.
#   simd      vectorize[]: a vector compare makes a mask and a select keeps dy or 0,
#             no branch at all (2 us at 16384).
#   parallel  simd over chunks, one chunk per worker thread, above MIN_PER_WORKER.
#
# How Python calls them: relu_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/relu.py): x, y | n, and
# x, dy, dx | n for the backward. relu_call and relu_backward_call at the bottom read
# them into the kernels' typed signatures.

from std.algorithm.functional import vectorize
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, new_module

# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# elements, ~0.2 ms of work, or the call stays on one thread.
comptime MIN_PER_WORKER = 1 << 19


def relu_scalar(x: F32Ptr, y: F32Ptr, n: Int):
    for i in range(n):
        var v = x[unsafe_offset=i]
        y[unsafe_offset=i] = v if v > 0 else Float32(0)


def relu_simd(x: F32Ptr, y: F32Ptr, n: Int):
    def body[width: Int](i: Int) {var}:
        var v = x.unsafe_load[width=width](i)
        y.unsafe_store[width=width](i, max(v, SIMD[DType.float32, width](0)))

    vectorize[F32_WIDTH](n, body)


def relu_parallel(x: F32Ptr, y: F32Ptr, n: Int):
    var workers = min(parallelism_level(), max(1, n // MIN_PER_WORKER))
    if workers == 1:
        relu_simd(x, y, n)
        return
    # Chunks are whole multiples of 64 floats (256 B): no two threads write one cache line.
    var chunk = ((n + workers - 1) // workers + 63) // 64 * 64

    def work(w: Int) {var}:
        var start = w * chunk
        var end = min(n, start + chunk)
        if start < end:
            relu_simd(x.unsafe_offset(start), y.unsafe_offset(start), end - start)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- backward

def relu_backward_scalar(x: F32Ptr, dy: F32Ptr, dx: F32Ptr, n: Int):
    for i in range(n):
        dx[unsafe_offset=i] = dy[unsafe_offset=i] if x[unsafe_offset=i] > 0 else Float32(0)


def relu_backward_simd(x: F32Ptr, dy: F32Ptr, dx: F32Ptr, n: Int):
    def body[width: Int](i: Int) {var}:
        var positive = x.unsafe_load[width=width](i).gt(SIMD[DType.float32, width](0))
        dx.unsafe_store[width=width](i, positive.select(dy.unsafe_load[width=width](i),
                                                        SIMD[DType.float32, width](0)))

    vectorize[F32_WIDTH](n, body)


def relu_backward_parallel(x: F32Ptr, dy: F32Ptr, dx: F32Ptr, n: Int):
    var workers = min(parallelism_level(), max(1, n // MIN_PER_WORKER))
    if workers == 1:
        relu_backward_simd(x, dy, dx, n)
        return
    var chunk = ((n + workers - 1) // workers + 63) // 64 * 64

    def work(w: Int) {var}:
        var start = w * chunk
        var end = min(n, start + chunk)
        if start < end:
            relu_backward_simd(x.unsafe_offset(start), dy.unsafe_offset(start), dx.unsafe_offset(start),
                               end - start)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- Python

comptime ReluKernel = def(F32Ptr, F32Ptr, Int) thin -> None


def relu_call[kernel: ReluKernel](args: Args) raises:
    args.expect(3)                                   # x, y | n
    kernel(args.f32(0), args.f32(1), args.int(2))


comptime ReluBackwardKernel = def(F32Ptr, F32Ptr, F32Ptr, Int) thin -> None


def relu_backward_call[kernel: ReluBackwardKernel](args: Args) raises:
    args.expect(4)                                   # x, dy, dx | n
    kernel(args.f32(0), args.f32(1), args.f32(2), args.int(3))


@export
def PyInit_relu() abi("C") -> PythonObject:
    try:
        var m = new_module("relu")
        add_variant[relu_call[relu_scalar]](m, "relu_scalar")
        add_variant[relu_call[relu_simd]](m, "relu_simd")
        add_variant[relu_call[relu_parallel]](m, "relu_parallel")
        add_variant[relu_backward_call[relu_backward_scalar]](m, "relu_backward_scalar")
        add_variant[relu_backward_call[relu_backward_simd]](m, "relu_backward_simd")
        add_variant[relu_backward_call[relu_backward_parallel]](m, "relu_backward_parallel")
        return m.finalize()
    except e:
        abort(String("error creating the relu module: ", e))
