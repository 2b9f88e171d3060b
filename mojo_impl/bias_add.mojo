# bias_add: the linear layer's bias. Forward: y = x + b, with b (cols,) broadcast over
# the rows of x (rows, cols). Backward: db = the column sums of dy (dx = dy is the
# identity, so a model passes dy on and nothing is computed for it).
#
# Variants (naive first), each registered as bias_add_<variant>:
#   scalar    one element per loop step, row by row.
#   simd      per row, F32_WIDTH columns per step; the row's last cols % width columns
#             are one masked vector (a 64 x 10 layer output is one masked vector per
#             row, not ten scalar steps). b is re-read for every row, from L1.
#   parallel  simd with the rows split over the worker threads, above MIN_PER_WORKER.
#
# Backward variants, each registered as bias_add_backward_<variant>:
#   scalar    rows outer, columns inner: db[j] += dy[r, j], db read and written in
#             memory for every element (rows-outer keeps dy's reads contiguous).
#   simd      column blocks of BLOCK vectors held in registers while every row streams
#             past, then stored once: no read-modify-write of db per row, and BLOCK
#             independent add chains hide the adds' latency. Masked last vector.
#   parallel  simd with the COLUMNS split over the worker threads. Splitting the rows
#             would leave every thread with a partial db to add up afterwards (what
#             layernorm's backward has to do, since its dx needs whole rows); split by
#             columns, each thread owns its share of db outright: no second reduction,
#             and every column is summed in the same order on every run.
#
# What to expect: both directions move 4 bytes per FLOP and are memory-bound once
# vectorised; at a training step's sizes (64 x 256) they take a microsecond or two and
# the call itself is a good part of it.
#
# How Python calls them: bias_add_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/bias_add.py): x, b, y | rows, cols,
# and dy, db | rows, cols for the backward.

from std.math import iota
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from std.sys.intrinsics import masked_load, masked_store
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, new_module

comptime Vec = SIMD[DType.float32, F32_WIDTH]
# Column sums: vectors of db held in registers at once (4 x 16 floats with AVX-512).
comptime BLOCK = 4
# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# elements, or the call stays on one thread. Awake workers are what a long training
# step is made of: they fall asleep ~0.1-0.2 ms after their last task, so a run of
# one-thread calls between two matmuls makes the second one pay to wake them. At 1 << 17
# the 10.8M GPT's 1024 x 384 activations are split and its step took 308 ms, against
# 344 ms at 1 << 18 and 1 << 19 (two runs each, alternated, on the 2-core Xeon); the
# default GPT's activations (at most 512 x 256 = 1 << 17) stay on one thread.
comptime MIN_PER_WORKER = 1 << 17


def first_lanes(count: Int) -> SIMD[DType.bool, F32_WIDTH]:
    """A mask of the first `count` lanes: the row's last, partial vector."""
    return iota[DType.int32, F32_WIDTH]().lt(SIMD[DType.int32, F32_WIDTH](Int32(count)))


# ----------------------------------------------------------------------------- forward

