# transpose: swap the two middle axes of a 4-D tensor x (outer, p, q, inner):
#
#     y[n, q, p, i] = x[n, p, q, i]          y is (outer, q, p, inner)
#
# A GPT splits its heads with it ((batch, time, heads, head_dim) -> (batch, heads, time,
# head_dim)), merges them back, and turns wte (vocab, channels), seen as (1, vocab,
# channels, 1), into the wte^T of its tied output head. It is its own backward: dx is
# the transpose of dy, so there is no transpose_backward.
#
# No arithmetic: each element moves once. The figure of merit is GB/s.
#
# Variants (naive first), each registered as transpose_<variant>:
#   scalar     one element per loop step, in y's order: four loops, one index computed
#              for each side.
#   simd       a row of `inner` contiguous floats at a time, F32_WIDTH lanes per load and
#              store, the row's last inner % width elements one masked vector. With
#              inner = head_dim that is the whole lesson: both sides are contiguous rows.
#              (With inner = 1 every row is one lane: a 2-D transpose needs tiles, and the
#              only 2-D transpose a GPT makes, wte^T, is 65 x 64 floats.)
#   parallel   simd with y's (n, q) planes split over the worker threads: every worker
#              writes only its own rows of y.
#
# How Python calls them: transpose_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/transpose.py): x, y | outer, p, q, inner.

from std.math import iota
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from std.sys.intrinsics import masked_load, masked_store
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, new_module

comptime Vec = SIMD[DType.float32, F32_WIDTH]
# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# floats, or the call stays on one thread. Awake workers are what a long training
# step is made of: they fall asleep ~0.1-0.2 ms after their last task, so a run of
# one-thread calls between two matmuls makes the second one pay to wake them. At 1 << 17
# the 10.8M GPT's 1024 x 384 activations are split and its step took 308 ms, against
# 344 ms at 1 << 18 and 1 << 19 (two runs each, alternated, on the 2-core Xeon); the
# default GPT's activations (at most 512 x 256 = 1 << 17) stay on one thread.
comptime MIN_PER_WORKER = 1 << 17


def first_lanes(count: Int) -> SIMD[DType.bool, F32_WIDTH]:
    return iota[DType.int32, F32_WIDTH]().lt(SIMD[DType.int32, F32_WIDTH](Int32(count)))


# ----------------------------------------------------------------------------- scalar

def transpose_scalar(x: F32Ptr, y: F32Ptr, outer: Int, p: Int, q: Int, inner: Int):
    for n in range(outer):
        for j in range(q):
            for i in range(p):
                for c in range(inner):
                    y[unsafe_offset=((n * q + j) * p + i) * inner + c] = x[unsafe_offset=((n * p + i) * q + j) * inner + c]


# ----------------------------------------------------------------------------- simd

def copy_row(src: F32Ptr, dst: F32Ptr, inner: Int):
    var full = inner - inner % F32_WIDTH
    for c in range(0, full, F32_WIDTH):
        dst.unsafe_store[width=F32_WIDTH](c, src.unsafe_load[width=F32_WIDTH](c))
    if full < inner:
        var mask = first_lanes(inner - full)
        masked_store[F32_WIDTH](masked_load[F32_WIDTH](src.unsafe_offset(full), mask, Vec(0)),
                                dst.unsafe_offset(full), mask)


def planes(x: F32Ptr, y: F32Ptr, first: Int, last: Int, p: Int, q: Int, inner: Int):
    """y's planes first..last-1, plane r = (n, j) = (r // q, r % q): p rows of `inner`."""
    for r in range(first, last):
        var n = r // q
        var j = r % q
        for i in range(p):
            copy_row(x.unsafe_offset(((n * p + i) * q + j) * inner), y.unsafe_offset((r * p + i) * inner), inner)


def transpose_simd(x: F32Ptr, y: F32Ptr, outer: Int, p: Int, q: Int, inner: Int):
    if inner == 1:                     # rows of one float: the scalar loop is the same work, no masks
        transpose_scalar(x, y, outer, p, q, inner)
        return
    planes(x, y, 0, outer * q, p, q, inner)


# ----------------------------------------------------------------------------- parallel

def transpose_parallel(x: F32Ptr, y: F32Ptr, outer: Int, p: Int, q: Int, inner: Int):
    var rows = outer * q
    var workers = max(1, min(parallelism_level(), rows, (rows * p * inner) // MIN_PER_WORKER))
    if workers == 1:
        transpose_simd(x, y, outer, p, q, inner)
        return
    var chunk = (rows + workers - 1) // workers

    def work(w: Int) {var}:
        var first = w * chunk
        var last = min(rows, first + chunk)
        if first < last:
            planes(x, y, first, last, p, q, inner)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- entry points

comptime TransposeKernel = def(F32Ptr, F32Ptr, Int, Int, Int, Int) thin -> None


def transpose_call[kernel: TransposeKernel](args: Args) raises:
    args.expect(6)                                   # x, y | outer, p, q, inner
    kernel(args.f32(0), args.f32(1), args.int(2), args.int(3), args.int(4), args.int(5))


@export
def PyInit_transpose() abi("C") -> PythonObject:
    try:
        var m = new_module("transpose")
        add_variant[transpose_call[transpose_scalar]](m, "transpose_scalar")
        add_variant[transpose_call[transpose_simd]](m, "transpose_simd")
        add_variant[transpose_call[transpose_parallel]](m, "transpose_parallel")
        return m.finalize()
    except e:
        abort(String("error creating the transpose module: ", e))