def bias_add_scalar(x: F32Ptr, b: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    for r in range(rows):
        for j in range(cols):
            y[unsafe_offset=r * cols + j] = x[unsafe_offset=r * cols + j] + b[unsafe_offset=j]


def bias_rows(x: F32Ptr, b: F32Ptr, y: F32Ptr, first: Int, last: Int, cols: Int):
    var full = cols - cols % F32_WIDTH
    var tail = first_lanes(cols - full)
    var b_tail = masked_load[F32_WIDTH](b.unsafe_offset(full), tail, Vec(0))
    for r in range(first, last):
        var xr = x.unsafe_offset(r * cols)
        var yr = y.unsafe_offset(r * cols)
        var j = 0
        while j < full:
            yr.unsafe_store[width=F32_WIDTH](j, xr.unsafe_load[width=F32_WIDTH](j) + b.unsafe_load[width=F32_WIDTH](j))
            j += F32_WIDTH
        if full < cols:
            masked_store[F32_WIDTH](masked_load[F32_WIDTH](xr.unsafe_offset(full), tail, Vec(0)) + b_tail,
                                    yr.unsafe_offset(full), tail)


def bias_add_simd(x: F32Ptr, b: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    bias_rows(x, b, y, 0, rows, cols)


def bias_add_parallel(x: F32Ptr, b: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    var workers = min(parallelism_level(), rows, max(1, rows * cols // MIN_PER_WORKER))
    if workers <= 1:
        bias_rows(x, b, y, 0, rows, cols)
        return
    var per_worker = (rows + workers - 1) // workers

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(rows, first + per_worker)
        if first < last:
            bias_rows(x, b, y, first, last, cols)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- backward

def bias_add_backward_scalar(dy: F32Ptr, db: F32Ptr, rows: Int, cols: Int):
    for j in range(cols):
        db[unsafe_offset=j] = 0
    for r in range(rows):
        for j in range(cols):
            db[unsafe_offset=j] += dy[unsafe_offset=r * cols + j]


def column_sums(dy: F32Ptr, db: F32Ptr, rows: Int, cols: Int, j_first: Int, j_last: Int):
    """Writes db[j_first:j_last]: the sums of those columns of dy over every row."""
    var j = j_first
    while j + BLOCK * F32_WIDTH <= j_last:           # BLOCK vectors of db in registers
        var acc = Array[Vec, BLOCK](fill=Vec(0))
        for r in range(rows):
            var src = dy.unsafe_offset(r * cols + j)
            comptime for v in range(BLOCK):
                acc[v] += src.unsafe_load[width=F32_WIDTH](v * F32_WIDTH)
        comptime for v in range(BLOCK):
            db.unsafe_store[width=F32_WIDTH](j + v * F32_WIDTH, acc[v])
        j += BLOCK * F32_WIDTH
    while j + F32_WIDTH <= j_last:                   # whole vectors left over
        var acc = Vec(0)
        for r in range(rows):
            acc += dy.unsafe_load[width=F32_WIDTH](r * cols + j)
        db.unsafe_store[width=F32_WIDTH](j, acc)
        j += F32_WIDTH
    if j < j_last:                                   # the last, partial vector
        var mask = first_lanes(j_last - j)
        var acc = Vec(0)
        for r in range(rows):
            acc += masked_load[F32_WIDTH](dy.unsafe_offset(r * cols + j), mask, Vec(0))
        masked_store[F32_WIDTH](acc, db.unsafe_offset(j), mask)


def bias_add_backward_simd(dy: F32Ptr, db: F32Ptr, rows: Int, cols: Int):
    column_sums(dy, db, rows, cols, 0, cols)


def bias_add_backward_parallel(dy: F32Ptr, db: F32Ptr, rows: Int, cols: Int):
    # Columns are handed out in groups of 64 (a multiple of any vector width and of a
    # 256-byte stretch of cache lines), so two threads never write one line of db.
    var groups = (cols + 63) // 64
    var workers = min(parallelism_level(), groups, max(1, rows * cols // MIN_PER_WORKER))
    if workers <= 1:
        column_sums(dy, db, rows, cols, 0, cols)
        return
    var per_worker = (groups + workers - 1) // workers * 64

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(cols, first + per_worker)
        if first < last:
            column_sums(dy, db, rows, cols, first, last)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- Python

comptime BiasAddKernel = def(F32Ptr, F32Ptr, F32Ptr, Int, Int) thin -> None
comptime BiasAddBackwardKernel = def(F32Ptr, F32Ptr, Int, Int) thin -> None


def bias_add_call[kernel: BiasAddKernel](args: Args) raises:
    args.expect(5)                                   # x, b, y | rows, cols
    kernel(args.f32(0), args.f32(1), args.f32(2), args.int(3), args.int(4))


def bias_add_backward_call[kernel: BiasAddBackwardKernel](args: Args) raises:
    args.expect(4)                                   # dy, db | rows, cols
    kernel(args.f32(0), args.f32(1), args.int(2), args.int(3))


@export
def PyInit_bias_add() abi("C") -> PythonObject:
    try:
        var m = new_module("bias_add")
        add_variant[bias_add_call[bias_add_scalar]](m, "bias_add_scalar")
        add_variant[bias_add_call[bias_add_simd]](m, "bias_add_simd")
        add_variant[bias_add_call[bias_add_parallel]](m, "bias_add_parallel")
        add_variant[bias_add_backward_call[bias_add_backward_scalar]](m, "bias_add_backward_scalar")
        add_variant[bias_add_backward_call[bias_add_backward_simd]](m, "bias_add_backward_simd")
        add_variant[bias_add_backward_call[bias_add_backward_parallel]](m, "bias_add_backward_parallel")
        return m.finalize()
    except e:
        abort(String("error creating the bias_add module: ", e))
